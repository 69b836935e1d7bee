//! A deterministic path simulator on virtual time, for tests and benches.
//!
//! Why: congestion control is judged by behaviour over time (convergence, back-off, queueing
//! delay, utilisation), which unit tests of the parts cannot show and real networks cannot
//! reproduce. libwebrtc tests GCC against simulated links, and the rtc-interceptor crates keep a
//! `tests/path_simulation.rs`; this is the same idea, small and self-contained:
//!
//! ```text
//! sender (frames at 30 fps, rate follows the last REMB with an encoder-like ramp)
//!   → drop-tail bottleneck queue (bytes), capacity from a piecewise-constant trace
//!   → random loss, propagation delay + uniform jitter (seeded SplitMix64 PRNG)
//!   → receiver: ReceiverEstimator::on_packet / poll  → REMB back after the propagation delay
//! ```
//!
//! Everything runs on a 1 ms virtual tick; packet departures and arrivals are exact to the
//! microsecond (FIFO link: `depart = max(enqueue, link_free) + size / capacity`). The same
//! config and seed always give the same series.
//!
//! Besides the sampled series, every frame is recorded ([`SimFrame`]): when it was sent, its
//! size and the arrival of its last packet, so frame latency (serialisation + queueing +
//! propagation + jitter, no jitter buffer) is exact per frame rather than sampled. Packets still
//! in flight when the run ends are delivered to the frame records afterwards (not to the
//! estimator), so the last frames' latencies are complete too.

use crate::error::{check_f64, check_positive, AbrError};
use crate::estimator::{EstimatorConfig, EstimatorStats, ReceiverEstimator, RembUpdate};
use crate::inter_arrival::AbsSendTime;
use crate::recap::RecapTable;
use crate::units::{Bitrate, Micros};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// The seeded generator of the path simulator (the workspace's one SplitMix64).
pub use vr_core::rng::SplitMix64;

/// Link capacity over time, piecewise constant.
#[derive(Clone, Debug, PartialEq)]
pub struct BandwidthTrace {
    segments: Vec<(Micros, Bitrate)>,
    end: Option<Micros>,
}

impl BandwidthTrace {
    /// A constant capacity.
    pub fn constant(capacity: Bitrate) -> Result<BandwidthTrace, AbrError> {
        BandwidthTrace::steps(&[(Micros::ZERO, capacity)])
    }

    /// Segments `(start, capacity)`: the first starts at 0, starts strictly increase,
    /// capacities are at least 1 kbit/s.
    ///
    /// # Errors
    /// [`AbrError::InvalidTrace`] naming the bad segment.
    pub fn steps(segments: &[(Micros, Bitrate)]) -> Result<BandwidthTrace, AbrError> {
        if segments.first().map(|s| s.0) != Some(Micros::ZERO) {
            return Err(AbrError::InvalidTrace {
                index: 0,
                reason: "the first segment must start at 0",
            });
        }
        for (i, s) in segments.iter().enumerate() {
            if s.1 < Bitrate::from_kbps(1) {
                return Err(AbrError::InvalidTrace {
                    index: i,
                    reason: "capacity below 1 kbit/s",
                });
            }
            if i > 0 && s.0 <= segments[i - 1].0 {
                return Err(AbrError::InvalidTrace {
                    index: i,
                    reason: "segment starts must strictly increase",
                });
            }
        }
        Ok(BandwidthTrace {
            segments: segments.to_vec(),
            end: None,
        })
    }

