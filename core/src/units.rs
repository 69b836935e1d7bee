//! Audio time carried with its unit, so no stage ever passes bare `f32` seconds around.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Samples per second of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SampleRate(pub u32);

impl SampleRate {
    /// The pipeline's internal rate: every ASR and VAD model runs at 16 kHz mono.
    pub const PIPELINE: SampleRate = SampleRate(16_000);
    /// WebRTC/Opus and most playback devices.
    pub const OPUS: SampleRate = SampleRate(48_000);

    pub const fn hz(self) -> u32 {
        self.0
    }

    /// Duration of `samples` frames at this rate, rounded up to the nanosecond so that
    /// [`SampleRate::samples_in`] of the result gives `samples` back.
    pub fn duration_of(self, samples: u64) -> Duration {
        let rate = u64::from(self.0.max(1));
        let secs = samples / rate;
        let rem = samples % rate;
        Duration::new(secs, (rem * 1_000_000_000).div_ceil(rate) as u32)
    }

    /// Number of whole samples that fit in `d` (rounded down).
    pub fn samples_in(self, d: Duration) -> u64 {
        (d.as_nanos() * u128::from(self.0) / 1_000_000_000) as u64
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.0)
    }
}

/// Position in a sample stream: the index of a sample (per channel) since the stream started.
/// Paired with the stream's [`SampleRate`] it is a timestamp that never drifts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct SampleIndex(pub u64);

impl SampleIndex {
    pub const ZERO: SampleIndex = SampleIndex(0);

    pub fn at(self, rate: SampleRate) -> Duration {
        rate.duration_of(self.0)
    }

    pub fn from_duration(d: Duration, rate: SampleRate) -> SampleIndex {
        SampleIndex(rate.samples_in(d))
    }

    #[must_use]
    pub fn advance(self, samples: u64) -> SampleIndex {
        SampleIndex(self.0 + samples)
    }

    /// Samples from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: SampleIndex) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_at_common_rates() {
        for rate in [8_000, 16_000, 22_050, 44_100, 48_000] {
            let r = SampleRate(rate);
            assert_eq!(r.duration_of(u64::from(rate)), Duration::from_secs(1));
            assert_eq!(r.samples_in(Duration::from_secs(3)), 3 * u64::from(rate));
            let idx = SampleIndex(12_345);
            assert_eq!(SampleIndex::from_duration(idx.at(r), r), idx);
        }
        assert_eq!(
            SampleRate::PIPELINE.duration_of(320),
            Duration::from_millis(20)
        );
        assert_eq!(SampleIndex(10).since(SampleIndex(25)), 0);
    }
}
