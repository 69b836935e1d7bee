//! `voicerelay eval dual`: the dual path against the slow and the fast model alone, on typed
//! turns through the conversation core (method and caveats in `vr_evals::dual_eval`).

use anyhow::{Context, Result};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use vr_dialog::core::CoreConfig;
use vr_dialog::llm::llamacpp::{LlamaCppModel, LlamaCppOptions};
use vr_dialog::verifier::Verifier;
use vr_evals::dual_eval::{self, Driver, EvalTurn, PathMode};
use vr_evals::verifier_data::{self, DataSplit};

use crate::config::Config;

const FACTUAL: &str = include_str!("../../evals/data/factual.tsv");
const WRITTEN_TURNS: &str = include_str!("../../evals/data/turns.txt");

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PathArg {
    Dual,
    Cascade,
    Fast,
}

#[derive(clap::Args)]
pub struct DualArgs {
    /// Modes to run, each on every turn.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cascade,dual,fast"
    )]
    paths: Vec<PathArg>,
    /// Turns: the factual questions first (accuracy), then written turns of the verifier's
    /// held-out (test) split.
    #[arg(long, default_value_t = 80)]
    turns: usize,
    /// Words in a draft.
    #[arg(long, default_value_t = 5)]
    words: usize,
    /// Keep the draft when the verifier scores at least this (0 keeps all, 1 none).
    #[arg(long, default_value_t = 0.5)]
    threshold: f32,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 48)]
    max_tokens: usize,
    /// Threads for llama.cpp.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Verifier weights (written by `voicerelay eval verifier --weights-out`); default: the
    /// shipped ones.
    #[arg(long)]
    verifier: Option<PathBuf>,
    /// Output directory for dual.json and turns.jsonl.
    #[arg(long, default_value = "eval-results/dual")]
    out: PathBuf,
}

pub fn run(cfg: &Config, args: DualArgs) -> Result<ExitCode> {
    let mut turns: Vec<EvalTurn> = dual_eval::factual_turns(FACTUAL)?;
    turns.extend(
        verifier_data::written_turns(WRITTEN_TURNS)
            .into_iter()
            .filter(|t| verifier_data::split_of(&t.text) == DataSplit::Test)
            .map(|t| EvalTurn {
                text: t.text,
                keywords: None,
            }),
    );
    turns.truncate(args.turns);
    let store = crate::cli::models::store(cfg)?;
    let fast_model = LlamaCppModel::from_store(&store, "qwen2.5-0.5b")
        .context("loading qwen2.5-0.5b (scripts/bootstrap assembles it)")?;
    let slow_model = LlamaCppModel::from_store(&store, "qwen2.5-1.5b")
        .context("loading qwen2.5-1.5b (scripts/bootstrap assembles it)")?;
    let opts = |hidden_states| LlamaCppOptions {
        max_context: 2048,
        prefill_chunk: 64,
        threads: args.threads.max(1),
        hidden_states,
    };
    let bank = vr_tts::VoiceBank::load(&cfg.tts, &store)?;
    let verifier = match &args.verifier {
        Some(path) => Verifier::load(path)
            .with_context(|| format!("loading the verifier {}", path.display()))?,
        None => Verifier::builtin()?,
    };
    let mut driver = Driver {
        // Hidden states only when the verifier reads them.
        fast: fast_model.session(&opts(verifier.hidden_width() > 0))?,
        slow: slow_model.session(&opts(false))?,
        voice: bank.open(vr_tts::VoiceKind::Piper)?,
        verifier: Arc::new(verifier),
        base: CoreConfig::new(&cfg.dialog, vr_core::SampleRate(22_050)),
        draft_words: args.words,
        keep_threshold: args.threshold,
        max_answer_tokens: args.max_tokens,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut log = std::fs::File::create(args.out.join("turns.jsonl"))?;
    let modes: Vec<PathMode> = args
        .paths
        .iter()
        .map(|p| match p {
            PathArg::Dual => PathMode::Dual,
            PathArg::Cascade => PathMode::Cascade,
            PathArg::Fast => PathMode::Fast,
        })
        .collect();
    // Machine load at the start, reported with the figures (the machines are noisy).
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let mut results = Vec::new();
    for (i, turn) in turns.iter().enumerate() {
        for &mode in &modes {
            let r = driver.run_turn(mode, turn)?;
            writeln!(log, "{}", serde_json::to_string(&r)?)?;
            eprintln!(
                "  [{}/{}] {:7} onset {:>5} ms  seam {:>4}  {:?} → {:?}",
                i + 1,
                turns.len(),
                mode.name(),
                r.onset_ms.map_or("-".into(), |v| v.to_string()),
                r.seam_gap_ms.map_or("-".into(), |v| v.to_string()),
                turn.text,
                r.answer
            );
            results.push(r);
        }
    }
    let summaries: Vec<_> = modes
        .iter()
        .map(|m| dual_eval::summarise(&results, *m))
        .collect();
    let report = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "method": "typed turns through ConversationCore on one thread (no ASR/VAD); onset = text reaching the core -> first answer sample on a virtual real-time output; Piper voice; llama.cpp, greedy; quality = exp(mean per-token logprob under the slow model - the cascade's, paired)",
        "load_average_at_start": load,
        "turns": turns.len(),
        "draft_words": args.words,
        "keep_threshold": args.threshold,
        "max_answer_tokens": args.max_tokens,
        "threads": args.threads,
        "modes": summaries,
        "load_average_at_end": std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_default(),
    });
    std::fs::write(
        args.out.join("dual.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!("| mode | onset P50 / P90 ms | first token P50 ms | seam gap P50 / P90 ms | keep rate | factual correct | quality vs cascade |");
    println!("|---|---|---|---|---|---|---|");
    let f = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    for s in &summaries {
        println!(
            "| {} | {} / {} | {} | {} / {} | {} | {}/{} | {} |",
            s.mode.name(),
            f(s.onset_p50_ms),
            f(s.onset_p90_ms),
            f(s.first_token_p50_ms),
            f(s.seam_gap_p50_ms),
            f(s.seam_gap_p90_ms),
            s.keep_rate.map_or("-".into(), |v| format!("{v:.2}")),
            s.factual_correct,
            s.factual_questions,
            s.quality_vs_cascade
                .map_or("-".into(), |v| format!("{v:.3}")),
        );
    }
    eprintln!("report → {}", args.out.join("dual.json").display());
    Ok(ExitCode::SUCCESS)
}
