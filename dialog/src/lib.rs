//! Dialog: turn detection, LLM engines, memory and the conversation as a sans-IO core.
//!
//! Owns: deciding when the user's turn ends ([`turn`]; the end-of-turn model [`smart_turn`],
//! Smart Turn v3.2 on ONNX Runtime), producing the assistant's answer ([`llm`]: the engine trait,
//! the local GGUF engines on llama.cpp and on candle with KV-cache reuse and speculative prefill,
//! the OpenAI-compatible streaming HTTP client; [`models`]: one file per candle architecture; the
//! dual path's [`verifier`]), the conversation memory bounded by tokens ([`memory`]), the
//! `[dialog]`/`[llm]` config ([`config`]), the conversation itself as a sans-IO state machine on
//! virtual time ([`core`]: events and `now` in, actions out; no threads, clocks or channels) and
//! the event schema it reports in ([`events`]).
//!
//! Must not touch: audio, devices or the synthesizer; the `pipeline` crate runs the core with
//! threads around it and wires audio in and out. The only network access is the
//! OpenAI-compatible client talking to a configured LLM server.
//!
//! Threads: a local engine runs on one worker thread of its own (model compute never blocks an
//! async runtime; llama.cpp adds `llm.threads - 1` compute threads per forward pass, candle uses
//! rayon's pool) at a lower OS priority ([`priority`]); the HTTP engine runs on the caller's
//! tokio runtime or a one-thread runtime it creates. Turn detection is a pure state machine on
//! the sample clock.
#![deny(unsafe_code)]

pub mod config;
pub mod core;
pub mod events;
pub mod llm;
pub mod memory;
pub mod models;
pub mod priority;
pub mod smart_turn;
pub mod turn;
pub mod verifier;

pub use config::{DialogConfig, LlmBackend, LlmConfig, LocalEngineKind, TurnMode, TurnSettings};
pub use events::{
    ConversationEvent, ConversationSummary, EventSink, LoopState, SharedCounter, TurnInput,
    TurnLatency, BUSY_SENTENCE, UNREACHABLE_SENTENCE,
};
pub use llm::{
    CancelToken, ChatMessage, FinishReason, Finished, GenerateRequest, Generation, LlmEngine,
    LlmEvent, Role, Sampling, Token, TokenFeatures,
};

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialogError {
    #[error(transparent)]
    Model(#[from] vr_core::ModelError),
    #[error(transparent)]
    Config(#[from] vr_core::ConfigError),
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("GGUF {path}: {reason}")]
    Gguf { path: String, reason: String },
    #[error("llama.cpp: {0}")]
    LlamaCpp(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("unsupported model architecture `{arch}` (supported: qwen2, gemma3)")]
    UnsupportedArchitecture { arch: String },
    #[error("unknown chat template family (neither ChatML nor Gemma turns); template starts: {excerpt:?}")]
    UnknownChatTemplate { excerpt: String },
    #[error("the model has no tokenizer.chat_template and its vocabulary defines no known chat control tokens")]
    NoChatTemplate,
    #[error("prompt needs {needed} positions but the context holds {capacity}; lower [dialog] max_memory_tokens")]
    ContextOverflow { needed: usize, capacity: usize },
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    #[error(
        "the language model is busy: {queued} requests are already waiting; try again shortly"
    )]
    Busy { queued: usize },
    #[error("the LLM engine's worker has stopped")]
    EngineStopped,
    #[error("cannot connect to the language model at {url} after {attempts} attempt(s): {reason}")]
    Connect {
        url: String,
        attempts: u32,
        reason: String,
    },
    #[error("language model at {url}: no {phase} within {after:?}")]
    Timeout {
        url: String,
        phase: &'static str,
        after: Duration,
    },
    #[error("language model at {url} answered HTTP {status}: {message}")]
    HttpStatus {
        url: String,
        status: u16,
        message: String,
    },
    #[error("language model stream from {url} is malformed: {reason}")]
    Protocol { url: String, reason: String },
    #[error("async runtime: {0}")]
    Runtime(String),
    #[error("speech recognition: {0}")]
    Asr(#[from] vr_asr::AsrError),
    #[error("ONNX model {path}: {reason}")]
    Onnx { path: String, reason: String },
    #[error("dual path verifier: {0}")]
    Verifier(#[from] verifier::VerifierError),
}

impl DialogError {
    /// True when the language model could not be reached at all (the loop then says so and keeps
    /// listening, rather than treating it as a bad answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            DialogError::Connect { .. } | DialogError::Timeout { .. } | DialogError::EngineStopped
        )
    }
}
