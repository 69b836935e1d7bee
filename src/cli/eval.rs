//! `voicerelay eval`: the latency/accuracy harness.
//!
//! - `eval asr`: every utterance of a corpus split through the configured streaming recogniser;
//!   writes `report.json` (schema in `evals/src/schema.rs`), `report.html` (inline SVG plots) and
//!   `plots/*.svg` into `--out`. Ctrl-C stops after the current chunk and writes the partial report
//!   (marked `"complete": false`); a second Ctrl-C exits at once.
//! - `eval ingest`: scores a peer's trace file (written by `evals/peers/*.py`) with the same
//!   normaliser, WER and onset detector, producing the same report files.
//! - `eval compare A.json B.json`: side-by-side table with B/A ratios.
//! - `eval transport --trace FILE`: plain CC vs CC + ReCap cap on a simulated bandwidth trace.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vr_evals::asr_eval::{self, FeedOptions};
use vr_evals::corpus::{Corpus, Split};
use vr_evals::schema::{Mode, RunTrace, SCHEMA_VERSION};

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Streaming ASR over a corpus split: WER/CER, TTFT, finalisation latency, RTF, CPU, RSS.
    Asr(AsrArgs),
    /// Score a peer's trace file (evals/peers) into the same report files.
    Ingest(IngestArgs),
    /// Print two JSON reports side by side with B/A ratios.
    Compare(CompareArgs),
    /// Spoken turns through the conversation loop: onset latency with its per-stage breakdown.
    Dialog(super::eval_dialog::DialogArgs),
    /// End of turn: silence timer vs Smart Turn (endpointing latency, false cut-offs).
    Turn(super::eval_turn::TurnArgs),
    /// Typed turns through the conversation core: dual path vs the slow model alone vs the fast
    /// model alone (onset, seam gap, quality, factual accuracy).
    Dual(super::eval_dual::DualArgs),
    /// The dual path's verifier: draft with the fast model, label with the slow one, train, report.
    Verifier(super::eval_verifier::VerifierArgs),
    /// The ReCapABR table: camera clips encoded at each bitrate tier, labelled vs pristine.
    Recap(super::eval_recap::RecapArgs),
    /// Video congestion control on a bandwidth trace (simulated): plain CC vs CC + the ReCap cap
    /// (frame latency P50/P95, proxy accuracy, rates, headroom, drops).
    Transport(super::eval_transport::TransportArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitArg {
    Dev,
    Test,
    All,
}

impl SplitArg {
    pub fn split(self) -> Split {
        match self {
            SplitArg::Dev => Split::Dev,
            SplitArg::Test => Split::Test,
            SplitArg::All => Split::All,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SplitArg::Dev => "dev",
            SplitArg::Test => "test",
            SplitArg::All => "all",
        }
    }
}

#[derive(clap::Args)]
pub struct AsrArgs {
    /// Corpus directory (with manifest.jsonl); default: VOICERELAY_CORPUS or ../shared/corpus.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Which split to run (tune on dev, report on test).
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Recogniser engine (overrides `asr.engine`).
    #[arg(long, value_parser = ["whisper", "moonshine"])]
    engine: Option<String>,
    /// Whisper model (overrides `asr.model`).
    #[arg(long, value_parser = ["tiny.en", "base"])]
    model: Option<String>,
    /// Feed audio at wall-clock pace (latencies are real); default: as fast as possible, with
    /// latencies on the audio clock plus measured compute.
    #[arg(long)]
    realtime: bool,
    /// Only the first N utterances of the split.
    #[arg(long)]
    limit: Option<usize>,
    /// Only utterances of these categories (comma-separated, e.g. `long,conversational`): for
    /// iterating on one failure class; report figures on the whole split.
    #[arg(long, value_delimiter = ',')]
    category: Vec<String>,
    /// Output directory; default `eval-results/asr-<engine>-<model>-<split>-<mode>`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Audio per recogniser call, in ms (10 ..= 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(10..=1000))]
    chunk_ms: u32,
    /// Silence appended after each clip before closing the stream, in ms (0 ..= 5000): the
    /// recogniser's endpointing gets the time a live session would give it.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(0..=5000))]
    tail_silence_ms: u32,
}

#[derive(clap::Args)]
pub struct IngestArgs {
    /// Trace file written by a peer script (schema: evals/src/schema.rs `RunTrace`).
    trace: PathBuf,
    #[arg(long)]
    corpus: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "test")]
    split: SplitArg,
    /// Output directory for report.json / report.html / plots.
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args)]
pub struct CompareArgs {
    a: PathBuf,
    b: PathBuf,
}

