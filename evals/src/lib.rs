//! Evals: the latency/accuracy harness.
//!
//! Owns: corpus manifests, text normalisation and WER/CER, latency percentiles, JSON result files
//! and reports, and runners that drive the real pipeline stages over a corpus split.
//!
//! Must not touch: pipeline internals; it drives the same public streaming APIs users do.
