//! `compare` on two report files with known numbers: values, B/A ratios, missing values and the
//! warnings for reports that do not measure the same thing.

extern crate voicerelay_evals as vr_evals;

use serde_json::json;
use vr_evals::report::{compare, read_asr};

fn stats(p50: Option<f64>, p90: Option<f64>) -> serde_json::Value {
    json!({"n": 2, "mean": p50, "p50": p50, "p90": p90, "p99": p90, "max": p90, "values": []})
}

fn counts(n: usize, e: usize) -> serde_json::Value {
    json!({"substitutions": e, "deletions": 0, "insertions": 0, "reference_len": n})
}

fn report(
    system: &str,
    mode: &str,
    ids: &[&str],
    wer: f64,
    rtf: f64,
    ttft: Option<f64>,
) -> serde_json::Value {
    let utts: Vec<_> = ids
        .iter()
        .map(|id| {
            json!({
                "id": id, "category": "read", "audio_s": 2.0, "fed_s": 2.0,
                "speech_onset_s": 0.1, "speech_end_s": 1.9, "reference": "a b", "hypothesis": "a b",
                "wer": 0.0, "cer": 0.0, "word_errors": counts(2, 0), "char_errors": counts(3, 0),
                "ttft_s": ttft, "finalisation_s": 0.5, "final_at_end_of_stream": false,
                "partials": 1, "finals": 1, "compute_s": 0.2, "rtf": 0.1, "cpu_s": null
            })
        })
        .collect();
    json!({
        "schema_version": 1, "kind": "asr", "system": system, "engine": "whisper",
        "model": "tiny.en", "version": "test", "mode": mode, "latency_clock": format!("{mode} clock"),
        "corpus": "c", "split": "test", "complete": true, "settings": {}, "normaliser": "n",
        "onset_detector": "o",
        "summary": {
            "utterances": ids.len(), "audio_s": 4.0, "fed_s": 4.0, "wer": wer, "cer": wer / 2.0,
            "word_errors": counts(100, (wer * 100.0).round() as usize), "char_errors": counts(300, 0),
            "ttft_s": stats(ttft, ttft.map(|v| v * 2.0)), "finalisation_s": stats(Some(0.5), Some(1.5)),
            "finals_at_end_of_stream": 0, "empty_hypotheses": 0, "compute_s": rtf * 4.0, "rtf": rtf,
            "cpu_s": null, "cpu_s_per_audio_s": null, "peak_rss_mb": 200.0, "wall_s": null
        },
        "by_category": [], "cost_by_position": [], "utterances": utts
    })
}

fn row<'a>(table: &'a str, label: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no row {label:?} in\n{table}"))[label.len()..]
        .split_whitespace()
        .collect()
}

#[test]
fn side_by_side_table_with_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let (pa, pb) = (dir.path().join("a.json"), dir.path().join("b.json"));
    std::fs::write(
        &pa,
        report("voicerelay", "fast", &["u1", "u2"], 0.25, 0.5, Some(1.0)).to_string(),
    )
    .unwrap();
    std::fs::write(
        &pb,
        report("faster-whisper", "batch", &["u1", "u2"], 0.10, 0.125, None).to_string(),
    )
    .unwrap();
    let (a, b) = (read_asr(&pa).unwrap(), read_asr(&pb).unwrap());
    let t = compare(&a, &b);
    println!("{t}");
    assert_eq!(row(&t, "WER %"), ["25.00", "10.00", "0.40×"]);
    assert_eq!(row(&t, "CER %"), ["12.50", "5.00", "0.40×"]);
    assert_eq!(row(&t, "RTF"), ["0.500", "0.125", "0.25×"]);
    assert_eq!(row(&t, "finalisation P90 s"), ["1.500", "1.500", "1.00×"]);
    assert_eq!(row(&t, "peak RSS MiB"), ["200", "200", "1.00×"]);
    // B has no TTFT: shown as a dash, and no ratio.
    assert_eq!(row(&t, "TTFT P50 s"), ["1.000", "–", "–"]);
    assert_eq!(row(&t, "TTFT P90 s"), ["2.000", "–", "–"]);
    assert_eq!(row(&t, "CPU s per audio s"), ["–", "–", "–"]);
    // Different modes are pointed out; same utterances give no warning.
    assert!(t.contains("NOTE: different modes"));
    assert!(!t.contains("WARNING"));

    std::fs::write(
        &pb,
        report("faster-whisper", "fast", &["u1", "u3"], 0.10, 0.125, None).to_string(),
    )
    .unwrap();
    let t = compare(&a, &read_asr(&pb).unwrap());
    assert!(
        t.contains("WARNING: the reports cover different utterances"),
        "{t}"
    );
}
