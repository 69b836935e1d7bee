//! `voicerelay eval verifier`: the dual path's verifier data, labels, training and report (the
//! method is in `vr_evals::verifier_data`).
//!
//! Both models run here with llama.cpp, one after the other on every core (this is offline work,
//! about 3 s a turn on 2 cores). Each turn's record is appended to `records.jsonl` as soon as it
//! is made, so an interrupted run resumes where it stopped; `--train-only` re-labels and re-trains
//! from the records without running a model.

use anyhow::{bail, Context, Result};
use std::collections::HashSet;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;
use vr_dialog::llm::llamacpp::{LlamaCppLlm, LlamaCppModel, LlamaCppOptions};
use vr_dialog::llm::template::PromptEnd;
use vr_dialog::llm::{CancelToken, ChatMessage, GenerateRequest, LlmEvent, Sampling, Token};
use vr_dialog::verifier::{draft_input, draft_token_count, TrainOptions};
use vr_evals::verifier_data::{self as vd, DataSplit, Opening, Record, Turn};

use crate::config::Config;

const WRITTEN_TURNS: &str = include_str!("../../evals/data/turns.txt");
const FAST_MODEL: &str = "qwen2.5-0.5b";
const SLOW_MODEL: &str = "qwen2.5-1.5b";

#[derive(clap::Args)]
pub struct VerifierArgs {
    /// Corpus directory (its transcripts are turns too); default: VOICERELAY_CORPUS or ../shared/corpus.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Output directory: records.jsonl, report.json, report.md, sweep.svg.
    #[arg(long, default_value = "eval-results/verifier")]
    out: PathBuf,
    /// Only the first N turns (written turns first, then corpus transcripts).
    #[arg(long)]
    limit: Option<usize>,
    /// Words in a draft (the dual path's `draft_words`).
    #[arg(long, default_value_t = 5)]
    words: usize,
    /// Threads for llama.cpp.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Skip the models: label and train from the records already in --out.
    #[arg(long)]
    train_only: bool,
    /// MLP hidden units (tune on dev).
    #[arg(long, default_value_t = TrainOptions::default().units)]
    units: usize,
    /// AdamW weight decay (tune on dev).
    #[arg(long, default_value_t = TrainOptions::default().weight_decay)]
    weight_decay: f64,
    /// Training epochs (the best on dev is kept).
    #[arg(long, default_value_t = TrainOptions::default().epochs)]
    epochs: usize,
    /// Learning rate.
    #[arg(long, default_value_t = TrainOptions::default().learning_rate)]
    learning_rate: f64,
    /// Write the trained weights here (the shipped file is dialog/models/verifier.safetensors).
    #[arg(long)]
    weights_out: Option<PathBuf>,
    /// Write the test split's inputs and labels here (dialog/models/verifier_heldout.safetensors),
    /// for the test that checks the shipped weights.
    #[arg(long)]
    heldout_out: Option<PathBuf>,
}

