//! Delay-gradient overuse detection: is the bottleneck queue growing, stable or draining?
//!
//! Why a trendline: GCC (draft-ietf-rmcat-gcc-02, §5.3–5.4) estimates the one-way delay gradient
//! `m(i)` of packet groups and compares it with an adaptive threshold `γ(i)`. The draft uses a
//! Kalman filter; libwebrtc replaced it with a *trendline*: the least-squares slope of the
//! exponentially smoothed accumulated delay over a window of recent groups, which is less
//! sensitive to single noisy samples. This module implements that idea from the description:
//!
//! - per group delta `d = arrival_delta - send_delta` (ms); `acc += d`;
//!   `smoothed = α·smoothed + (1-α)·acc` (α = 0.9);
//! - slope of `smoothed` over arrival time for the last N groups (N = 20);
//! - `trend = min(samples, 60) · slope · gain` compared with the threshold `γ`;
//! - `γ` adapts towards `|trend|` with `k_up` (0.0087 /ms) when exceeded and `k_down`
//!   (0.039 /ms) otherwise, clamped to 6..600 ms (draft §5.4), so a competing TCP flow's
//!   standing queue does not starve us and a noisy path is not read as overuse;
//! - **overuse** only when `trend > γ` persisted for more than 10 ms over more than one sample
//!   and is not decreasing; **underuse** when `trend < -γ`; otherwise normal.

use crate::error::{check_f64, AbrError};
use crate::inter_arrival::GroupDelta;
use crate::units::Micros;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The detector's verdict (GCC's "signal" s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum BandwidthUsage {
    /// The queue is stable.
    #[default]
    Normal,
    /// The queue is growing: send less.
    Overusing,
    /// The queue is draining: hold, let it empty.
    Underusing,
}

/// Trendline parameters (defaults from GCC / libwebrtc).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrendlineConfig {
    /// Number of groups in the regression window.
    pub window: usize,
    /// Smoothing coefficient α of the accumulated delay, in `0..1`.
    pub smoothing: f64,
    /// Gain applied to the slope before comparing with the threshold.
    pub gain: f64,
    /// Threshold adaptation rate when `|trend|` exceeds it (per ms).
    pub k_up: f64,
    /// Threshold adaptation rate when `|trend|` is below it (per ms).
    pub k_down: f64,
    /// Initial threshold (ms).
    pub initial_threshold_ms: f64,
    /// Lower clamp of the threshold (ms).
    pub min_threshold_ms: f64,
    /// Upper clamp of the threshold (ms).
    pub max_threshold_ms: f64,
    /// How long `trend > γ` must persist before overuse is signalled.
    #[serde(rename = "overuse_time_us")]
    pub overuse_time: Micros,
}

impl Default for TrendlineConfig {
    fn default() -> Self {
        TrendlineConfig {
            window: 20,
            smoothing: 0.9,
            gain: 4.0,
            k_up: 0.0087,
            k_down: 0.039,
            initial_threshold_ms: 12.5,
            min_threshold_ms: 6.0,
            max_threshold_ms: 600.0,
            overuse_time: Micros::from_millis(10),
        }
    }
}

impl TrendlineConfig {
    /// Check every field's range.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AbrError> {
        if !(2..=1000).contains(&self.window) {
            return Err(AbrError::InvalidConfig {
                field: "trendline.window",
                value: self.window.to_string(),
                reason: "must be in 2..=1000 groups",
            });
        }
        check_f64("trendline.smoothing", self.smoothing, 0.0, 0.999)?;
        check_f64("trendline.gain", self.gain, 0.0, 1e6)?;
        check_f64("trendline.k_up", self.k_up, 0.0, 1.0)?;
        check_f64("trendline.k_down", self.k_down, 0.0, 1.0)?;
        check_f64(
            "trendline.min_threshold_ms",
            self.min_threshold_ms,
            0.0,
            1e6,
        )?;
        check_f64(
            "trendline.max_threshold_ms",
            self.max_threshold_ms,
            self.min_threshold_ms,
            1e6,
        )?;
        check_f64(
            "trendline.initial_threshold_ms",
            self.initial_threshold_ms,
            self.min_threshold_ms,
            self.max_threshold_ms,
        )?;
        Ok(())
    }
}

