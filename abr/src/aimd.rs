//! The delay-based rate controller: a Hold / Increase / Decrease state machine driven by the
//! overuse detector's signal.
//!
//! Why this shape: GCC (draft-ietf-rmcat-gcc-02, §5.5 "Rate control") has the receiver keep a
//! remote rate `Ar` that increases while the detector reports normal, holds while the queue
//! drains (underuse) and drops on overuse. libwebrtc's `AimdRateControl` refines it, and this
//! module follows those ideas:
//!
//! - **Increase** is multiplicative (~8 %/s) while far from the last congestion point and
//!   additive (about one packet per response time, `100 ms + RTT`) near it, where "near" is
//!   within three standard deviations of an average of the incoming rates seen at overuse (the
//!   link-capacity estimate). A measured rate above that band resets it: the path changed.
//! - **Decrease** sets the rate to β = 0.85 × the measured incoming rate (what really got
//!   through), not 0.85 × our previous estimate, so one decrease lands just below capacity.
//! - The estimate never runs ahead of what is actually received: an increase is limited to
//!   1.5 × incoming + 10 kbit/s, so an idle sender does not inflate it.
//! - Bounds: `[min, max]` from the config.

use crate::error::{check_f64, check_positive, AbrError};
use crate::trendline::BandwidthUsage;
use crate::units::{Bitrate, Micros};
use serde::{Deserialize, Serialize};

/// Controller state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RateControlState {
    /// Keep the rate.
    Hold,
    /// Raise the rate.
    Increase,
    /// Cut the rate.
    Decrease,
}

/// AIMD parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AimdConfig {
    /// Initial estimate.
    pub start_bps: Bitrate,
    /// Lower bound.
    pub min_bps: Bitrate,
    /// Upper bound.
    pub max_bps: Bitrate,
    /// β: on overuse the rate becomes `β × incoming`.
    pub decrease_factor: f64,
    /// Multiplicative increase per second far from the congestion point (0.08 = 8 %/s).
    pub multiplicative_increase_per_sec: f64,
    /// Assumed round-trip time (the receiver does not measure it): sets the additive increase
    /// and the minimum spacing of successive decreases.
    #[serde(rename = "rtt_us")]
    pub rtt: Micros,
    /// Assumed frame rate and packet size for the additive increase ("one packet per RTT").
    pub frame_rate: f64,
    /// Assumed packet size (bytes) for the additive increase.
    pub packet_size_bytes: u32,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            start_bps: Bitrate::from_kbps(300),
            min_bps: Bitrate::from_kbps(50),
            max_bps: Bitrate::from_kbps(10_000),
            decrease_factor: 0.85,
            multiplicative_increase_per_sec: 0.08,
            rtt: Micros::from_millis(200),
            frame_rate: 30.0,
            packet_size_bytes: 1200,
        }
    }
}

impl AimdConfig {
    /// Check every field.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AbrError> {
        check_positive("aimd.min_bps", self.min_bps.bps())?;
        if self.max_bps < self.min_bps {
            return Err(AbrError::InvalidConfig {
                field: "aimd.max_bps",
                value: self.max_bps.bps().to_string(),
                reason: "must be at least aimd.min_bps",
            });
        }
        if self.start_bps < self.min_bps || self.start_bps > self.max_bps {
            return Err(AbrError::InvalidConfig {
                field: "aimd.start_bps",
                value: self.start_bps.bps().to_string(),
                reason: "must be within aimd.min_bps..=aimd.max_bps",
            });
        }
        check_f64("aimd.decrease_factor", self.decrease_factor, 0.1, 0.99)?;
        check_f64(
            "aimd.multiplicative_increase_per_sec",
            self.multiplicative_increase_per_sec,
            0.0,
            1.0,
        )?;
        check_f64("aimd.frame_rate", self.frame_rate, 1.0, 240.0)?;
        check_positive("aimd.packet_size_bytes", u64::from(self.packet_size_bytes))?;
        check_positive("aimd.rtt", self.rtt.as_micros())?;
        Ok(())
    }
}

/// Running mean and variance of the incoming rate at overuse (kbit/s), libwebrtc-style.
#[derive(Clone, Copy, Debug, Default)]
struct LinkCapacity {
    mean_kbps: Option<f64>,
    var: f64,
}

impl LinkCapacity {
    const ALPHA: f64 = 0.05;

    fn update(&mut self, sample_kbps: f64) {
        let mean = match self.mean_kbps {
            None => sample_kbps,
            Some(m) => (1.0 - Self::ALPHA) * m + Self::ALPHA * sample_kbps,
        };
        // Normalised variance, as a fraction of the mean, kept within sane bounds.
        let norm = mean.max(1.0);
        let err = mean - sample_kbps;
        self.var =
            ((1.0 - Self::ALPHA) * self.var + Self::ALPHA * err * err / norm).clamp(0.4, 2.5);
        self.mean_kbps = Some(mean);
    }

