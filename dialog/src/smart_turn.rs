//! Smart Turn v3.2: is the user's turn complete, judged from the last 8 s of their audio.
//!
//! Reference: pipecat-ai 1.14.0, `pipecat/audio/turn/smart_turn/local_smart_turn_v3.py` and
//! `_whisper_features.py` (a numpy copy of Hugging Face's `WhisperFeatureExtractor`). The model is
//! a Whisper-tiny encoder with a classification head; its one input `input_features` is
//! `(1, 80, 800)` and its one output `(1, 1)` is already a probability (sigmoid inside the graph).
//!
//! Preprocessing, exactly as pipecat's:
//! 1. the last 8 s at 16 kHz (128 000 samples), zero-padded **at the start** when shorter;
//! 2. zero mean / unit variance over those 128 000 samples, padding included (in f32, variance
//!    plus 1e-7);
//! 3. Hugging Face's Whisper log-mel: frames centred by reflect padding, periodic Hann, one-sided
//!    power `|rfft|²` (not the folded spectrum the project's Whisper uses), 80 Slaney filters,
//!    log10 with a 1e-10 floor, the last of the 801 frames dropped, clamp at max − 8, `(x + 4) / 4`.
//!
//! Steps 2–3 reuse `vr_asr::mel` ([`MelFrontEnd`] with [`Spectrum::OneSided`], [`slaney_filters`],
//! [`normalize`]), so there is one log-mel implementation in the project.
//!
//! This is only the model runner: when to ask it is the turn detector's decision
//! ([`crate::turn`]), which receives the answer as an event with its time.

use std::path::Path;
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use vr_asr::mel::{normalize, slaney_filters, MelFrontEnd, Spectrum};

use crate::DialogError;

/// Model-store entry and file.
pub const MODEL: &str = "smart-turn-v3.2";
pub const MODEL_FILE: &str = "smart-turn-v3.2-cpu.onnx";
/// Audio the model sees: 8 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 8 * 16_000;
pub const N_MELS: usize = 80;
/// Frames per window: 801 centred frames, the last one dropped.
pub const N_FRAMES: usize = 800;
/// `WhisperFeatureExtractor`'s variance epsilon.
const VARIANCE_EPS: f64 = 1e-7;

/// The loaded model, shareable between sessions (`Arc<SmartTurn>`).
///
/// ONNX Runtime's `Run` is not safe concurrently on one session (`ort` makes it `&mut`), so the
/// session sits behind a mutex; one run takes tens of milliseconds, and the caller runs it off the
/// audio paths.
pub struct SmartTurn {
    session: Mutex<Session>,
    mel: MelFrontEnd,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn").finish_non_exhaustive()
    }
}

impl SmartTurn {
    /// Loads the verified model and ONNX Runtime library from the model store.
    pub fn from_store(store: &vr_core::ModelStore, threads: usize) -> Result<Self, DialogError> {
        let model = store.file(MODEL, MODEL_FILE)?;
        let lib = store.file(vr_tts::ORT_MODEL, vr_tts::ORT_LIB)?;
        Self::load(&model, &lib, threads)
    }

    /// `threads`: ONNX Runtime intra-op threads (pipecat uses 1).
    pub fn load(model: &Path, onnxruntime: &Path, threads: usize) -> Result<Self, DialogError> {
        let env = vr_tts::piper::environment(onnxruntime)?;
        let onnx = |e: ort::Error<ort::session::builder::SessionBuilder>| DialogError::Onnx {
            path: model.display().to_string(),
            reason: e.to_string(),
        };
        let session = Session::builder(&env)
            .map_err(|e| DialogError::Onnx {
                path: model.display().to_string(),
                reason: e.to_string(),
            })?
            .with_intra_threads(threads.max(1))
            .map_err(onnx)?
            .with_inter_threads(1)
            .map_err(onnx)?
            .commit_from_file(model)
            .map_err(onnx)?;
        let mel = MelFrontEnd::with_spectrum(&slaney_filters(N_MELS, 16_000), Spectrum::OneSided)?;
        Ok(Self {
            session: Mutex::new(session),
            mel,
        })
    }

    /// The model input for the end of `audio` (16 kHz mono, any length): `(80, 800)`
    /// channel-major, as pipecat computes it.
    pub fn features(&self, audio: &[f32]) -> Result<Vec<f32>, DialogError> {
        let tail = &audio[audio.len().saturating_sub(WINDOW_SAMPLES)..];
        let mut x = vec![0f32; WINDOW_SAMPLES - tail.len()];
        x.extend_from_slice(tail);
        // Statistics in f64 (numpy sums f32 pairwise; both are within float rounding of the
        // exact value), applied in f32 as pipecat does.
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
        let var = x
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / n;
        let (mean, scale) = (mean as f32, (var + VARIANCE_EPS).sqrt() as f32);
        for v in &mut x {
            *v = (*v - mean) / scale;
        }
        let mut raw = self.mel.log_mel_centered(&x)?;
        raw.truncate(N_FRAMES * N_MELS);
        let (features, frames) = normalize(&raw, N_MELS);
        debug_assert_eq!(frames, N_FRAMES);
        Ok(features)
    }

    /// Probability that the turn is complete after the end of `audio`.
    pub fn probability(&self, audio: &[f32]) -> Result<f32, DialogError> {
        let features = self.features(audio)?;
        self.probability_of_features(features)
    }

    /// Runs the model on features from [`SmartTurn::features`].
    pub fn probability_of_features(&self, features: Vec<f32>) -> Result<f32, DialogError> {
        let onnx = |e: ort::Error| DialogError::Onnx {
            path: MODEL_FILE.into(),
            reason: e.to_string(),
        };
        if features.len() != N_MELS * N_FRAMES {
            return Err(DialogError::BadRequest {
                reason: format!(
                    "Smart Turn features: {} values, expected {}",
                    features.len(),
                    N_MELS * N_FRAMES
                ),
            });
        }
        let input = Tensor::from_array(([1usize, N_MELS, N_FRAMES], features)).map_err(onnx)?;
        // A poisoned lock only means another run panicked; the session itself is still usable.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs!["input_features" => input])
            .map_err(onnx)?;
        let (_, p) = outputs[0].try_extract_tensor::<f32>().map_err(onnx)?;
        p.first().copied().ok_or_else(|| DialogError::Onnx {
            path: MODEL_FILE.into(),
            reason: "empty output".into(),
        })
    }
}
