//! Unit-carrying types: every time and rate in this crate says what it is.
//!
//! Why: congestion control mixes microseconds (abs-send-time resolution is ~3.8 µs),
//! milliseconds (the trendline works in ms, as GCC draft-ietf-rmcat-gcc-02 states its
//! thresholds) and bits per second; a bare `u64` invites a factor-of-1000 bug. Instants are
//! [`Micros`] on a caller-chosen epoch (the sans-IO driver's clock or the simulator's virtual
//! time); signed differences are [`TimeDelta`]; rates are [`Bitrate`].

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Add;

/// An instant (or a non-negative duration) in microseconds on the caller's clock.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Micros(pub u64);

impl Micros {
    /// Time zero.
    pub const ZERO: Micros = Micros(0);

    /// From milliseconds (saturating).
    pub const fn from_millis(ms: u64) -> Micros {
        Micros(ms.saturating_mul(1_000))
    }

    /// From seconds (saturating).
    pub const fn from_secs(s: u64) -> Micros {
        Micros(s.saturating_mul(1_000_000))
    }

    /// Microseconds.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Milliseconds as a float (for the trendline's ms arithmetic).
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1_000.0
    }

    /// Seconds as a float.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1_000_000.0
    }

    /// `self - earlier`, or `None` when `earlier` is later (time went backwards).
    pub fn since(self, earlier: Micros) -> Option<Micros> {
        self.0.checked_sub(earlier.0).map(Micros)
    }

    /// `self - earlier`, zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Micros) -> Micros {
        Micros(self.0.saturating_sub(earlier.0))
    }

    /// Signed difference `self - other`.
    pub fn delta(self, other: Micros) -> TimeDelta {
        TimeDelta(
            (self.0 as i128 - other.0 as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64,
        )
    }
}

impl Add for Micros {
    type Output = Micros;
    fn add(self, rhs: Micros) -> Micros {
        Micros(self.0.saturating_add(rhs.0))
    }
}

impl fmt::Display for Micros {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} ms", self.as_millis_f64())
    }
}

/// A signed time difference in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeDelta(pub i64);

impl TimeDelta {
    /// Milliseconds as a float.
    pub fn as_millis_f64(self) -> f64 {
        self.0 as f64 / 1_000.0
    }
}

/// A bit rate in bits per second.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Bitrate(pub u64);

impl Bitrate {
    /// Zero bits per second.
    pub const ZERO: Bitrate = Bitrate(0);

    /// From kilobits per second (1 kbit = 1000 bit).
    pub const fn from_kbps(kbps: u64) -> Bitrate {
        Bitrate(kbps.saturating_mul(1_000))
    }

    /// Bits per second.
    pub const fn bps(self) -> u64 {
        self.0
    }

    /// Kilobits per second as a float.
    pub fn kbps(self) -> f64 {
        self.0 as f64 / 1_000.0
    }

    /// From a float rate in bit/s: NaN and negatives become zero, huge values saturate.
    pub fn from_bps_f64(bps: f64) -> Bitrate {
        if bps.is_nan() || bps <= 0.0 {
            Bitrate::ZERO
        } else if bps >= u64::MAX as f64 {
            Bitrate(u64::MAX)
        } else {
            Bitrate(bps.round() as u64)
        }
    }

    /// `self × factor` (a NaN or negative factor gives zero).
    pub fn scale(self, factor: f64) -> Bitrate {
        Bitrate::from_bps_f64(self.0 as f64 * factor)
    }

    /// Bits carried in `duration` at this rate.
    pub fn bits_in(self, duration: Micros) -> f64 {
        self.0 as f64 * duration.as_secs_f64()
    }

    /// Clamp into `[min, max]` (when `min > max`, `max` wins).
    pub fn clamp_to(self, min: Bitrate, max: Bitrate) -> Bitrate {
        self.max(min).min(max)
    }
}

impl fmt::Display for Bitrate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1} kbit/s", self.kbps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions() {
        assert_eq!(Micros::from_millis(5), Micros(5_000));
        assert_eq!(Micros::from_secs(2).as_millis_f64(), 2_000.0);
        assert_eq!(Micros(10).since(Micros(20)), None);
        assert_eq!(Micros(30).since(Micros(20)), Some(Micros(10)));
        assert_eq!(Micros(10).delta(Micros(30)), TimeDelta(-20));
        assert_eq!(Bitrate::from_kbps(300).scale(0.85), Bitrate(255_000));
        assert_eq!(Bitrate::from_bps_f64(f64::NAN), Bitrate::ZERO);
        assert_eq!(Bitrate::from_bps_f64(-3.0), Bitrate::ZERO);
        assert_eq!(Bitrate(5).clamp_to(Bitrate(10), Bitrate(20)), Bitrate(10));
        assert_eq!(
            Bitrate::from_kbps(1000).bits_in(Micros::from_millis(500)),
            500_000.0
        );
    }
}