pub fn corpus_dir(arg: Option<PathBuf>) -> PathBuf {
    arg.unwrap_or_else(vr_core::paths::corpus_dir)
}

pub fn open_corpus(dir: &Path) -> Result<Corpus> {
    if !dir.join("manifest.jsonl").exists() {
        bail!(
            "no corpus at {} (manifest.jsonl missing); pass --corpus DIR or set VOICERELAY_CORPUS",
            dir.display()
        );
    }
    Ok(Corpus::open(dir)?)
}

/// The commit that built this binary's recogniser, as far as git in the source tree can tell.
pub fn source_version() -> String {
    let root = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let Some(head) = git(&["rev-parse", "--short=10", "HEAD"]) else {
        return format!("voicerelay {} (no git)", env!("CARGO_PKG_VERSION"));
    };
    let asr = git(&["log", "-1", "--format=%h", "--", "asr"]).unwrap_or_default();
    let dirty =
        git(&["status", "--porcelain", "--", "asr", "evals", "src"]).is_some_and(|s| !s.is_empty());
    format!(
        "{head}{} (asr/ last changed in {asr})",
        if dirty { "+dirty" } else { "" }
    )
}

/// Ctrl-C raises the returned flag; a second Ctrl-C exits immediately.
pub fn install_interrupt() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: finishing the partial report (Ctrl-C again to abort)");
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flag)
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    match args.command {
        Command::Asr(a) => run_asr(cfg, a),
        Command::Ingest(a) => run_ingest(a),
        Command::Compare(a) => {
            let ra = vr_evals::report::read_asr(&a.a)?;
            let rb = vr_evals::report::read_asr(&a.b)?;
            print!("{}", vr_evals::report::compare(&ra, &rb));
            Ok(ExitCode::SUCCESS)
        }
        Command::Dialog(a) => super::eval_dialog::run(cfg, a),
        Command::Turn(a) => super::eval_turn::run(cfg, a),
        Command::Dual(a) => super::eval_dual::run(cfg, a),
        Command::Recap(a) => super::eval_recap::run(cfg, a),
        Command::Verifier(a) => super::eval_verifier::run(cfg, a),
        Command::Transport(a) => super::eval_transport::run(cfg, a),
    }
}

fn print_summary(r: &vr_evals::schema::AsrReport, w: &vr_evals::report::Written) {
    let s = &r.summary;
    let f = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.3}"));
    println!(
        "{} {} {} ({:?}, {} utterances{}): WER {:.2}% CER {:.2}% | TTFT P50 {} P90 {} s | finalisation P50 {} P90 {} P99 {} s | RTF {:.3} | CPU {} s/s | peak RSS {} MiB",
        r.system,
        r.engine,
        r.model,
        r.mode,
        s.utterances,
        if r.complete { "" } else { ", PARTIAL" },
        s.wer * 100.0,
        s.cer * 100.0,
        f(s.ttft_s.p50),
        f(s.ttft_s.p90),
        f(s.finalisation_s.p50),
        f(s.finalisation_s.p90),
        f(s.finalisation_s.p99),
        s.rtf,
        f(s.cpu_s_per_audio_s),
        s.peak_rss_mb.map_or_else(|| "–".into(), |v| format!("{v:.0}")),
    );
    for c in &r.by_category {
        println!(
            "  {:<18} {:>3} utterances  WER {:6.2}% ({} S, {} D, {} I / {} words)",
            c.category,
            c.utterances,
            c.wer * 100.0,
            c.word_errors.substitutions,
            c.word_errors.deletions,
            c.word_errors.insertions,
            c.word_errors.reference_len
        );
    }
    // Runaway output (a loop, a hallucinated clause) shows as insertions: count the utterances
    // where they exceed half the reference.
    let runaway: Vec<&str> = r
        .utterances
        .iter()
        .filter(|u| 2 * u.word_errors.insertions > u.word_errors.reference_len)
        .map(|u| u.id.as_str())
        .collect();
    println!(
        "  utterances with insertions > half the reference: {} {:?}",
        runaway.len(),
        runaway
    );
    println!("wrote {} and {}", w.json.display(), w.html.display());
}

