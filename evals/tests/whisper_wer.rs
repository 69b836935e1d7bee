//! Whisper tiny.en on the corpus `test` split: offline WER (fails above 15%), streaming WER
//! (fails above offline + 2 points) with latency figures printed, and silence / white noise
//! producing no text.

extern crate voicerelay_evals as vr_evals;

use std::path::Path;
use vr_asr::config::AsrConfig;
use vr_asr::models::whisper::{load_configured, WhisperModel};
use vr_asr::stream::WhisperStream;
use vr_asr::vad::{SileroVad, VadConfig};
use vr_asr::{AsrEvent, StreamingRecognizer};
use vr_evals::corpus::{Corpus, Split};
use vr_evals::normalize::normalize;
use vr_evals::streaming::{percentile, run_stream};
use vr_evals::wer::{word_errors, ErrorCounts};

fn read_wav(path: &Path) -> Vec<f32> {
    let mut r = hound::WavReader::open(path).expect("corpus wav opens");
    let spec = r.spec();
    assert_eq!(spec.sample_rate, 16000, "{}", path.display());
    assert_eq!(spec.channels, 1, "{}", path.display());
    r.samples::<i16>()
        .map(|s| s.expect("corpus sample") as f32 / 32768.0)
        .collect()
}

fn load(cfg: &AsrConfig) -> WhisperModel {
    let store = vr_core::ModelStore::from_env().expect("model store");
    load_configured(cfg, &store).expect("whisper-tiny.en in the model cache (scripts/bootstrap)")
}

