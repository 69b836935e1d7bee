//! `voicerelay`: the binary edge. Parses the command line, loads and validates the config, sets up
//! logging and the metrics registry, and hands over to one subcommand. Everything interesting lives
//! in the stage crates; `anyhow` is used here and only here.

mod alloc;
mod cli;
mod config;
mod telemetry;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "voicerelay",
    version,
    about = "Real-time streaming speech pipeline"
)]
struct Cli {
    /// Config file merged over the built-in configs/default.toml.
    #[arg(long, global = true, env = "VOICERELAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List, verify or locate the model files in the local cache.
    Models(cli::models::Args),
    /// Check a config (defaults + file + environment) and print the merged result.
    Config(cli::config_cmd::Args),
    /// Speak text with the TTS voice into a WAV file (-o) or to the speaker.
    Say(cli::say::Args),
    /// List audio input/output devices (cpal: PulseAudio if a server runs, else ALSA).
    Devices(cli::devices::Args),
    /// Run the WebRTC voice assistant endpoint (browser page at /, signalling at /v1/sessions).
    Serve(cli::serve::Args),
    /// The local voice assistant: microphone (or --input FILE) → ASR → LLM → TTS → speakers (or
    /// --output FILE.wav), with barge-in and a latency line per turn.
    Listen(cli::listen::Args),
    /// Transcribe a WAV file (or `-` for stdin) with the streaming recogniser.
    Transcribe(cli::transcribe::Args),
    /// Latency/accuracy harness: `eval asr`, `eval compare A.json B.json`, `eval ingest TRACE`.
    Eval(cli::eval::Args),
    /// What each stage costs on this machine (CPU ms per audio second, per call, per token) and
    /// how many sessions' recognisers keep real time at once; JSON to eval-results/bench.json.
    Bench(cli::bench::Args),
}

/// Which build this binary is, for the start-up log: a user's first conversation must not run
/// on an unoptimised build unknowingly (`scripts/start` builds `--release`).
pub const BUILD_PROFILE: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

fn main() -> ExitCode {
    alloc::limit_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let cfg = config::Config::load(cli.config.as_deref())?;
    telemetry::init(&cfg.log)?;
    match cli.command {
        Command::Models(args) => cli::models::run(&cfg, args),
        Command::Config(args) => cli::config_cmd::run(&cfg, args),
        Command::Say(args) => cli::say::run(&cfg, args),
        Command::Devices(args) => cli::devices::run(&cfg, args),
        Command::Serve(args) => cli::serve::run(&cfg, args),
        Command::Transcribe(args) => cli::transcribe::run(&cfg, args),
        Command::Eval(args) => cli::eval::run(&cfg, args),
        Command::Bench(args) => cli::bench::run(&cfg, args),
        Command::Listen(args) => cli::listen::run(&cfg, args),
    }
}
