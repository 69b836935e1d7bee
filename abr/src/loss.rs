//! The loss-based estimate, from RTP sequence-number gaps seen at the receiver.
//!
//! Why: the delay-based detector cannot see a shallow or policed bottleneck (no queue builds, or
//! the queue is in a shaper that drops instead of delaying), and random wireless loss is not
//! congestion. GCC (draft-ietf-rmcat-gcc-02, §6 "Loss-based controller") reacts to the loss
//! fraction `p` of an interval: `p > 10 %` → `A ← A·(1 − 0.5p)`; `p < 2 %` → `A ← 1.05·A`;
//! otherwise hold. The draft runs this on the sender from RTCP reports; here the receiver
//! computes `p` itself from sequence gaps (expected − received per interval), the way a receiver
//! fills an RTCP RR's "fraction lost", and the final estimate is `min(delay-based, loss-based)`.
//!
//! [`SeqTracker`] extends 16-bit sequence numbers, drops duplicates (a 1024-packet history) and
//! packets too old to place, and counts both.

use crate::error::{check_f64, check_positive, AbrError};
use crate::units::{Bitrate, Micros};
use serde::{Deserialize, Serialize};

/// How far back (in packets) duplicates are recognised.
const HISTORY: usize = 1024;

/// What [`SeqTracker::observe`] made of a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeqVerdict {
    /// First time seen: use the packet.
    New,
    /// Already received: ignore.
    Duplicate,
    /// Older than the history window: ignore.
    TooOld,
}

/// Sequence-number bookkeeping: unwrapping, duplicates, expected vs received.
#[derive(Clone, Debug)]
pub struct SeqTracker {
    first: Option<i64>,
    highest: Option<i64>,
    seen: Vec<bool>,
    received: u64,
    duplicates: u64,
    too_old: u64,
}

impl Default for SeqTracker {
    fn default() -> Self {
        SeqTracker {
            first: None,
            highest: None,
            seen: vec![false; HISTORY],
            received: 0,
            duplicates: 0,
            too_old: 0,
        }
    }
}

impl SeqTracker {
    /// A tracker that has seen nothing.
    pub fn new() -> SeqTracker {
        SeqTracker::default()
    }

    /// The extended highest sequence number seen.
    pub fn highest(&self) -> Option<i64> {
        self.highest
    }

    /// Distinct packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Packets expected (first to highest extended sequence number) but not received, as RTCP
    /// receiver reports count it (RFC 3550 §6.4.1 "cumulative number of packets lost"): a
    /// packet arriving late lowers it again; never negative here.
    pub fn lost(&self) -> u64 {
        match (self.first, self.highest) {
            (Some(first), Some(highest)) => {
                let expected = (highest - first + 1).max(0) as u64;
                expected.saturating_sub(self.received)
            }
            _ => 0,
        }
    }

    /// Duplicates ignored.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Packets too old to place, ignored.
    pub fn too_old(&self) -> u64 {
        self.too_old
    }

    fn slot(ext: i64) -> usize {
        ext.rem_euclid(HISTORY as i64) as usize
    }

    /// Classify a 16-bit sequence number and record it.
    pub fn observe(&mut self, seq: u16) -> SeqVerdict {
        let Some(highest) = self.highest else {
            // Start well above zero so that early reordered packets extend to positive values.
            let ext = (1 << 16) + i64::from(seq);
            self.first = Some(ext);
            self.highest = Some(ext);
            self.seen[Self::slot(ext)] = true;
            self.received += 1;
            return SeqVerdict::New;
        };
        let diff = i64::from(seq.wrapping_sub(highest as u16) as i16);
        let ext = highest + diff;
        if diff > 0 {
            // Clear the slots of the numbers skipped over (they are not received yet).
            let clear = diff.min(HISTORY as i64);
            for k in 0..clear {
                let s = Self::slot(ext - k);
                self.seen[s] = false;
            }
            self.highest = Some(ext);
        } else if highest - ext >= HISTORY as i64 {
            self.too_old += 1;
            return SeqVerdict::TooOld;
        } else if self.seen[Self::slot(ext)] {
            self.duplicates += 1;
            return SeqVerdict::Duplicate;
        }
        if self.first.is_some_and(|first| ext < first) {
            self.first = Some(ext);
        }
        self.seen[Self::slot(ext)] = true;
        self.received += 1;
        SeqVerdict::New
    }
}

