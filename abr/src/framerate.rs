//! Adaptive frame rate: fewer frames when nothing moves, all of them as soon as something does.
//!
//! Why: the model looks at a sampled frame now and then; on a static scene extra frames carry no
//! new information but cost bits the encoder could spend on quality (Artic's "loss-resilient
//! adaptive frame rate", `shared/design/papers.md`). The input is a frame-difference measure —
//! the mean absolute luma difference between consecutive downscaled frames (0..=255) — computed
//! by the caller; this module only decides.
//!
//! Rule: levels such as 30 → 15 → 5 fps. A difference below `static_threshold` for `hold` steps
//! one level down (and another `hold` for the next step); a difference at or above
//! `motion_threshold` returns to the top level at once. Between the two thresholds (the
//! hysteresis band) nothing changes and the static timer restarts, so a flickering scene does
//! not oscillate. Invalid measures (NaN, infinite, negative) and time going backwards are
//! ignored and counted.

use crate::error::{check_f64, check_positive, AbrError};
use crate::units::Micros;
use serde::{Deserialize, Serialize};

/// Frame-rate controller parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FrameRateConfig {
    /// Frame-rate levels, strictly decreasing (first = full rate).
    pub levels_fps: Vec<u32>,
    /// Below this mean absolute luma difference a frame counts as static.
    pub static_threshold: f32,
    /// At or above this, motion: full rate at once. Must be ≥ `static_threshold`.
    pub motion_threshold: f32,
    /// How long the scene must stay static before each step down.
    #[serde(rename = "hold_us")]
    pub hold: Micros,
}

impl Default for FrameRateConfig {
    fn default() -> Self {
        FrameRateConfig {
            levels_fps: vec![30, 15, 5],
            static_threshold: 1.0,
            motion_threshold: 3.0,
            hold: Micros::from_secs(2),
        }
    }
}

impl FrameRateConfig {
    /// Check every field.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AbrError> {
        let decreasing = self.levels_fps.windows(2).all(|w| w[1] < w[0]);
        if self.levels_fps.is_empty() || !decreasing || self.levels_fps.contains(&0) {
            return Err(AbrError::InvalidConfig {
                field: "framerate.levels_fps",
                value: format!("{:?}", self.levels_fps),
                reason: "must be non-empty, strictly decreasing and above zero",
            });
        }
        check_f64(
            "framerate.static_threshold",
            f64::from(self.static_threshold),
            0.0,
            255.0,
        )?;
        check_f64(
            "framerate.motion_threshold",
            f64::from(self.motion_threshold),
            f64::from(self.static_threshold),
            255.0,
        )?;
        check_positive("framerate.hold", self.hold.as_micros())
    }
}

/// Counters of ignored input.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameRateStats {
    /// Frames considered.
    pub frames: u64,
    /// NaN, infinite or negative measures.
    pub invalid: u64,
    /// Frames whose time was earlier than the previous one.
    pub time_backwards: u64,
}

/// The adaptive frame-rate controller.
#[derive(Clone, Debug)]
pub struct FrameRateController {
    config: FrameRateConfig,
    level: usize,
    static_since: Option<Micros>,
    last_time: Option<Micros>,
    stats: FrameRateStats,
}

impl FrameRateController {
    /// A controller at full rate.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] when `config` fails [`FrameRateConfig::validate`].
    pub fn new(config: FrameRateConfig) -> Result<FrameRateController, AbrError> {
        config.validate()?;
        Ok(FrameRateController {
            config,
            level: 0,
            static_since: None,
            last_time: None,
            stats: FrameRateStats::default(),
        })
    }

    /// The requested frame rate.
    pub fn fps(&self) -> u32 {
        self.config.levels_fps.get(self.level).copied().unwrap_or(1)
    }

    /// Counters.
    pub fn stats(&self) -> FrameRateStats {
        self.stats
    }

