//! Fallback voices: missing Piper files or ONNX Runtime → flite/espeak with a warning, never a
//! crash; flite is byte-deterministic and streaming it equals synthesising it in one go.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use voicerelay_tts::flite::{self, FliteVoice};
use voicerelay_tts::{
    espeak, FliteEngine, StreamingSynthesizer, Synthesizer, TtsConfig, TtsEvent, VoiceEngine,
    VoiceKind, MAX_QUEUED_AUDIO,
};
use vr_core::ModelStore;

#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with a subscriber that records every log line, and returns the log text.
fn with_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let buf = LogBuf::default();
    let b2 = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_writer(move || b2.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let out = tracing::subscriber::with_default(sub, f);
    let text = String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned();
    (out, text)
}

#[test]
fn missing_piper_files_fall_back_to_flite_with_a_warning() {
    let empty = tempfile::tempdir().unwrap();
    let store = ModelStore::open(empty.path()).unwrap();
    let (tts, log) = with_log(|| StreamingSynthesizer::from_config(&TtsConfig::default(), &store));
    let tts = tts.expect("fallback, not an error");
    assert_eq!(tts.voice(), VoiceKind::Flite);
    assert_eq!(tts.sample_rate().hz(), 16_000);
    let reason = tts.fallback_reason().expect("reason");
    assert!(
        reason.contains("piper") && reason.contains("missing"),
        "{reason}"
    );
    assert!(
        log.contains("WARN") && log.contains("TTS fallback voice in use: flite"),
        "log was: {log}"
    );
    let audio = tts
        .speak_all("The fallback voice still works.", Duration::from_secs(30))
        .unwrap();
    assert!(audio.len() > 16_000, "{} samples", audio.len());
    assert!(common::rms(&audio) > 0.01);
}

#[test]
fn corrupted_onnx_runtime_falls_back_to_espeak_when_configured() {
    // Piper files present (linked from the real cache when it has them), the ONNX Runtime
    // library replaced by garbage: the sha check refuses it before anything is loaded.
    let dir = tempfile::tempdir().unwrap();
    let real = ModelStore::from_env().unwrap();
    std::fs::create_dir_all(dir.path().join("piper-joe")).unwrap();
    for f in ["en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"] {
        let src = real.file_path("piper-joe", f);
        if src.exists() {
            std::os::unix::fs::symlink(&src, dir.path().join("piper-joe").join(f)).unwrap();
        }
    }
    std::fs::create_dir_all(dir.path().join("onnxruntime")).unwrap();
    std::fs::write(
        dir.path().join("onnxruntime/libonnxruntime.so"),
        b"not a library",
    )
    .unwrap();
    let store = ModelStore::open(dir.path()).unwrap();
    let cfg = TtsConfig {
        fallback: "espeak".into(),
        ..TtsConfig::default()
    };
    let (tts, log) = with_log(|| StreamingSynthesizer::from_config(&cfg, &store));
    let tts = tts.expect("fallback, not an error");
    assert_eq!(tts.voice(), VoiceKind::Espeak);
    assert!(log.contains("TTS fallback voice in use: espeak"), "{log}");
    let reason = tts.fallback_reason().unwrap();
    assert!(
        reason.contains("onnxruntime") || reason.contains("piper-joe"),
        "{reason}"
    );
    let audio = tts
        .speak_all("Hello from espeak.", Duration::from_secs(30))
        .unwrap();
    assert!(common::rms(&audio) > 0.01);
}

#[test]
fn explicit_flite_voice_is_used_without_a_fallback_warning() {
    let store = ModelStore::open(tempfile::tempdir().unwrap().path()).unwrap();
    let cfg = TtsConfig {
        voice: "flite".into(),
        ..TtsConfig::default()
    };
    let (tts, log) = with_log(|| StreamingSynthesizer::from_config(&cfg, &store));
    let tts = tts.unwrap();
    assert_eq!(tts.voice(), VoiceKind::Flite);
    assert!(tts.fallback_reason().is_none());
    assert!(
        !log.contains("WARN") && log.contains("TTS voice in use: flite"),
        "{log}"
    );
}

