//! Shared by the VAD integration tests: the real model from the store and corpus audio.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use voicerelay_asr::models::silero::Silero;

/// The Silero model from the verified model store; a missing model is a failure with the
/// repair command (CI runs `scripts/bootstrap` first), not a skip.
pub fn model() -> Arc<Silero> {
    let store = vr_core::ModelStore::from_env().unwrap_or_else(|e| panic!("model store: {e}"));
    Arc::new(Silero::from_store(&store).unwrap_or_else(|e| panic!("{e}")))
}

/// The corpus directory, or `None` when it is absent (a failure under CI: `vr_core::prereq`).
pub fn corpus() -> Option<PathBuf> {
    vr_core::prereq::corpus()
}

/// A corpus utterance as f32 in [-1, 1); the corpus is 16 kHz mono 16-bit PCM.
pub fn read_wav(corpus: &std::path::Path, id: &str) -> Vec<f32> {
    let path = corpus.join("wav").join(format!("{id}.wav"));
    let mut r = hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = r.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, 16_000, 16),
        "{}",
        path.display()
    );
    r.samples::<i16>()
        .map(|s| f32::from(s.unwrap_or_else(|e| panic!("{}: {e}", path.display()))) / 32768.0)
        .collect()
}