    /// One frame's difference from the previous one at `now`. Returns `Some(fps)` when the
    /// requested rate changed.
    pub fn on_frame(&mut self, now: Micros, mean_abs_diff: f32) -> Option<u32> {
        self.stats.frames += 1;
        if !mean_abs_diff.is_finite() || mean_abs_diff < 0.0 {
            self.stats.invalid += 1;
            return None;
        }
        if self.last_time.is_some_and(|last| now < last) {
            self.stats.time_backwards += 1;
            return None;
        }
        self.last_time = Some(now);
        let before = self.level;
        if mean_abs_diff >= self.config.motion_threshold {
            self.level = 0;
            self.static_since = None;
        } else if mean_abs_diff < self.config.static_threshold {
            let since = *self.static_since.get_or_insert(now);
            if now.saturating_since(since) >= self.config.hold
                && self.level + 1 < self.config.levels_fps.len()
            {
                self.level += 1;
                self.static_since = Some(now);
            }
        } else {
            self.static_since = None;
        }
        (self.level != before).then(|| {
            tracing::debug!(fps = self.fps(), "frame rate");
            self.fps()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl() -> FrameRateController {
        FrameRateController::new(FrameRateConfig::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Feed frames at the current requested rate from `t0` for `dur` with a constant diff;
    /// returns the end time and every change as (time, fps).
    fn feed(
        c: &mut FrameRateController,
        t0: Micros,
        dur: Micros,
        diff: f32,
    ) -> (Micros, Vec<(Micros, u32)>) {
        let mut t = t0;
        let mut changes = Vec::new();
        while t < t0 + dur {
            if let Some(f) = c.on_frame(t, diff) {
                changes.push((t.saturating_since(t0), f));
            }
            t = t + Micros(1_000_000 / u64::from(c.fps()));
        }
        (t, changes)
    }

    #[test]
    fn static_scene_steps_down_after_each_hold() {
        let mut c = ctl();
        let (_, changes) = feed(&mut c, Micros::ZERO, Micros::from_secs(10), 0.2);
        // 30 fps until 2 s of stillness, 15 fps after another 2 s, then 5 fps stays; each
        // step on the first frame after the hold (frames are 33.3 ms, then 66.7 ms apart).
        let ms: Vec<(u64, u32)> = changes
            .iter()
            .map(|(t, f)| (t.as_micros() / 1000, *f))
            .collect();
        assert_eq!(ms.len(), 2, "{ms:?}");
        assert_eq!((ms[0].1, ms[1].1), (15, 5));
        assert!((2_000..2_034).contains(&ms[0].0), "{ms:?}");
        assert!(
            (ms[0].0 + 2_000..ms[0].0 + 2_067).contains(&ms[1].0),
            "{ms:?}"
        );
        assert_eq!(c.fps(), 5);
    }

    #[test]
    fn motion_restores_full_rate_on_the_first_moving_frame() {
        let mut c = ctl();
        let (t, _) = feed(&mut c, Micros::ZERO, Micros::from_secs(5), 0.2);
        assert_eq!(c.fps(), 5);
        assert_eq!(c.on_frame(t, 12.0), Some(30));
        // And the static timer starts over.
        let (_, changes) = feed(&mut c, t, Micros::from_secs(3), 0.2);
        assert_eq!(changes.first().map(|c| c.1), Some(15));
        assert!(changes[0].0 >= Micros::from_secs(2));
    }

    #[test]
    fn hysteresis_band_neither_lowers_nor_raises() {
        let mut c = ctl();
        let (t, _) = feed(&mut c, Micros::ZERO, Micros::from_secs(3), 0.2);
        assert_eq!(c.fps(), 15);
        let (t, changes) = feed(&mut c, t, Micros::from_secs(10), 2.0);
        assert!(changes.is_empty());
        assert_eq!(c.fps(), 15);
        // Alternating static and mid-band frames never complete a hold.
        for i in 0..200u64 {
            let diff = if i % 2 == 0 { 0.2 } else { 2.0 };
            assert_eq!(c.on_frame(t + Micros::from_millis(i * 66), diff), None);
        }
    }

    #[test]
    fn bad_input_is_counted() {
        let mut c = ctl();
        assert_eq!(c.on_frame(Micros::from_secs(1), f32::NAN), None);
        assert_eq!(c.on_frame(Micros::from_secs(1), -1.0), None);
        assert_eq!(c.on_frame(Micros::from_secs(1), 0.0), None);
        assert_eq!(c.on_frame(Micros::ZERO, 0.0), None);
        let s = c.stats();
        assert_eq!((s.frames, s.invalid, s.time_backwards), (4, 2, 1));
        let bad = FrameRateConfig {
            levels_fps: vec![5, 15],
            ..FrameRateConfig::default()
        };
        assert!(FrameRateController::new(bad).is_err());
        let bad = FrameRateConfig {
            motion_threshold: 0.5,
            ..FrameRateConfig::default()
        };
        assert!(FrameRateController::new(bad).is_err());
    }
}
