//! The shared vocabulary of VoiceRelay.
//!
//! Owns: unit-carrying types for audio time ([`SampleRate`], [`SampleIndex`]), the config
//! validation error every stage reports with ([`ConfigError`]), and the verified model store
//! ([`ModelStore`]) that resolves model names to files in the local cache and refuses files whose
//! sha256 differs from the manifest; and the text vocabulary two stages must agree on: where a
//! clause ends ([`clause::ClauseChunker`], the dialog cuts answers and the synthesizer speaks
//! them) and which voice speaks ([`VoiceKind`], on the wire and in the synthesizer).
//!
//! Must not touch: audio devices, threads, async runtimes, networking or any model code. Every
//! other crate depends on this one, so it stays small and free of heavy dependencies.
#![forbid(unsafe_code)]

pub mod clause;
pub mod config;
pub mod fuzz;
pub mod models;
pub mod paths;
pub mod prereq;
pub mod rng;
pub mod units;
pub mod voice;

pub use config::{check_range, ConfigError};
pub use models::{FileStatus, ModelEntry, ModelError, ModelFile, ModelStore};
pub use units::{SampleIndex, SampleRate};
pub use voice::VoiceKind;

/// Runs a third-party parser whose handling of malformed input may panic, turning the panic into
/// an error message: `tokenizers` 0.21 unwraps inside its JSON deserialiser (found by
/// `asr/tests/fuzz.rs`), and a bad file must be a clear error, never a crash of the server.
///
/// # Errors
/// The panic's message.
pub fn catch_parser_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
            .unwrap_or_else(|| "the parser panicked".to_string())
    })
}
