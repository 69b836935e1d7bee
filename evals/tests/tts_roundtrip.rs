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

fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    let format = vr_audio::AudioFormat {
        rate: vr_core::SampleRate(from),
        channels: 1,
    };
    vr_audio::resample::resample_to_mono(x, format, vr_core::SampleRate(to))
        .expect("resampler accepts mono speech")
}

#[test]
fn piper_speech_is_transcribed_by_whisper_tiny_en_with_wer_at_most_ten_percent() {
    let Some(store) = vr_core::prereq::models(&["whisper-tiny.en", "whisper-mel", "piper-joe"])
    else {
        return;
    };
    let whisper_dir = store.dir("whisper-tiny.en").expect("verified above");
    let mel = store
        .file("whisper-mel", "melfilters.bytes")
        .expect("verified above");
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
