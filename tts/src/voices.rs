//! Voice selection with fallback, and the two fallback engines.

use vr_core::{ModelStore, SampleRate};

use crate::flite::{self, FliteVoice};
use std::sync::Arc;

use crate::piper::{PiperModel, PiperPaths, PiperVoice};
use crate::{espeak, StreamingSynthesizer, TtsConfig, TtsError, VoiceEngine, VoiceKind};

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

/// The voices of a `[tts]` config, loaded once for a whole server: Piper's model (the expensive
/// part: an ONNX Runtime session of 60 MB) is loaded at most once and shared by every voice
/// opened from the bank; flite and espeak-ng voices cost a millisecond to open. Each session
/// opens its own engine (its own speed and interrupt handle) with [`VoiceBank::open`].
pub struct VoiceBank {
    cfg: TtsConfig,
    store: ModelStore,
    /// Piper's model, or why it cannot be loaded; loaded on first use.
    piper: std::sync::OnceLock<Result<Arc<PiperModel>, String>>,
}

impl VoiceBank {
    /// Validates `cfg` and loads the configured voice's model now (Piper when `tts.voice` is
    /// `piper`), so the first session does not pay for it.
    pub fn load(cfg: &TtsConfig, store: &ModelStore) -> Result<Self, TtsError> {
        cfg.validate()?;
        let bank = Self {
            cfg: cfg.clone(),
            store: store.clone(),
            piper: std::sync::OnceLock::new(),
        };
        if cfg.voice_kind() == VoiceKind::Piper {
            // A failure is remembered and handled by the fallback in `open_configured`.
            let _ = bank.piper();
        }
        Ok(bank)
    }

    pub fn config(&self) -> &TtsConfig {
        &self.cfg
    }

    fn piper(&self) -> Result<Arc<PiperModel>, TtsError> {
        let r = self.piper.get_or_init(|| {
            let load = || -> Result<PiperModel, TtsError> {
                let dir = self.store.dir(PIPER_MODEL)?;
                let paths = PiperPaths {
                    model: dir.join(PIPER_ONNX),
                    config: dir.join(PIPER_JSON),
                    onnxruntime: self.store.file(ORT_MODEL, ORT_LIB)?,
                };
                PiperModel::load(&paths, self.cfg.threads)
            };
            load().map(Arc::new).map_err(|e| e.to_string())
        });
        match r {
            Ok(m) => Ok(Arc::clone(m)),
            Err(reason) => Err(TtsError::VoiceUnavailable {
                voice: VoiceKind::Piper,
                reason: reason.clone(),
            }),
        }
    }

    /// A new engine of voice `kind` (Piper's shares the bank's model).
    pub fn open(&self, kind: VoiceKind) -> Result<Box<dyn VoiceEngine>, TtsError> {
        let cfg = &self.cfg;
        Ok(match kind {
            VoiceKind::Piper => Box::new(PiperVoice::new(
                self.piper()?,
                cfg.speed,
                cfg.sentence_silence_ms,
            )?),
            VoiceKind::Flite => Box::new(FliteEngine::new(FliteVoice::Slt)?),
            VoiceKind::Espeak => Box::new(EspeakVoice::new("en-us", cfg.speed)?),
        })
    }

    /// The configured voice; if it cannot be opened, the configured fallback (then the other
    /// built-in voice) speaks instead, with a warning naming the voice in use and the reason.
    pub fn open_configured(&self) -> Result<OpenedVoice, TtsError> {
        let wanted = self.cfg.voice_kind();
        let first_err = match self.open(wanted) {
            Ok(engine) => {
                tracing::info!(voice = %wanted, rate = %engine.sample_rate(), "TTS voice in use: {wanted}");
                return Ok(OpenedVoice {
                    engine,
                    fallback_reason: None,
                });
            }
            Err(e) => e,
        };
        let mut candidates = vec![
            self.cfg.fallback_kind(),
            VoiceKind::Flite,
            VoiceKind::Espeak,
        ];
        candidates.dedup();
        let mut last_err = first_err.to_string();
        for kind in candidates.into_iter().filter(|k| *k != wanted) {
            match self.open(kind) {
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

    /// A synthesizer speaking `kind`, or the configured voice (with its fallback) for `None`.
    pub fn synthesizer(&self, kind: Option<VoiceKind>) -> Result<StreamingSynthesizer, TtsError> {
        match kind {
            None => {
                let opened = self.open_configured()?;
                let mut s = StreamingSynthesizer::new(opened.engine, &self.cfg)?;
                s.set_fallback_reason(opened.fallback_reason);
                Ok(s)
            }
            Some(k) => StreamingSynthesizer::new(self.open(k)?, &self.cfg),
        }
    }
}

/// Opens the configured voice; if it cannot be loaded, the configured fallback (then the other
/// built-in voice) speaks instead, with a warning naming the voice in use and the reason.
pub fn open_voice(cfg: &TtsConfig, store: &ModelStore) -> Result<OpenedVoice, TtsError> {
    VoiceBank::load(cfg, store)?.open_configured()
}