/// Don't adapt the threshold to outliers larger than this above it (ms), as libwebrtc does.
const MAX_ADAPT_OFFSET_MS: f64 = 15.0;
/// Cap of the time step used to adapt the threshold (ms).
const MAX_ADAPT_STEP_MS: f64 = 100.0;
/// Cap of the sample-count multiplier of the slope.
const MAX_TREND_SAMPLES: f64 = 60.0;

/// The trendline overuse detector.
#[derive(Clone, Debug)]
pub struct TrendlineEstimator {
    config: TrendlineConfig,
    first_arrival: Option<Micros>,
    accumulated_ms: f64,
    smoothed_ms: f64,
    samples: u64,
    window: VecDeque<(f64, f64)>,
    threshold_ms: f64,
    last_threshold_update: Option<Micros>,
    prev_trend: f64,
    time_over_using_ms: Option<f64>,
    overuse_counter: u32,
    state: BandwidthUsage,
    last_trend: f64,
}

impl TrendlineEstimator {
    /// A detector; `config` must have passed [`TrendlineConfig::validate`].
    pub fn new(config: TrendlineConfig) -> TrendlineEstimator {
        TrendlineEstimator {
            threshold_ms: config.initial_threshold_ms,
            window: VecDeque::with_capacity(config.window),
            config,
            first_arrival: None,
            accumulated_ms: 0.0,
            smoothed_ms: 0.0,
            samples: 0,
            last_threshold_update: None,
            prev_trend: 0.0,
            time_over_using_ms: None,
            overuse_counter: 0,
            state: BandwidthUsage::Normal,
            last_trend: 0.0,
        }
    }

    /// The current verdict.
    pub fn state(&self) -> BandwidthUsage {
        self.state
    }

    /// The current adaptive threshold γ (ms).
    pub fn threshold_ms(&self) -> f64 {
        self.threshold_ms
    }

    /// The last modified trend (slope × samples × gain).
    pub fn trend(&self) -> f64 {
        self.last_trend
    }

    /// Feed one group delta; returns the (possibly unchanged) verdict.
    pub fn update(&mut self, delta: &GroupDelta) -> BandwidthUsage {
        let d_ms = delta.arrival_delta.as_millis_f64() - delta.send_delta.as_millis_f64();
        let send_delta_ms = delta.send_delta.as_millis_f64();
        if !d_ms.is_finite() {
            return self.state;
        }
        let first = *self.first_arrival.get_or_insert(delta.arrival);
        self.samples += 1;
        self.accumulated_ms += d_ms;
        let a = self.config.smoothing;
        self.smoothed_ms = a * self.smoothed_ms + (1.0 - a) * self.accumulated_ms;
        let x = delta.arrival.saturating_since(first).as_millis_f64();
        self.window.push_back((x, self.smoothed_ms));
        if self.window.len() > self.config.window {
            self.window.pop_front();
        }
        let mut trend = self.prev_trend;
        if self.window.len() == self.config.window {
            if let Some(slope) = linear_fit_slope(&self.window) {
                trend = slope;
            }
        }
        self.detect(trend, send_delta_ms, delta.arrival);
        self.state
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now: Micros) {
        let modified = (self.samples as f64).min(MAX_TREND_SAMPLES) * trend * self.config.gain;
        self.last_trend = modified;
        if modified > self.threshold_ms {
            let t = match self.time_over_using_ms {
                None => send_delta_ms / 2.0,
                Some(t) => t + send_delta_ms,
            };
            self.time_over_using_ms = Some(t);
            self.overuse_counter += 1;
            if t > self.config.overuse_time.as_millis_f64()
                && self.overuse_counter > 1
                && trend >= self.prev_trend
            {
                self.time_over_using_ms = Some(0.0);
                self.overuse_counter = 0;
                if self.state != BandwidthUsage::Overusing {
                    tracing::debug!(trend = modified, threshold = self.threshold_ms, "overuse");
                }
                self.state = BandwidthUsage::Overusing;
            }
        } else if modified < -self.threshold_ms {
            self.time_over_using_ms = None;
            self.overuse_counter = 0;
            self.state = BandwidthUsage::Underusing;
        } else {
            self.time_over_using_ms = None;
            self.overuse_counter = 0;
            self.state = BandwidthUsage::Normal;
        }
        self.prev_trend = trend;
        self.update_threshold(modified, now);
    }

