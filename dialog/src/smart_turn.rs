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
//! 3. Hugging Face's Whisper log-mel in f64: frames centred by reflect padding, periodic Hann,
//!    one-sided power `|rfft|²` (not the folded spectrum the project's Whisper uses), 80 Slaney
//!    filters, log10 with a 1e-10 floor, the last of the 801 frames dropped, clamp at max − 8,
//!    `(x + 4) / 4`, rounded to f32 at the end.
//!
//! Step 3 is `vr_asr::mel`'s [`HfMelFrontEnd`] and [`normalize_f64`] (one log-mel module in the
//! project). Precision matters more than usual: the model is 8-bit quantised with dynamic
//! activation quantisation, and 1e-6 of noise on the features moves some clips' probability by
//! 0.1 (librivox_ss01_0930: 0.07–0.36), so step 2 reproduces numpy's float32 arithmetic (pairwise
//! sums) and step 3 runs in f64 as numpy does; the features then match pipecat's exactly on the
//! parity clips.
//!
//! This is only the model runner: when to ask it is the turn detector's decision
//! ([`crate::turn`]), which receives the answer as an event with its time.

use std::path::Path;
use std::sync::Mutex;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use vr_asr::mel::{normalize_f64, HfMelFrontEnd};

use crate::DialogError;

/// Model-store entry and file.
pub const MODEL: &str = "smart-turn-v3.2";
pub const MODEL_FILE: &str = "smart-turn-v3.2-cpu.onnx";
/// Audio the model sees: 8 s at 16 kHz.
pub const WINDOW_SAMPLES: usize = 8 * 16_000;
pub const N_MELS: usize = 80;
/// Frames per window: 801 centred frames, the last one dropped.
pub const N_FRAMES: usize = 800;
/// `WhisperFeatureExtractor`'s variance epsilon (added in float32, as numpy does).
const VARIANCE_EPS: f32 = 1e-7;

/// numpy's float32 `add.reduce` (pairwise summation: blocks of up to 128 summed by 8
/// accumulators, halves above that), so mean and variance round exactly as pipecat's.
fn numpy_sum_f32(a: &[f32]) -> f32 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |s, &v| s + v)
    } else if n <= 128 {
        let mut r = [0f32; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for block in a[8..whole].chunks_exact(8) {
            for (acc, &v) in r.iter_mut().zip(block) {
                *acc += v;
            }
        }
        let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[whole..].iter().fold(res, |s, &v| s + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum_f32(&a[..half]) + numpy_sum_f32(&a[half..])
    }
}

/// Maps any ONNX Runtime error (the builder's and the session's differ in type) to ours.
fn onnx_error<E: std::fmt::Display>(model: &Path) -> impl Fn(E) -> DialogError + '_ {
    move |e| DialogError::Onnx {
        path: model.display().to_string(),
        reason: e.to_string(),
    }
}

/// The loaded model, shareable between sessions (`Arc<SmartTurn>`).
///
/// ONNX Runtime's `Run` is not safe concurrently on one session (`ort` makes it `&mut`), so the
/// session sits behind a mutex; one run takes tens of milliseconds, and the caller runs it off the
/// audio paths.
pub struct SmartTurn {
    session: Mutex<Session>,
    mel: HfMelFrontEnd,
}

impl std::fmt::Debug for SmartTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartTurn").finish_non_exhaustive()
    }
}

impl SmartTurn {
    /// Loads the verified model from the model store. `env`: the process's one ONNX Runtime
    /// environment (`ort` allows one per process and the synthesizer's Piper voice shares it, so
    /// whoever wires the stages together opens it: `vr_tts::piper::environment`).
    pub fn from_store(
        store: &vr_core::ModelStore,
        env: &Environment,
        threads: usize,
    ) -> Result<Self, DialogError> {
        let model = store.file(MODEL, MODEL_FILE)?;
        Self::load(&model, env, threads)
    }

    /// `threads`: ONNX Runtime intra-op threads (pipecat uses 1).
    pub fn load(model: &Path, env: &Environment, threads: usize) -> Result<Self, DialogError> {
        let session = Session::builder(env)
            .map_err(onnx_error(model))?
            .with_intra_threads(threads.max(1))
            .map_err(onnx_error(model))?
            .with_inter_threads(1)
            .map_err(onnx_error(model))?
            .commit_from_file(model)
            .map_err(onnx_error(model))?;
        let mel = HfMelFrontEnd::new(N_MELS, 16_000)?;
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
        // Zero mean, unit variance exactly as numpy computes it on the float32 buffer.
        let n = x.len() as f64;
        let mean = (f64::from(numpy_sum_f32(&x)) / n) as f32;
        let sq: Vec<f32> = x.iter().map(|&v| (v - mean) * (v - mean)).collect();
        let var = (f64::from(numpy_sum_f32(&sq)) / n) as f32;
        let scale = (var + VARIANCE_EPS).sqrt();
        for v in &mut x {
            *v = (*v - mean) / scale;
        }
        let mut raw = self.mel.log_mel_centered(&x)?;
        raw.truncate(N_FRAMES * N_MELS);
        let (features, frames) = normalize_f64(&raw, N_MELS);
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