    /// Parse a trace file: one `time_ms,kbps` line per change of capacity (piecewise constant),
    /// the first at time 0, times strictly increasing, kbit/s ≥ 1 (decimals allowed). `#`
    /// starts a comment (whole line or trailing); blank lines and a `time_ms,kbps` header are
    /// skipped. A last line `time_ms,end` marks where the trace ends ([`BandwidthTrace::end`]).
    ///
    /// ```text
    /// # 3 Mbit/s, then 0.5 Mbit/s from 10 s, for 30 s
    /// time_ms,kbps
    /// 0,3000
    /// 10000,500
    /// 40000,end
    /// ```
    ///
    /// # Errors
    /// [`AbrError::TraceLine`] naming the first bad line (1-based) and quoting it.
    pub fn parse(text: &str) -> Result<BandwidthTrace, AbrError> {
        let mut segments: Vec<(Micros, Bitrate)> = Vec::new();
        let mut end = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() || line.replace(' ', "") == "time_ms,kbps" {
                continue;
            }
            let bad = |reason: &str| AbrError::TraceLine {
                line: i + 1,
                reason: format!("{reason} (`{}`)", raw.trim()),
            };
            if end.is_some() {
                return Err(bad("nothing may follow the `end` line"));
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [time, rate] = fields[..] else {
                return Err(bad("expected `time_ms,kbps`"));
            };
            let time: u64 = time
                .parse()
                .map_err(|_| bad("time_ms is not a non-negative integer"))?;
            let t = Micros::from_millis(time);
            match segments.last() {
                None if time != 0 => return Err(bad("the first line must be at time 0")),
                Some(&(prev, _)) if t <= prev => return Err(bad("times must strictly increase")),
                _ => {}
            }
            if rate == "end" {
                if segments.is_empty() {
                    return Err(bad("`end` before any capacity"));
                }
                end = Some(t);
                continue;
            }
            let kbps: f64 = rate
                .parse()
                .map_err(|_| bad("kbps is not a number (or `end`)"))?;
            if !(kbps.is_finite() && kbps >= 1.0) {
                return Err(bad("kbps must be finite and at least 1"));
            }
            segments.push((t, Bitrate::from_bps_f64(kbps * 1000.0)));
        }
        if segments.is_empty() {
            return Err(AbrError::TraceLine {
                line: text.lines().count(),
                reason: "no `time_ms,kbps` line".into(),
            });
        }
        let mut trace = BandwidthTrace::steps(&segments)?;
        trace.end = end;
        Ok(trace)
    }

    /// The capacity changes `(start, capacity)`.
    pub fn segments(&self) -> &[(Micros, Bitrate)] {
        &self.segments
    }

    /// Where a parsed trace says it ends (`time_ms,end`), if it does.
    pub fn end(&self) -> Option<Micros> {
        self.end
    }

    /// Capacity at `t`.
    pub fn capacity_at(&self, t: Micros) -> Bitrate {
        self.segments
            .iter()
            .rev()
            .find(|s| s.0 <= t)
            .or(self.segments.first())
            .map_or(Bitrate::from_kbps(1), |s| s.1)
    }
}

/// Simulation parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Simulated time.
    pub duration: Micros,
    /// Bottleneck capacity over time.
    pub trace: BandwidthTrace,
    /// Drop-tail queue limit (bytes).
    pub queue_bytes: u32,
    /// One-way propagation delay (each direction).
    pub propagation: Micros,
    /// Random loss probability after the bottleneck, `0..1`.
    pub loss: f64,
    /// Extra delay uniform in `[0, jitter)` per packet (may reorder packets).
    pub jitter: Micros,
    /// PRNG seed.
    pub seed: u64,
    /// Sender frame rate.
    pub frame_rate: u32,
    /// Largest packet (bytes).
    pub max_packet_bytes: u32,
    /// Sender's initial rate (the estimator's start is `estimator.aimd.start_bps`).
    pub start_bitrate: Bitrate,
    /// Time constant with which the encoder's rate rises towards a higher target (decreases
    /// apply at the next frame).
    pub encoder_ramp: Micros,
    /// The sender's abs-send-time clock reads `t + send_clock_offset` (to test the 64 s wrap).
    pub send_clock_offset: Micros,
    /// Interval of the recorded samples.
    pub sample_interval: Micros,
    /// The receiver's estimator.
    pub estimator: EstimatorConfig,
    /// An optional ReCapABR cap applied to each REMB before it is sent back.
    pub cap: Option<SimCap>,
}

