//! Streaming speech recognition.
//!
//! Owns: the [`StreamingRecognizer`] trait every engine implements (Whisper with LocalAgreement-2,
//! the Moonshine streaming sliding-window encoder), the model code for those engines and for
//! Silero VAD (`models/`), the log-mel front end, and checkpoint loaders (CTranslate2, safetensors).
//!
//! Must not touch: audio devices, rings, threads, async runtimes or the network. Engines are plain
//! synchronous code driven by `push(samples)`; whoever owns the audio thread decides when to call
//! it. Input is always 16 kHz mono f32 ([`vr_core::SampleRate::PIPELINE`]); resampling lives in
//! `capture`.
#![deny(unsafe_code)]

pub mod config;
pub mod ct2;
pub mod guards;
pub mod mel;
pub mod models;
pub mod moonshine;
pub mod stream;
pub mod vad;

use vr_core::{SampleIndex, SampleRate};

/// A word with its position on the input's sample clock (16 kHz), where the engine knows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Word {
    pub text: String,
    pub start: SampleIndex,
    pub end: SampleIndex,
}

/// What a recogniser reports as audio arrives. "Nothing new yet" is an empty `Vec`, never an error.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AsrEvent {
    /// The VAD decided speech began at this sample.
    SpeechStarted { at: SampleIndex },
    /// The VAD decided speech ended at this sample (after its hangover).
    SpeechEnded { at: SampleIndex },
    /// The current hypothesis for the utterance in progress. The first `stable_prefix_len` bytes of
    /// `text` are committed and will not change; the rest may still be revised.
    Partial {
        text: String,
        stable_prefix_len: usize,
    },
    /// The final text of one utterance.
    Final {
        text: String,
        start: SampleIndex,
        end: SampleIndex,
        words: Vec<Word>,
    },
}

