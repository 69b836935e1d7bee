//! `voicerelay listen`: the local voice assistant. The microphone (or `--input FILE`, delivered at
//! real-time pace) feeds the conversation loop (`vr_dialog::conversation`); answers play on the
//! speakers (or are written to `--output FILE.wav` on a simulated real-time clock, silence
//! included, so the file is what a listener would have heard and when).
//!
//! On a terminal the current partial transcript is redrawn in place, each final transcript and
//! each spoken clause of the answer get a line, and every turn ends with one latency line (end of
//! speech → first answer sample, with its stages). `--json` prints every `ConversationEvent` as
//! one JSON object per line instead. Ctrl-C stops the conversation and exits cleanly.

use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vr_capture::device::{Microphone, PlaybackControl, RunningStream, Speaker};
use vr_capture::file::{FileSource, Pacing, RunningFile};
use vr_capture::{audio_ring, AudioFormat, AudioProducer, RingMonitor};
use vr_core::{SampleIndex, SampleRate};
use vr_dialog::ConversationEvent;
use vr_pipeline::{Assistant, AudioOutput, PipelineError, WavOutput};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Listen to this WAV/FLAC file, delivered at real-time pace, instead of the microphone.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Write the answers to this WAV file (mono, real-time timeline) instead of the speakers.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Sample rate of the --output WAV file.
    #[arg(long, default_value_t = 22050, value_parser = clap::value_parser!(u32).range(8000..=96000))]
    output_rate: u32,
    /// One JSON event per line instead of text.
    #[arg(long)]
    json: bool,
}

enum Source {
    Mic(RunningStream),
    File(RunningFile),
}

/// The speaker as an [`AudioOutput`]: mono answer audio is copied to every device channel and
/// pushed into the playback ring; the flushable callback keeps the clock and drops on flush.
struct SpeakerOutput {
    producer: AudioProducer,
    monitor: RingMonitor,
    control: PlaybackControl,
    format: AudioFormat,
    scratch: Vec<f32>,
    _stream: RunningStream,
}

impl AudioOutput for SpeakerOutput {
    fn rate(&self) -> SampleRate {
        self.format.rate
    }

    fn write(&mut self, samples: &[f32]) -> Result<(), PipelineError> {
        let ch = usize::from(self.format.channels);
        self.scratch.clear();
        for &s in samples {
            self.scratch.extend(std::iter::repeat_n(s, ch));
        }
        // The loop writes only a short lead ahead, so the ring has room; wait a little if not.
        let stored = self
            .producer
            .push_blocking(&self.scratch, Duration::from_millis(200));
        if stored < self.scratch.len() / ch {
            return Err(PipelineError::Output {
                reason: format!(
                    "speaker ring full: {} of {} frames queued",
                    stored,
                    samples.len()
                ),
            });
        }
        Ok(())
    }

    fn flush(&mut self) -> usize {
        // Two device periods are plenty for the callback to see the request.
        self.control
            .flush(Duration::from_millis(100))
            .unwrap_or_else(|| self.monitor.stats().fill) as usize
    }

    fn played(&self) -> SampleIndex {
        SampleIndex(self.control.played())
    }

    fn queued(&self) -> usize {
        self.monitor.stats().fill as usize
    }

