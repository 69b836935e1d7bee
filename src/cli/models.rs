use anyhow::Result;
use std::process::ExitCode;
use vr_core::{FileStatus, ModelStore};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Each model with its files, sizes, stamp status and source package.
    List,
    /// Re-hash every file (or one model's) against the pinned sha256; non-zero exit on any problem.
    Verify { name: Option<String> },
    /// Print the verified directory of a model (for scripts).
    Path { name: String },
}

pub fn store(cfg: &Config) -> Result<ModelStore> {
    Ok(if cfg.models.dir.is_empty() {
        ModelStore::from_env()?
    } else {
        ModelStore::open(&cfg.models.dir)?
    })
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let store = store(cfg)?;
    match args.action {
        Action::List => {
            println!("model cache: {}", store.root().display());
            for m in store.models() {
                println!(
                    "{:<16} {:<8} {}  [{}]",
                    m.name, m.kind, m.description, m.license
                );
                for f in &m.files {
                    let path = store.file_path(&m.name, &f.name);
                    let state = match std::fs::metadata(&path) {
                        Ok(meta) => format!("{:>9.1} MB", meta.len() as f64 / 1e6),
                        Err(_) => "  missing".to_string(),
                    };
                    println!(
                        "    {:<28} {state}  sha256 {}…  from {}",
                        f.name,
                        &f.sha256[..12],
                        f.source()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify { name } => {
            if let Some(n) = &name {
                store.entry(n)?;
            }
            let mut bad = 0usize;
            for m in store.models() {
                if name.as_deref().is_some_and(|n| n != m.name) {
                    continue;
                }
                for f in &m.files {
                    let path = store.file_path(&m.name, &f.name);
                    match store.verify_file(&m.name, f)? {
                        FileStatus::Ok { size } => {
                            println!(
                                "ok       {}/{} ({:.1} MB)",
                                m.name,
                                f.name,
                                size as f64 / 1e6
                            )
                        }
                        FileStatus::Missing => {
                            bad += 1;
                            println!(
                                "MISSING  {}: fetch it with `{}`",
                                path.display(),
                                vr_core::models::REPAIR_COMMAND
                            );
                        }
                        FileStatus::Corrupted { expected, actual } => {
                            bad += 1;
                            println!(
                                "CORRUPT  {}: expected sha256 {expected}, got {actual}; repair with `{}`",
                                path.display(),
                                vr_core::models::REPAIR_COMMAND
                            );
                        }
                    }
                }
            }
            if bad > 0 {
                eprintln!("error: {bad} model file(s) missing or corrupted");
                return Ok(ExitCode::FAILURE);
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Path { name } => {
            println!("{}", store.dir(&name)?.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}
