//! The receiver-side estimator: packets in, REMB out.
//!
//! Why receiver-side: with abs-send-time (GCC's original "receive-side" mode,
//! draft-ietf-rmcat-gcc-02 §4, and libwebrtc's `RemoteBitrateEstimatorAbsSendTime`), the
//! receiver has everything it needs (send time, arrival time, size, sequence number) and reports
//! a single number, REMB, which every browser's sender obeys. That keeps VoiceRelay's
//! controller in one place (the server) and lets it add its own cap (ReCapABR, [`crate::recap`])
//! before the number leaves.
//!
//! Pipeline per packet: duplicates/too-old dropped ([`SeqTracker`]) → incoming-rate window
//! (500 ms) → [`SendTimeUnwrapper`] → [`InterArrival`] groups → [`TrendlineEstimator`] →
//! [`AimdRateControl`]; in parallel [`LossBasedEstimator`] over sequence gaps. The estimate is
//! `min(delay-based, loss-based)`. [`ReceiverEstimator::poll`] emits a REMB every `remb_interval`
//! (1 s) or at once when the estimate dropped by `remb_drop_fraction` (3 %) or more since the
//! last one, so a sender backs off within one feedback delay.
//!
//! Time is a parameter: `arrival` and `now` are on the same caller clock. Nothing here panics on
//! bad input; everything ignored is counted in [`EstimatorStats`].

use crate::aimd::{AimdConfig, AimdRateControl};
use crate::error::{check_f64, check_positive, AbrError};
use crate::inter_arrival::{AbsSendTime, InterArrival, SendTimeUnwrapper};
use crate::loss::{LossBasedEstimator, LossConfig, SeqTracker, SeqVerdict};
use crate::trendline::{BandwidthUsage, TrendlineConfig, TrendlineEstimator};
use crate::units::{Bitrate, Micros};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Estimator parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EstimatorConfig {
    /// Packets sent within this interval form one group (GCC: 5 ms).
    #[serde(rename = "burst_us")]
    pub burst: Micros,
    /// Window of the incoming-rate measurement.
    #[serde(rename = "incoming_window_us")]
    pub incoming_window: Micros,
    /// Regular REMB interval.
    #[serde(rename = "remb_interval_us")]
    pub remb_interval: Micros,
    /// A drop of at least this fraction since the last REMB sends one at once.
    pub remb_drop_fraction: f64,
    /// Overuse detector.
    pub trendline: TrendlineConfig,
    /// Delay-based rate control (also holds the min/max/start bounds).
    pub aimd: AimdConfig,
    /// Loss-based controller.
    pub loss: LossConfig,
}

impl Default for EstimatorConfig {
    fn default() -> Self {
        EstimatorConfig {
            burst: Micros::from_millis(5),
            incoming_window: Micros::from_millis(500),
            remb_interval: Micros::from_secs(1),
            remb_drop_fraction: 0.03,
            trendline: TrendlineConfig::default(),
            aimd: AimdConfig::default(),
            loss: LossConfig::default(),
        }
    }
}

impl EstimatorConfig {
    /// Check every field, including the nested configs.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AbrError> {
        check_positive("estimator.burst", self.burst.as_micros())?;
        check_positive(
            "estimator.incoming_window",
            self.incoming_window.as_micros(),
        )?;
        check_positive("estimator.remb_interval", self.remb_interval.as_micros())?;
        check_f64(
            "estimator.remb_drop_fraction",
            self.remb_drop_fraction,
            0.0,
            1.0,
        )?;
        self.trendline.validate()?;
        self.aimd.validate()?;
        self.loss.validate()
    }
}

/// Why a REMB was emitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RembReason {
    /// The first one after packets started arriving.
    First,
    /// The regular interval elapsed.
    Periodic,
    /// The estimate dropped by at least `remb_drop_fraction`.
    Decrease,
}

/// A REMB to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RembUpdate {
    /// The bitrate to advertise.
    pub bitrate: Bitrate,
    /// When it was produced.
    pub at: Micros,
    /// Why now.
    pub reason: RembReason,
}