pub fn run(cfg: &Config, args: VerifierArgs) -> Result<ExitCode> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let records_path = args.out.join("records.jsonl");
    let mut records = read_records(&records_path)?;
    if !args.train_only {
        let mut turns = vd::written_turns(WRITTEN_TURNS);
        let dir = super::eval::corpus_dir(args.corpus.clone());
        let corpus = super::eval::open_corpus(&dir)?;
        turns.extend(corpus.utterances.iter().map(|u| Turn {
            text: u.text.trim().to_string(),
            source: format!("corpus:{}", u.id),
        }));
        if let Some(n) = args.limit {
            turns.truncate(n);
        }
        let done: HashSet<String> = records.iter().map(|r| r.turn.text.clone()).collect();
        let todo: Vec<Turn> = turns
            .into_iter()
            .filter(|t| !done.contains(&t.text))
            .collect();
        eprintln!(
            "{} turns recorded in {}, {} to go",
            records.len(),
            records_path.display(),
            todo.len()
        );
        if !todo.is_empty() {
            records.extend(record_turns(cfg, &args, &records_path, &todo)?);
        }
    }
    if records.is_empty() {
        bail!("no records in {}", records_path.display());
    }
    if !args.train_only {
        fill_greedy(cfg, &args, &records_path, &mut records)?;
    }
    let opts = TrainOptions {
        units: args.units,
        weight_decay: args.weight_decay,
        epochs: args.epochs,
        learning_rate: args.learning_rate,
        ..TrainOptions::default()
    };
    let (verifier, analysis, test) = vd::analyse(&records, opts)?;
    if let Some(path) = &args.weights_out {
        verifier
            .save(path)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("weights → {}", path.display());
    }
    if let Some(path) = &args.heldout_out {
        vr_dialog::verifier::save_examples(path, &test)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("held-out inputs → {}", path.display());
    }
    let report = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "fast_model": FAST_MODEL,
        "slow_model": SLOW_MODEL,
        "draft_words": args.words,
        "method": "label: mean per-token log-probability of the draft under the slow model >= the 10th percentile of the slow model's own greedy openings on dev; train 60% / dev 20% (early stopping, threshold) / test 20% by text hash",
        "analysis": analysis,
        "fast_ms_p50": percentile(records.iter().map(|r| r.fast_ms).collect(), 0.5),
        "slow_ms_p50": percentile(records.iter().map(|r| r.slow_ms).collect(), 0.5),
    });
    let json = serde_json::to_string_pretty(&report)?;
    std::fs::write(args.out.join("report.json"), &json)?;
    let svg = vr_evals::plots::unit_lines(
        "verifier threshold sweep (test split)",
        "keep rate (drafts played)",
        "share of played drafts the slow model accepts",
        &[(
            "MLP verifier",
            analysis
                .sweep
                .iter()
                .map(|r| (r.keep_rate, r.precision))
                .collect(),
        )],
    )?;
    std::fs::write(args.out.join("sweep.svg"), svg)?;
    let md = markdown(&analysis, args.words);
    std::fs::write(args.out.join("report.md"), &md)?;
    print!("{md}");
    eprintln!("report → {}", args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn read_records(path: &Path) -> Result<Vec<Record>> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("opening {}", path.display())),
    };
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        // A line cut off by an interrupted run is skipped (that turn is made again).
        match serde_json::from_str::<Record>(&line) {
            Ok(r) => out.push(r),
            Err(e) => tracing::warn!(line = i + 1, error = %e, "skipping an unreadable record"),
        }
    }
    Ok(out)
}

fn record_turns(
    cfg: &Config,
    args: &VerifierArgs,
    path: &Path,
    todo: &[Turn],
) -> Result<Vec<Record>> {
    let store = crate::cli::models::store(cfg)?;
    let fast_model = LlamaCppModel::from_store(&store, FAST_MODEL)
        .with_context(|| format!("loading {FAST_MODEL} (scripts/bootstrap assembles it)"))?;
    let slow_model = LlamaCppModel::from_store(&store, SLOW_MODEL)
        .with_context(|| format!("loading {SLOW_MODEL} (scripts/bootstrap assembles it)"))?;
    let opts = |hidden_states| LlamaCppOptions {
        max_context: 2048,
        prefill_chunk: 64,
        threads: args.threads.max(1),
        hidden_states,
    };
    let mut fast = fast_model.session(&opts(true))?;
    let mut slow = slow_model.session(&opts(false))?;
    let system = cfg.dialog.system_message();
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let started = Instant::now();
    let mut out = Vec::with_capacity(todo.len());
    for (i, turn) in todo.iter().enumerate() {
        let messages = vec![system.clone(), ChatMessage::user(turn.text.clone())];
        match record_turn(&mut fast, &mut slow, &messages, turn, args.words) {
            Ok(Some(r)) => {
                writeln!(file, "{}", serde_json::to_string(&r)?)?;
                file.flush()?;
                out.push(r);
            }
            Ok(None) => eprintln!(
                "  no draft for {:?} (the fast model stopped at once)",
                turn.text
            ),
            Err(e) => eprintln!("  skipped {:?}: {e:#}", turn.text),
        }
        if (i + 1) % 10 == 0 || i + 1 == todo.len() {
            let el = started.elapsed().as_secs_f64();
            eprintln!(
                "  {}/{} turns, {:.0} s, about {:.0} s to go",
                i + 1,
                todo.len(),
                el,
                el / (i + 1) as f64 * (todo.len() - i - 1) as f64
            );
        }
    }
    Ok(out)
}