    fn upper_kbps(&self) -> Option<f64> {
        self.mean_kbps.map(|m| m + 3.0 * (self.var * m).sqrt())
    }

    fn lower_kbps(&self) -> Option<f64> {
        self.mean_kbps.map(|m| m - 3.0 * (self.var * m).sqrt())
    }
}

/// The AIMD remote-rate controller.
#[derive(Clone, Debug)]
pub struct AimdRateControl {
    config: AimdConfig,
    current: Bitrate,
    state: RateControlState,
    capacity: LinkCapacity,
    last_update: Option<Micros>,
    last_decrease: Option<Micros>,
    decreases: u64,
}

impl AimdRateControl {
    /// A controller at `config.start_bps`; `config` must have passed [`AimdConfig::validate`].
    pub fn new(config: AimdConfig) -> AimdRateControl {
        AimdRateControl {
            current: config.start_bps.clamp_to(config.min_bps, config.max_bps),
            config,
            state: RateControlState::Hold,
            capacity: LinkCapacity::default(),
            last_update: None,
            last_decrease: None,
            decreases: 0,
        }
    }

    /// The current delay-based estimate.
    pub fn estimate(&self) -> Bitrate {
        self.current
    }

    /// The current state.
    pub fn state(&self) -> RateControlState {
        self.state
    }

    /// Number of decreases applied.
    pub fn decreases(&self) -> u64 {
        self.decreases
    }

    /// Whether a further decrease is due: at most one per RTT unless the incoming rate has
    /// fallen below half the estimate (then the estimate is plainly wrong).
    pub fn time_to_reduce_further(&self, now: Micros, incoming: Option<Bitrate>) -> bool {
        let Some(last) = self.last_decrease else {
            return true;
        };
        let spacing = Micros(self.config.rtt.as_micros().clamp(10_000, 200_000));
        if now.saturating_since(last) >= spacing {
            return true;
        }
        incoming.is_some_and(|r| r < self.current.scale(0.5))
    }

    /// Apply the detector's signal at `now`, with the incoming rate measured over the last
    /// window (`None` while the window is not yet filled). Returns the new estimate.
    pub fn update(
        &mut self,
        usage: BandwidthUsage,
        incoming: Option<Bitrate>,
        now: Micros,
    ) -> Bitrate {
        // Time since the last update; backwards time gives zero (the caller counts it).
        let dt = self
            .last_update
            .map_or(Micros::ZERO, |last| now.saturating_since(last));
        self.last_update = Some(self.last_update.map_or(now, |l| l.max(now)));

        self.state = match (usage, self.state) {
            (BandwidthUsage::Overusing, _) => RateControlState::Decrease,
            (BandwidthUsage::Underusing, _) => RateControlState::Hold,
            (BandwidthUsage::Normal, RateControlState::Hold) => RateControlState::Increase,
            (BandwidthUsage::Normal, s) => s,
        };

        match self.state {
            RateControlState::Hold => {}
            RateControlState::Increase => self.increase(incoming, dt),
            RateControlState::Decrease => {
                if self.time_to_reduce_further(now, incoming) {
                    self.decrease(incoming, now);
                }
                self.state = RateControlState::Hold;
            }
        }
        self.current = self
            .current
            .clamp_to(self.config.min_bps, self.config.max_bps);
        self.current
    }

    fn increase(&mut self, incoming: Option<Bitrate>, dt: Micros) {
        let dt_s = dt.as_secs_f64().min(1.0);
        if let (Some(inc), Some(upper)) = (incoming, self.capacity.upper_kbps()) {
            if inc.kbps() > upper {
                // Far above where we last saw congestion: the link got faster.
                self.capacity = LinkCapacity::default();
            }
        }
        let cur = self.current.bps() as f64;
        let add = if self.capacity.mean_kbps.is_some() {
            self.additive_increase_bps_per_sec() * dt_s
        } else {
            let factor = (1.0 + self.config.multiplicative_increase_per_sec).powf(dt_s);
            (cur * (factor - 1.0)).max(1_000.0 * dt_s)
        };
        let mut next = cur + add;
        if let Some(inc) = incoming {
            // Do not run ahead of what actually arrives.
            let limit = 1.5 * inc.bps() as f64 + 10_000.0;
            if next > limit {
                // Capped at the limit, but an increase never lowers the rate.
                next = cur.max(limit);
            }
        }
        self.current = Bitrate::from_bps_f64(next);
    }

    /// About one packet per response time (100 ms + RTT), libwebrtc's "near convergence" rule.
    fn additive_increase_bps_per_sec(&self) -> f64 {
        let response_ms = 100.0 + self.config.rtt.as_millis_f64();
        let bits_per_frame = self.current.bps() as f64 / self.config.frame_rate;
        let packet_bits = f64::from(self.config.packet_size_bytes) * 8.0;
        let packets_per_frame = (bits_per_frame / packet_bits).ceil().max(1.0);
        let avg_packet_bits = bits_per_frame / packets_per_frame;
        (avg_packet_bits * 1000.0 / response_ms).max(4_000.0)
    }

