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
    /// Serve a non-loopback address without transport.auth_token: anyone who reaches the port
    /// can then use the assistant. Refused without this flag.
    #[arg(long)]
    insecure: bool,
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let mut tcfg = cfg.transport.clone();
    if let Some(b) = args.bind {
        tcfg.bind = b;
    }
    tcfg.validate()?;
    tcfg.check_exposure(args.insecure)?;
    let addr = tcfg.bind_addr()?;
    if !addr.ip().is_loopback() && tcfg.auth_token.is_empty() {
        // Only reachable with --insecure (check_exposure refuses otherwise): say it loudly.
        eprintln!(
            "WARNING: serving {addr} WITHOUT authentication (--insecure): anyone who can reach \
             this port can start conversations; set transport.auth_token"
        );
        tracing::warn!(%addr, "serving a non-loopback address without authentication (--insecure)");
    }
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
        tracing::info!(
            %local,
            build = crate::BUILD_PROFILE,
            "open the URL in a browser and press Connect"
        );
        vr_transport::serve(listener, server, shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or Ctrl-C; a second one exits the process at once (exit code
/// 130), whatever the graceful shutdown is still waiting for.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (t, i) => {
            let e = t
                .err()
                .or(i.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT; stop the server with SIGKILL");
            return std::future::pending().await;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "Ctrl-C",
    };
    tracing::info!("{name}: shutting down (send it again to exit at once)");
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: exiting without waiting for sessions and connections");
        std::process::exit(130);
    });
}

mod pipeline {
    //! Each WebRTC session runs its own [`vr_pipeline::Conversation`] on its own thread; the
    //! assistant (LLM, recogniser, VAD and voice weights) is loaded once and shared.
    use super::*;
    use vr_core::{SampleIndex, SampleRate};
    use vr_dialog::ConversationEvent;
    use vr_pipeline::{Assistant, PipelineError};
    use vr_pipeline::{AudioOutput, ConversationHandle};
    use vr_transport::pipeline::{PipelineControl, PipelineRun, SessionIo, VideoDecoder};
    use vr_transport::{OpusOutput, Pipeline, TransportError};

    pub fn build(cfg: &Config) -> Result<Arc<dyn Pipeline>> {
        let store = crate::cli::models::store(cfg)?;
        let assistant =
            Assistant::from_configs(&store, &cfg.dialog, &cfg.llm, &cfg.asr, &cfg.vad, &cfg.tts)?;
        // Build one conversation now so a broken model fails at start, not on the first call
        // (cheap: the weights above are shared, a conversation only makes its own state).
        drop(assistant.conversation()?);
        // The camera's labeller, loaded once like the other weights; a missing model fails here.
        let labeler = if cfg.vision.enabled && cfg.transport.video.enabled {
            let l = vr_vision::Labeler::load(&store)
                .context("cannot load the camera labeller (vision.enabled)")?;
            Some(Arc::new(l))
        } else {
            None
        };
        Ok(Arc::new(Dialog {
            assistant,
            labeler,
            vision: cfg.vision.clone(),
        }))
    }

    struct Dialog {
        assistant: Assistant,
        labeler: Option<Arc<vr_vision::Labeler>>,
        vision: vr_pipeline::VisionConfig,
    }

    /// The session's outgoing Opus queue as the loop's audio output.
    struct WebRtcOutput(OpusOutput);

    impl AudioOutput for WebRtcOutput {
        fn rate(&self) -> SampleRate {
            self.0.rate()
        }
        fn write(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
            self.0.write(samples).map_err(|e| PipelineError::Output {
                reason: e.to_string(),
            })
        }
        fn flush(&mut self) -> usize {
            self.0.flush()
        }
        fn played(&self) -> SampleIndex {
            self.0.played()
        }
        fn queued(&self) -> usize {
            self.0.queued()
        }
    }

    /// GStreamer's VP8 or H.264 decoder behind the transport's decoder interface.
    struct GstDecoder(vr_capture::video_codec::Decoder);

    impl VideoDecoder for GstDecoder {
        fn push(
            &mut self,
            frame: &vr_transport::frame::EncodedFrame,
            pts: std::time::Duration,
        ) -> Result<bool, String> {
            use vr_capture::video_codec::Pushed;
            match self.0.push(&frame.data, pts) {
                Ok(Pushed::Queued) => Ok(true),
                Ok(Pushed::Dropped | Pushed::Restarted) => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        }
    }

