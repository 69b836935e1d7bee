//! Receiver-side adaptive bitrate for VoiceRelay's video path, as sans-IO code.
//!
//! Owns: the GCC-style delay-based estimator (packet groups → trendline → AIMD), the loss-based
//! estimator, REMB scheduling, the ReCapABR confidence cap (Artic), adaptive frame rate, and a
//! deterministic path simulator ([`sim`]) to test them on virtual time.
//!
//! Must not touch: sockets, threads, clocks, async runtimes, codecs. Time is always a parameter
//! ([`Micros`] on the caller's clock; `clippy::disallowed_methods` is denied here, so a wall-clock
//! read fails the lint). The transport crate drives this from its RTP receive path and a timer.
//!
//! # Design
//! - [`inter_arrival`]: abs-send-time unwrapping (24-bit, 6.18 fixed point, 64 s wrap) and 5 ms
//!   send-time groups; reordered packets ignored and counted.
//! - [`trendline`]: slope of the smoothed accumulated delay over 20 groups against an adaptive
//!   threshold → [`BandwidthUsage`] (draft-ietf-rmcat-gcc-02 §5.3–5.4, libwebrtc's trendline).
//! - [`aimd`]: Hold/Increase/Decrease; ~8 %/s far from the last congestion point, about a
//!   packet per response time near it; 0.85 × incoming rate on overuse.
//! - [`loss`]: GCC's loss rule over sequence gaps (> 10 % cut, < 2 % ×1.05, hold between).
//! - [`estimator`]: [`ReceiverEstimator`] ties them together; estimate = min(delay, loss);
//!   REMB every 1 s, or at once on a ≥ 3 % drop.
//! - [`recap`]: ReCapABR, `min(cc_estimate, cap)` from a measured confidence-vs-bitrate table.
//! - [`framerate`]: 30 → 15 → 5 fps on static scenes, back to 30 on motion.
//!
//! # Behaviour on the simulator (asserted in `tests/path_simulation.rs`)
//! No probing: the ramp is GCC's multiplicative increase.
//! - Constant 2.5 Mbit/s, 100 kB drop-tail queue, start 300 kbit/s: 80 % of capacity after
//!   24.8 s (asserted ≤ 30 s); from 5 s later on, the mean estimate is 0.94 × capacity (asserted
//!   0.85–0.97), never below 2.0 Mbit/s, sender utilisation 0.93 (≥ 0.85), queue delay ≤ 64 ms
//!   (< 100 ms), no drops.
//! - Step 3 → 0.5 Mbit/s, 50 kB queue: the first decrease REMB 626 ms after the step (≤ 700 ms),
//!   estimate and sender below the new capacity by 0.7 s (≤ 1 s); queue delay peaks at the
//!   buffer's 790 ms and is below 100 ms again 2.1 s after the step (≤ 5 s). Not yet met: the
//!   step causes a loss burst (the queue overflows before the first groups show the delay).
//! - Step 0.3 → 2.5 Mbit/s: 1 Mbit/s after 17.2 s (≤ 20 s), 2 Mbit/s after 26.2 s (≤ 30 s).
//! - 10 % random loss on a 5 Mbit/s link: the estimate falls from 1 Mbit/s to 160 kbit/s in 20 s
//!   (asserted < 500 kbit/s), set by the loss-based path; with 0 % loss it never trails the
//!   delay-based estimate by more than 1 % (asserted ≤ 2 %).
//! - A sender clock wrapping (abs-send-time) mid-run gives the same estimates.
//! - Per-frame latency (send → last packet's arrival, [`sim::SimFrame`]): on a 50 Mbit/s link it is
//!   propagation + the frame's serialisation (asserted within 2 µs); on the 3 → 0.5 Mbit/s step
//!   (50 kB queue) its P95 is 87.9 ms before the step (< 150 ms) and 793.5 ms in the 3 s after
//!   (> 500 ms). `voicerelay eval transport` reports it with and without the cap.
//! - ReCapABR on saturating content (a synthetic table reaching θ = 0.8 at 540 kbit/s) over a
//!   2.5 Mbit/s link: the advertised rate settles at 540 kbit/s after 8.1 s (≤ 10 s: the CC
//!   estimate first has to grow there) and stays there, 34 % below the CC estimate (asserted
//!   ≥ 20 %; the estimate itself is held to 1.5 × the incoming rate + 10 kbit/s, so this is not
//!   headroom against the 2.5 Mbit/s capacity), with queue delay ≤ 7.2 ms (< 10 ms).
//!
//! # The loop a driver runs
//! ```
//! use vr_abr::{AbsSendTime, Bitrate, EstimatorConfig, Micros, ReceiverEstimator, RecapTable};
//! # fn main() -> Result<(), vr_abr::AbrError> {
//! let mut est = ReceiverEstimator::new(EstimatorConfig::default())?;
//! let cap = RecapTable::empty(); // or RecapTable::from_toml_str(measured_table)?
//! let mut current = Bitrate::from_kbps(300);
//! for i in 0..90u64 {
//!     // Per RTP packet: arrival time (receiver clock), abs-send-time, size, sequence number.
//!     let arrival = Micros::from_millis(20 + i * 33);
//!     est.on_packet(arrival, AbsSendTime::from_micros(Micros::from_millis(i * 33)), 1_200, i as u16);
//!     // On a timer (or after each packet): a REMB when one is due.
//!     if let Some(remb) = est.poll(arrival) {
//!         let target = cap.decide("desk", None, current, remb.bitrate).target;
//!         current = target; // send `target` as REMB
//!     }
//! }
//! assert!(current >= Bitrate::from_kbps(300));
//! # Ok(()) }
//! ```
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
pub use framerate::{FrameRateConfig, FrameRateController};
pub use inter_arrival::AbsSendTime;
pub use recap::{RecapBranch, RecapDecision, RecapTable};
pub use trendline::BandwidthUsage;
pub use units::{Bitrate, Micros, TimeDelta};
