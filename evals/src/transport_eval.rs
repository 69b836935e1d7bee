//! `voicerelay eval transport`: the receiver-side congestion control on a bandwidth trace, run
//! twice in the path simulator ([`vr_abr::sim`], virtual time, seeded) — **plain** (REMB = the
//! GCC-style estimate) and **capped** (ReCapABR: REMB = min(estimate, cap) from a confidence
//! table) — and summarised side by side.
//!
//! What is measured, per run:
//! - **Frame latency**: per frame, send (capture = packetisation; no encoder delay) → arrival of
//!   its last packet at the receiver: serialisation + bottleneck queueing + propagation + jitter,
//!   no jitter buffer. P50/P95/max over the frames that arrived complete; frames with a dropped
//!   or lost packet are counted as incomplete, not given a latency.
//! - **Proxy accuracy**: the table's confidence at the bitrate the frame was encoded at, for the
//!   frame's 5 s segment (row `⌊t / 5 s⌋`, wrapping over the class's rows), averaged over the
//!   complete frames; `proxy_accuracy_lost_as_zero` also counts incomplete frames as 0. The
//!   confidence is what the table says it is — for a measured table, a DeViBench-style proxy
//!   (EfficientNet-Lite0 label agreement with the pristine picture), not answer accuracy.
//! - **Rates**: means over the 100 ms samples of capacity, send rate, estimate and advertised
//!   (REMB) rate; headroom = (mean estimate − mean send rate) / mean estimate, in %.
//! - **Losses**: packets dropped by the full bottleneck queue, lost at random; the largest
//!   sampled queueing delay.
//!
//! The cap is applied as the simulator (and the live receiver) applies it:
//! `table.decide(class, None, ..)`, i.e. the class's conservative curve (per-tier minimum over
//! its rows), so it never undercuts a segment the table measured.

use crate::streaming::percentile;
use crate::EvalError;
use serde::Serialize;
use vr_abr::recap::ConfidenceCurve;
use vr_abr::sim::{self, SimCap, SimConfig, SimReport};
use vr_abr::{Micros, RecapTable};

/// Length of one row's segment of video in a ReCap table.
pub const SEGMENT: Micros = Micros::from_secs(5);

/// One run's figures (field meanings in the module docs).
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    /// `plain` or `capped`.
    pub name: String,
    pub frames: usize,
    pub frames_complete: usize,
    pub frames_incomplete: usize,
    pub latency_p50_ms: f64,
    pub latency_p95_ms: f64,
    pub latency_max_ms: f64,
    pub proxy_accuracy: f64,
    pub proxy_accuracy_lost_as_zero: f64,
    pub mean_capacity_kbps: f64,
    pub mean_send_kbps: f64,
    pub mean_estimate_kbps: f64,
    pub mean_advertised_kbps: f64,
    pub headroom_pct: f64,
    pub packets_sent: u64,
    pub queue_drops: u64,
    pub random_losses: u64,
    pub max_queue_delay_ms: f64,
    /// One point per second: `[t_s, capacity_kbps, send_kbps, estimate_kbps, advertised_kbps,
    /// queue_delay_ms]`.
    pub series: Vec<[f64; 6]>,
}

/// Both runs on the same trace and seed.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub class: String,
    pub threshold: f64,
    pub duration_s: f64,
    pub plain: RunSummary,
    pub capped: RunSummary,
}