/// Counters of everything seen and ignored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EstimatorStats {
    /// Packets passed to `on_packet`.
    pub packets: u64,
    /// Packets of size zero, ignored.
    pub invalid_size: u64,
    /// Duplicate sequence numbers, ignored.
    pub duplicates: u64,
    /// Sequence numbers too old to place, ignored.
    pub too_old: u64,
    /// Packets whose arrival time went backwards, ignored by the delay path.
    pub arrival_backwards: u64,
    /// Packets sent before the current group (reordered), ignored by the delay path.
    pub reordered: u64,
    /// Calls to `poll` with `now` earlier than the previous call.
    pub poll_backwards: u64,
    /// Group deltas fed to the trendline.
    pub groups: u64,
    /// Group deltas for which the detector said overuse.
    pub overuse_signals: u64,
    /// REMBs emitted.
    pub remb_sent: u64,
}

/// Received bytes over a sliding window.
#[derive(Clone, Debug)]
struct RateWindow {
    window: Micros,
    packets: VecDeque<(Micros, u32)>,
    bytes: u64,
    first: Option<Micros>,
}

impl RateWindow {
    fn new(window: Micros) -> RateWindow {
        RateWindow {
            window,
            packets: VecDeque::new(),
            bytes: 0,
            first: None,
        }
    }

    fn evict(&mut self, now: Micros) {
        while let Some(&(t, size)) = self.packets.front() {
            if now.saturating_since(t) >= self.window {
                self.packets.pop_front();
                self.bytes -= u64::from(size);
            } else {
                break;
            }
        }
    }

    fn add(&mut self, t: Micros, size: u32) {
        self.first.get_or_insert(t);
        self.evict(t);
        self.packets.push_back((t, size));
        self.bytes += u64::from(size);
    }

    /// The rate, once a full window has been observed.
    fn rate(&mut self, now: Micros) -> Option<Bitrate> {
        let first = self.first?;
        if now.saturating_since(first) < self.window {
            return None;
        }
        self.evict(now);
        Some(Bitrate::from_bps_f64(
            self.bytes as f64 * 8.0 / self.window.as_secs_f64(),
        ))
    }
}

/// The receiver-side bandwidth estimator.
#[derive(Clone, Debug)]
pub struct ReceiverEstimator {
    config: EstimatorConfig,
    seq: SeqTracker,
    unwrapper: SendTimeUnwrapper,
    inter_arrival: InterArrival,
    trendline: TrendlineEstimator,
    aimd: AimdRateControl,
    loss: LossBasedEstimator,
    incoming: RateWindow,
    last_arrival: Option<Micros>,
    last_poll: Option<Micros>,
    last_remb: Option<RembUpdate>,
    stats: EstimatorStats,
}

