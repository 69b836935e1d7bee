//! `voicerelay eval transport`: the video path's receiver-side congestion control on a
//! bandwidth trace, plain (REMB = estimate) and with the ReCapABR cap (REMB = min(estimate,
//! cap)), in the deterministic path simulator; method in `vr_evals::transport_eval`.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use vr_abr::sim::{BandwidthTrace, SimConfig};
use vr_abr::{Micros, RecapTable};
use vr_evals::transport_eval;

use crate::config::Config;

#[derive(clap::Args)]
pub struct TransportArgs {
    /// Bandwidth trace: `time_ms,kbps` lines, piecewise constant, `#` comments, an optional last
    /// `time_ms,end` line (format: `vr_abr::sim::BandwidthTrace::parse`; examples in
    /// configs/traces/).
    #[arg(long)]
    trace: PathBuf,
    /// ReCap confidence table (TOML, format in abr/src/recap.rs); default: the configured
    /// `transport.video.recap_table`.
    #[arg(long)]
    recap: Option<PathBuf>,
    /// Table class to apply; default: the table's first class.
    #[arg(long)]
    class: Option<String>,
    /// Simulated seconds; default: the trace's `end` line, else its last change + 30 s.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    duration_s: Option<u64>,
    /// Seed of the simulator's PRNG (loss, jitter).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// One-way propagation delay, ms (each direction).
    #[arg(long, default_value_t = 25)]
    propagation_ms: u64,
    /// Random loss probability after the bottleneck, 0 ..= 0.99.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Extra per-packet delay uniform in [0, jitter), ms.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Drop-tail bottleneck queue, bytes.
    #[arg(long, default_value_t = 100_000)]
    queue_bytes: u32,
    /// JSON report; default eval-results/transport-<trace name>.json.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

pub fn run(cfg: &Config, args: TransportArgs) -> Result<ExitCode> {
    let load_at_start = load_average();
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read the trace {}", args.trace.display()))?;
    let trace =
        BandwidthTrace::parse(&text).with_context(|| format!("trace {}", args.trace.display()))?;
    let (table, table_source) = match &args.recap {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the ReCap table {}", path.display()))?;
            let table = RecapTable::from_toml_str(&text)
                .with_context(|| format!("ReCap table {}", path.display()))?;
            (table, path.display().to_string())
        }
        None => (
            cfg.transport.video.load_recap_table()?,
            format!(
                "transport.video.recap_table = {:?}",
                cfg.transport.video.recap_table
            ),
        ),
    };
    if table.is_empty() {
        bail!(
            "the ReCap cap needs a table, and {table_source} gives none: pass --recap FILE or set \
             transport.video.recap_table (format in abr/src/recap.rs)"
        );
    }
    let class = match &args.class {
        Some(c) => c.clone(),
        None => table
            .classes()
            .first()
            .map(|c| c.name.clone())
            .context("the ReCap table has no class")?,
    };
    let duration = match (args.duration_s, trace.end()) {
        (Some(s), _) => Micros::from_secs(s),
        (None, Some(end)) => end,
        (None, None) => {
            let last = trace.segments().last().map_or(Micros::ZERO, |s| s.0);
            last + Micros::from_secs(30)
        }
    };
    let estimator = cfg.transport.video.estimator_config();
    let base = SimConfig {
        duration,
        trace,
        queue_bytes: args.queue_bytes,
        propagation: Micros::from_millis(args.propagation_ms),
        loss: args.loss,
        jitter: Micros::from_millis(args.jitter_ms),
        seed: args.seed,
        start_bitrate: estimator.aimd.start_bps,
        estimator,
        ..SimConfig::default()
    };
    let comparison = transport_eval::compare(&base, &table, &class)?;
    println!(
        "{}: {:.0} s simulated, seed {}, propagation {} ms, loss {}, jitter {} ms, queue {} B",
        args.trace.display(),
        duration.as_secs_f64(),
        args.seed,
        args.propagation_ms,
        args.loss,
        args.jitter_ms,
        args.queue_bytes
    );
    print!("{}", transport_eval::table(&comparison));
    println!(
        "proxy accuracy = the table's confidence at the rate each frame was encoded at (a \
         DeViBench-style proxy for a measured table, not answer accuracy)"
    );

    let out = args.out.unwrap_or_else(|| {
        let stem = args
            .trace
            .file_stem()
            .map_or_else(|| "trace".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("eval-results").join(format!("transport-{stem}.json"))
    });
    let report = serde_json::json!({
        "version": super::eval::source_version(),
        "method": "vr_evals::transport_eval: vr_abr::sim path simulator on virtual time (1 ms tick, seeded), run twice on the same trace and seed: plain (REMB = GCC-style estimate) and capped (REMB = min(estimate, ReCap cap), conservative curve of the class). Frame latency = send -> last packet's arrival (serialisation + queue + propagation + jitter), complete frames only. Proxy accuracy = the table's confidence at each frame's encoded rate for its 5 s segment (a DeViBench-style proxy, EfficientNet-Lite0 label agreement with the pristine picture for a measured table; not answer accuracy). Headroom = (mean estimate - mean send rate) / mean estimate.",
        "trace": args.trace.display().to_string(),
        "recap_table": table_source,
        "measured_by": table
            .class(&class)
            .map(|c| c.rows.iter().map(|r| r.measured_by.clone()).collect::<Vec<_>>())
            .unwrap_or_default(),
        "settings": {
            "duration_s": duration.as_secs_f64(),
            "seed": args.seed,
            "propagation_ms": args.propagation_ms,
            "loss": args.loss,
            "jitter_ms": args.jitter_ms,
            "queue_bytes": args.queue_bytes,
            "frame_rate": base.frame_rate,
            "start_kbps": base.start_bitrate.kbps(),
            "min_kbps": base.estimator.aimd.min_bps.kbps(),
            "max_kbps": base.estimator.aimd.max_bps.kbps(),
        },
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
        "comparison": comparison,
    });
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}
