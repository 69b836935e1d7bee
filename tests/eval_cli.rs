//! `voicerelay eval`: the ASR harness on a 3-utterance subset of the corpus test split (JSON
//! fields, scores consistent with the transcripts, plots present and non-empty), `eval compare` on
//! the report it produced, and a short `eval dialog` run through the real conversation loop.

use std::path::Path;
use std::process::Command;

fn corpus() -> Option<std::path::PathBuf> {
    vr_core::prereq::corpus()
}

fn models_present(names: &[&str]) -> bool {
    vr_core::prereq::models(names).is_some()
}

/// The binary under test; `VOICERELAY_TEST_BIN` overrides it (a shared target directory's
/// `debug/voicerelay` may be rebuilt from another branch while this test runs).
fn voicerelay(args: &[&str]) -> std::process::Output {
    let bin = std::env::var("VOICERELAY_TEST_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_voicerelay").to_string());
    Command::new(bin)
        .args(args)
        .output()
        .expect("the voicerelay binary runs")
}

fn num(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{path:?} is not a number: {x}"))
}

fn svg_ok(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.len() > 2000,
        "{} is only {} bytes",
        path.display(),
        text.len()
    );
    assert!(text.starts_with("<svg") && text.trim_end().ends_with("</svg>"));
    // Something is drawn beyond the frame: lines/paths/rects and text labels.
    assert!(text.matches("<text").count() >= 5, "{}", path.display());
    assert!(
        text.matches("<polyline").count() + text.matches("<rect").count() >= 3,
        "{}",
        path.display()
    );
}

