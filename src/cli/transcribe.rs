//! `voicerelay transcribe FILE|-`: streams a WAV file through the configured recogniser.
//!
//! Without `--realtime` the file is fed as fast as the model decodes (chunks of 100 ms); with it,
//! each chunk waits for its wall-clock time, as a microphone would deliver it. On a terminal the
//! current partial is redrawn in place and each final gets its own line; `--json` prints one
//! event per line with times in seconds.

use anyhow::{bail, Context, Result};
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vr_asr::config::AsrConfig;
use vr_asr::{AsrEvent, StreamingRecognizer};
use vr_core::SampleRate;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// A WAV file (any rate, any channel count, 8/16/24/32-bit int or 32-bit float), or `-` for
    /// WAV on stdin.
    input: String,
    /// Feed audio at real-time pace instead of as fast as possible.
    #[arg(long)]
    realtime: bool,
    /// One JSON event per line (with times in seconds) instead of text.
    #[arg(long)]
    json: bool,
    /// Whisper model (overrides `asr.model`).
    #[arg(long, value_parser = ["tiny.en", "base"])]
    model: Option<String>,
}

/// Decoded input: mono samples at `rate`.
struct Audio {
    samples: Vec<f32>,
    rate: u32,
}

fn read_wav<R: Read>(reader: R, name: &str) -> Result<Audio> {
    let mut r = hound::WavReader::new(reader)
        .map_err(|e| anyhow::anyhow!("{name} is not a readable WAV file ({e})"))?;
    let spec = r.spec();
    let ch = spec.channels as usize;
    if ch == 0 || spec.sample_rate == 0 {
        bail!(
            "{name}: WAV header has {ch} channels at {} Hz",
            spec.sample_rate
        );
    }
    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => r
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("{name}: corrupt sample data ({e})"))?,
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow::anyhow!("{name}: corrupt sample data ({e})"))?
        }
        (fmt, bits) => bail!("{name}: unsupported WAV sample format {fmt:?} {bits}-bit"),
    };
    if interleaved.is_empty() {
        bail!("{name} contains no audio samples");
    }
    let samples = interleaved
        .chunks(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    Ok(Audio {
        samples,
        rate: spec.sample_rate,
    })
}

/// Converts mono `samples` at `from` Hz to the pipeline's 16 kHz (the capture crate's rubato
/// resampler, the same one every live source goes through).
pub fn resample_to_pipeline(samples: &[f32], from: u32) -> Result<Vec<f32>> {
    let format = vr_capture::AudioFormat {
        rate: SampleRate(from),
        channels: 1,
    };
    Ok(vr_capture::resample::resample_to_mono(
        samples,
        format,
        SampleRate::PIPELINE,
    )?)
}

fn secs(s: vr_core::SampleIndex) -> f64 {
    s.0 as f64 / SampleRate::PIPELINE.hz() as f64
}

fn event_json(e: &AsrEvent, wall: Duration) -> serde_json::Value {
    let mut v = match e {
        AsrEvent::SpeechStarted { at } => {
            serde_json::json!({"type": "speech_started", "at_s": secs(*at)})
        }
        AsrEvent::SpeechEnded { at } => {
            serde_json::json!({"type": "speech_ended", "at_s": secs(*at)})
        }
        AsrEvent::Partial {
            text,
            stable_prefix_len,
        } => {
            serde_json::json!({"type": "partial", "text": text, "stable_prefix_len": stable_prefix_len})
        }
        AsrEvent::Final {
            text,
            start,
            end,
            words,
        } => serde_json::json!({
            "type": "final", "text": text, "start_s": secs(*start), "end_s": secs(*end),
            "words": words.iter().map(|w| serde_json::json!({
                "text": w.text, "start_s": secs(w.start), "end_s": secs(w.end)})).collect::<Vec<_>>(),
        }),
    };
    v["wall_s"] = serde_json::json!(wall.as_secs_f64());
    v
}

