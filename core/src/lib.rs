//! The shared vocabulary of VoiceRelay.
//!
//! Owns: unit-carrying types for audio time ([`SampleRate`], [`SampleIndex`]), the config
//! validation error every stage reports with ([`ConfigError`]), and the verified model store
//! ([`ModelStore`]) that resolves model names to files in the local cache and refuses files whose
//! sha256 differs from the manifest.
//!
//! Must not touch: audio devices, threads, async runtimes, networking or any model code. Every
//! other crate depends on this one, so it stays small and free of heavy dependencies.
#![forbid(unsafe_code)]

pub mod config;
pub mod models;
pub mod paths;
pub mod prereq;
pub mod rng;
pub mod units;

pub use config::{check_range, ConfigError};
pub use models::{FileStatus, ModelEntry, ModelError, ModelFile, ModelStore};
pub use units::{SampleIndex, SampleRate};