/// The ReCapABR cap the simulated receiver applies: `table.decide(class, None, ..)`.
#[derive(Clone, Debug)]
pub struct SimCap {
    /// The confidence table.
    pub table: RecapTable,
    /// The content class being sent.
    pub class: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        let estimator = EstimatorConfig::default();
        SimConfig {
            duration: Micros::from_secs(30),
            trace: BandwidthTrace {
                segments: vec![(Micros::ZERO, Bitrate::from_kbps(2_500))],
                end: None,
            },
            queue_bytes: 100_000,
            propagation: Micros::from_millis(25),
            loss: 0.0,
            jitter: Micros::ZERO,
            seed: 1,
            frame_rate: 30,
            max_packet_bytes: 1_200,
            start_bitrate: estimator.aimd.start_bps,
            encoder_ramp: Micros::from_millis(500),
            send_clock_offset: Micros::ZERO,
            sample_interval: Micros::from_millis(100),
            estimator,
            cap: None,
        }
    }
}

impl SimConfig {
    /// Check the simulator's own fields (the estimator checks its config itself).
    ///
    /// # Errors
    /// [`AbrError::InvalidConfig`] naming the first bad field.
    pub fn validate(&self) -> Result<(), AbrError> {
        check_positive("sim.duration", self.duration.as_micros())?;
        check_positive("sim.queue_bytes", u64::from(self.queue_bytes))?;
        check_f64("sim.loss", self.loss, 0.0, 0.99)?;
        check_positive("sim.frame_rate", u64::from(self.frame_rate))?;
        check_positive("sim.max_packet_bytes", u64::from(self.max_packet_bytes))?;
        check_positive("sim.start_bitrate", self.start_bitrate.bps())?;
        check_positive("sim.encoder_ramp", self.encoder_ramp.as_micros())?;
        check_positive("sim.sample_interval", self.sample_interval.as_micros())
    }
}

/// One point of the recorded time series.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimSample {
    /// Virtual time.
    pub t: Micros,
    /// Bottleneck capacity.
    pub capacity: Bitrate,
    /// The sender's (encoder's) current rate.
    pub send_rate: Bitrate,
    /// The receiver's final estimate.
    pub estimate: Bitrate,
    /// Its delay-based part.
    pub delay_based: Bitrate,
    /// Its loss-based part.
    pub loss_based: Bitrate,
    /// The last REMB value sent back (after the cap, if any).
    pub advertised: Bitrate,
    /// Queueing delay a packet entering the bottleneck now would see.
    pub queue_delay: Micros,
    /// Fraction of the packets sent during the last sample interval that were lost (queue
    /// drops and random loss).
    pub loss: f64,
}

/// The simulation's output.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The time series, one sample per `sample_interval`.
    pub samples: Vec<SimSample>,
    /// Every REMB the receiver emitted.
    pub rembs: Vec<RembUpdate>,
    /// The estimator's counters at the end.
    pub stats: EstimatorStats,
    /// Packets sent.
    pub sent: u64,
    /// Packets dropped by the full queue.
    pub queue_drops: u64,
    /// Packets lost at random.
    pub random_losses: u64,
    /// Every frame sent, in sending order.
    pub frames: Vec<SimFrame>,
}

/// One video frame as the simulated receiver saw it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SimFrame {
    /// When the sender captured and packetised it (all its packets enter the bottleneck then).
    pub sent: Micros,
    /// The encoder's rate when the frame was produced (its size × the frame rate).
    pub send_rate: Bitrate,
    /// Size (bytes).
    pub bytes: u32,
    /// Packets it was split into.
    pub packets: u32,
    /// Packets that reached the receiver (the others were dropped by the queue or lost).
    pub received: u32,
    /// Arrival of the last of its packets to arrive.
    pub last_arrival: Option<Micros>,
}

impl SimFrame {
    /// Whether every packet of the frame arrived.
    pub fn complete(&self) -> bool {
        self.received == self.packets
    }