    fn close(&mut self) -> Result<(), PipelineError> {
        // Let the last answer play out (bounded by the ring's length).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while self.queued() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let store = crate::cli::models::store(cfg)?;

    // Devices first: a machine without a sound card fails here, before any model loads.
    let source = match &args.input {
        Some(path) => {
            let src = FileSource::open(path, Pacing::real_time())
                .with_context(|| format!("cannot read {}", path.display()))?;
            (src.format(), None, Some(src))
        }
        None => {
            let mic = Microphone::open(&cfg.capture.input_device, cfg.capture.input_buffer_frames)
                .context(
                    "no usable microphone (no sound card?); use --input FILE.wav to listen to a file",
                )?;
            (mic.format(), Some(mic), None)
        }
    };
    let speaker = match &args.output {
        Some(_) => None,
        None => Some(
            Speaker::open(
                &cfg.capture.output_device,
                None,
                cfg.capture.device_buffer_frames,
            )
            .context(
                "no usable speaker (no sound card?); use --output FILE.wav to write the answers",
            )?,
        ),
    };

    let assistant =
        Assistant::from_configs(&store, &cfg.dialog, &cfg.llm, &cfg.asr, &cfg.vad, &cfg.tts)
            .context("cannot start the assistant")?;
    tracing::info!(llm = %assistant.llm().describe(), "assistant ready");
    let conversation = assistant.conversation()?;
    let handle = conversation.handle();

    // Ctrl-C: stop the conversation; `run` then returns and everything shuts down in order.
    let stopper = handle.clone();
    std::thread::Builder::new()
        .name("ctrl-c".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::warn!(error = %e, "Ctrl-C handler unavailable");
                    return;
                }
            };
            if rt.block_on(tokio::signal::ctrl_c()).is_ok() {
                stopper.stop();
            }
        })?;

    // Echo cancellation only where there is an echo: speaker and microphone both real.
    let aec_on = cfg.aec.enabled && args.input.is_none() && args.output.is_none();
    let mut far_end = None;
    let output: Box<dyn AudioOutput> = match (&args.output, speaker) {
        (Some(path), _) => Box::new(WavOutput::create(path, SampleRate(args.output_rate))?),
        (None, Some(speaker)) => {
            let format = speaker.format();
            let (producer, consumer) = audio_ring(
                "playback",
                format,
                (u64::from(format.rate.hz()) * u64::from(cfg.capture.playback_ring_ms) / 1000)
                    as usize,
            )?;
            let monitor = producer.monitor();
            let reference = if aec_on {
                let (r, far) = super::listen_aec::reference(format)?;
                far_end = Some((far, r.anchor.clone()));
                Some((r.producer, r.anchor))
            } else {
                None
            };
            let (stream, control) = speaker.start_with_reference(consumer, reference)?;
            Box::new(SpeakerOutput {
                producer,
                monitor,
                control,
                format,
                scratch: Vec::new(),
                _stream: stream,
            })
        }
        (None, None) => anyhow::bail!("no output"),
    };

    let (format, mic, file) = source;
    let (producer, mut consumer) =
        audio_ring("input", format, cfg.capture.ring_frames(format.rate))?;
    let mut aec_thread = None;
    let source = match (mic, file) {
        (Some(mic), _) => {
            tracing::info!(device = mic.name(), aec = far_end.is_some(), "listening");
            let mic_anchor = std::sync::Arc::new(vr_capture::device::ClockAnchor::default());
            let running = mic.start_anchored(producer, mic_anchor.clone())?;
            if let Some((far, far_anchor)) = far_end.take() {
                let (thread, cleaned) = super::listen_aec::start(
                    &cfg.aec,
                    consumer,
                    mic_anchor,
                    far,
                    far_anchor,
                    cfg.capture.ring_frames(SampleRate::PIPELINE),
                )?;
                consumer = cleaned;
                aec_thread = Some(thread);
            }
            Source::Mic(running)
        }
        (None, Some(src)) => Source::File(src.start(producer)?),
        (None, None) => anyhow::bail!("no input"),
    };
    // The output's clock started a moment ago with its creation; the loop measures the offset.

    let json = args.json;
    let tty = std::io::stdout().is_terminal() && !json;
    let mut partial_shown = false;
    let printer = move |ev: ConversationEvent| {
        let mut out = std::io::stdout().lock();
        let _ = print_event(&mut out, &ev, json, tty, &mut partial_shown);
        let _ = out.flush();
    };
    let summary = conversation.run(consumer, output, printer);
    match source {
        Source::File(f) => {
            f.stop()?;
        }
        Source::Mic(m) => m.stop()?,
    }
    if let Some(t) = aec_thread {
        let summary = t.join()?;
        let st = summary.stats;
        tracing::info!(
            converged = st.converged,
            delay_ms = st.delay.map(|d| d as f64 / 16.0),
            best_second_erle_db = summary.best_second_erle_db,
            delay_moves = summary.delay_moves,
            "echo canceller stopped"
        );
    }
    let summary = summary?;
    tracing::info!(
        turns = summary.turns,
        answers = summary.answers,
        barge_ins = summary.barge_ins,
        "conversation over"
    );
    Ok(
        if summary.errors > 0 && summary.answers == 0 && summary.turns > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        },
    )
}

fn print_event(
    out: &mut impl Write,
    ev: &ConversationEvent,
    json: bool,
    tty: bool,
    partial_shown: &mut bool,
) -> std::io::Result<()> {
    if json {
        return match serde_json::to_string(ev) {
            Ok(line) => writeln!(out, "{line}"),
            Err(e) => writeln!(out, "{{\"type\":\"error\",\"message\":\"{e}\"}}"),
        };
    }
    let clear = |out: &mut dyn Write, shown: &mut bool| -> std::io::Result<()> {
        if *shown {
            write!(out, "\r\x1b[2K")?;
            *shown = false;
        }
        Ok(())
    };
    match ev {
        ConversationEvent::Partial { text, .. } if tty => {
            write!(out, "\r\x1b[2K… {text}")?;
            *partial_shown = true;
        }
        ConversationEvent::Final { text, .. } if !text.trim().is_empty() => {
            clear(out, partial_shown)?;
            writeln!(out, "you: {}", text.trim())?;
        }
        ConversationEvent::AssistantText { text, .. } => {
            clear(out, partial_shown)?;
            writeln!(out, "assistant: {text}")?;
        }
        ConversationEvent::BargeIn {
            stop_latency_ms, ..
        } => {
            clear(out, partial_shown)?;
            writeln!(
                out,
                "[barge-in: answer stopped {stop_latency_ms} ms after the VAD heard you]"
            )?;
        }
        ConversationEvent::TurnLatency(l) => {
            clear(out, partial_shown)?;
            let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            writeln!(
                out,
                "[turn {}] onset {} ms = end of speech (or typed text) → first audio (endpointing {} ms, ASR final {} ms, LLM first token {} ms, first clause {} ms, TTS first chunk {} ms)",
                l.turn,
                l.onset_ms,
                opt(l.endpointing_ms),
                opt(l.asr_final_ms),
                opt(l.llm_first_token_ms),
                opt(l.first_clause_ms),
                opt(l.tts_first_chunk_ms),
            )?;
        }
        ConversationEvent::Draft {
            text,
            score,
            kept,
            draft_ms,
            early,
        } => {
            clear(out, partial_shown)?;
            let score = score.map_or("unscored".to_string(), |s| format!("score {s:.2}"));
            let verdict = if *kept {
                "kept: the fast model speaks first"
            } else {
                "dropped: the slow model answers alone"
            };
            let when = if *early {
                "drafted in the pause"
            } else {
                "drafted at the turn's end"
            };
            writeln!(
                out,
                "[draft {text:?} {score}, {verdict}; {when}, decided {draft_ms} ms after the turn]"
            )?;
        }
        ConversationEvent::Seam { gap_ms } => {
            clear(out, partial_shown)?;
            writeln!(
                out,
                "[seam: {gap_ms} ms of silence between draft and continuation]"
            )?;
        }
        ConversationEvent::Error { message } => {
            clear(out, partial_shown)?;
            eprintln!("error: {message}");
        }
        _ => {}
    }
    Ok(())
}