/// Run `base` (its `cap` is ignored) plain and with the cap of `class` from `table`.
///
/// # Errors
/// [`EvalError::NoRecapTable`] for an empty table, [`EvalError::UnknownRecapClass`],
/// [`EvalError::Abr`] when the simulator rejects the config.
pub fn compare(base: &SimConfig, table: &RecapTable, class: &str) -> Result<Comparison, EvalError> {
    if table.is_empty() {
        return Err(EvalError::NoRecapTable);
    }
    let Some(content) = table.class(class) else {
        return Err(EvalError::UnknownRecapClass {
            class: class.to_owned(),
            known: table
                .classes()
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let curves: Vec<ConfidenceCurve> = (0..content.rows.len())
        .filter_map(|i| content.segment_curve(i))
        .collect();
    let plain_cfg = SimConfig {
        cap: None,
        ..base.clone()
    };
    let capped_cfg = SimConfig {
        cap: Some(SimCap {
            table: table.clone(),
            class: class.to_owned(),
        }),
        ..base.clone()
    };
    let plain = sim::run(&plain_cfg).map_err(EvalError::Abr)?;
    let capped = sim::run(&capped_cfg).map_err(EvalError::Abr)?;
    Ok(Comparison {
        class: class.to_owned(),
        threshold: table.threshold(),
        duration_s: base.duration.as_secs_f64(),
        plain: summarise("plain", &plain, &curves),
        capped: summarise("capped", &capped, &curves),
    })
}

/// The figures of one simulator run; `curves` are the class's per-segment curves.
pub fn summarise(name: &str, r: &SimReport, curves: &[ConfidenceCurve]) -> RunSummary {
    let latencies: Vec<f64> = r
        .frames
        .iter()
        .filter_map(|f| f.latency())
        .map(|l| l.as_millis_f64())
        .collect();
    let confidence = |f: &sim::SimFrame| {
        let segment = (f.sent.as_micros() / SEGMENT.as_micros()) as usize;
        curves
            .get(segment.checked_rem(curves.len()).unwrap_or(0))
            .map_or(0.0, |c| c.confidence_at(f.send_rate))
    };
    let complete_conf: Vec<f64> = r
        .frames
        .iter()
        .filter(|f| f.complete())
        .map(confidence)
        .collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let all = Micros(u64::MAX);
    let mean_estimate = r.mean(Micros::ZERO, all, |s| s.estimate.kbps());
    let mean_send = r.mean(Micros::ZERO, all, |s| s.send_rate.kbps());
    RunSummary {
        name: name.to_owned(),
        frames: r.frames.len(),
        frames_complete: complete_conf.len(),
        frames_incomplete: r.frames.len() - complete_conf.len(),
        latency_p50_ms: percentile(&latencies, 50.0).unwrap_or(0.0),
        latency_p95_ms: percentile(&latencies, 95.0).unwrap_or(0.0),
        latency_max_ms: latencies.iter().copied().fold(0.0, f64::max),
        proxy_accuracy: mean(&complete_conf),
        proxy_accuracy_lost_as_zero: if r.frames.is_empty() {
            0.0
        } else {
            complete_conf.iter().sum::<f64>() / r.frames.len() as f64
        },
        mean_capacity_kbps: r.mean(Micros::ZERO, all, |s| s.capacity.kbps()),
        mean_send_kbps: mean_send,
        mean_estimate_kbps: mean_estimate,
        mean_advertised_kbps: r.mean(Micros::ZERO, all, |s| s.advertised.kbps()),
        headroom_pct: if mean_estimate > 0.0 {
            100.0 * (mean_estimate - mean_send) / mean_estimate
        } else {
            0.0
        },
        packets_sent: r.sent,
        queue_drops: r.queue_drops,
        random_losses: r.random_losses,
        max_queue_delay_ms: r.max_queue_delay(Micros::ZERO, all).as_millis_f64(),
        series: r
            .samples
            .iter()
            .filter(|s| s.t.as_micros() % 1_000_000 == 0)
            .map(|s| {
                [
                    s.t.as_secs_f64(),
                    s.capacity.kbps(),
                    s.send_rate.kbps(),
                    s.estimate.kbps(),
                    s.advertised.kbps(),
                    s.queue_delay.as_millis_f64(),
                ]
            })
            .collect(),
    }
}

/// A side-by-side table (Markdown) of the two runs.
pub fn table(c: &Comparison) -> String {
    let (p, k) = (&c.plain, &c.capped);
    let rows: [(&str, f64, f64, usize); 12] = [
        (
            "frame latency P50 (ms)",
            p.latency_p50_ms,
            k.latency_p50_ms,
            1,
        ),
        (
            "frame latency P95 (ms)",
            p.latency_p95_ms,
            k.latency_p95_ms,
            1,
        ),
        (
            "frame latency max (ms)",
            p.latency_max_ms,
            k.latency_max_ms,
            1,
        ),
        (
            "proxy accuracy (complete frames)",
            p.proxy_accuracy,
            k.proxy_accuracy,
            3,
        ),
        (
            "proxy accuracy (incomplete = 0)",
            p.proxy_accuracy_lost_as_zero,
            k.proxy_accuracy_lost_as_zero,
            3,
        ),
        (
            "mean send rate (kbit/s)",
            p.mean_send_kbps,
            k.mean_send_kbps,
            0,
        ),
        (
            "mean estimate (kbit/s)",
            p.mean_estimate_kbps,
            k.mean_estimate_kbps,
            0,
        ),
        (
            "mean REMB (kbit/s)",
            p.mean_advertised_kbps,
            k.mean_advertised_kbps,
            0,
        ),
        (
            "headroom (% of estimate)",
            p.headroom_pct,
            k.headroom_pct,
            1,
        ),
        (
            "queue drops (packets)",
            p.queue_drops as f64,
            k.queue_drops as f64,
            0,
        ),
        (
            "incomplete frames",
            p.frames_incomplete as f64,
            k.frames_incomplete as f64,
            0,
        ),
        (
            "max queue delay (ms)",
            p.max_queue_delay_ms,
            k.max_queue_delay_ms,
            1,
        ),
    ];
    let mut out = format!(
        "| {:<34} | {:>10} | {:>10} |\n|{:-<36}|{:->12}|{:->12}|\n",
        format!("class {:?}, θ = {}", c.class, c.threshold),
        "plain CC",
        "CC + ReCap",
        "",
        "",
        ""
    );
    for (name, a, b, prec) in rows {
        out.push_str(&format!("| {name:<34} | {a:>10.prec$} | {b:>10.prec$} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use vr_abr::sim::BandwidthTrace;
    use vr_abr::Bitrate;

    const TABLE: &str = r#"
[[class]]
name = "desk"
[[class.row]]
confidence = [0.6, 0.85, 0.9, 0.92, 0.93, 0.94]
measured_by = "synthetic, for this test"
"#;

    fn base() -> SimConfig {
        SimConfig {
            duration: Micros::from_secs(20),
            trace: BandwidthTrace::constant(Bitrate::from_kbps(2_000))
                .unwrap_or_else(|e| panic!("{e}")),
            ..SimConfig::default()
        }
    }

    #[test]
    fn empty_table_and_unknown_class_are_clear_errors() {
        let e = compare(&base(), &RecapTable::empty(), "desk").unwrap_err();
        assert!(matches!(e, EvalError::NoRecapTable));
        assert!(e.to_string().contains("needs a table"), "{e}");
        let t = RecapTable::from_toml_str(TABLE).unwrap_or_else(|e| panic!("{e}"));
        let e = compare(&base(), &t, "street").unwrap_err();
        assert!(e.to_string().contains("desk"), "{e}");
    }

    #[test]
    fn the_cap_lowers_the_send_rate_and_keeps_the_proxy_at_theta() {
        let t = RecapTable::from_toml_str(TABLE).unwrap_or_else(|e| panic!("{e}"));
        let c = compare(&base(), &t, "desk").unwrap_or_else(|e| panic!("{e}"));
        print!("{}", table(&c));
        assert!(c.capped.mean_send_kbps < c.plain.mean_send_kbps);
        assert!(c.capped.headroom_pct > c.plain.headroom_pct);
        // θ is reached at 360 kbit/s; the cap holds there once the estimate passes it.
        assert!(
            c.capped.proxy_accuracy > 0.75,
            "{}",
            c.capped.proxy_accuracy
        );
        assert_eq!(c.plain.frames, c.capped.frames);
        assert!(c.plain.series.len() >= 20);
    }
}