/// Deterministic white noise at `dbfs` RMS.
fn white_noise(n: usize, dbfs: f32) -> Vec<f32> {
    let rms = 10f32.powf(dbfs / 20.0);
    // Uniform in [-a, a] has RMS a/sqrt(3).
    let a = rms * 3f32.sqrt();
    let mut s = 0x2545F491u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

fn stats(name: &str, v: &[f64]) -> String {
    match (percentile(v, 50.0), percentile(v, 90.0)) {
        (Some(a), Some(b)) => format!("{name} P50 {a:.3} s / P90 {b:.3} s (n={})", v.len()),
        _ => format!("{name}: no samples"),
    }
}

fn corpus_or_skip() -> Option<Corpus> {
    let corpus = Corpus::open_default().expect("manifest parses");
    vr_core::prereq::require_some(
        corpus,
        format_args!(
            "corpus not found at {} (set VOICERELAY_CORPUS)",
            vr_core::paths::corpus_dir().display()
        ),
    )
}

/// Offline WER over the test split, with each utterance's audio for reuse.
fn offline(corpus: &Corpus, cfg: &AsrConfig) -> (ErrorCounts, Vec<Vec<f32>>) {
    let mut offline_model = load(cfg);
    let test: Vec<_> = corpus.split(Split::Test).cloned().collect();
    assert!(!test.is_empty());
    let mut off = ErrorCounts::default();
    let mut audio = Vec::new();
    let t0 = std::time::Instant::now();
    let mut audio_s = 0.0;
    for u in &test {
        let s = read_wav(&corpus.wav_path(u));
        audio_s += s.len() as f64 / 16000.0;
        let (hyp, _) = offline_model.transcribe(&s).expect("offline decode");
        let (r, h) = (normalize(&u.text), normalize(&hyp));
        let e = word_errors(&r, &h);
        println!("offline {:<28} {:>2} err | {h}", u.id, e.errors());
        off = off + e;
        audio.push(s);
    }
    let offline_rtf = t0.elapsed().as_secs_f64() / audio_s;
    println!(
        "OFFLINE WER {:.2}% ({} S, {} D, {} I / {} words), RTF {offline_rtf:.3}",
        off.rate() * 100.0,
        off.substitutions,
        off.deletions,
        off.insertions,
        off.reference_len
    );
    (off, audio)
}

#[test]
fn tiny_en_offline_wer_on_the_test_split() {
    let Some(corpus) = corpus_or_skip() else {
        return;
    };
    let (off, _) = offline(&corpus, &AsrConfig::default());
    let wo = off.rate() * 100.0;
    assert!(wo <= 15.0, "offline WER {wo:.2}% > 15%");
}

/// The whole test split streamed in 100 ms chunks on the simulated real-time clock (VAD-gated,
/// default config); WER must stay within 2 points of the offline decode. RTF, first-partial,
/// word and finalisation latencies are printed (the targets live in the README; timing is not
/// asserted in a test).
#[test]
fn tiny_en_streaming_wer_within_two_points_of_offline() {
    let Some(corpus) = corpus_or_skip() else {
        return;
    };
    let cfg = AsrConfig::default();
    let (off, audio) = offline(&corpus, &cfg);
    let test: Vec<_> = corpus.split(Split::Test).cloned().collect();
    let store = vr_core::ModelStore::from_env().expect("model store");
    let vad = SileroVad::from_store(&store, VadConfig::default()).expect("silero-vad in the cache");
    let mut rec = WhisperStream::new(load(&cfg), cfg.clone())
        .expect("stream")
        .with_vad(vad);
    let mut st = ErrorCounts::default();
    let (mut lat, mut first, mut fin) = (Vec::new(), Vec::new(), Vec::new());
    let (mut compute, mut total_audio) = (0.0, 0.0);
    for (u, s) in test.iter().zip(&audio) {
        rec.reset();
        let run = run_stream(&mut rec, s, 1600).expect("streaming decode");
        let (r, h) = (normalize(&u.text), normalize(&run.text));
        let e = word_errors(&r, &h);
        println!(
            "stream  {:<28} {:>2} err | finals {} first {:?} fin {:?} | {h}",
            u.id,
            e.errors(),
            run.finals,
            run.first_partial.map(|v| (v * 1000.0).round() / 1000.0),
            run.finalisation.map(|v| (v * 1000.0).round() / 1000.0)
        );
        st = st + e;
        lat.extend(run.word_latencies);
        first.extend(run.first_partial);
        fin.extend(run.finalisation);
        compute += run.compute_s;
        total_audio += run.audio_s;
    }
    let (wo, ws) = (off.rate() * 100.0, st.rate() * 100.0);
    println!(
        "STREAMING WER {ws:.2}% ({} S, {} D, {} I / {} words), RTF {:.3}",
        st.substitutions,
        st.deletions,
        st.insertions,
        st.reference_len,
        compute / total_audio
    );
    println!("{}", stats("word latency", &lat));
    println!("{}", stats("first partial after onset", &first));
    println!("{}", stats("finalisation", &fin));
    assert!(
        ws <= wo + 2.0,
        "streaming WER {ws:.2}% > offline {wo:.2}% + 2"
    );
}

#[test]
fn silence_and_white_noise_produce_no_text() {
    let cfg = AsrConfig::default();
    let store = vr_core::ModelStore::from_env().expect("model store");
    let vad = SileroVad::from_store(&store, VadConfig::default()).expect("silero-vad in the cache");
    let mut rec = WhisperStream::new(load(&cfg), cfg.clone())
        .expect("stream")
        .with_vad(vad);
    for (name, s) in [
        ("digital silence", vec![0f32; 160_000]),
        ("white noise -30 dBFS", white_noise(160_000, -30.0)),
    ] {
        rec.reset();
        let mut events = Vec::new();
        for c in s.chunks(1600) {
            events.extend(rec.push(c).expect("push"));
        }
        events.extend(rec.finish().expect("finish"));
        let texts: Vec<&String> = events
            .iter()
            .filter_map(|e| match e {
                AsrEvent::Final { text, .. } if !text.trim().is_empty() => Some(text),
                _ => None,
            })
            .collect();
        println!(
            "{name}: {} events, finals with text: {texts:?}",
            events.len()
        );
        assert!(texts.is_empty(), "{name} produced text: {texts:?}");
    }
}
