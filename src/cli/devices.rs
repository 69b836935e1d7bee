//! `voicerelay devices`: what cpal sees, and whether the configured devices resolve.

use anyhow::{bail, Result};
use std::process::ExitCode;
use vr_capture::device::{find_device, host_name, list_devices, Direction};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Only check that the configured input and output devices exist (non-zero exit otherwise).
    #[arg(long)]
    check: bool,
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let host = host_name();
    if args.check {
        find_device(Direction::Input, &cfg.capture.input_device)?;
        find_device(Direction::Output, &cfg.capture.output_device)?;
        println!("configured devices found (host {host})");
        return Ok(ExitCode::SUCCESS);
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
