//! Logging and metrics plumbing. Stages log with `tracing` and record with the `metrics` facade;
//! this installs the subscriber and the Prometheus recorder once, at the binary edge.

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;

use crate::config::LogConfig;

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

pub fn init(log: &LogConfig) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => {
            EnvFilter::try_new(&f).context("RUST_LOG is not a valid filter")?
        }
        _ => EnvFilter::try_new(&log.filter).with_context(|| {
            format!(
                "config key `log.filter` = {:?} is not a valid filter",
                log.filter
            )
        })?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = if log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if PROMETHEUS.get().is_none() {
        let handle = PrometheusBuilder::new()
            .install_recorder()
            .context("cannot install the metrics recorder")?;
        let _ = PROMETHEUS.set(handle);
    }
    Ok(())
}

/// The Prometheus text exposition of every metric recorded so far (served at `/metrics`).
pub fn render_metrics() -> String {
    PROMETHEUS.get().map(|h| h.render()).unwrap_or_default()
}