/// The configured streaming recogniser (see [`vr_asr::build_recognizer`]), with `model`
/// overriding `asr.model`.
pub fn build_recognizer(
    cfg: &Config,
    store: &vr_core::ModelStore,
    model: Option<String>,
) -> Result<Box<dyn StreamingRecognizer>> {
    let mut asr_cfg: AsrConfig = cfg.asr.clone();
    if let Some(m) = model {
        asr_cfg.model = m;
    }
    Ok(vr_asr::build_recognizer(&asr_cfg, &cfg.vad, store)?)
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let audio = if args.input == "-" {
        read_wav(std::io::stdin().lock(), "standard input")?
    } else {
        let path = PathBuf::from(&args.input);
        let f = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        read_wav(std::io::BufReader::new(f), &path.display().to_string())?
    };
    let samples = resample_to_pipeline(&audio.samples, audio.rate)?;
    let store = crate::cli::models::store(cfg)?;
    let mut rec = build_recognizer(cfg, &store, args.model)?;

    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut out = std::io::stdout().lock();
    let start = Instant::now();
    let chunk = SampleRate::PIPELINE.hz() as usize / 10;
    let mut partial_shown = false;
    let mut emit = |events: Vec<AsrEvent>, out: &mut std::io::StdoutLock| -> Result<()> {
        for e in events {
            if args.json {
                writeln!(out, "{}", event_json(&e, start.elapsed()))?;
                continue;
            }
            match &e {
                AsrEvent::Partial { text, .. } if tty => {
                    write!(out, "\r\x1b[2K{text}")?;
                    partial_shown = true;
                }
                AsrEvent::Final { text, .. } => {
                    if partial_shown {
                        write!(out, "\r\x1b[2K")?;
                        partial_shown = false;
                    }
                    writeln!(out, "{text}")?;
                }
                _ => {}
            }
            out.flush()?;
        }
        Ok(())
    };
    for (i, c) in samples.chunks(chunk).enumerate() {
        if args.realtime {
            let due = Duration::from_secs_f64((i * chunk + c.len()) as f64 / 16000.0);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let ev = rec.push(c)?;
        emit(ev, &mut out)?;
    }
    let ev = rec.finish()?;
    emit(ev, &mut out)?;
    if partial_shown {
        writeln!(out)?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resampler_keeps_a_tone_and_removes_what_cannot_exist() {
        // 1 kHz at 48 kHz → 16 kHz: same amplitude, same frequency.
        let x: Vec<f32> = (0..48000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 48000.0).sin())
            .collect();
        let y = resample_to_pipeline(&x, 48000).unwrap();
        assert_eq!(y.len(), 16000);
        let max_err = (2000..14000)
            .map(|i| {
                (y[i] - (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()).abs()
            })
            .fold(0f32, f32::max);
        assert!(max_err < 0.01, "max error {max_err}");
        // 12 kHz at 48 kHz is above the new Nyquist (8 kHz): it must be filtered, not aliased.
        let x: Vec<f32> = (0..48000)
            .map(|i| (2.0 * std::f32::consts::PI * 12000.0 * i as f32 / 48000.0).sin())
            .collect();
        let y = resample_to_pipeline(&x, 48000).unwrap();
        let rms = (y[2000..14000].iter().map(|v| v * v).sum::<f32>() / 12000.0).sqrt();
        assert!(rms < 0.01, "aliased rms {rms}");
        // 8 kHz → 16 kHz upsampling keeps a 500 Hz tone.
        let x: Vec<f32> = (0..8000)
            .map(|i| (2.0 * std::f32::consts::PI * 500.0 * i as f32 / 8000.0).sin())
            .collect();
        let y = resample_to_pipeline(&x, 8000).unwrap();
        assert_eq!(y.len(), 16000);
        let max_err = (1000..15000)
            .map(|i| (y[i] - (2.0 * std::f32::consts::PI * 500.0 * i as f32 / 16000.0).sin()).abs())
            .fold(0f32, f32::max);
        assert!(max_err < 0.01, "max error {max_err}");
    }

    #[test]
    fn bad_input_is_one_clear_error() {
        let e = read_wav(&b"this is not audio"[..], "x.txt").err().unwrap();
        assert!(
            e.to_string().contains("x.txt is not a readable WAV file"),
            "{e}"
        );
        let mut buf = std::io::Cursor::new(Vec::new());
        {
            let spec = hound::WavSpec {
                channels: 1,
                sample_rate: 16000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let w = hound::WavWriter::new(&mut buf, spec).unwrap();
            w.finalize().unwrap();
        }
        let e = read_wav(&buf.get_ref()[..], "empty.wav").err().unwrap();
        assert_eq!(e.to_string(), "empty.wav contains no audio samples");
    }
}
