//! Pipeline: runs the conversation. [`vr_dialog::core::ConversationCore`] decides what happens
//! (turns, answers, barge-in, the dual path, latency) without threads or clocks; this crate owns
//! the threads, rings and channels that feed it events and carry out its actions.
//!
//! Owns: [`Assistant`] (the weights, loaded once: recogniser, VAD, voices, LLM engines, Smart
//! Turn) handing out one [`Conversation`] per session; the driver around the core (the input
//! pump: ring → 16 kHz → VAD and Smart Turn; the recogniser thread fed through a bounded ring;
//! the LLM and TTS workers; output pacing) and the [`AudioOutput`]s a conversation plays into
//! ([`WavOutput`] here; the speaker in the binary, the WebRTC track in `transport`).
//!
//! Must not touch: devices or the network. `listen`, `serve` (through `transport`) and
//! `eval dialog` all run conversations through this one crate.
//!
//! Threads: see [`driver`](crate::driver) — one loop per conversation on the caller's thread,
//! blocked on one bounded channel; every worker posts into it; every queue that can fill is
//! bounded and counts what it drops.
#![deny(unsafe_code)]

mod assistant;
mod driver;
mod metrics;
pub mod motion;
pub mod vision;
mod wav_output;

pub use assistant::{
    onnx_environment, Assistant, AssistantParts, AudioOutput, Conversation, ConversationHandle,
    DualParts, RecognizerFactory, SynthesizerFactory, VadFactory, WavOutput,
};
pub use driver::ASR_MAX_PUSH;
pub use metrics::describe_metrics;
pub use vision::{FrameRateRequest, FrameRateSink, SceneSampler, VisionConfig};

/// Everything that can stop a conversation or keep one from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    #[error(transparent)]
    Dialog(#[from] vr_dialog::DialogError),
    #[error(transparent)]
    Model(#[from] vr_core::ModelError),
    #[error(transparent)]
    Config(#[from] vr_core::ConfigError),
    #[error("speech recognition: {0}")]
    Asr(#[from] vr_asr::AsrError),
    #[error("speech synthesis: {0}")]
    Tts(#[from] vr_tts::TtsError),
    #[error("audio: {0}")]
    Audio(#[from] vr_audio::AudioError),
    #[error("audio output: {reason}")]
    Output { reason: String },
    #[error("{0}")]
    Runtime(String),
}
