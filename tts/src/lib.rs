//! Streaming text-to-speech.
//!
//! Owns: the [`Synthesizer`] trait (text in incrementally, audio chunks out, `cancel()`), the Piper
//! VITS backend on ONNX Runtime with espeak-ng phonemes ([`piper`]), the flite/espeak fallback
//! voices ([`flite`], [`espeak`]), and the clause chunker ([`chunker`]) with number/unit
//! verbalisation ([`verbalize`]).
//!
//! Must not touch: audio devices, rings or the network: it hands out audio chunks with their
//! sample rate and the caller decides where they go. No async runtime: the API is plain
//! synchronous calls, usable from a tokio task through `spawn_blocking` or from any thread.
//!
//! # Design
//! [`StreamingSynthesizer`] owns one worker thread that owns the voice. `push_text` sends text
//! fragments (LLM tokens) to it; the worker cuts them into clauses with the [`ClauseChunker`],
//! verbalises each clause, synthesises it and cuts the audio into chunks of `chunk_ms`, which wait
//! in a queue for [`Synthesizer::recv_timeout`]. The queue holds at most [`MAX_QUEUED_AUDIO`] of
//! speech: past that the worker waits for the consumer, so a stalled consumer costs no memory
//! and loses nothing. `cancel()` bumps an epoch counter *under the
//! queue lock* and clears the queue; the worker checks the epoch under that same lock before each
//! chunk goes into the queue, so once `cancel()` returns no chunk of the cancelled speech can ever
//! be received. An in-flight ONNX Runtime run is also terminated so the worker is free at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use voicerelay_tts::{StreamingSynthesizer, Synthesizer, TtsConfig, TtsEvent};
//! let store = vr_core::ModelStore::from_env()?;
//! let tts = StreamingSynthesizer::from_config(&TtsConfig::default(), &store)?;
//! for token in ["Hello", " there", ".", " How", " are", " you", "?"] {
//!     tts.push_text(token)?;
//! }
//! tts.finish()?;
//! while let Some(ev) = tts.recv_timeout(Duration::from_secs(10))? {
//!     match ev {
//!         TtsEvent::Audio(chunk) => { /* play chunk.samples at chunk.rate */ }
//!         TtsEvent::Done { .. } => break,
//!         TtsEvent::Failed { reason, .. } => eprintln!("{reason}"),
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use vr_core::clause as chunker;
pub mod config;
pub mod espeak;
pub mod flite;
pub mod piper;
mod stream;
pub mod verbalize;
mod voices;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use vr_core::{SampleIndex, SampleRate};

pub use config::TtsConfig;
pub use stream::{StreamingSynthesizer, MAX_QUEUED_AUDIO};
pub use voices::{
    open_voice, EspeakVoice, FliteEngine, OpenedVoice, VoiceBank, ORT_LIB, ORT_MODEL,
};
pub use vr_core::clause::ClauseChunker;
pub use vr_core::VoiceKind;

/// Held around every call into flite or espeak-ng: both draw noise from libc `rand()`, and
/// flite's output is only reproducible if nobody else advances that generator mid-synthesis.
pub(crate) static LIBC_RAND: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Aborts a voice's in-flight synthesis from another thread (best effort).
pub type Interrupter = Arc<dyn Fn() + Send + Sync>;

/// One voice: turns one clause of already-verbalised text into mono samples. Synchronous and
/// owned by one thread at a time.
pub trait VoiceEngine: Send {
    fn kind(&self) -> VoiceKind;
    fn sample_rate(&self) -> SampleRate;
    /// Mono samples in [-1, 1] at [`VoiceEngine::sample_rate`]; empty text gives no samples.
    fn synthesize(&mut self, text: &str) -> Result<Vec<f32>, TtsError>;
    /// A handle that makes a running `synthesize` return early with [`TtsError::Interrupted`].
    fn interrupter(&self) -> Option<Interrupter> {
        None
    }
}

/// A piece of synthesised speech.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    /// Mono samples in [-1, 1].
    pub samples: Vec<f32>,
    pub rate: SampleRate,
    /// Which utterance (one answer, ended by `finish` or `cancel`) this belongs to.
    pub utterance: u64,
    /// Position of the first sample within its utterance.
    pub start: SampleIndex,
    /// The clause this audio speaks, as chunked (before verbalisation).
    pub clause: Arc<str>,
}

impl AudioChunk {
    pub fn duration(&self) -> Duration {
        self.rate.duration_of(self.samples.len() as u64)
    }
}

/// What a synthesizer hands out.
#[derive(Debug, Clone, PartialEq)]
pub enum TtsEvent {
    Audio(AudioChunk),
    /// Every chunk of `utterance` has been handed out (after `finish`).
    Done {
        utterance: u64,
    },
    /// One clause could not be synthesised; the rest of the utterance continues.
    Failed {
        utterance: u64,
        clause: String,
        reason: String,
    },
}

/// Streaming speech synthesis: text in as it is generated, audio out as soon as a clause is
/// ready. All methods take `&self` so one thread can push tokens while another drains audio and a
/// third cancels on barge-in.
pub trait Synthesizer: Send + Sync {
    fn voice(&self) -> VoiceKind;
    fn sample_rate(&self) -> SampleRate;
    /// Append a fragment of the current utterance (any size: a token, a word, a paragraph).
    fn push_text(&self, fragment: &str) -> Result<(), TtsError>;
    /// The current utterance is complete: synthesise what is left, then emit [`TtsEvent::Done`].
    /// Text pushed afterwards starts a new utterance.
    fn finish(&self) -> Result<(), TtsError>;
    /// Synthesise `clause` as one utterance of its own, exactly as given: for a caller that has
    /// already cut its text into clauses (the dialog), so the text is not cut a second time by
    /// this synthesizer's chunker. Text pushed before and not finished is spoken first, as the
    /// start of the same utterance. Emits the audio, then [`TtsEvent::Done`].
    fn speak_clause(&self, clause: &str) -> Result<(), TtsError>;
    /// The next event, waiting up to `timeout`; `Ok(None)` when nothing arrived in time.
    fn recv_timeout(&self, timeout: Duration) -> Result<Option<TtsEvent>, TtsError>;
    /// The next event if one is ready.
    fn try_recv(&self) -> Option<TtsEvent>;
    /// Stop speaking now: pending text and queued audio are dropped, and no audio of the
    /// cancelled utterance is received after this returns. Text pushed afterwards is a new
    /// utterance.
    fn cancel(&self);
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TtsError {
    #[error(transparent)]
    Model(#[from] vr_core::ModelError),
    #[error(transparent)]
    Config(#[from] vr_core::ConfigError),
    #[error("ONNX Runtime library {} cannot be loaded: {reason}", path.display())]
    OnnxRuntimeMissing { path: PathBuf, reason: String },
    #[error("ONNX Runtime: {0}")]
    Onnx(String),
    #[error("voice config {}: {reason}", path.display())]
    VoiceConfig { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Io { path: PathBuf, reason: String },
    #[error("espeak-ng: {0}")]
    Espeak(String),
    #[error("flite: {0}")]
    Flite(String),
    /// The voice's model could not be loaded (when it was first needed); `reason` says why.
    #[error("{reason}")]
    VoiceUnavailable { voice: VoiceKind, reason: String },
    #[error("synthesis was interrupted")]
    Interrupted,
    #[error("the synthesis worker has stopped")]
    WorkerGone,
}