    /// Send → arrival of the frame's last packet; `None` when a packet was lost.
    pub fn latency(&self) -> Option<Micros> {
        if self.complete() {
            self.last_arrival.map(|a| a.saturating_since(self.sent))
        } else {
            None
        }
    }
}

impl SimReport {
    /// The first sample at or after `from` satisfying `pred`.
    pub fn first_after(
        &self,
        from: Micros,
        pred: impl Fn(&SimSample) -> bool,
    ) -> Option<&SimSample> {
        self.samples.iter().find(|s| s.t >= from && pred(s))
    }

    /// Samples with `from <= t < to`.
    pub fn window(&self, from: Micros, to: Micros) -> impl Iterator<Item = &SimSample> {
        self.samples.iter().filter(move |s| s.t >= from && s.t < to)
    }

    /// Mean of `f` over `from <= t < to` (0 when empty).
    pub fn mean(&self, from: Micros, to: Micros, f: impl Fn(&SimSample) -> f64) -> f64 {
        let (sum, n) = self
            .window(from, to)
            .fold((0.0, 0u32), |(s, n), x| (s + f(x), n + 1));
        if n == 0 {
            0.0
        } else {
            sum / f64::from(n)
        }
    }

    /// Largest queueing delay over `from <= t < to`.
    pub fn max_queue_delay(&self, from: Micros, to: Micros) -> Micros {
        self.window(from, to)
            .map(|s| s.queue_delay)
            .max()
            .unwrap_or(Micros::ZERO)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct InFlight {
    arrival: Micros,
    order: u64,
    send: Micros,
    size: u32,
    seq: u16,
    frame: usize,
}

/// Run the simulation.
///
/// # Errors
/// [`AbrError::InvalidConfig`] from [`SimConfig::validate`] or the estimator's config.
pub fn run(config: &SimConfig) -> Result<SimReport, AbrError> {
    config.validate()?;
    let mut est = ReceiverEstimator::new(config.estimator.clone())?;
    let mut rng = SplitMix64::new(config.seed);
    let tick = Micros::from_millis(1);
    let frame_interval_us = 1e6 / f64::from(config.frame_rate);

    let mut target = config.start_bitrate;
    let mut advertised = config.start_bitrate;
    let mut rate = config.start_bitrate.bps() as f64;
    let mut feedback: VecDeque<(Micros, Bitrate)> = VecDeque::new();
    let mut next_frame_us = 0.0f64;
    let mut seq: u16 = 0;
    let mut order: u64 = 0;
    // Bottleneck: departure times (µs, f64) and sizes of packets still in the queue.
    let mut queue: VecDeque<(f64, u32)> = VecDeque::new();
    let mut queued_bytes: u64 = 0;
    let mut link_free_us = 0.0f64;
    let mut in_flight: BinaryHeap<Reverse<InFlight>> = BinaryHeap::new();

    let mut report = SimReport {
        samples: Vec::new(),
        rembs: Vec::new(),
        stats: EstimatorStats::default(),
        sent: 0,
        queue_drops: 0,
        random_losses: 0,
        frames: Vec::new(),
    };
    let (mut interval_sent, mut interval_lost) = (0u64, 0u64);
    let mut next_sample = Micros::ZERO;

    let mut t = Micros::ZERO;
    while t <= config.duration {
        let now_us = t.as_micros() as f64;
        let capacity = config.trace.capacity_at(t);

        // Sender: feedback that has arrived, then the encoder's rate.
        while feedback.front().is_some_and(|f| f.0 <= t) {
            if let Some((_, b)) = feedback.pop_front() {
                target = b;
            }
        }
        let tgt = target.bps() as f64;
        if tgt < rate {
            rate = tgt;
        } else {
            let a = (tick.as_micros() as f64 / config.encoder_ramp.as_micros() as f64).min(1.0);
            rate += (tgt - rate) * a;
        }

        // Drain the bottleneck up to now.
        while queue.front().is_some_and(|&(d, _)| d <= now_us) {
            if let Some((_, size)) = queue.pop_front() {
                queued_bytes -= u64::from(size);
            }
        }

        // A frame is due: packetise it and push it into the bottleneck.
        if now_us >= next_frame_us {
            next_frame_us += frame_interval_us;
            let frame_bytes = ((rate / f64::from(config.frame_rate)) / 8.0)
                .ceil()
                .max(100.0) as u64;
            let frame = report.frames.len();
            report.frames.push(SimFrame {
                sent: t,
                send_rate: Bitrate::from_bps_f64(rate),
                bytes: u32::try_from(frame_bytes).unwrap_or(u32::MAX),
                packets: 0,
                received: 0,
                last_arrival: None,
            });
            let mut left = frame_bytes;
            while left > 0 {
                let size = left.min(u64::from(config.max_packet_bytes)) as u32;
                left -= u64::from(size);
                seq = seq.wrapping_add(1);
                report.sent += 1;
                if let Some(f) = report.frames.get_mut(frame) {
                    f.packets += 1;
                }
                interval_sent += 1;
                if queued_bytes + u64::from(size) > u64::from(config.queue_bytes) {
                    report.queue_drops += 1;
                    interval_lost += 1;
                    continue;
                }
                let start = link_free_us.max(now_us);
                let cap = config.trace.capacity_at(Micros(start as u64)).bps() as f64;
                let depart = start + f64::from(size) * 8.0 * 1e6 / cap;
                link_free_us = depart;
                queue.push_back((depart, size));
                queued_bytes += u64::from(size);
                if config.loss > 0.0 && rng.next_f64() < config.loss {
                    report.random_losses += 1;
                    interval_lost += 1;
                    continue;
                }
                let jitter = if config.jitter > Micros::ZERO {
                    rng.next_f64() * config.jitter.as_micros() as f64
                } else {
                    0.0
                };
                let arrival = Micros((depart + jitter).ceil() as u64) + config.propagation;
                order += 1;
                in_flight.push(Reverse(InFlight {
                    arrival,
                    order,
                    send: t,
                    size,
                    seq,
                    frame,
                }));
            }
        }

        // Receiver: everything that has arrived by now, in arrival order.
        while in_flight.peek().is_some_and(|p| p.0.arrival <= t) {
            if let Some(Reverse(p)) = in_flight.pop() {
                let abs = AbsSendTime::from_micros(p.send + config.send_clock_offset);
                est.on_packet(p.arrival, abs, p.size, p.seq);
                record_arrival(&mut report.frames, &p);
            }
        }
        if let Some(remb) = est.poll(t) {
            advertised = match &config.cap {
                Some(cap) => {
                    cap.table
                        .decide(&cap.class, None, advertised, remb.bitrate)
                        .target
                }
                None => remb.bitrate,
            };
            feedback.push_back((t + config.propagation, advertised));
            report.rembs.push(remb);
        }

        if t >= next_sample {
            next_sample = next_sample + config.sample_interval;
            let backlog_us = (link_free_us - now_us).max(0.0);
            report.samples.push(SimSample {
                t,
                capacity,
                send_rate: Bitrate::from_bps_f64(rate),
                estimate: est.estimate(),
                delay_based: est.delay_based(),
                loss_based: est.loss_based(),
                advertised,
                queue_delay: Micros(backlog_us as u64),
                loss: if interval_sent == 0 {
                    0.0
                } else {
                    interval_lost as f64 / interval_sent as f64
                },
            });
            interval_sent = 0;
            interval_lost = 0;
        }
        t = t + tick;
    }
    report.stats = est.stats();
    // Packets still queued or propagating: their arrival times are already fixed.
    while let Some(Reverse(p)) = in_flight.pop() {
        record_arrival(&mut report.frames, &p);
    }
    Ok(report)
}

fn record_arrival(frames: &mut [SimFrame], p: &InFlight) {
    if let Some(f) = frames.get_mut(p.frame) {
        f.received += 1;
        f.last_arrival = Some(f.last_arrival.map_or(p.arrival, |a| a.max(p.arrival)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prng_is_deterministic_and_uniform() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let xs: Vec<f64> = (0..10_000).map(|_| a.next_f64()).collect();
        assert!(xs
            .iter()
            .zip((0..).map(|_| b.next_f64()))
            .all(|(x, y)| *x == y));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
    }

    #[test]
    fn trace_validation_and_lookup() {
        let k = Bitrate::from_kbps;
        let tr = BandwidthTrace::steps(&[(Micros::ZERO, k(3000)), (Micros::from_secs(5), k(500))])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tr.capacity_at(Micros::from_millis(4_999)), k(3000));
        assert_eq!(tr.capacity_at(Micros::from_secs(5)), k(500));
        assert!(BandwidthTrace::steps(&[(Micros(1), k(3000))]).is_err());
        assert!(BandwidthTrace::constant(Bitrate::ZERO).is_err());
        assert!(BandwidthTrace::steps(&[(Micros::ZERO, k(1)), (Micros::ZERO, k(2))]).is_err());
    }

    #[test]
    fn trace_file_parses_with_comments_header_and_end() {
        let text = "# step down\ntime_ms, kbps\n\n0,3000  # start\n10000,500.5\n40000,end\n";
        let tr = BandwidthTrace::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            tr.segments(),
            &[
                (Micros::ZERO, Bitrate::from_kbps(3000)),
                (Micros::from_secs(10), Bitrate(500_500)),
            ]
        );
        assert_eq!(tr.end(), Some(Micros::from_secs(40)));
        let open = BandwidthTrace::parse("0,800").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(open.end(), None);
        assert_eq!(
            open.capacity_at(Micros::from_secs(99)),
            Bitrate::from_kbps(800)
        );
    }

    #[test]
    fn trace_file_errors_name_the_line() {
        let line_of = |text: &str| match BandwidthTrace::parse(text) {
            Err(AbrError::TraceLine { line, reason }) => (line, reason),
            other => panic!("{text:?}: expected a line error, got {other:?}"),
        };
        assert_eq!(line_of("0,3000\n# c\n5000;500\n").0, 3);
        assert_eq!(line_of("0,3000\n5000,fast\n").0, 2);
        assert_eq!(line_of("0,3000\n-5,500\n").0, 2);
        assert_eq!(line_of("100,3000\n").0, 1);
        assert_eq!(line_of("0,3000\n5000,500\n5000,400\n").0, 3);
        assert_eq!(line_of("0,3000\n5000,0.5\n").0, 2);
        assert_eq!(line_of("0,3000\n5000,NaN\n").0, 2);
        assert_eq!(line_of("0,3000\n5000,end\n6000,400\n").0, 3);
        assert_eq!(line_of("0,end\n").0, 1);
        assert_eq!(line_of("0,3000,7\n").0, 1);
        let (_, reason) = line_of("0,3000\n5000,fast\n");
        assert!(reason.contains("5000,fast"), "{reason}");
        assert!(matches!(
            BandwidthTrace::parse("# only a comment\n"),
            Err(AbrError::TraceLine { .. })
        ));
    }

    #[test]
    fn underloaded_link_has_no_queue() {
        // Capacity far above what the sender may reach in 3 s: no queue, no loss.
        let cfg = SimConfig {
            duration: Micros::from_secs(3),
            trace: BandwidthTrace::constant(Bitrate::from_kbps(50_000))
                .unwrap_or_else(|e| panic!("{e}")),
            ..SimConfig::default()
        };
        let r = run(&cfg).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.queue_drops, 0);
        assert!(r.max_queue_delay(Micros::ZERO, cfg.duration) < Micros::from_millis(5));
        assert!(r.samples.iter().all(|s| s.loss == 0.0));
        assert_eq!(r.samples.len(), 31);
    }
}