/// Loss controller parameters (GCC defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LossConfig {
    /// Length of a measurement interval. Short enough (250 ms) that the ×1.05 recovery per
    /// interval keeps up with the delay-based estimate's 8 %/s growth when there is no loss.
    #[serde(rename = "interval_us")]
    pub interval: Micros,
    /// An interval needs at least this many expected packets; shorter ones are extended.
    pub min_packets: u64,
    /// Above this loss fraction the rate is cut.
    pub high_loss: f64,
    /// Below this loss fraction the rate grows.
    pub low_loss: f64,
    /// Growth factor per interval when loss is low.
    pub increase_factor: f64,
}

impl Default for LossConfig {
    fn default() -> Self {
        LossConfig {
            interval: Micros::from_millis(250),
            min_packets: 20,
            high_loss: 0.10,
            low_loss: 0.02,
            increase_factor: 1.05,
        }
    }
}

impl LossConfig {
    /// Check every field.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AbrError> {
        check_positive("loss.interval", self.interval.as_micros())?;
        check_positive("loss.min_packets", self.min_packets)?;
        check_f64("loss.low_loss", self.low_loss, 0.0, 1.0)?;
        check_f64("loss.high_loss", self.high_loss, self.low_loss, 1.0)?;
        check_f64("loss.increase_factor", self.increase_factor, 1.0, 2.0)?;
        Ok(())
    }
}

/// One finished loss interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossReport {
    /// Packets expected from the sequence numbers.
    pub expected: u64,
    /// Distinct packets received.
    pub received: u64,
    /// `(expected − received) / expected`, clamped to `0..=1`.
    pub fraction: f64,
    /// The loss-based estimate after this interval.
    pub estimate: Bitrate,
}

/// The loss-based estimator.
#[derive(Clone, Debug)]
pub struct LossBasedEstimator {
    config: LossConfig,
    estimate: Bitrate,
    interval_start: Option<Micros>,
    base_highest: Option<i64>,
    base_received: u64,
    last_fraction: f64,
}

impl LossBasedEstimator {
    /// Starts at `start`; `config` must have passed [`LossConfig::validate`].
    pub fn new(config: LossConfig, start: Bitrate) -> LossBasedEstimator {
        LossBasedEstimator {
            config,
            estimate: start,
            interval_start: None,
            base_highest: None,
            base_received: 0,
            last_fraction: 0.0,
        }
    }

    /// The loss-based estimate.
    pub fn estimate(&self) -> Bitrate {
        self.estimate
    }

    /// The loss fraction of the last finished interval.
    pub fn last_fraction(&self) -> f64 {
        self.last_fraction
    }

