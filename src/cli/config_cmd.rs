use anyhow::Result;
use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(cfg: &Config, _args: Args) -> Result<ExitCode> {
    // Loading already validated it; reaching here means it is good. Secrets (the bearer token,
    // TURN credentials and secrets) are printed as "<redacted>".
    let mut shown = cfg.clone();
    shown.transport = cfg.transport.redacted();
    println!("config ok\n{shown:#?}");
    Ok(ExitCode::SUCCESS)
}
