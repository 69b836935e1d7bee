//! Evals: the latency/accuracy harness.
//!
//! Owns: corpus manifests, text normalisation and WER/CER, latency percentiles, JSON result files
//! and reports, and runners that drive the real pipeline stages over a corpus split.
//!
//! Must not touch: pipeline internals; it drives the same public streaming APIs users do.

pub mod aec_eval;
pub mod asr_eval;
pub mod corpus;
pub mod dialog_eval;
pub mod dual_eval;
pub mod normalize;
pub mod plots;
pub mod recap_measure;
pub mod report;
pub mod resources;
pub mod schema;
pub mod streaming;
pub mod transport_eval;
pub mod turn_eval;
pub mod verifier_data;
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
    #[error("recogniser: {0}")]
    Asr(#[source] vr_asr::AsrError),
    #[error("{path}: not a valid result file ({reason})")]
    Json { path: String, reason: String },
    #[error("result schema_version {found} is not supported (this build reads version {expected}); re-run the eval or the peer script")]
    Schema { found: u32, expected: u32 },
    #[error("utterance {id:?} is not in the corpus manifest (result file from another corpus?)")]
    UnknownUtterance { id: String },
    #[error("echo canceller: {0}")]
    Aec(#[source] vr_aec::AecError),
    #[error("dialog: {0}")]
    Dialog(String),
    #[error("plot: {0}")]
    Plot(String),
    #[error("transport simulation: {0}")]
    Abr(#[source] vr_abr::AbrError),
    #[error("the ReCap cap needs a table and this one is empty: pass --recap FILE or set transport.video.recap_table (format in abr/src/recap.rs)")]
    NoRecapTable,
    #[error("the ReCap table has no class {class:?} (it has: {known})")]
    UnknownRecapClass { class: String, known: String },
}
