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
    // Colour only on a terminal: piped into a file, journald or a test the escape codes are
    // noise (and split `key=value` pairs that tools grep for). NO_COLOR as everywhere.
    use std::io::IsTerminal;
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
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
        vr_pipeline::describe_metrics();
    }
    Ok(())
}

/// The Prometheus text exposition of every metric recorded so far (served at `/metrics`).
pub fn render_metrics() -> String {
    PROMETHEUS.get().map(|h| h.render()).unwrap_or_default()
}

/// Records the metrics a conversation event carries, from the typed event: the per-turn latency
/// breakdown (`transport_turn_latency_ms{stage}`) and the dual path's verifier decisions, draft
/// times and seam gaps.
pub fn record_conversation_event(event: &vr_dialog::ConversationEvent) {
    use vr_dialog::ConversationEvent as E;
    match event {
        E::TurnLatency(l) => {
            let stages = [
                ("endpointing", l.endpointing_ms),
                ("asr_final", l.asr_final_ms),
                ("llm_first_token", l.llm_first_token_ms),
                ("first_clause", l.first_clause_ms),
                ("tts_first_chunk", l.tts_first_chunk_ms),
                ("onset", Some(l.onset_ms)),
            ];
            for (stage, ms) in stages {
                if let Some(ms) = ms {
                    metrics::histogram!("transport_turn_latency_ms", "stage" => stage)
                        .record(ms as f64);
                }
            }
        }
        E::Draft {
            score,
            kept,
            draft_ms,
            early,
            ..
        } => {
            let decision = if *kept { "kept" } else { "dropped" };
            let started = if *early { "pause" } else { "turn_end" };
            metrics::counter!("transport_dual_drafts_total", "decision" => decision, "started" => started)
                .increment(1);
            if let Some(score) = score {
                metrics::histogram!("transport_dual_verifier_score").record(f64::from(*score));
            }
            metrics::histogram!("transport_dual_draft_ms").record(*draft_ms as f64);
        }
        E::Seam { gap_ms } => {
            metrics::histogram!("transport_dual_seam_gap_ms").record(*gap_ms as f64);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vr_dialog::ConversationEvent as E;
    use vr_dialog::{TurnInput, TurnLatency};

    #[test]
    fn conversation_events_become_metrics() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            for (kept, score, early) in [
                (true, 0.93, false),
                (false, 0.12, false),
                (true, 0.71, true),
            ] {
                record_conversation_event(&E::Draft {
                    text: "Paris is the".into(),
                    score: Some(score),
                    kept,
                    draft_ms: 90,
                    early,
                });
            }
            record_conversation_event(&E::Seam { gap_ms: 40 });
            record_conversation_event(&E::TurnLatency(TurnLatency {
                turn: 1,
                input: TurnInput::Text,
                speech_end_ms: None,
                endpointing_ms: None,
                asr_final_ms: None,
                llm_first_token_ms: Some(250),
                first_clause_ms: Some(480),
                tts_first_chunk_ms: Some(120),
                onset_ms: 700,
            }));
        });
        let text = handle.render();
        for want in [
            "transport_dual_drafts_total{decision=\"kept\",started=\"turn_end\"} 1",
            "transport_dual_drafts_total{decision=\"kept\",started=\"pause\"} 1",
            "transport_dual_drafts_total{decision=\"dropped\",started=\"turn_end\"} 1",
            "transport_dual_verifier_score_count 3",
            "transport_dual_draft_ms_sum 270",
            "transport_dual_seam_gap_ms_sum 40",
            "transport_turn_latency_ms_sum{stage=\"onset\"} 700",
            "transport_turn_latency_ms_sum{stage=\"llm_first_token\"} 250",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        // A typed turn has no speech stages: none is recorded as 0.
        assert!(!text.contains("stage=\"endpointing\""), "{text}");
    }
}
