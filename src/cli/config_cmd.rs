use anyhow::Result;
use std::process::ExitCode;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {}

pub fn run(cfg: &Config, _args: Args) -> Result<ExitCode> {
    // Loading already validated it; reaching here means it is good.
    println!("config ok\n{cfg:#?}");
    Ok(ExitCode::SUCCESS)
}
