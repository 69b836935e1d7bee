//! Evals: the latency/accuracy harness.
//!
//! Owns: corpus manifests, text normalisation and WER/CER, latency percentiles, JSON result files
//! and reports, and runners that drive the real pipeline stages over a corpus split.
//!
//! Must not touch: pipeline internals; it drives the same public streaming APIs users do.

pub mod corpus;
pub mod normalize;
pub mod streaming;
pub mod wer;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    #[error("i/o on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manifest {path} line {line}: {reason}")]
    Manifest {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("audio {path}: {reason}")]
    Audio { path: String, reason: String },
}