fn seed_of(text: &str) -> u64 {
    text.bytes()
        .fold(0x1234_5678u64, |h, b| h.rotate_left(5) ^ u64::from(b))
}

/// Generates up to 24 tokens and keeps the first `words` words of them.
fn opening(
    llm: &mut LlamaCppLlm<'_>,
    messages: &[ChatMessage],
    sampling: Sampling,
    want_hidden: bool,
    words: usize,
) -> Result<Vec<Token>> {
    let mut req = GenerateRequest::new(messages.to_vec());
    req.max_tokens = 24;
    req.sampling = sampling;
    req.want_hidden = want_hidden;
    let mut tokens = Vec::new();
    llm.generate(&req, &CancelToken::new(), &mut |ev| {
        if let LlmEvent::Token(t) = ev {
            tokens.push(t);
        }
        true
    })?;
    let pieces: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
    let n = draft_token_count(&pieces, words);
    tokens.truncate(n);
    Ok(tokens)
}

/// The slow model's own first `words` words for the turn, with their mean log-probability.
fn own_opening(
    slow: &mut LlamaCppLlm<'_>,
    messages: &[ChatMessage],
    sampling: Sampling,
    words: usize,
) -> Result<Option<Opening>> {
    let own = opening(slow, messages, sampling, false, words)?;
    let lps: Vec<f32> = own
        .iter()
        .filter_map(|t| t.features.as_ref().map(|f| f.logprob))
        .collect();
    Ok((!lps.is_empty()).then(|| Opening {
        text: own.iter().map(|t| t.text.as_str()).collect(),
        mean_logprob: vd::mean(&lps),
    }))
}

/// Records made before greedy openings were recorded get them (dev and test only); the file is
/// rewritten whole.
fn fill_greedy(
    cfg: &Config,
    args: &VerifierArgs,
    path: &Path,
    records: &mut [Record],
) -> Result<()> {
    let missing = records
        .iter()
        .filter(|r| r.split != DataSplit::Train && r.own_greedy.is_none())
        .count();
    if missing == 0 {
        return Ok(());
    }
    eprintln!("{missing} dev/test records lack the slow model's greedy opening; making them");
    let store = crate::cli::models::store(cfg)?;
    let slow_model = LlamaCppModel::from_store(&store, SLOW_MODEL)
        .with_context(|| format!("loading {SLOW_MODEL} (scripts/bootstrap assembles it)"))?;
    let mut slow = slow_model.session(&LlamaCppOptions {
        max_context: 2048,
        prefill_chunk: 64,
        threads: args.threads.max(1),
        hidden_states: false,
    })?;
    let system = cfg.dialog.system_message();
    let greedy = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };
    let mut done = 0;
    for r in records
        .iter_mut()
        .filter(|r| r.split != DataSplit::Train && r.own_greedy.is_none())
    {
        let messages = vec![system.clone(), ChatMessage::user(r.turn.text.clone())];
        r.own_greedy = own_opening(&mut slow, &messages, greedy, args.words)?;
        done += 1;
        if done % 25 == 0 {
            eprintln!("  {done}/{missing}");
        }
    }
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::fs::File::create(&tmp)?;
    for r in records.iter() {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    out.flush()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn record_turn(
    fast: &mut LlamaCppLlm<'_>,
    slow: &mut LlamaCppLlm<'_>,
    messages: &[ChatMessage],
    turn: &Turn,
    words: usize,
) -> Result<Option<Record>> {
    let greedy = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };
    let t0 = Instant::now();
    let draft = opening(fast, messages, greedy, true, words)?;
    let fast_ms = t0.elapsed().as_secs_f64() * 1e3;
    if draft.is_empty() {
        return Ok(None);
    }
    let features: Vec<_> = draft
        .iter()
        .map(|t| {
            t.features
                .clone()
                .context("the drafter reported no features")
        })
        .collect::<Result<_>>()?;
    let hidden_width = features
        .first()
        .and_then(|f| f.hidden.as_ref())
        .map_or(0, Vec::len);
    if hidden_width == 0 {
        bail!("the drafter reported no hidden state");
    }
    let input = draft_input(&features, hidden_width)?;
    let ids: Vec<u32> = draft
        .iter()
        .map(|t| t.id.context("draft token without an id"))
        .collect::<Result<_>>()?;
    let t1 = Instant::now();
    let prompt = slow.prompt_tokens(messages, PromptEnd::Assistant { prefix: "" })?;
    let slow_logprobs = slow.score_continuation(&prompt, &ids)?;
    let slow_ms = t1.elapsed().as_secs_f64() * 1e3;
    let split = vd::split_of(&turn.text);
    let (sampled_own, greedy_own) = if split == DataSplit::Train {
        (None, None)
    } else {
        let sampled = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            seed: seed_of(&turn.text),
        };
        (
            own_opening(slow, messages, sampled, words)?,
            own_opening(slow, messages, greedy, words)?,
        )
    };
    Ok(Some(Record {
        turn: turn.clone(),
        split,
        draft: draft.iter().map(|t| t.text.as_str()).collect(),
        draft_tokens: ids,
        input,
        fast_logprobs: features.iter().map(|f| f.logprob).collect(),
        slow_logprobs,
        own_opening: sampled_own,
        own_greedy: greedy_own,
        fast_ms,
        slow_ms,
    }))
}

