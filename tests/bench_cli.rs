//! `voicerelay bench` on real models and corpus audio: every stage is measured, its figures are
//! the real run's (the recogniser's transcripts match the corpus, the turn model scores finished
//! utterances, the LLM and TTS produced output), and the sessions table is consistent. No speed
//! is asserted: that is the bench's report, on a noisy machine.

mod common;

fn voicerelay(args: &[&str]) -> std::process::Output {
    std::process::Command::new(common::server_bin())
        .args(args)
        .output()
        .expect("the voicerelay binary runs")
}

#[test]
fn bench_measures_every_stage_on_real_output() {
    let Some(corpus) = vr_core::prereq::corpus() else {
        return;
    };
    let needed = [
        "whisper-tiny.en",
        "silero-vad",
        "smart-turn-v3.2",
        "qwen2.5-0.5b",
        "piper-joe",
        "onnxruntime",
    ];
    if vr_core::prereq::models(&needed).is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("bench.json");
    let run = voicerelay(&[
        "bench",
        "--corpus",
        corpus.to_str().expect("utf-8 path"),
        "--seconds",
        "12",
        "--max-sessions",
        "2",
        "--turns",
        "1",
        "--answer-tokens",
        "8",
        "--out",
        out.to_str().expect("utf-8 path"),
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "bench failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("report written"))
            .expect("report is JSON");

    let stages = report["stages"].as_array().expect("stages");
    let names: Vec<&str> = stages.iter().filter_map(|s| s["stage"].as_str()).collect();
    assert_eq!(names, ["vad", "turn_model", "asr", "llm", "tts"]);
    for s in stages {
        let cpu = s["cpu_ms_per_unit"].as_f64().expect("cpu per unit");
        let units = s["units"].as_f64().expect("units");
        assert!(cpu.is_finite() && cpu > 0.0, "{s}");
        assert!(units > 0.0, "{s}");
    }
    let audio_s = report["audio_s"].as_f64().expect("audio_s");
    assert!(audio_s >= 12.0, "{audio_s}");

    // The recogniser's transcript is the corpus's: within 30 % WER of what was said.
    let asr = &stages[2]["detail"];
    let heard: Vec<&str> = asr["finals"]
        .as_array()
        .expect("finals")
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    let manifest = vr_evals::corpus::Corpus::open(&corpus).expect("corpus");
    let n = report["utterances"].as_u64().expect("utterances") as usize;
    let said: Vec<String> = manifest
        .split(vr_evals::corpus::Split::Test)
        .take(n)
        .map(|u| vr_evals::normalize::normalize(&u.text))
        .collect();
    let wer = vr_evals::wer::word_errors(
        &said.join(" "),
        &vr_evals::normalize::normalize(&heard.join(" ")),
    )
    .rate();
    assert!(wer <= 0.30, "WER {wer:.2}: heard {heard:?}, said {said:?}");

    // Smart Turn was asked once per utterance, at its end: the second test utterance ("For a
    // full hour he had paced up and down, waiting.") scores 0.90, the first (a long read
    // sentence) 0.37.
    let p = stages[1]["detail"]["end_of_turn_probabilities"]
        .as_array()
        .expect("probabilities");
    assert_eq!(p.len(), n);
    assert!(
        p.iter().filter_map(|x| x.as_f64()).any(|x| x > 0.5),
        "no finished utterance was judged finished: {p:?}"
    );
    // The answer was 8 tokens at most, and the LLM decoded some.
    let tokens = stages[3]["units"].as_f64().expect("tokens");
    assert!((1.0..=8.0).contains(&tokens), "{tokens}");

    let sessions = report["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 2, "both counts are run");
    for (i, s) in sessions.iter().enumerate() {
        assert_eq!(s["sessions"].as_u64(), Some(i as u64 + 1));
        assert_eq!(s["max_lag_ms"].as_array().map(Vec::len), Some(i + 1));
    }
    let realtime = report["realtime_sessions"].as_u64().expect("count") as usize;
    let kept: Vec<bool> = sessions
        .iter()
        .map(|s| s["kept_up"].as_bool().expect("kept_up"))
        .collect();
    assert_eq!(realtime, kept.iter().take_while(|k| **k).count());
}
