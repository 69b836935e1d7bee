//! The core's two clocks: the input clock every moment is expressed on ([`Millis`]) and the
//! output's frame counter, mapped onto it ([`OutputClock`]).

use serde::Serialize;
use std::time::Duration;
use vr_core::{SampleIndex, SampleRate};

/// A moment on the input clock: milliseconds since the first input sample. Every `now` handed to
/// the core and every `*_ms` moment it reports is on this clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Millis(pub u64);

impl Millis {
    pub const ZERO: Millis = Millis(0);

    pub const fn ms(self) -> u64 {
        self.0
    }

    #[must_use]
    pub fn after(self, d: Duration) -> Millis {
        Millis(self.0 + d.as_millis() as u64)
    }

    /// `d` earlier, never before the clock's start.
    #[must_use]
    pub fn before(self, d: Duration) -> Millis {
        Millis(self.0.saturating_sub(d.as_millis() as u64))
    }

    /// Milliseconds from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Millis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// A sample position (e.g. the VAD's, at 16 kHz) on this clock, rounded down.
    pub fn from_samples(pos: SampleIndex, rate: SampleRate) -> Millis {
        Millis(pos.0 * 1000 / u64::from(rate.hz().max(1)))
    }

    /// The sample position a stream at `rate` has reached at this moment (rounded down).
    pub fn to_samples(self, rate: SampleRate) -> SampleIndex {
        SampleIndex(self.0 * u64::from(rate.hz()) / 1000)
    }

    /// The first moment at which a stream at `rate` has reached `pos` (rounded up, so that
    /// `Millis::deadline_of(p, r).to_samples(r) >= p`).
    pub fn deadline_of(pos: SampleIndex, rate: SampleRate) -> Millis {
        Millis((pos.0 * 1000).div_ceil(u64::from(rate.hz().max(1))))
    }
}

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// Output frames ↔ input clock. The output plays continuously at its rate (an idle device plays
/// silence), so one offset maps its frame counter onto the input clock. The driver reports the
/// counter now and then ([`super::Event::OutputPlayed`]); each report is a reading of the offset
/// that can only be late, never early, so the smallest reading is kept. Without any report the
/// output's frame 0 is input moment 0.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OutputClock {
    rate: SampleRate,
    /// Output frames minus the input clock in output frames; the smallest reading.
    offset: Option<i64>,
}

impl OutputClock {
    pub(crate) fn new(rate: SampleRate) -> Self {
        Self { rate, offset: None }
    }

    fn hz(&self) -> i64 {
        i64::from(self.rate.hz().max(1))
    }

    /// Input moment `t` in output frames, before the offset.
    fn frames_of(&self, t: Millis) -> i64 {
        t.0 as i64 * self.hz() / 1000
    }

    fn off(&self) -> i64 {
        self.offset.unwrap_or(0)
    }

    /// The output had played `played` frames at `now`.
    pub(crate) fn observe(&mut self, played: u64, now: Millis) {
        let reading = played as i64 - self.frames_of(now);
        self.offset = Some(self.offset.map_or(reading, |o| o.min(reading)));
    }

    /// Frames the output has played by `now`.
    pub(crate) fn played_at(&self, now: Millis) -> u64 {
        (self.frames_of(now) + self.off()).max(0) as u64
    }

    /// When output frame `frame` plays, rounded down (for reporting).
    pub(crate) fn time_of(&self, frame: u64) -> Millis {
        Millis(((frame as i64 - self.off()) * 1000 / self.hz()).max(0) as u64)
    }

    /// The first input moment at which `frame` has played (for deadlines): rounded up, so that
    /// `played_at(deadline_of(f)) >= f`.
    pub(crate) fn deadline_of(&self, frame: u64) -> Millis {
        let x = (frame as i64 - self.off()).max(0);
        Millis((x * 1000 + self.hz() - 1).div_euclid(self.hz()) as u64)
    }

    /// Whole milliseconds of `frames` output frames.
    pub(crate) fn ms_of(&self, frames: u64) -> u64 {
        frames * 1000 / self.hz() as u64
    }

    /// Output frames in `d`.
    pub(crate) fn frames_in(&self, d: Duration) -> u64 {
        self.rate.samples_in(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_map_onto_the_input_clock_through_the_smallest_offset() {
        let mut c = OutputClock::new(SampleRate(48_000));
        assert_eq!(c.played_at(Millis(100)), 4_800);
        // The output started 250 ms after the input. The second reading's input position lags
        // by 20 ms (buffered input): it reads a larger offset and is ignored.
        c.observe(48 * 750, Millis(1_000));
        c.observe(48 * 790, Millis(1_020));
        assert_eq!(c.played_at(Millis(1_000)), 48 * 750);
        assert_eq!(c.time_of(48 * 750), Millis(1_000));
        assert_eq!(c.time_of(0), Millis(250));
        assert_eq!(c.deadline_of(48 * 750 + 1), Millis(1_001));
        assert_eq!(c.ms_of(4_800), 100);
    }

    #[test]
    fn deadlines_round_up_at_rates_that_do_not_divide_a_millisecond() {
        let c = OutputClock::new(SampleRate(22_050));
        for f in [0, 1, 22, 23, 22_049, 22_050, 1_000_003] {
            let d = c.deadline_of(f);
            assert!(c.played_at(d) >= f, "frame {f}: {d}");
            assert!(
                d.0 == 0 || c.played_at(Millis(d.0 - 1)) < f,
                "frame {f}: {d}"
            );
        }
        assert_eq!(
            Millis::from_samples(SampleIndex(16_000), SampleRate::PIPELINE),
            Millis(1_000)
        );
        assert_eq!(
            Millis(1_000).to_samples(SampleRate::PIPELINE),
            SampleIndex(16_000)
        );
    }
}