fn percentile(mut v: Vec<f64>, q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(v[((v.len() - 1) as f64 * q).round() as usize])
}

fn markdown(a: &vd::Analysis, words: usize) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "# Dual-path verifier ({words}-word drafts)\n");
    let _ = writeln!(
        s,
        "{} turns: train {}, dev {}, test {}. Label threshold τ = {:.3} (mean log-prob under the slow model; {:.0}th percentile of its own greedy openings on dev). Kept share: train {:.2}, dev {:.2}, test {:.2}; the slow model's own test openings accepted by τ: greedy {}, sampled at temperature 1 {}.\n",
        a.turns, a.train, a.dev, a.test, a.threshold_logprob, a.percentile * 100.0,
        a.kept_share_train, a.kept_share_dev, a.kept_share_test,
        a.own_openings_accepted_test.map_or("-".to_string(), |v| format!("{v:.2}")),
        a.sampled_openings_accepted_test.map_or("-".to_string(), |v| format!("{v:.2}"))
    );
    let _ = writeln!(s, "| scorer | test ROC AUC |\n|---|---|");
    let _ = writeln!(
        s,
        "| MLP, scalars + hidden state | {:.3} (dev {:.3}) |",
        a.test_auc_with_hidden, a.dev_auc_with_hidden
    );
    let _ = writeln!(
        s,
        "| MLP, scalars only | {:.3} (dev {:.3}) |",
        a.test_auc_scalars_only, a.dev_auc_scalars_only
    );
    let _ = writeln!(
        s,
        "| drafter's mean log-prob alone | {:.3} |\n",
        a.test_auc_fast_logprob
    );
    let _ = writeln!(
        s,
        "Shipped (better dev AUC): **{}**, {} parameters, hidden width {}, test ROC AUC **{:.3}** (dev {:.3}, train {:.3}, epoch {}).\n",
        a.chosen, a.parameters, a.hidden_width, a.test_auc, a.dev_auc, a.train_auc, a.best_epoch
    );
    let _ = writeln!(
        s,
        "At the 0.5 decision threshold: keep rate {:.2}, precision {:.2}.\n\n| threshold | keep rate | precision | recall |\n|---|---|---|---|",
        a.keep_rate_at_half, a.precision_at_half
    );
    for r in &a.sweep {
        let _ = writeln!(
            s,
            "| {:.2} | {:.2} | {:.2} | {:.2} |",
            r.threshold, r.keep_rate, r.precision, r.recall
        );
    }
    s
}
