//! Acoustic echo cancellation for the local speaker + microphone path (`voicerelay listen`):
//! the microphone hears the assistant's own answer, and without this stage the recogniser
//! transcribes it and the turn detector takes it for a barge-in.
//!
//! # Design
//!
//! - [`speex`]: a thin safe wrapper over SpeexDSP's MDF echo canceller plus its preprocessor's
//!   residual echo suppression (system `libspeexdsp`, linked through pkg-config).
//! - [`delay`]: GCC-PHAT delay tracking between the far end (what the speaker played, on the
//!   microphone's sample clock) and the near end, re-estimated every `interval`, moved only after
//!   `confirmations` agreeing estimates.
//! - [`EchoCanceller`]: the stage. Sans-IO and single-threaded: the caller pushes far audio with
//!   the clock position it became audible at and near audio with its capture position, and gets
//!   cleaned near audio back in whole frames. No threads, clocks or channels here; `listen`
//!   runs it on its own thread between the mic ring and the conversation's input ring.
//!
//! ```
//! use voicerelay_aec::{AecConfig, EchoCanceller, SampleIndex, SampleRate};
//! let mut aec = EchoCanceller::new(&AecConfig::default(), SampleRate(16_000)).unwrap();
//! let (far, mic) = (vec![0.0f32; 1600], vec![0.0f32; 1600]);
//! let mut cleaned = Vec::new();
//! aec.push_far(&far, SampleIndex(0));
//! let events = aec.process(&mic, SampleIndex(0), &mut cleaned).unwrap();
//! assert_eq!(cleaned.len(), 1600);
//! assert!(events.is_empty());
//! ```
#![deny(clippy::disallowed_methods)]

pub mod canceller;
pub mod config;
pub mod delay;
pub mod speex;

pub use canceller::{clock_offset, AecEvent, AecStats, ClockPoint, EchoCanceller};
pub use config::{AecConfig, DelayConfig};
pub use vr_core::{SampleIndex, SampleRate};

/// Errors of the echo canceller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AecError {
    #[error("{what} returned no state")]
    Init { what: &'static str },
    #[error("SpeexDSP rejected {request}")]
    Control { request: &'static str },
    #[error("invalid setting: {what} (got {value})")]
    InvalidSetting { what: &'static str, value: f64 },
    #[error("frame of {actual} samples where {expected} are needed")]
    FrameSize { expected: usize, actual: usize },
    #[error(transparent)]
    Config(#[from] vr_core::ConfigError),
}