#[test]
fn flite_is_byte_deterministic() {
    let text = "Please call Stella. Ask her to bring these things with her from the store.";
    let (a, ra) = flite::synthesize(text, FliteVoice::Slt).unwrap();
    let (b, rb) = flite::synthesize(text, FliteVoice::Slt).unwrap();
    assert_eq!(ra.hz(), 16_000);
    assert_eq!(ra, rb);
    assert!(a == b, "flite output differs between two runs");
    // About 4-6 s of speech.
    assert!((50_000..110_000).contains(&a.len()), "{} samples", a.len());
    let (k, rk) = flite::synthesize("Hello.", FliteVoice::Kal).unwrap();
    assert_eq!(rk.hz(), 8_000);
    assert!(common::rms(&k) > 0.01);
}

/// Streaming a deterministic voice token by token must give exactly the samples of synthesising
/// each clause directly: the chunker and the worker add and lose nothing.
/// A consumer that stops reading holds the worker back at [`MAX_QUEUED_AUDIO`] instead of letting
/// the queue grow with the answer; once it reads again every sample arrives, in order, exactly as
/// synthesising each clause directly gives them.
#[test]
fn a_stalled_consumer_bounds_the_queue_and_loses_nothing() {
    let cfg = TtsConfig::default();
    // Flite speaks about 2.5 words a second: 40 sentences of 8 words are two minutes of speech,
    // four times the bound.
    let sentence = "The quick brown fox jumps over the lazy dog. ";
    let text = sentence.repeat(40);
    let (clauses, engine, expected) = clause_by_clause(&cfg, &text);
    assert!(clauses.len() >= 40);
    let rate = engine.sample_rate();
    let total = Duration::from_secs_f64(expected.len() as f64 / f64::from(rate.hz()));
    assert!(total > MAX_QUEUED_AUDIO * 3, "only {total:?} of speech");

    let tts = StreamingSynthesizer::new(Box::new(engine), &cfg).unwrap();
    tts.push_text(&text).unwrap();
    tts.finish().unwrap();
    // Nobody reads: the queue fills to the bound and then stops growing.
    let chunk = Duration::from_millis(u64::from(cfg.chunk_ms));
    let mut last = Duration::ZERO;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let queued = tts.queued_audio();
        assert!(queued <= MAX_QUEUED_AUDIO + chunk, "{queued:?} queued");
        // The bound counts chunks, and a clause's last chunk is short: full is within 10 %.
        if queued == last && queued >= MAX_QUEUED_AUDIO * 9 / 10 {
            break;
        }
        last = queued;
        assert!(
            std::time::Instant::now() < deadline,
            "the queue never filled: {queued:?}"
        );
    }

    let got = drain(&tts);
    assert_eq!(got.len(), expected.len());
    assert!(
        got == expected,
        "the drained audio differs from direct synthesis"
    );
}

/// `text` cut by the clause chunker, and flite's samples for each clause synthesised directly,
/// one after the other: what streaming must reproduce exactly.
fn clause_by_clause(cfg: &TtsConfig, text: &str) -> (Vec<String>, FliteEngine, Vec<f32>) {
    let mut chunker = voicerelay_tts::ClauseChunker::new(cfg.min_chunk_chars, cfg.max_chunk_chars);
    let mut clauses = chunker.push(text);
    clauses.extend(chunker.finish());
    let mut engine = FliteEngine::new(FliteVoice::Slt).unwrap();
    let mut expected = Vec::new();
    for c in &clauses {
        expected.extend(
            engine
                .synthesize(&voicerelay_tts::verbalize::verbalize(c))
                .unwrap(),
        );
    }
    (clauses, engine, expected)
}

/// Drains one utterance's audio up to its `Done`.
fn drain(tts: &StreamingSynthesizer) -> Vec<f32> {
    let mut got = Vec::new();
    loop {
        match tts.recv_timeout(Duration::from_secs(30)).unwrap() {
            Some(TtsEvent::Audio(c)) => got.extend(c.samples),
            Some(TtsEvent::Done { .. }) => return got,
            other => panic!("{other:?}"),
        }
    }
}