fn run_asr(cfg: &Config, args: AsrArgs) -> Result<ExitCode> {
    let dir = corpus_dir(args.corpus);
    let corpus = open_corpus(&dir)?;
    let mut utts: Vec<_> = corpus
        .split(args.split.split())
        .filter(|u| args.category.is_empty() || args.category.contains(&u.category))
        .cloned()
        .collect();
    if let Some(n) = args.limit {
        utts.truncate(n);
    }
    if utts.is_empty() {
        bail!(
            "corpus {} has no utterances in split {}",
            dir.display(),
            args.split.name()
        );
    }
    let mut cfg = cfg.clone();
    if let Some(e) = args.engine {
        cfg.asr.engine = e;
    }
    if let Some(m) = args.model {
        cfg.asr.model = m;
    }
    let engine = cfg.asr.engine.clone();
    let model = if engine == "moonshine" {
        cfg.asr.model_dir.clone()
    } else {
        cfg.asr.model.clone()
    };
    let mode = if args.realtime {
        Mode::Realtime
    } else {
        Mode::Fast
    };
    let out = args.out.unwrap_or_else(|| {
        PathBuf::from("eval-results").join(format!(
            "asr-{engine}-{}-{}-{}",
            model.replace(['/', ' '], "_"),
            args.split.name(),
            if args.realtime { "realtime" } else { "fast" }
        ))
    });
    // Taken before the run: the tree may change while a long run goes on.
    let version = source_version();
    let store = crate::cli::models::store(&cfg)?;
    let mut rec = crate::cli::transcribe::build_recognizer(&cfg, &store, None)?;
    let cancel = install_interrupt()?;

    let opts = FeedOptions {
        chunk: (16_000 * args.chunk_ms / 1000) as usize,
        mode,
        tail_silence: Duration::from_millis(u64::from(args.tail_silence_ms)),
    };
    // Warm-up (not measured): the first decode pays for allocations and caches.
    let first = asr_eval::read_clip(&corpus.wav_path(&utts[0]))?;
    let warm = &first[..first.len().min(32_000)];
    asr_eval::run_utterance(
        rec.as_mut(),
        "warm-up",
        warm,
        &FeedOptions {
            mode: Mode::Fast,
            tail_silence: Duration::ZERO,
            ..opts
        },
        &cancel,
    )?;

    let bar = ProgressBar::new(utts.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} utterances, ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let cpu0 = vr_evals::resources::cpu_time();
    let t0 = Instant::now();
    let mut traces = Vec::new();
    let mut failure = None;
    for u in &utts {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        bar.set_message(u.id.clone());
        let clip = asr_eval::read_clip(&corpus.wav_path(u))?;
        match asr_eval::run_utterance(rec.as_mut(), &u.id, &clip, &opts, &cancel) {
            Ok(Some(t)) => traces.push(t),
            Ok(None) => break,
            Err(e) => {
                // Keep what was measured; report the failure after writing the partial report.
                failure = Some(anyhow::anyhow!("utterance {}: {e}", u.id));
                break;
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let complete = traces.len() == utts.len();
    let trace = RunTrace {
        schema_version: SCHEMA_VERSION,
        system: "voicerelay".into(),
        engine: engine.clone(),
        model,
        version,
        mode,
        settings: serde_json::json!({
            "chunk_ms": args.chunk_ms,
            "tail_silence_ms": args.tail_silence_ms,
            "limit": args.limit,
            "category": args.category,
            "vad_gate": cfg.asr.vad_gate,
            "asr": {
                "update_interval_ms": cfg.asr.update_interval_ms,
                "first_update_ms": cfg.asr.first_update_ms,
                "max_window_ms": cfg.asr.max_window_ms,
                "agreement": cfg.asr.agreement,
                "pad_ms": cfg.asr.pad_ms,
                "pre_roll_ms": cfg.asr.pre_roll_ms,
            },
            "warm_up": "first 2 s of the first clip, not measured",
        }),
        complete,
        wall_s: Some(t0.elapsed().as_secs_f64()),
        cpu_s: match (cpu0, vr_evals::resources::cpu_time()) {
            (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
            _ => None,
        },
        peak_rss_mb: vr_evals::resources::peak_rss_mb(),
        utterances: traces,
    };
    let report = asr_eval::score(&corpus, args.split.name(), &trace)?;
    let written = vr_evals::report::write_asr(&out, &report)?;
    std::fs::write(
        out.join("trace.json"),
        serde_json::to_string(&trace).context("serialising the trace")?,
    )
    .with_context(|| format!("cannot write {}", out.join("trace.json").display()))?;
    print_summary(&report, &written);
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(130)
    })
}

fn run_ingest(args: IngestArgs) -> Result<ExitCode> {
    let dir = corpus_dir(args.corpus);
    let corpus = open_corpus(&dir)?;
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read {}", args.trace.display()))?;
    let trace: RunTrace = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a trace file", args.trace.display()))?;
    let report = asr_eval::score(&corpus, args.split.name(), &trace)?;
    let written = vr_evals::report::write_asr(&args.out, &report)?;
    print_summary(&report, &written);
    Ok(ExitCode::SUCCESS)
}
