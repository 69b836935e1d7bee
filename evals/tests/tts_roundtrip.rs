//! TTS → ASR round trip: the 20 sentences of `tts/tests/roundtrip_sentences.txt` (numbers,
//! questions, names, units) spoken by the Piper voice and transcribed by Whisper tiny.en must
//! give WER ≤ 10% overall. The reference is the verbalised text (what the voice was asked to
//! say); both sides go through the evals normaliser, so "3:30 p.m." and "three thirty P M" agree.

use std::time::Duration;

use voicerelay_evals::normalize::normalize;
use voicerelay_evals::wer::word_errors;
use vr_asr::models::whisper::WhisperModel;
use vr_tts::verbalize::verbalize;
use vr_tts::{StreamingSynthesizer, Synthesizer, TtsConfig, VoiceKind};

const SENTENCES: &str = include_str!("../../tts/tests/roundtrip_sentences.txt");

/// Band-limited resampling with a Hann-windowed sinc (cut-off at the lower Nyquist), enough for
/// feeding 22.05 kHz speech to a 16 kHz recogniser.
fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    const HALF: i64 = 24;
    let ratio = f64::from(from) / f64::from(to);
    let cutoff = (f64::from(to) / f64::from(from)).min(1.0) * 0.95;
    let n_out = (x.len() as f64 / ratio).floor() as usize;
    let mut out = Vec::with_capacity(n_out);
    for n in 0..n_out {
        let pos = n as f64 * ratio;
        let centre = pos.floor() as i64;
        let mut acc = 0.0f64;
        for k in (centre - HALF + 1)..=(centre + HALF) {
            if k < 0 || k as usize >= x.len() {
                continue;
            }
            let t = pos - k as f64;
            let w = 0.5 + 0.5 * (std::f64::consts::PI * t / HALF as f64).cos();
            let arg = std::f64::consts::PI * t * cutoff;
            let sinc = if arg.abs() < 1e-9 {
                1.0
            } else {
                arg.sin() / arg
            };
            acc += f64::from(x[k as usize]) * cutoff * sinc * w;
        }
        out.push(acc as f32);
    }
    out
}

#[test]
#[ignore = "whisper branch WIP: WhisperModel::transcribe repeats the sentence until 224 tokens on short clips (first pass is right); un-ignore once its decoder stops at EOT"]
fn piper_speech_is_transcribed_by_whisper_tiny_en_with_wer_at_most_ten_percent() {
    let store = vr_core::ModelStore::from_env().expect("model store");
    let (Ok(whisper_dir), Ok(mel)) = (
        store.dir("whisper-tiny.en"),
        store.file("whisper-mel", "melfilters.bytes"),
    ) else {
        println!("SKIPPED: whisper-tiny.en not in the model cache (run scripts/bootstrap)");
        return;
    };
    if store.dir("piper-joe").is_err() {
        println!("SKIPPED: piper-joe not in the model cache (run scripts/bootstrap)");
        return;
    }
    let tts = StreamingSynthesizer::from_config(&TtsConfig::default(), &store).expect("tts");
    assert_eq!(tts.voice(), VoiceKind::Piper, "{:?}", tts.fallback_reason());
    let rate = tts.sample_rate();
    let mut asr = WhisperModel::load(&whisper_dir, &mel).expect("whisper");

    let sentences: Vec<&str> = SENTENCES
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(sentences.len(), 20);
    let (mut errors, mut words) = (0usize, 0usize);
    for s in &sentences {
        let audio = tts
            .speak_all(s, Duration::from_secs(60))
            .expect("synthesis");
        let audio16 = resample(&audio, rate.hz(), vr_core::SampleRate::PIPELINE.hz());
        let (hyp, _) = asr.transcribe(&audio16).expect("transcription");
        let reference = normalize(&verbalize(s));
        let e = word_errors(&reference, &normalize(&hyp));
        println!(
            "{:>2}/{:<2} {s:?}\n      heard {hyp:?}",
            e.errors(),
            e.reference_len
        );
        errors += e.errors();
        words += e.reference_len;
    }
    let wer = errors as f64 / words as f64;
    println!("round trip WER {:.2}% ({errors}/{words})", 100.0 * wer);
    assert!(wer <= 0.10, "WER {:.2}% > 10%", 100.0 * wer);
}

#[test]
fn resampler_keeps_a_tone_and_its_level() {
    let from = 22_050u32;
    let x: Vec<f32> = (0..from)
        .map(|n| (2.0 * std::f32::consts::PI * 440.0 * n as f32 / from as f32).sin() * 0.5)
        .collect();
    let y = resample(&x, from, 16_000);
    assert_eq!(y.len(), 16_000);
    // Compare with the ideal tone away from the edges.
    let max_err = (100..15_900)
        .map(|n| {
            let ideal = (2.0 * std::f32::consts::PI * 440.0 * n as f32 / 16_000.0).sin() * 0.5;
            (y[n] - ideal).abs()
        })
        .fold(0.0f32, f32::max);
    assert!(max_err < 0.01, "max error {max_err}");
}
