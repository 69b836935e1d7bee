//! End to end without a sound card: a question spoken by the TTS (`voicerelay say`) goes through
//! `voicerelay listen --input Q.wav --output A.wav --json` (Silero VAD + Whisper → turn detection →
//! Qwen2.5-0.5B → clause chunker → Piper → WAV on a real-time clock), and the answer audio,
//! transcribed back by Whisper (offline), must say what the answer text says.

use std::path::Path;
use std::process::Command;

const QUESTION: &str = "How many legs does a dog have?";

fn voicerelay(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_voicerelay"))
        .args(args)
        .env("VOICERELAY__LOG__FILTER", "warn")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "voicerelay {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json_lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn models_present() -> bool {
    vr_core::prereq::models(&["qwen2.5-0.5b", "whisper-tiny.en", "silero-vad", "piper-joe"])
        .is_some()
}

/// Pads a mono WAV with silence before and after (a user does not start speaking at sample 0).
fn pad(path: &Path, before_s: f32, after_s: f32) {
    let mut r = hound::WavReader::open(path).unwrap();
    let spec = r.spec();
    assert_eq!(spec.channels, 1);
    let samples: Vec<i32> = r.samples::<i32>().map(|s| s.unwrap()).collect();
    drop(r);
    let n = |s: f32| (s * spec.sample_rate as f32) as usize;
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in std::iter::repeat_n(0, n(before_s))
        .chain(samples)
        .chain(std::iter::repeat_n(0, n(after_s)))
    {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

#[test]
fn spoken_question_gets_a_spoken_answer_that_whisper_understands() {
    if !models_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("question.wav");
    let a = dir.path().join("answer.wav");
    let (q, a) = (q.to_str().unwrap(), a.to_str().unwrap());
    voicerelay(&["say", QUESTION, "-o", q]);
    pad(Path::new(q), 0.5, 1.5);

    let out = voicerelay(&[
        "listen",
        "--input",
        q,
        "--output",
        a,
        "--output-rate",
        "16000",
        "--json",
    ]);
    let events = json_lines(&out.stdout);
    let of =
        |t: &str| -> Vec<&serde_json::Value> { events.iter().filter(|e| e["type"] == t).collect() };
    let transcript: String = of("final")
        .iter()
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    println!("transcript: {transcript}");
    // The recogniser heard the question (tiny.en on Piper's voice is not perfect: "likes").
    // Streaming Whisper sometimes repeats the utterance in its final (a known asr issue), so
    // the check is on as many leading words as the question has.
    let q_norm = vr_evals::normalize::normalize(QUESTION);
    let t_norm = vr_evals::normalize::normalize(&transcript);
    let head = t_norm
        .split_whitespace()
        .take(q_norm.split_whitespace().count())
        .collect::<Vec<_>>()
        .join(" ");
    let q_errors = vr_evals::wer::word_errors(&q_norm, &head);
    println!("question WER {:.1}%", 100.0 * q_errors.rate());
    assert!(q_errors.rate() <= 0.30, "{transcript}");
    let ends = of("answer_end");
    assert_eq!(ends.len(), 1, "{events:?}");
    let answer = ends[0]["text"].as_str().unwrap();
    let spoken = ends[0]["spoken"].as_str().unwrap();
    println!("answer: {answer}");
    assert!(!answer.trim().is_empty());
    assert_eq!(ends[0]["interrupted"], false);
    // The model finished, so its statistics are known: the prompt holds at least the system
    // prompt and the question, and the answer is at least one token.
    let prompt = ends[0]["prompt_tokens"].as_u64().unwrap_or(0);
    let generated = ends[0]["generated_tokens"].as_u64().unwrap_or(0);
    assert!(prompt > 20 && generated > 0, "{}", ends[0]);
    assert!(
        ends[0]["reused_tokens"]
            .as_u64()
            .is_some_and(|r| r <= prompt),
        "{}",
        ends[0]
    );

    let latency = of("turn_latency");
    assert_eq!(latency.len(), 1);
    println!("latency: {}", latency[0]);
    assert!(latency[0]["onset_ms"].as_u64().unwrap() > 0);

    // The answer audio, transcribed back (Whisper offline on the audible part), says the answer.
    let mut r = hound::WavReader::open(a).unwrap();
    assert_eq!(r.spec().sample_rate, 16_000);
    let wav: Vec<f32> = r.samples::<f32>().map(|s| s.unwrap()).collect();
    let first = wav
        .iter()
        .position(|v| v.abs() > 1e-4)
        .expect("the answer is silent");
    let audible = &wav[first..];
    let cfg = vr_asr::config::AsrConfig::default();
    let store = vr_core::ModelStore::from_env().unwrap();
    let mut whisper = vr_asr::models::whisper::load_configured(&cfg, &store).unwrap();
    // Sentence by sentence (Piper ends each with exact-zero silence): Whisper collapses a
    // sentence said twice in one window into one.
    let heard: Vec<String> = sentences(audible)
        .into_iter()
        .map(|seg| whisper.transcribe(seg).unwrap().0)
        .collect();
    let heard = heard.join(" ");
    println!("heard: {heard}");
    let errors = vr_evals::wer::word_errors(
        &vr_evals::normalize::normalize(spoken),
        &vr_evals::normalize::normalize(&heard),
    );
    println!("answer WER {:.1}%", 100.0 * errors.rate());
    assert!(errors.rate() <= 0.20, "WER {:.3}", errors.rate());
}

/// Splits at runs of at least 150 ms of digital silence (the answer's sentence pauses and the
/// gaps between clauses).
fn sentences(x: &[f32]) -> Vec<&[f32]> {
    let gap = 16_000 * 150 / 1000;
    let mut out = Vec::new();
    let (mut start, mut quiet) = (None::<usize>, 0usize);
    for (i, v) in x.iter().enumerate() {
        if v.abs() > 1e-6 {
            start.get_or_insert(i);
            quiet = 0;
        } else {
            quiet += 1;
            if quiet == gap {
                if let Some(s) = start.take() {
                    out.push(&x[s..i + 1 - gap]);
                }
            }
        }
    }
    if let Some(s) = start {
        out.push(&x[s..]);
    }
    out.retain(|s| s.len() >= 16_000 / 5);
    out
}
