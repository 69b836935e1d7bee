//! `voicerelay serve`: the live pipeline. Until the WebRTC endpoint lands this is the local
//! listening service: the configured microphone (or `--input FILE`, paced at real time) feeds the
//! capture ring; this thread drains the ring, resamples to 16 kHz mono and drives the streaming
//! recogniser, printing partial and final transcripts as they happen, each final with its
//! finalisation latency (end of speech on the audio clock → text on the wall clock).

use anyhow::{Context, Result};
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vr_asr::AsrEvent;
use vr_capture::device::{Microphone, RunningStream};
use vr_capture::file::{FileSource, Pacing, RunningFile};
use vr_capture::resample::StreamResampler;
use vr_capture::{audio_ring, AudioFormat};
use vr_core::SampleRate;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Listen to this WAV/FLAC file, delivered at real-time pace, instead of the microphone.
    #[arg(long)]
    input: Option<PathBuf>,
    /// One JSON event per line instead of text.
    #[arg(long)]
    json: bool,
}

enum Source {
    Mic(RunningStream),
    File(RunningFile),
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let store = crate::cli::models::store(cfg)?;
    let mut rec = crate::cli::transcribe::build_recognizer(cfg, &store, None)?;

    let (format, start): (AudioFormat, Box<dyn FnOnce(_) -> Result<Source>>) = match &args.input {
        Some(path) => {
            let src = FileSource::open(path, Pacing::real_time())
                .with_context(|| format!("cannot read {}", path.display()))?;
            (
                src.format(),
                Box::new(move |p| Ok(Source::File(src.start(p)?))),
            )
        }
        None => {
            let mic = Microphone::open(&cfg.capture.input_device, cfg.capture.device_buffer_frames)
                .context("no usable microphone (use --input FILE to listen to a file)")?;
            tracing::info!(device = mic.name(), "listening");
            (
                mic.format(),
                Box::new(move |p| Ok(Source::Mic(mic.start(p)?))),
            )
        }
    };
    let (producer, mut consumer) =
        audio_ring("input", format, cfg.capture.ring_frames(format.rate))?;
    let source = start(producer)?;
    let mut resampler = StreamResampler::new(format, SampleRate::PIPELINE)?;

    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut out = std::io::stdout().lock();
    let t0 = Instant::now();
    let mut mono = Vec::with_capacity(SampleRate::PIPELINE.hz() as usize);
    let print = |events: Vec<AsrEvent>, out: &mut std::io::StdoutLock| -> Result<()> {
        for e in events {
            if args.json {
                writeln!(out, "{}", serde_json::to_string(&e)?)?;
            } else {
                match &e {
                    AsrEvent::Partial { text, .. } if tty => write!(out, "\r\x1b[2K… {text}")?,
                    AsrEvent::Final { text, end, .. } => {
                        let lag = t0.elapsed().saturating_sub(end.at(SampleRate::PIPELINE));
                        let clear = if tty { "\r\x1b[2K" } else { "" };
                        writeln!(out, "{clear}{text}  [final +{} ms]", lag.as_millis())?;
                    }
                    _ => {}
                }
            }
            out.flush()?;
        }
        Ok(())
    };
    let channels = usize::from(format.channels);
    loop {
        if !consumer.wait_for_data(Duration::from_millis(200)) {
            if consumer.end_position().is_some() {
                break;
            }
            continue;
        }
        while let Some(chunk) = consumer.peek() {
            let frames = chunk.samples.len() / channels;
            resampler.push(chunk.samples, |m| mono.extend_from_slice(m))?;
            consumer.consume(frames);
        }
        let events = rec.push(&mono)?;
        mono.clear();
        print(events, &mut out)?;
    }
    resampler.finish(|m| mono.extend_from_slice(m))?;
    let mut events = rec.push(&mono)?;
    events.extend(rec.finish()?);
    print(events, &mut out)?;
    match source {
        Source::File(f) => {
            f.join()?;
        }
        Source::Mic(m) => m.stop()?,
    }
    Ok(ExitCode::SUCCESS)
}
