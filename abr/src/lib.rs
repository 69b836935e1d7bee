//! Receiver-side adaptive bitrate for VoiceRelay's video path, as sans-IO code.
//!
//! Owns: the GCC-style delay-based estimator (packet groups → trendline → AIMD), the loss-based
//! estimator, REMB scheduling, the ReCapABR confidence cap (Artic), adaptive frame rate, and a
//! deterministic path simulator to test them on virtual time.
//!
//! Must not touch: sockets, threads, clocks, async runtimes, codecs. Time is always a parameter
//! ([`Micros`] on the caller's clock); the transport crate drives this from its RTP receive path
//! and timer.
#![forbid(unsafe_code)]
#![deny(clippy::disallowed_methods)]

pub mod aimd;
pub mod error;
pub mod estimator;
pub mod framerate;
pub mod inter_arrival;
pub mod loss;
pub mod recap;
pub mod sim;
pub mod trendline;
pub mod units;

pub use error::AbrError;
pub use estimator::{EstimatorConfig, EstimatorStats, ReceiverEstimator, RembReason, RembUpdate};
pub use inter_arrival::AbsSendTime;
pub use recap::{RecapBranch, RecapDecision, RecapTable};
pub use trendline::BandwidthUsage;
pub use units::{Bitrate, Micros, TimeDelta};