    struct Control(ConversationHandle);

    impl PipelineControl for Control {
        fn interrupt(&self) {
            self.0.interrupt();
        }
        fn send_text(&self, text: String) {
            self.0.send_text(text);
        }
        fn configure(
            &self,
            settings: &serde_json::Map<String, serde_json::Value>,
        ) -> Result<(), String> {
            // Everything is checked before anything is applied: a message with one bad key
            // changes nothing.
            let mut voice = None;
            for (k, v) in settings {
                match (k.as_str(), v) {
                    ("voice", serde_json::Value::String(name)) => voice = Some(name.as_str()),
                    ("voice", other) => {
                        return Err(format!(
                            "\"voice\" must be a string (piper, flite or espeak), not {other}"
                        ))
                    }
                    (other, _) => {
                        return Err(format!(
                            "unknown setting {other:?}; a session can change: voice"
                        ))
                    }
                }
            }
            match voice {
                Some(name) => self.0.set_voice(name),
                None => Ok(()),
            }
        }
        fn stop(&self) {
            self.0.stop();
        }
    }

    impl Pipeline for Dialog {
        fn health(&self) -> Result<(), String> {
            self.assistant.health()
        }

        fn video_decoder(
            &self,
            codec: vr_transport::frame::VideoCodec,
            frames: vr_capture::video::VideoProducer,
        ) -> Result<Option<Box<dyn VideoDecoder>>, String> {
            use vr_capture::video_codec::{Codec, Decoder};
            use vr_transport::frame::VideoCodec;
            let codec = match codec {
                VideoCodec::Vp8 => Codec::Vp8,
                VideoCodec::H264 => Codec::H264,
                // A codec the transport learnt to assemble before this binary learnt to decode.
                _ => return Ok(None),
            };
            let d = Decoder::start(codec, frames).map_err(|e| e.to_string())?;
            Ok(Some(Box::new(GstDecoder(d))))
        }

        fn start(&self, io: SessionIo) -> Result<PipelineRun, TransportError> {
            let conv = self
                .assistant
                .conversation()
                .map_err(|e| TransportError::Pipeline(e.to_string()))?;
            let control = Arc::new(Control(conv.handle()));
            let (tx, rx) = tokio::sync::oneshot::channel();
            let SessionIo {
                session_id,
                input,
                output,
                events,
                video,
            } = io;
            // With video off or unlabelled the session's frames are simply not read.
            let sampler = match (&self.labeler, video) {
                (Some(labeler), Some(frames)) => Some(
                    vr_pipeline::SceneSampler::spawn(
                        labeler.clone(),
                        frames,
                        conv.handle(),
                        self.vision.clone(),
                        {
                            let events = events.clone();
                            Box::new(move |r: vr_pipeline::FrameRateRequest| {
                                events.send(&serde_json::json!({
                                    "type": "video_rate",
                                    "max_fps": r.max_fps,
                                    "motion": (f64::from(r.motion) * 100.0).round() / 100.0,
                                }));
                            })
                        },
                    )
                    .map_err(|e| TransportError::Pipeline(format!("cannot spawn a thread: {e}")))?,
                ),
                _ => None,
            };
            std::thread::Builder::new()
                .name("conversation".into())
                .spawn(move || {
                    let sink = move |ev: ConversationEvent| {
                        crate::telemetry::record_conversation_event(&ev);
                        events.send(&ev);
                    };
                    let r = conv.run(input, Box::new(WebRtcOutput(output)), sink);
                    if let Some(s) = sampler {
                        let st = s.stop();
                        tracing::debug!(session = %session_id, labelled = st.labelled, failed = st.failed, mean_ms = st.mean_ms, "vision ended");
                    }
                    let r = match r {
                        Ok(summary) => {
                            tracing::info!(
                                session = %session_id,
                                turns = summary.turns,
                                answers = summary.answers,
                                barge_ins = summary.barge_ins,
                                "conversation ended"
                            );
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    crate::alloc::release_free_memory();
                    let _ = tx.send(r);
                })
                .map_err(|e| TransportError::Pipeline(format!("cannot spawn a thread: {e}")))?;
            Ok(PipelineRun { control, done: rx })
        }
    }
}