/// A clause the caller has already cut is synthesised as given: the same samples as
/// synthesising it directly, where pushing it as text lets the chunker cut it at its commas
/// (a different, choppier reading: the test would fail if `speak_clause` chunked again).
#[test]
fn speak_clause_is_not_cut_again() {
    let cfg = TtsConfig::default();
    let clause = "Well, if you ask me, the answer is yes, and it has been for many years.";
    let mut engine = FliteEngine::new(FliteVoice::Slt).unwrap();
    let whole = engine
        .synthesize(&voicerelay_tts::verbalize::verbalize(clause))
        .unwrap();
    let tts = StreamingSynthesizer::new(Box::new(engine), &cfg).unwrap();
    tts.speak_clause(clause).unwrap();
    let spoken = drain(&tts);
    assert!(spoken == whole, "speak_clause changed the clause's audio");
    tts.push_text(clause).unwrap();
    tts.finish().unwrap();
    let chunked = drain(&tts);
    assert!(
        chunked != whole,
        "the chunker did not cut this clause, so the test shows nothing"
    );
    // Pending pushed text is the start of the clause's utterance, spoken first.
    tts.push_text("Right").unwrap();
    tts.speak_clause(clause).unwrap();
    let both = drain(&tts);
    assert!(both.len() > whole.len() && both.ends_with(&whole));
}

#[test]
fn flite_streamed_token_by_token_equals_clause_by_clause_synthesis() {
    let text = "Sure, the meeting is at 10:30 am on 2024-03-15. It should take 1.5 hours, \
                so bring 2 laptops. Dr. Lee will join from https://example.com/room.";
    let cfg = TtsConfig::default();
    let (clauses, engine, expected) = clause_by_clause(&cfg, text);
    assert_eq!(clauses.len(), 4, "{clauses:?}");

    let tts = StreamingSynthesizer::new(Box::new(engine), &cfg).unwrap();
    for tok in common::llm_tokens(text) {
        tts.push_text(&tok).unwrap();
    }
    tts.finish().unwrap();
    let mut got = Vec::new();
    let mut chunks = 0;
    loop {
        match tts.recv_timeout(Duration::from_secs(30)).unwrap() {
            Some(TtsEvent::Audio(c)) => {
                assert!(c.samples.len() <= 1600, "100 ms at 16 kHz");
                got.extend(c.samples);
                chunks += 1;
            }
            Some(TtsEvent::Done { .. }) => break,
            other => panic!("{other:?}"),
        }
    }
    assert!(chunks > 20);
    assert_eq!(got.len(), expected.len());
    let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing, 0,
        "streamed samples differ from clause-by-clause synthesis"
    );
}

#[test]
fn espeak_gives_ipa_phonemes() {
    let ph = espeak::phonemize_ipa("Hello world", "en-us").unwrap();
    assert_eq!(ph, vec!["həlˈoʊ wˈɜːld".to_string()]);
    let ph = espeak::phonemize_ipa("three point five kilograms", "en-us").unwrap();
    assert_eq!(ph.join(" "), "θɹˈiː pˈɔɪnt fˈaɪv kˈɪləɡɹˌæmz");
    // espeak-ng is serialised internally: concurrent callers get the same answer.
    let handles: Vec<_> = (0..4)
        .map(|_| std::thread::spawn(|| espeak::phonemize_ipa("Hello world", "en-us").unwrap()))
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), vec!["həlˈoʊ wˈɜːld".to_string()]);
    }
    assert!(espeak::phonemize_ipa("x", "no-such-voice").is_err());
}

#[test]
fn bad_voice_name_is_an_error_not_a_panic() {
    let cfg = TtsConfig {
        voice: "festival".into(),
        ..TtsConfig::default()
    };
    let store = ModelStore::open(tempfile::tempdir().unwrap().path()).unwrap();
    let e = StreamingSynthesizer::from_config(&cfg, &store)
        .err()
        .expect("error");
    assert!(e.to_string().contains("tts.voice"), "{e}");
}