    fn update_threshold(&mut self, modified: f64, now: Micros) {
        let last = *self.last_threshold_update.get_or_insert(now);
        if modified.abs() > self.threshold_ms + MAX_ADAPT_OFFSET_MS {
            // A sudden large spike (e.g. a route change) should not move the threshold.
            self.last_threshold_update = Some(now);
            return;
        }
        let k = if modified.abs() < self.threshold_ms {
            self.config.k_down
        } else {
            self.config.k_up
        };
        let dt_ms = now
            .saturating_since(last)
            .as_millis_f64()
            .min(MAX_ADAPT_STEP_MS);
        self.threshold_ms += k * (modified.abs() - self.threshold_ms) * dt_ms;
        self.threshold_ms = self
            .threshold_ms
            .clamp(self.config.min_threshold_ms, self.config.max_threshold_ms);
        self.last_threshold_update = Some(now);
    }
}

/// Least-squares slope of `(x, y)` points; `None` when all x are equal.
fn linear_fit_slope(points: &VecDeque<(f64, f64)>) -> Option<f64> {
    let n = points.len() as f64;
    if n < 2.0 {
        return None;
    }
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    (den > 0.0).then_some(num / den)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::TimeDelta;

    fn feed(est: &mut TrendlineEstimator, n: usize, t0_ms: u64, extra_delay_ms: i64) -> u64 {
        let mut t = t0_ms;
        for _ in 0..n {
            t += 33;
            est.update(&GroupDelta {
                send_delta: TimeDelta(33_000),
                arrival_delta: TimeDelta(33_000 + extra_delay_ms * 1000),
                size_delta: 0,
                arrival: Micros::from_millis(t),
            });
        }
        t
    }

    #[test]
    fn linear_fit() {
        let pts: VecDeque<_> = [(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)].into_iter().collect();
        assert_eq!(linear_fit_slope(&pts), Some(2.0));
        let flat: VecDeque<_> = [(1.0, 1.0), (1.0, 3.0)].into_iter().collect();
        assert_eq!(linear_fit_slope(&flat), None);
    }

    #[test]
    fn constant_delay_is_normal_growing_is_overuse_shrinking_is_underuse() {
        let mut est = TrendlineEstimator::new(TrendlineConfig::default());
        let t = feed(&mut est, 40, 0, 0);
        assert_eq!(est.state(), BandwidthUsage::Normal);
        // Queue grows 5 ms per 33 ms group (sending 15 % above capacity): overuse.
        let t = feed(&mut est, 15, t, 5);
        assert_eq!(
            est.state(),
            BandwidthUsage::Overusing,
            "trend {}",
            est.trend()
        );
        // Queue drains 5 ms per group: underuse.
        feed(&mut est, 40, t, -5);
        assert_eq!(
            est.state(),
            BandwidthUsage::Underusing,
            "trend {}",
            est.trend()
        );
    }

    #[test]
    fn single_spike_is_not_overuse() {
        let mut est = TrendlineEstimator::new(TrendlineConfig::default());
        let t = feed(&mut est, 40, 0, 0);
        feed(&mut est, 1, t, 30);
        assert_ne!(est.state(), BandwidthUsage::Overusing);
    }

    #[test]
    fn threshold_stays_clamped() {
        let mut est = TrendlineEstimator::new(TrendlineConfig::default());
        feed(&mut est, 500, 0, 0);
        assert!((6.0..=600.0).contains(&est.threshold_ms()));
        assert!(
            (est.threshold_ms() - 6.0).abs() < 1e-9,
            "{}",
            est.threshold_ms()
        );
    }

    #[test]
    fn config_validation() {
        assert!(TrendlineConfig::default().validate().is_ok());
        let bad = TrendlineConfig {
            smoothing: f64::NAN,
            ..TrendlineConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(AbrError::InvalidConfig {
                field: "trendline.smoothing",
                ..
            })
        ));
    }
}
