//! Voice selection with fallback, and the two fallback engines.

use vr_core::{ModelStore, SampleRate};

use crate::flite::{self, FliteVoice};
use crate::piper::{PiperPaths, PiperVoice};
use crate::{espeak, TtsConfig, TtsError, VoiceEngine, VoiceKind};

pub const PIPER_MODEL: &str = "piper-joe";
pub const PIPER_ONNX: &str = "en_US-joe-medium.onnx";
pub const PIPER_JSON: &str = "en_US-joe-medium.onnx.json";
pub const ORT_MODEL: &str = "onnxruntime";
pub const ORT_LIB: &str = "libonnxruntime.so";

/// flite's `cmu_us_slt`: deterministic, 16 kHz.
pub struct FliteEngine {
    voice: FliteVoice,
    rate: SampleRate,
}

impl FliteEngine {
    pub fn new(voice: FliteVoice) -> Result<Self, TtsError> {
        // Probe once so the rate is known and a broken install fails at start, not mid-answer.
        let (_, rate) = flite::synthesize("a", voice)?;
        Ok(Self { voice, rate })
    }
}

impl VoiceEngine for FliteEngine {
    fn kind(&self) -> VoiceKind {
        VoiceKind::Flite
    }
    fn sample_rate(&self) -> SampleRate {
        self.rate
    }
    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        let (s, rate) = flite::synthesize(text, self.voice)?;
        if rate != self.rate {
            return Err(TtsError::Flite(format!(
                "rate changed from {} to {rate}",
                self.rate
            )));
        }
        Ok(s)
    }
}

/// espeak-ng's own formant voice.
pub struct EspeakVoice {
    voice: String,
    wpm: u32,
    rate: SampleRate,
}

impl EspeakVoice {
    pub fn new(voice: &str, speed: f32) -> Result<Self, TtsError> {
        let wpm = (175.0 * speed).round() as u32;
        let (_, rate) = espeak::synthesize("a", voice, wpm)?;
        Ok(Self {
            voice: voice.to_string(),
            wpm,
            rate,
        })
    }
}

impl VoiceEngine for EspeakVoice {
    fn kind(&self) -> VoiceKind {
        VoiceKind::Espeak
    }
    fn sample_rate(&self) -> SampleRate {
        self.rate
    }
    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError> {
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        Ok(espeak::synthesize(text, &self.voice, self.wpm)?.0)
    }
}

/// The voice that will speak, and why it is not the configured one if it is not.
pub struct OpenedVoice {
    pub engine: Box<dyn VoiceEngine>,
    /// Set when the configured voice could not be loaded and a fallback is speaking instead.
    pub fallback_reason: Option<String>,
}

fn open_kind(
    kind: VoiceKind,
    cfg: &TtsConfig,
    store: &ModelStore,
) -> Result<Box<dyn VoiceEngine>, TtsError> {
    Ok(match kind {
        VoiceKind::Piper => {
            let dir = store.dir(PIPER_MODEL)?;
            let paths = PiperPaths {
                model: dir.join(PIPER_ONNX),
                config: dir.join(PIPER_JSON),
                onnxruntime: store.file(ORT_MODEL, ORT_LIB)?,
            };
            Box::new(PiperVoice::load(
                &paths,
                cfg.threads,
                cfg.speed,
                cfg.sentence_silence_ms,
            )?)
        }
        VoiceKind::Flite => Box::new(FliteEngine::new(FliteVoice::Slt)?),
        VoiceKind::Espeak => Box::new(EspeakVoice::new("en-us", cfg.speed)?),
    })
}

/// Opens the configured voice; if it cannot be loaded, the configured fallback (then the other
/// built-in voice) speaks instead, with a warning naming the voice in use and the reason.
pub fn open_voice(cfg: &TtsConfig, store: &ModelStore) -> Result<OpenedVoice, TtsError> {
    cfg.validate()?;
    let wanted = cfg.voice_kind();
    let first_err = match open_kind(wanted, cfg, store) {
        Ok(engine) => {
            tracing::info!(voice = %wanted, rate = %engine.sample_rate(), "TTS voice in use: {wanted}");
            return Ok(OpenedVoice {
                engine,
                fallback_reason: None,
            });
        }
        Err(e) => e,
    };
    let mut candidates = vec![cfg.fallback_kind(), VoiceKind::Flite, VoiceKind::Espeak];
    candidates.dedup();
    let mut last_err = first_err.to_string();
    for kind in candidates.into_iter().filter(|k| *k != wanted) {
        match open_kind(kind, cfg, store) {
            Ok(engine) => {
                let reason = format!("{wanted} voice unavailable: {first_err}");
                tracing::warn!(
                    voice = %kind,
                    wanted = %wanted,
                    "TTS fallback voice in use: {kind} ({reason})"
                );
                return Ok(OpenedVoice {
                    engine,
                    fallback_reason: Some(reason),
                });
            }
            Err(e) => last_err = e.to_string(),
        }
    }
    tracing::error!(error = %last_err, "no TTS voice could be loaded");
    Err(first_err)
}