/// One streaming engine. Samples are 16 kHz mono; the sample clock starts at 0 on creation and on
/// [`StreamingRecognizer::reset`].
pub trait StreamingRecognizer: Send {
    /// The rate `push` expects (always 16 kHz for the engines here).
    fn sample_rate(&self) -> SampleRate {
        SampleRate::PIPELINE
    }
    /// Feed the next samples (any length, including zero) and collect what became known.
    fn push(&mut self, samples: &[f32]) -> Result<Vec<AsrEvent>, AsrError>;
    /// Stop running a VAD of its own: the caller runs one over the same audio, with the same
    /// `[vad]` config, and hands its decisions to [`StreamingRecognizer::push_with_vad`], so each
    /// sample goes through Silero once. True when the recogniser had a VAD gate to give up (it
    /// then needs every speech start and end); false when it has none (push as usual).
    fn use_external_vad(&mut self) -> bool {
        false
    }
    /// [`StreamingRecognizer::push`] for a recogniser that gave its VAD up: `vad` holds the
    /// decisions the caller's VAD made while taking exactly these samples (empty when it made
    /// none), handled as its own VAD's would have been.
    fn push_with_vad(
        &mut self,
        samples: &[f32],
        vad: &[vad::VadEvent],
    ) -> Result<Vec<AsrEvent>, AsrError> {
        let _ = vad;
        self.push(samples)
    }
    /// The caller's turn detector ended the turn: finalise the utterance whose speech has ended
    /// now, instead of after the recogniser's own `final_silence_ms`. Speech still going on is
    /// left alone (nothing when nothing is pending, or the engine decides ends itself).
    fn end_utterance(&mut self) -> Result<Vec<AsrEvent>, AsrError> {
        Ok(Vec::new())
    }
    /// [`StreamingRecognizer::finish`] for a recogniser that gave its VAD up: `vad` holds the
    /// caller's VAD's own end-of-stream decisions (`SileroVad::finish`).
    fn finish_with_vad(&mut self, vad: &[vad::VadEvent]) -> Result<Vec<AsrEvent>, AsrError> {
        let _ = vad;
        self.finish()
    }
    /// End of stream: finalise whatever is pending (emits a `Final` if there was speech).
    fn finish(&mut self) -> Result<Vec<AsrEvent>, AsrError>;
    /// Forget the stream and start again at sample 0; model weights stay loaded.
    fn reset(&mut self);
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AsrError {
    #[error(transparent)]
    Model(#[from] vr_core::ModelError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: String, reason: String },
    #[error("config: {0}")]
    Config(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The configured recogniser's weights, loaded once: `[asr]` chooses the engine and model, gated
/// by the Silero VAD (`[vad]`) when `asr.vad_gate` is set. [`RecognizerModels::recognizer`]
/// hands out independent streams that share the weights (Whisper's tensors, tokenizer and mel
/// filters; Silero's and Moonshine's models behind `Arc`s) and own only their state (mel frames,
/// windows, KV caches, VAD state), so a new stream costs milliseconds, not a model load.
/// Cloning shares the same weights.
#[derive(Clone)]
pub struct RecognizerModels {
    engine: Engine,
    asr: config::AsrConfig,
    vad: vad::VadConfig,
}

#[derive(Clone)]
enum Engine {
    Whisper {
        model: Box<models::whisper::WhisperModel>,
        silero: Option<std::sync::Arc<models::silero::Silero>>,
    },
    Moonshine(std::sync::Arc<models::moonshine_streaming::MoonshineStreaming>),
}

impl RecognizerModels {
    /// Loads the configured engine's weights (and Silero's, when the VAD gates Whisper).
    pub fn load(
        asr: &config::AsrConfig,
        vad: &vad::VadConfig,
        store: &vr_core::ModelStore,
    ) -> Result<Self, AsrError> {
        asr.validate()
            .map_err(|e| AsrError::Config(e.to_string()))?;
        let engine = match asr.engine.as_str() {
            "moonshine" => {
                if asr.model_dir.is_empty() {
                    return Err(AsrError::Config(
                        "asr.engine = \"moonshine\" needs asr.model_dir (a Moonshine streaming checkpoint directory)".into(),
                    ));
                }
                Engine::Moonshine(std::sync::Arc::new(
                    models::moonshine_streaming::MoonshineStreaming::load(std::path::Path::new(
                        &asr.model_dir,
                    ))?,
                ))
            }
            "whisper" => Engine::Whisper {
                model: Box::new(models::whisper::load_configured(asr, store)?),
                silero: if asr.vad_gate {
                    Some(std::sync::Arc::new(models::silero::Silero::from_store(
                        store,
                    )?))
                } else {
                    None
                },
            },
            other => {
                return Err(AsrError::Config(format!(
                    "asr.engine = {other:?} is not available; use \"whisper\" or \"moonshine\""
                )))
            }
        };
        Ok(Self {
            engine,
            asr: asr.clone(),
            vad: vad.clone(),
        })
    }

    /// A new stream at sample 0 over the shared weights.
    pub fn recognizer(&self) -> Result<Box<dyn StreamingRecognizer>, AsrError> {
        match &self.engine {
            Engine::Moonshine(m) => Ok(Box::new(moonshine::MoonshineRecognizer::new(
                m.clone(),
                moonshine::RecognizerOptions::default(),
            )?)),
            Engine::Whisper { model, silero } => {
                let mut rec = stream::WhisperStream::new((**model).clone(), self.asr.clone())?;
                if let Some(s) = silero {
                    rec = rec.with_vad(vad::SileroVad::new(s.clone(), self.vad.clone())?);
                }
                Ok(Box::new(rec))
            }
        }
    }

    /// The Silero weights the recogniser's VAD uses, if it has one (so a stand-alone VAD can
    /// share them instead of loading its own).
    pub fn silero(&self) -> Option<&std::sync::Arc<models::silero::Silero>> {
        match &self.engine {
            Engine::Whisper { silero, .. } => silero.as_ref(),
            Engine::Moonshine(_) => None,
        }
    }
}

/// The configured streaming recogniser (see [`RecognizerModels`]), loading its weights: for one
/// stream (`transcribe`, `eval`). Whoever needs several streams keeps a [`RecognizerModels`].
pub fn build_recognizer(
    asr: &config::AsrConfig,
    vad: &vad::VadConfig,
    store: &vr_core::ModelStore,
) -> Result<Box<dyn StreamingRecognizer>, AsrError> {
    RecognizerModels::load(asr, vad, store)?.recognizer()
}