impl ReceiverEstimator {
    /// A validated estimator.
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] when `config` fails [`EstimatorConfig::validate`].
    pub fn new(config: EstimatorConfig) -> Result<ReceiverEstimator, AbrError> {
        config.validate()?;
        Ok(ReceiverEstimator {
            seq: SeqTracker::new(),
            unwrapper: SendTimeUnwrapper::new(),
            inter_arrival: InterArrival::new(config.burst),
            trendline: TrendlineEstimator::new(config.trendline.clone()),
            aimd: AimdRateControl::new(config.aimd.clone()),
            loss: LossBasedEstimator::new(config.loss.clone(), config.aimd.start_bps),
            incoming: RateWindow::new(config.incoming_window),
            last_arrival: None,
            last_poll: None,
            last_remb: None,
            stats: EstimatorStats::default(),
            config,
        })
    }

    /// One received RTP packet: its arrival time on the receiver's clock, its abs-send-time
    /// header extension, its size in bytes (header included) and its RTP sequence number.
    pub fn on_packet(&mut self, arrival: Micros, send_time: AbsSendTime, size: u32, seq: u16) {
        self.stats.packets += 1;
        if size == 0 {
            self.stats.invalid_size += 1;
            return;
        }
        match self.seq.observe(seq) {
            SeqVerdict::New => {}
            SeqVerdict::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            SeqVerdict::TooOld => {
                self.stats.too_old += 1;
                return;
            }
        }
        if self.last_arrival.is_some_and(|last| arrival < last) {
            // Counted as received for loss accounting (its sequence number is recorded), but
            // its timing is unusable.
            self.stats.arrival_backwards += 1;
            return;
        }
        self.last_arrival = Some(arrival);
        self.incoming.add(arrival, size);

        let send = self.unwrapper.unwrap(send_time);
        match self.inter_arrival.push(send, arrival, size) {
            Ok(Some(delta)) => {
                self.stats.groups += 1;
                let usage = self.trendline.update(&delta);
                if usage == BandwidthUsage::Overusing {
                    self.stats.overuse_signals += 1;
                }
                let incoming = self.incoming.rate(arrival);
                self.aimd.update(usage, incoming, arrival);
            }
            Ok(None) => {}
            Err(_) => self.stats.reordered += 1,
        }
        let aimd = &self.config.aimd;
        self.loss.on_packet(
            &self.seq,
            arrival,
            self.aimd.estimate(),
            aimd.min_bps,
            aimd.max_bps,
        );
    }

    /// Whether a REMB is due at `now`, and its value.
    pub fn poll(&mut self, now: Micros) -> Option<RembUpdate> {
        if self.last_poll.is_some_and(|last| now < last) {
            self.stats.poll_backwards += 1;
            return None;
        }
        self.last_poll = Some(now);
        self.last_arrival?;
        let bitrate = self.estimate();
        let reason = match self.last_remb {
            None => RembReason::First,
            Some(last) if now.saturating_since(last.at) >= self.config.remb_interval => {
                RembReason::Periodic
            }
            Some(last)
                if bitrate.bps() as f64
                    <= last.bitrate.bps() as f64 * (1.0 - self.config.remb_drop_fraction) =>
            {
                RembReason::Decrease
            }
            Some(_) => return None,
        };
        let update = RembUpdate {
            bitrate,
            at: now,
            reason,
        };
        self.last_remb = Some(update);
        self.stats.remb_sent += 1;
        tracing::trace!(bitrate = %bitrate, ?reason, "remb");
        Some(update)
    }

    /// The final estimate: `min(delay-based, loss-based)`.
    pub fn estimate(&self) -> Bitrate {
        self.aimd.estimate().min(self.loss.estimate())
    }

    /// The delay-based (AIMD) estimate.
    pub fn delay_based(&self) -> Bitrate {
        self.aimd.estimate()
    }

    /// The loss-based estimate.
    pub fn loss_based(&self) -> Bitrate {
        self.loss.estimate()
    }

    /// Loss fraction of the last finished loss interval.
    pub fn loss_fraction(&self) -> f64 {
        self.loss.last_fraction()
    }

    /// The detector's current verdict.
    pub fn usage(&self) -> BandwidthUsage {
        self.trendline.state()
    }

    /// The incoming rate over the last window at `now` (`None` until a window has elapsed).
    pub fn incoming_rate(&mut self, now: Micros) -> Option<Bitrate> {
        self.incoming.rate(now)
    }

    /// Packets missing between the first and the highest sequence number seen (RFC 3550's
    /// cumulative loss; falls again when a late packet arrives).
    pub fn lost_packets(&self) -> u64 {
        self.seq.lost()
    }

    /// Counters.
    pub fn stats(&self) -> EstimatorStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn est() -> ReceiverEstimator {
        ReceiverEstimator::new(EstimatorConfig::default()).expect("default config is valid")
    }

    #[test]
    fn rejects_bad_config() {
        let cfg = EstimatorConfig {
            remb_drop_fraction: f64::NAN,
            ..EstimatorConfig::default()
        };
        assert!(matches!(
            ReceiverEstimator::new(cfg),
            Err(AbrError::InvalidConfig {
                field: "estimator.remb_drop_fraction",
                ..
            })
        ));
    }

    #[test]
    fn incoming_rate_over_500_ms() {
        let mut e = est();
        // 1000 bytes every 10 ms = 800 kbit/s.
        for i in 0..100u64 {
            let t = Micros::from_millis(i * 10);
            e.on_packet(t, AbsSendTime::from_micros(t), 1000, i as u16);
        }
        assert_eq!(e.incoming_rate(Micros::from_millis(400)), None);
        assert_eq!(
            e.incoming_rate(Micros::from_millis(990)),
            Some(Bitrate::from_kbps(800))
        );
    }

    #[test]
    fn remb_first_and_periodic_and_backwards_poll() {
        let mut e = est();
        assert_eq!(
            e.poll(Micros::ZERO),
            None,
            "nothing before the first packet"
        );
        e.on_packet(
            Micros::from_millis(1),
            AbsSendTime::from_micros(Micros::ZERO),
            1200,
            1,
        );
        let first = e.poll(Micros::from_millis(2)).expect("first remb");
        assert_eq!(first.reason, RembReason::First);
        assert_eq!(first.bitrate, Bitrate::from_kbps(300));
        assert_eq!(e.poll(Micros::from_millis(500)), None);
        let p = e.poll(Micros::from_millis(1002)).expect("periodic");
        assert_eq!(p.reason, RembReason::Periodic);
        // Time going backwards: counted, nothing emitted.
        assert_eq!(e.poll(Micros::from_millis(900)), None);
        assert_eq!(e.stats().poll_backwards, 1);
    }

    #[test]
    fn config_from_toml_with_units_in_the_keys() {
        let text = "remb_interval_us = 500000\n[aimd]\nstart_bps = 1000000\nrtt_us = 100000\n\
                    [trendline]\noveruse_time_us = 20000\n[loss]\ninterval_us = 1000000\n";
        let cfg: EstimatorConfig = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.remb_interval, Micros::from_millis(500));
        assert_eq!(cfg.aimd.start_bps, Bitrate::from_kbps(1000));
        assert_eq!(cfg.aimd.rtt, Micros::from_millis(100));
        assert_eq!(cfg.trendline.overuse_time, Micros::from_millis(20));
        assert_eq!(cfg.loss.interval, Micros::from_secs(1));
        assert_eq!(cfg.burst, Micros::from_millis(5));
        assert!(cfg.validate().is_ok());
        assert!(toml::from_str::<EstimatorConfig>("remb_interval = 5").is_err());
    }

    #[test]
    fn random_garbage_never_panics_and_every_packet_is_accounted() {
        let mut rng = crate::sim::SplitMix64::new(3);
        let mut e = est();
        for _ in 0..20_000 {
            let r = rng.next_u64();
            let arrival = Micros(r % 100_000_000);
            let send = AbsSendTime::from_raw((r >> 20) as u32);
            let size = ((r >> 44) % 1500) as u32;
            let seq = (rng.next_u64() % 3000) as u16;
            e.on_packet(arrival, send, size, seq);
            let _ = e.poll(Micros(rng.next_u64() % 100_000_000));
        }
        let s = e.stats();
        assert_eq!(s.packets, 20_000);
        assert!(s.invalid_size > 0 && s.duplicates > 0 && s.arrival_backwards > 0);
        assert!(s.poll_backwards > 0);
        let est = e.estimate();
        let cfg = EstimatorConfig::default();
        assert!(est >= cfg.aimd.min_bps && est <= cfg.aimd.max_bps, "{est}");
    }

    #[test]
    fn garbage_input_is_counted_not_fatal() {
        let mut e = est();
        let t = Micros::from_millis;
        e.on_packet(t(10), AbsSendTime::from_raw(u32::MAX), 0, 0);
        e.on_packet(t(10), AbsSendTime::from_raw(u32::MAX), 1200, 7);
        e.on_packet(t(11), AbsSendTime::from_raw(u32::MAX), 1200, 7);
        e.on_packet(t(5), AbsSendTime::from_raw(3), 1200, 8);
        e.on_packet(t(12), AbsSendTime::from_raw(0), 1200, 9);
        let s = e.stats();
        assert_eq!(s.packets, 5);
        assert_eq!(s.invalid_size, 1);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.arrival_backwards, 1);
        assert_eq!(e.estimate(), Bitrate::from_kbps(300));
    }
}
