//! `voicerelay say "text" [-o out.wav] [--voice piper|flite|espeak]`: speak text with the
//! streaming synthesizer, into a WAV file or to the speaker.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use vr_core::SampleRate;
use vr_tts::{StreamingSynthesizer, Synthesizer, TtsConfig};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// The text to speak ("-" reads standard input).
    text: String,
    /// Write a 16-bit mono WAV here instead of playing it.
    #[arg(short, long)]
    output: Option<PathBuf>,
    /// Voice, overriding `tts.voice`.
    #[arg(long, value_parser = ["piper", "flite", "espeak"])]
    voice: Option<String>,
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let text = if args.text == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading text from standard input")?
    } else {
        args.text
    };
    if text.trim().is_empty() {
        bail!("nothing to say: the text is empty");
    }
    let tts_cfg = TtsConfig {
        voice: args.voice.unwrap_or_else(|| cfg.tts.voice.clone()),
        ..cfg.tts.clone()
    };
    let store = crate::cli::models::store(cfg)?;
    let tts = StreamingSynthesizer::from_config(&tts_cfg, &store)?;
    let rate = tts.sample_rate();
    // Generous: the slowest voice needs well under a second per clause.
    let samples = tts.speak_all(&text, Duration::from_secs(60))?;
    tracing::info!(
        voice = %tts.voice(),
        seconds = rate.duration_of(samples.len() as u64).as_secs_f32(),
        "synthesised"
    );
    match args.output {
        Some(path) => write_wav(&path, &samples, rate)?,
        None => play(cfg, &samples, rate)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn write_wav(path: &Path, samples: &[f32], rate: SampleRate) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate.hz(),
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("cannot create {}", path.display()))?;
    for &s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    w.finalize()
        .with_context(|| format!("finishing {}", path.display()))?;
    Ok(())
}

/// Plays through the configured output device: the capture crate's speaker sink reads a
/// playback ring from its real-time callback; this thread resamples to the device rate, fills the
/// ring (waiting for space, never dropping) and waits until it has drained.
fn play(cfg: &Config, samples: &[f32], rate: SampleRate) -> Result<()> {
    use vr_capture::device::Speaker;
    use vr_capture::{audio_ring, resample::resample_to_mono, AudioFormat};

    let speaker = Speaker::open(
        &cfg.capture.output_device,
        None,
        cfg.capture.device_buffer_frames,
    )
    .context("no audio output device (use -o FILE to write a WAV instead)")?;
    let device = speaker.format();
    let mono = resample_to_mono(samples, AudioFormat { rate, channels: 1 }, device.rate)?;
    let ch = usize::from(device.channels);
    let interleaved: Vec<f32> = mono
        .iter()
        .flat_map(|s| std::iter::repeat_n(*s, ch))
        .collect();
    let (mut producer, consumer) =
        audio_ring("playback", device, cfg.capture.ring_frames(device.rate))?;
    // Fill the ring before the stream starts: the backend's first request (PulseAudio's is its
    // whole buffer target, ~2 s by default) can come before the first push and would then be
    // played as silence ahead of the speech.
    let prefill = interleaved.len().min(producer.vacant_frames() * ch);
    producer.push(&interleaved[..prefill]);
    let running = speaker.start(consumer)?;
    let step = (device.rate.hz() as usize / 10).max(1) * ch;
    for part in interleaved[prefill..].chunks(step) {
        let frames = part.len() / ch;
        if producer.push_blocking(part, Duration::from_secs(5)) < frames {
            bail!(
                "the output device {:?} stopped consuming audio",
                running.device_name()
            );
        }
    }
    // Stopping the stream discards what the backend still buffers, so wait until the device has
    // played the last frame.
    running
        .drain(Duration::from_secs(5))
        .with_context(|| format!("playing through {:?}", running.device_name()))?;
    running.stop()?;
    Ok(())
}
