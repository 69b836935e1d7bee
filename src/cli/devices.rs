//! `voicerelay devices`: what cpal sees, and whether the configured devices resolve.

use anyhow::{bail, Context, Result};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use vr_capture::device::{
    find_device, host_name, list_devices, ClockAnchor, Direction, Microphone, Speaker,
};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Check that the configured input and output devices exist, then (unless `aec.enabled` is
    /// false) play a 4 s test signal and report whether the echo canceller converged on them.
    /// Non-zero exit when a device is missing or the echo could not be cancelled.
    #[arg(long)]
    check: bool,
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let host = host_name();
    if args.check {
        find_device(Direction::Input, &cfg.capture.input_device)?;
        find_device(Direction::Output, &cfg.capture.output_device)?;
        println!("configured devices found (host {host})");
        if !cfg.aec.enabled {
            return Ok(ExitCode::SUCCESS);
        }
        return echo_check(cfg);
    }
    let devices = list_devices()?;
    if devices.is_empty() {
        bail!(
            "no audio devices found (host {host}); this machine has no sound card and no \
             PulseAudio server is running: start one, or run under scripts/with-pulseaudio"
        );
    }
    println!("host: {host}");
    for d in &devices {
        let dir = match d.direction {
            Direction::Input => "input ",
            Direction::Output => "output",
        };
        let fmt = match (d.default_format, &d.sample_format) {
            (Some(f), Some(sf)) => format!("{} Hz, {} ch, {sf}", f.rate.hz(), f.channels),
            _ => "format unavailable".to_string(),
        };
        let mark = if d.is_default { "*" } else { " " };
        println!("{mark} {dir}  {:<40} {fmt}", d.name);
    }
    println!("(* = default)");
    Ok(ExitCode::SUCCESS)
}

/// The test signal: speech-band noise in 300 ms bursts with 150 ms gaps (what the delay tracker
/// and the adaptive filter need: broadband, with onsets), at about −20 dBFS.
fn test_signal(rate: u32, seconds: f32) -> Vec<f32> {
    let mut noise = vr_core::rng::Xorshift32::new(0x9e37_79b9);
    let mut y = 0.0f32;
    let burst = rate as usize * 3 / 10;
    let gap = rate as usize * 3 / 20;
    (0..(rate as f32 * seconds) as usize)
        .map(|i| {
            let x = noise.next_centred();
            y = 0.7 * y + 0.3 * x;
            if i % (burst + gap) < burst {
                0.6 * y
            } else {
                0.0
            }
        })
        .collect()
}

/// Plays the test signal on the configured speaker with `listen`'s far-end reference, cancels it
/// from the configured microphone on `listen`'s canceller thread, and says whether it converged.
fn echo_check(cfg: &Config) -> Result<ExitCode> {
    let speaker = Speaker::open(
        &cfg.capture.output_device,
        None,
        cfg.capture.device_buffer_frames,
    )?;
    let mic = Microphone::open(&cfg.capture.input_device, cfg.capture.input_buffer_frames)?;
    let format = speaker.format();
    let signal = test_signal(format.rate.hz(), 4.0);
    let ch = usize::from(format.channels);
    let frames = signal.len() + format.rate.hz() as usize;
    let (mut producer, consumer) = vr_capture::audio_ring("echo_check", format, frames)?;
    let (reference, far) = super::listen_aec::reference(format)?;
    let far_anchor = reference.anchor.clone();
    let (playing, _control) =
        speaker.start_with_reference(consumer, Some((reference.producer, reference.anchor)))?;
    let (mic_producer, mic_consumer) = vr_capture::audio_ring(
        "echo_check_mic",
        mic.format(),
        cfg.capture.ring_frames(mic.format().rate),
    )?;
    let mic_anchor = Arc::new(ClockAnchor::default());
    let recording = mic.start_anchored(mic_producer, mic_anchor.clone())?;
    let (aec, mut cleaned) = super::listen_aec::start(
        &cfg.aec,
        mic_consumer,
        mic_anchor,
        far,
        far_anchor,
        cfg.capture.ring_frames(vr_core::SampleRate::PIPELINE),
    )?;
    // The canceller places the far end from the first ~0.6 s of both devices' clock anchors.
    let t0 = std::time::Instant::now();
    while !aec.ready() {
        if t0.elapsed() > Duration::from_secs(5) {
            bail!(
                "echo check: the speaker and the microphone did not both deliver audio within 5 s \
                 (speaker errors: {}, microphone errors: {})",
                playing.errors(),
                recording.errors()
            );
        }
        while let Some(chunk) = cleaned.peek() {
            let n = chunk.samples.len();
            cleaned.consume(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("echo check: playing a 4 s test signal on the speaker...");
    let interleaved: Vec<f32> = signal
        .iter()
        .flat_map(|&s| std::iter::repeat_n(s, ch))
        .collect();
    let stored = producer.push(&interleaved);
    if stored < signal.len() {
        bail!(
            "echo check: the playback ring took {stored} of {} frames",
            signal.len()
        );
    }
    // Read the cleaned audio as the conversation would, until the echo's tail is in.
    let until = std::time::Instant::now()
        + format.rate.duration_of(signal.len() as u64)
        + Duration::from_millis(600);
    while std::time::Instant::now() < until {
        while let Some(chunk) = cleaned.peek() {
            let n = chunk.samples.len();
            cleaned.consume(n);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    recording.stop()?;
    playing.stop()?;
    let summary = aec.join().context("echo check")?;
    let st = summary.stats;
    let threshold = cfg.aec.converged_erle_db;
    // The best second says whether the filter can cancel this echo; the end says whether it
    // still did when the signal stopped (a driver or loopback glitch can move the echo late).
    let end = format!(
        " (best second; {:.1} dB over the last 0.5 s{})",
        st.erle_db.unwrap_or(0.0),
        if summary.delay_moves > 0 {
            format!(
                ", after the echo's delay moved {} time(s): a driver or loopback glitch",
                summary.delay_moves
            )
        } else {
            String::new()
        }
    );
    match (st.delay, summary.best_second_erle_db) {
        _ if st.far_active_frames == 0 => {
            bail!(
                "echo check: the test signal never reached the echo canceller ({} microphone \
                 frames processed)",
                st.frames
            )
        }
        (None, _) => {
            println!(
                "echo check: no echo of the test signal heard (a headset, or the speaker is \
                 muted): nothing to cancel"
            );
            Ok(ExitCode::SUCCESS)
        }
        (Some(d), Some(erle)) if erle >= threshold => {
            println!(
                "echo check: the echo canceller converged: echo delay {:.1} ms, ERLE {erle:.1} \
                 dB{end}",
                d as f64 / 16.0
            );
            Ok(ExitCode::SUCCESS)
        }
        (Some(d), erle) => {
            println!(
                "echo check: the echo canceller did NOT converge: echo delay {:.1} ms, ERLE {:.1} \
                 dB{end}, needs {threshold} dB. On this device use dialog.half_duplex = true, or the \
                 OS's echo cancellation with aec.enabled = false",
                d as f64 / 16.0,
                erle.unwrap_or(0.0)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
