//! `voicerelay serve`: the WebRTC voice assistant endpoint. Loads the models once, then serves
//! WHIP-style signalling, the browser page, `/healthz` and `/metrics` (see the transport crate);
//! every peer gets its own conversation. SIGTERM or Ctrl-C closes all sessions and exits.

use anyhow::{Context, Result};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// HTTP listen address, IP:port (overrides transport.bind); port 0 picks a free one.
    #[arg(long)]
    bind: Option<String>,
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let mut tcfg = cfg.transport.clone();
    if let Some(b) = args.bind {
        tcfg.bind = b;
    }
    tcfg.validate()?;
    let addr = tcfg.bind_addr()?;
    let pipeline = pipeline::build(cfg).context("cannot load the conversation pipeline")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("serve")
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        let server =
            vr_transport::Server::new(tcfg, pipeline, Arc::new(crate::telemetry::render_metrics))?;
        // The one line scripts and tests wait for.
        println!("VoiceRelay listening on http://{local}/");
        std::io::stdout().flush()?;
        tracing::info!(%local, "open the URL in a browser and press Connect");
        vr_transport::serve(listener, server, shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    tokio::select! {
        _ = term => tracing::info!("SIGTERM"),
        r = tokio::signal::ctrl_c() => {
            if r.is_ok() { tracing::info!("Ctrl-C"); } else { std::future::pending::<()>().await }
        }
    }
}

mod pipeline {
    //! Interim pipeline until the dialog loop lands: transcripts only (recogniser per session).
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use vr_asr::AsrEvent;
    use vr_transport::pipeline::{PipelineControl, PipelineRun, SessionIo};
    use vr_transport::{Pipeline, TransportError};

    pub fn build(cfg: &Config) -> Result<Arc<dyn Pipeline>> {
        // Fail at start, not on the first call, when the models are unusable.
        let store = crate::cli::models::store(cfg)?;
        crate::cli::transcribe::build_recognizer(cfg, &store, None)?;
        Ok(Arc::new(AsrOnly { cfg: cfg.clone() }))
    }

    struct AsrOnly {
        cfg: Config,
    }

    struct Control {
        stop: AtomicBool,
    }

    impl PipelineControl for Control {
        fn interrupt(&self) {}
        fn send_text(&self, _text: String) {}
        fn configure(
            &self,
            _settings: &serde_json::Map<String, serde_json::Value>,
        ) -> Result<(), String> {
            Err("no settings".into())
        }
        fn stop(&self) {
            self.stop.store(true, Ordering::SeqCst);
        }
    }

    impl Pipeline for AsrOnly {
        fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError> {
            let store = crate::cli::models::store(&self.cfg)
                .map_err(|e| TransportError::Pipeline(e.to_string()))?;
            let mut rec = crate::cli::transcribe::build_recognizer(&self.cfg, &store, None)
                .map_err(|e| TransportError::Pipeline(format!("{e:#}")))?;
            let control = Arc::new(Control {
                stop: AtomicBool::new(false),
            });
            let (tx, rx) = tokio::sync::oneshot::channel();
            let c = control.clone();
            let SessionIo {
                mut input, events, ..
            } = io;
            std::thread::Builder::new()
                .name("conversation".into())
                .spawn(move || {
                    let mut buf = vec![0f32; 1600];
                    let mut run = || -> Result<(), String> {
                        while !c.stop.load(Ordering::SeqCst) {
                            if !input.wait_for_data(Duration::from_millis(100)) {
                                if input.end_position().is_some() {
                                    break;
                                }
                                continue;
                            }
                            while let Some((_, n)) = input.pop_into(&mut buf) {
                                for e in rec.push(&buf[..n]).map_err(|e| e.to_string())? {
                                    emit(&events, e);
                                }
                            }
                        }
                        for e in rec.finish().map_err(|e| e.to_string())? {
                            emit(&events, e);
                        }
                        Ok(())
                    };
                    let _ = tx.send(run());
                })
                .map_err(|e| TransportError::Pipeline(e.to_string()))?;
            Ok(PipelineRun { control, done: rx })
        }
    }

    fn emit(events: &vr_transport::EventSender, e: AsrEvent) {
        match e {
            AsrEvent::Partial {
                text,
                stable_prefix_len,
            } => {
                events.send(&serde_json::json!({"type":"partial","text":text,"stable_prefix_len":stable_prefix_len}));
            }
            AsrEvent::Final {
                text, start, end, ..
            } => {
                let ms = |s: vr_core::SampleIndex| {
                    s.at(vr_core::SampleRate::PIPELINE).as_millis() as u64
                };
                events.send(&serde_json::json!({"type":"final","text":text,"start_ms":ms(start),"end_ms":ms(end)}));
            }
            _ => {}
        }
    }
}