#[test]
fn eval_asr_on_three_test_utterances_writes_report_and_plots_and_compare_reads_it() {
    let Some(corpus) = corpus() else { return };
    if !models_present(&["whisper-tiny.en", "silero-vad"]) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = voicerelay(&[
        "eval",
        "asr",
        "--corpus",
        corpus.to_str().unwrap(),
        "--split",
        "test",
        "--limit",
        "3",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "eval asr failed");

    let json = out.path().join("report.json");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["kind"], "asr");
    assert_eq!(r["system"], "voicerelay");
    assert_eq!(r["model"], "tiny.en");
    assert_eq!(r["mode"], "fast");
    assert_eq!(r["split"], "test");
    assert_eq!(r["complete"], true);
    assert!(r["latency_clock"].as_str().unwrap().contains("audio clock"));
    let utts = r["utterances"].as_array().unwrap();
    assert_eq!(utts.len(), 3);
    assert_eq!(num(&r, &["summary", "utterances"]), 3.0);
    // The pooled WER equals the pooled edit counts, and each utterance's WER its own counts.
    let (mut errs, mut words) = (0.0, 0.0);
    for u in utts {
        let e = &u["word_errors"];
        let (s, d, i, n) = (
            num(e, &["substitutions"]),
            num(e, &["deletions"]),
            num(e, &["insertions"]),
            num(e, &["reference_len"]),
        );
        assert!(n > 0.0);
        assert!((num(u, &["wer"]) - (s + d + i) / n).abs() < 1e-9);
        errs += s + d + i;
        words += n;
        // The reference is the normalised manifest text: lower case, no punctuation.
        let reference = u["reference"].as_str().unwrap();
        assert!(reference
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == ' ' || c.is_ascii_digit()));
        // Speech onset precedes its end, inside the clip.
        let (on, end, audio) = (
            num(u, &["speech_onset_s"]),
            num(u, &["speech_end_s"]),
            num(u, &["audio_s"]),
        );
        assert!(
            0.0 <= on && on < end && end <= audio + 1e-9,
            "{on} {end} {audio}"
        );
        assert!(num(u, &["compute_s"]) > 0.0);
    }
    let wer = num(&r, &["summary", "wer"]);
    assert!((wer - errs / words).abs() < 1e-9);
    // Real speech, real model: most words right (the streaming path is at ~27 % on the full
    // split; a broken pipeline scores 100 %).
    assert!(wer < 0.6, "WER {wer}");
    let ttft = &r["summary"]["ttft_s"];
    assert!(num(ttft, &["n"]) >= 2.0, "{ttft}");
    let p50 = num(ttft, &["p50"]);
    assert!(p50 > 0.0 && p50 < 30.0, "TTFT P50 {p50}");
    assert!(num(&r, &["summary", "finalisation_s", "n"]) >= 2.0);
    for k in ["p50", "p90", "p99"] {
        assert!(r["summary"]["finalisation_s"][k].is_number());
    }
    assert!(num(&r, &["summary", "rtf"]) > 0.0);
    assert!(num(&r, &["summary", "cpu_s_per_audio_s"]) > 0.0);
    assert!(num(&r, &["summary", "peak_rss_mb"]) > 50.0);
    assert!(!r["by_category"].as_array().unwrap().is_empty());
    assert!(!r["cost_by_position"].as_array().unwrap().is_empty());
    assert!(r["version"].as_str().unwrap().len() >= 7);

    for p in [
        "latency_cdf",
        "wer_by_utterance",
        "wer_by_category",
        "cost_vs_position",
    ] {
        svg_ok(&out.path().join("plots").join(format!("{p}.svg")));
    }
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4, "four inline plots");
    assert!(html.contains(utts[0]["id"].as_str().unwrap()));

    // Compare the report with itself: every ratio is exactly 1.
    let o = voicerelay(&[
        "eval",
        "compare",
        json.to_str().unwrap(),
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let table = String::from_utf8_lossy(&o.stdout);
    println!("{table}");
    let wer_row = table.lines().find(|l| l.starts_with("WER %")).unwrap();
    assert!(wer_row.trim_end().ends_with("1.00×"), "{wer_row}");
    assert!(
        wer_row.contains(&format!("{:.2}", wer * 100.0)),
        "{wer_row}"
    );
    assert!(!table.contains("WARNING"));
}

#[test]
fn compare_of_a_missing_or_foreign_file_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("old.json");
    std::fs::write(&bad, r#"{"schema_version": 0, "kind": "asr"}"#).unwrap();
    let o = voicerelay(&[
        "eval",
        "compare",
        bad.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("schema_version 0 is not supported"), "{err}");
    let o = voicerelay(&[
        "eval",
        "compare",
        "/nonexistent/a.json",
        "/nonexistent/b.json",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/a.json"));
}

#[test]
fn eval_dialog_two_turns_reports_the_stage_breakdown() {
    if !models_present(&["whisper-tiny.en", "silero-vad", "qwen2.5-0.5b", "piper-joe"]) {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let o = voicerelay(&[
        "eval",
        "dialog",
        "--turns",
        "2",
        "--questions-only",
        // The streaming recogniser is still slower than real time in debug builds.
        "--answer-timeout-s",
        "240",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    println!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "eval dialog failed");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.path().join("dialog.json")).unwrap())
            .unwrap();
    assert_eq!(r["schema_version"], 1);
    assert_eq!(r["kind"], "dialog");
    let turns = r["turns"].as_array().unwrap();
    assert_eq!(turns.len(), 2);
    assert_eq!(num(&r, &["summary", "answered"]), 2.0, "{}", r["summary"]);
    for t in turns {
        let l = &t["latency"];
        let onset = num(l, &["onset_ms"]);
        // The onset includes the endpointing wait (different clocks: 100 ms slack), and is below
        // the answer timeout.
        assert!(
            onset + 100.0 >= num(l, &["endpointing_ms"]) && onset < 240_000.0,
            "{l}"
        );
        assert_eq!(t["timed_out"], false);
        for k in [
            "asr_final_ms",
            "llm_first_token_ms",
            "first_clause_ms",
            "tts_first_chunk_ms",
        ] {
            assert!(l[k].is_number(), "{k} missing in {l}");
        }
        assert!(!t["answer"].as_str().unwrap().trim().is_empty());
        assert!(!t["transcript"].as_str().unwrap().trim().is_empty());
    }
    for k in [
        "onset_ms",
        "endpointing_ms",
        "llm_first_token_ms",
        "tts_first_chunk_ms",
    ] {
        assert_eq!(num(&r, &["summary", k, "n"]), 2.0, "{k}");
    }
    svg_ok(&out.path().join("plots").join("dialog_latency_cdf.svg"));
    let wav = hound::WavReader::open(out.path().join("answers.wav")).unwrap();
    assert!(
        wav.duration() > 16_000,
        "answers.wav holds the spoken answers"
    );
}

/// A small ReCap table for the transport eval: θ = 0.8 is reached at 360 kbit/s.
const TEST_RECAP: &str = r#"
threshold = 0.8
[[class]]
name = "desk"
[[class.row]]
confidence = [0.6, 0.85, 0.9, 0.92, 0.93, 0.94]
measured_by = "synthetic, for this test"
"#;

#[test]
fn eval_transport_on_the_step_down_trace_cap_lowers_p95_latency_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("recap.toml");
    std::fs::write(&table, TEST_RECAP).unwrap();
    let out = dir.path().join("transport.json");
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/traces/step-down.csv");
    let o = voicerelay(&[
        "eval",
        "transport",
        "--trace",
        trace,
        "--recap",
        table.to_str().unwrap(),
        "--seed",
        "7",
        "--out",
        out.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "eval transport failed");
    assert!(stdout.contains("frame latency P95"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let c = &r["comparison"];
    assert_eq!(c["class"], "desk");
    assert_eq!(
        num(&r, &["settings", "duration_s"]),
        40.0,
        "the trace's end line"
    );
    for run in ["plain", "capped"] {
        assert_eq!(c[run]["name"], run);
        for k in [
            "latency_p50_ms",
            "latency_p95_ms",
            "proxy_accuracy",
            "mean_send_kbps",
            "mean_estimate_kbps",
            "mean_capacity_kbps",
        ] {
            let v = num(c, &[run, k]);
            assert!(v.is_finite() && v > 0.0, "{run}.{k} = {v}");
        }
        // 30 fps for 40 s.
        let frames = num(c, &[run, "frames"]);
        assert!(
            (1195.0..=1205.0).contains(&frames),
            "{run}: {frames} frames"
        );
        assert!(
            num(c, &[run, "latency_p50_ms"]) >= 25.0,
            "propagation is 25 ms"
        );
    }
    let p95 = |run: &str| num(c, &[run, "latency_p95_ms"]);
    let acc = |run: &str| num(c, &[run, "proxy_accuracy"]);
    let rate = |run: &str| num(c, &[run, "mean_send_kbps"]);
    assert!(
        p95("capped") < p95("plain"),
        "P95 capped {} ms vs plain {} ms",
        p95("capped"),
        p95("plain")
    );
    assert!(rate("capped") < rate("plain"));
    assert!(num(c, &["capped", "headroom_pct"]) > num(c, &["plain", "headroom_pct"]));
    // The cap aims at θ: the proxy stays near it (below it only while the estimate ramps up
    // from 300 kbit/s and the encoder approaches the cap from below).
    assert!(
        acc("capped") >= 0.8 - 0.03,
        "capped proxy {}",
        acc("capped")
    );
    assert!(acc("capped") <= acc("plain") + 1e-9 || num(c, &["plain", "frames_incomplete"]) > 0.0);
}

#[test]
fn eval_transport_names_the_bad_trace_line_and_refuses_an_empty_table() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("recap.toml");
    std::fs::write(&table, TEST_RECAP).unwrap();
    let bad = dir.path().join("bad.csv");
    std::fs::write(&bad, "# a trace\ntime_ms,kbps\n0,3000\n5000,lots\n").unwrap();
    let o = voicerelay(&[
        "eval",
        "transport",
        "--trace",
        bad.to_str().unwrap(),
        "--recap",
        table.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("line 4") && stderr.contains("5000,lots"),
        "{stderr}"
    );

    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "threshold = 0.8\n").unwrap();
    let trace = concat!(env!("CARGO_MANIFEST_DIR"), "/configs/traces/step-down.csv");
    let o = voicerelay(&[
        "eval",
        "transport",
        "--trace",
        trace,
        "--recap",
        empty.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("needs a table"), "{stderr}");
}