    fn decrease(&mut self, incoming: Option<Bitrate>, now: Micros) {
        let beta = self.config.decrease_factor;
        let mut next = match incoming {
            Some(inc) => inc.scale(beta),
            None => self.current.scale(beta),
        };
        if next > self.current {
            // The incoming rate is above our estimate (e.g. a burst): fall back to the link
            // capacity estimate, and never increase on overuse.
            if let Some(mean) = self.capacity.mean_kbps {
                next = Bitrate::from_bps_f64(beta * mean * 1000.0);
            }
            next = next.min(self.current);
        }
        if let Some(inc) = incoming {
            if let Some(lower) = self.capacity.lower_kbps() {
                if inc.kbps() < lower {
                    self.capacity = LinkCapacity::default();
                }
            }
            self.capacity.update(inc.kbps());
        }
        tracing::debug!(from = %self.current, to = %next, "aimd decrease");
        self.current = next;
        self.last_decrease = Some(now);
        self.decreases += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctl() -> AimdRateControl {
        AimdRateControl::new(AimdConfig::default())
    }

    #[test]
    fn multiplicative_increase_about_8_percent_per_second() {
        let mut c = ctl();
        let start = c.estimate();
        c.update(BandwidthUsage::Normal, None, Micros::ZERO);
        for i in 1..=30 {
            c.update(
                BandwidthUsage::Normal,
                None,
                Micros::from_millis(i * 33 + 10),
            );
        }
        // ~1 s at 8 %/s.
        let ratio = c.estimate().bps() as f64 / start.bps() as f64;
        assert!((1.07..1.09).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn decrease_is_085_of_incoming_then_additive() {
        let mut c = ctl();
        c.update(BandwidthUsage::Normal, None, Micros::ZERO);
        let incoming = Some(Bitrate::from_kbps(280));
        let r = c.update(BandwidthUsage::Overusing, incoming, Micros::from_millis(10));
        assert_eq!(r, Bitrate::from_kbps(238));
        assert_eq!(c.state(), RateControlState::Hold);
        // Near the congestion point the increase is additive: over 1 s, far below 8 %.
        c.update(BandwidthUsage::Normal, incoming, Micros::from_millis(20));
        let before = c.estimate();
        for i in 1..=10 {
            c.update(
                BandwidthUsage::Normal,
                incoming,
                Micros::from_millis(20 + i * 100),
            );
        }
        let gained = c.estimate().bps() - before.bps();
        // 238 kbit/s at 30 fps is one 992-byte packet per frame: ~26 kbit/s per second.
        assert!((20_000..32_000).contains(&gained), "gained {gained}");
    }

    #[test]
    fn decreases_are_spaced_by_rtt() {
        let mut c = ctl();
        let inc = Some(Bitrate::from_kbps(290));
        c.update(BandwidthUsage::Overusing, inc, Micros::from_millis(0));
        let after_first = c.estimate();
        c.update(BandwidthUsage::Overusing, inc, Micros::from_millis(50));
        assert_eq!(c.estimate(), after_first);
        c.update(
            BandwidthUsage::Overusing,
            Some(Bitrate::from_kbps(200)),
            Micros::from_millis(250),
        );
        assert_eq!(c.estimate(), Bitrate::from_kbps(170));
        assert_eq!(c.decreases(), 2);
    }

    #[test]
    fn increase_limited_by_incoming_and_bounds() {
        let mut c = ctl();
        c.update(BandwidthUsage::Normal, None, Micros::ZERO);
        for i in 1..=100 {
            c.update(
                BandwidthUsage::Normal,
                Some(Bitrate::from_kbps(100)),
                Micros::from_millis(i * 100),
            );
        }
        // 1.5 × 100 + 10 = 160 kbit/s, but never below where we started.
        assert_eq!(c.estimate(), Bitrate::from_kbps(300));
        let mut c = AimdRateControl::new(AimdConfig {
            max_bps: Bitrate::from_kbps(320),
            ..AimdConfig::default()
        });
        for i in 0..=100 {
            c.update(BandwidthUsage::Normal, None, Micros::from_millis(i * 100));
        }
        assert_eq!(c.estimate(), Bitrate::from_kbps(320));
    }

    #[test]
    fn backwards_time_does_not_panic_or_increase() {
        let mut c = ctl();
        c.update(BandwidthUsage::Normal, None, Micros::from_secs(5));
        let e = c.update(BandwidthUsage::Normal, None, Micros::from_secs(1));
        assert_eq!(e, Bitrate::from_kbps(300));
    }

    #[test]
    fn config_validation() {
        assert!(AimdConfig::default().validate().is_ok());
        let bad = AimdConfig {
            min_bps: Bitrate::from_kbps(500),
            ..AimdConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(AbrError::InvalidConfig {
                field: "aimd.start_bps",
                ..
            })
        ));
    }
}