    /// Called after each new packet was recorded in `seq`. When an interval is complete, apply
    /// the GCC rule starting from `min(loss estimate, reference)` (the reference is the
    /// delay-based estimate, so a loss-based estimate never floats far above what is sent), and
    /// bound the result to `[min, max]`.
    pub fn on_packet(
        &mut self,
        seq: &SeqTracker,
        now: Micros,
        reference: Bitrate,
        min: Bitrate,
        max: Bitrate,
    ) -> Option<LossReport> {
        let highest = seq.highest()?;
        let (Some(start), Some(base)) = (self.interval_start, self.base_highest) else {
            // The first packet anchors the first interval (it counts as already received).
            self.interval_start = Some(now);
            self.base_highest = Some(highest);
            self.base_received = seq.received();
            return None;
        };
        let expected = u64::try_from(highest - base).unwrap_or(0);
        if now.saturating_since(start) < self.config.interval || expected < self.config.min_packets
        {
            return None;
        }
        let received = seq.received().saturating_sub(self.base_received);
        let fraction = if expected == 0 {
            0.0
        } else {
            (expected.saturating_sub(received) as f64 / expected as f64).clamp(0.0, 1.0)
        };
        let base_rate = self.estimate.min(reference);
        let next = if fraction > self.config.high_loss {
            base_rate.scale(1.0 - 0.5 * fraction)
        } else if fraction < self.config.low_loss {
            base_rate.scale(self.config.increase_factor)
        } else {
            base_rate
        };
        self.estimate = next.clamp_to(min, max);
        self.last_fraction = fraction;
        self.interval_start = Some(now);
        self.base_highest = Some(highest);
        self.base_received = seq.received();
        if fraction > self.config.high_loss {
            tracing::debug!(fraction, estimate = %self.estimate, "loss-based decrease");
        }
        Some(LossReport {
            expected,
            received,
            fraction,
            estimate: self.estimate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_tracker_counts_lost_packets_across_the_wrap() {
        let mut t = SeqTracker::new();
        assert_eq!(t.lost(), 0);
        for s in [65_530u16, 65_531, 65_534, 2, 3] {
            assert_eq!(t.observe(s), SeqVerdict::New);
        }
        // 65530..=3 is 10 numbers, 5 received.
        assert_eq!(t.lost(), 5);
        // A late one and one from before the first lower and widen the count.
        assert_eq!(t.observe(65_535), SeqVerdict::New);
        assert_eq!(t.lost(), 4);
        assert_eq!(t.observe(65_528), SeqVerdict::New);
        assert_eq!(t.lost(), 5);
    }

    #[test]
    fn seq_tracker_wraps_and_finds_duplicates() {
        let mut t = SeqTracker::new();
        assert_eq!(t.observe(65_534), SeqVerdict::New);
        assert_eq!(t.observe(65_535), SeqVerdict::New);
        assert_eq!(t.observe(1), SeqVerdict::New); // 0 skipped
        assert_eq!(t.highest(), Some((1 << 16) + 65_534 + 3));
        assert_eq!(t.observe(0), SeqVerdict::New); // late, not a duplicate
        assert_eq!(t.observe(0), SeqVerdict::Duplicate);
        assert_eq!(t.observe(65_535), SeqVerdict::Duplicate);
        for s in 2..2000u16 {
            t.observe(s);
        }
        assert_eq!(t.observe(5), SeqVerdict::TooOld);
        assert_eq!((t.duplicates(), t.too_old(), t.received()), (2, 1, 2002));
    }

    fn run(loss_every: u64, intervals: u64) -> (Bitrate, f64) {
        let mut seq = SeqTracker::new();
        let config = LossConfig {
            interval: Micros::from_secs(1),
            ..LossConfig::default()
        };
        let mut est = LossBasedEstimator::new(config, Bitrate::from_kbps(1000));
        let (min, max) = (Bitrate::from_kbps(50), Bitrate::from_kbps(10_000));
        let reference = Bitrate::from_kbps(1000);
        for i in 0..(100 * intervals + 1) {
            if loss_every > 0 && i % loss_every == 1 {
                continue;
            }
            seq.observe(i as u16);
            est.on_packet(&seq, Micros::from_millis(i * 10), reference, min, max);
        }
        (est.estimate(), est.last_fraction())
    }

    #[test]
    fn gcc_loss_rule() {
        // 20 % loss: ×0.9 per interval.
        let (e, f) = run(5, 1);
        assert!((f - 0.2).abs() < 0.011, "fraction {f}");
        assert_eq!(e, Bitrate::from_kbps(900));
        // 5 % loss: hold.
        let (e, f) = run(20, 3);
        assert!((f - 0.05).abs() < 0.011, "fraction {f}");
        assert_eq!(e, Bitrate::from_kbps(1000));
        // No loss: +5 % per interval, from min(own, reference).
        let (e, f) = run(0, 3);
        assert_eq!(f, 0.0);
        assert_eq!(e, Bitrate::from_kbps(1050));
    }

    #[test]
    fn config_validation() {
        assert!(LossConfig::default().validate().is_ok());
        let bad = LossConfig {
            high_loss: 0.01,
            ..LossConfig::default()
        };
        assert!(bad.validate().is_err());
    }
}
