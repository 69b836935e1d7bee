//! `voicerelay eval dialog`: spoken user turns (TTS-synthesised questions from
//! `evals/questions.txt`, alternating with corpus utterances) through the configured conversation
//! loop in real time; reports onset latency P50/P90 and the per-stage breakdown. With `--paths`,
//! the same turns go through one fresh conversation per answer path (`dual`, `cascade`, `fast`),
//! each reported on its own line and in its own directory, with the dual path's keep rate and
//! seam gap.

use anyhow::{bail, Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use vr_capture::AudioFormat;
use vr_core::SampleRate;
use vr_dialog::{DialogConfig, LlmConfig};
use vr_evals::dialog_eval::{self, DialogOptions, UserTurn};
use vr_pipeline::Assistant;
use vr_tts::Synthesizer;

use crate::config::Config;

const QUESTIONS: &str = include_str!("../../evals/questions.txt");

/// An answer path: which models answer (`[dialog.dual]` names the drafter).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
enum PathArg {
    /// The drafter speaks the first words, the slow model continues after them.
    Dual,
    /// The slow model alone.
    Cascade,
    /// The drafter alone.
    Fast,
}

impl PathArg {
    fn name(self) -> &'static str {
        match self {
            PathArg::Dual => "dual",
            PathArg::Cascade => "cascade",
            PathArg::Fast => "fast",
        }
    }
}

#[derive(clap::Args)]
pub struct DialogArgs {
    /// Answer paths to compare, each a fresh conversation over the same turns (written to
    /// `<out>/<path>/`); default: the configuration as it is.
    #[arg(long, value_enum, value_delimiter = ',')]
    paths: Vec<PathArg>,
    /// With `--paths`: the slow model (model-store entry) for `dual` and `cascade`.
    #[arg(long, default_value = "qwen2.5-1.5b")]
    slow: String,
    /// With `--paths`: the dual path's keep threshold (default: `dialog.dual.keep_threshold`).
    #[arg(long)]
    threshold: Option<f32>,
    /// User turns to speak (questions and corpus utterances alternate, questions first).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=200))]
    turns: u32,
    /// Corpus directory for the corpus turns; default: VOICERELAY_CORPUS or ../shared/corpus.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Only questions (no corpus utterances).
    #[arg(long)]
    questions_only: bool,
    /// Silence before each turn once the previous answer has finished, in ms.
    #[arg(long, default_value_t = 800)]
    gap_ms: u64,
    /// Longest wait for an answer after a turn's audio ended, in s.
    #[arg(long, default_value_t = 60)]
    answer_timeout_s: u64,
    /// Output directory; default `eval-results/dialog`.
    #[arg(long, default_value = "eval-results/dialog")]
    out: PathBuf,
}

fn to_pipeline(samples: &[f32], rate: SampleRate) -> Result<Vec<f32>> {
    let format = AudioFormat { rate, channels: 1 };
    Ok(vr_capture::resample::resample_to_mono(
        samples,
        format,
        SampleRate::PIPELINE,
    )?)
}

pub fn run(cfg: &Config, args: DialogArgs) -> Result<ExitCode> {
    let version = super::eval::source_version();
    let store = crate::cli::models::store(cfg)?;
    let questions = dialog_eval::questions(QUESTIONS);
    let corpus_utts = if args.questions_only {
        Vec::new()
    } else {
        let dir = super::eval::corpus_dir(args.corpus.clone());
        let corpus = super::eval::open_corpus(&dir)?;
        // Sentence-like turns (1.5 to 8 s) from the test split: a single digit is not a question.
        corpus
            .split(vr_evals::corpus::Split::Test)
            .filter(|u| (1.5..=8.0).contains(&u.duration_s))
            .map(|u| (u.clone(), corpus.wav_path(u)))
            .collect::<Vec<_>>()
    };
    let tts = vr_tts::StreamingSynthesizer::from_config(&cfg.tts, &store)?;
    if let Some(why) = tts.fallback_reason() {
        tracing::warn!(voice = %tts.voice(), reason = why, "questions spoken by the fallback voice");
    }
    let mut turns = Vec::new();
    let (mut qi, mut ci) = (0usize, 0usize);
    while turns.len() < args.turns as usize {
        let use_corpus = !corpus_utts.is_empty() && turns.len() % 2 == 1;
        if use_corpus {
            let (u, path) = &corpus_utts[ci % corpus_utts.len()];
            ci += 1;
            turns.push(UserTurn {
                source: format!("corpus:{}", u.id),
                text: u.text.clone(),
                audio: vr_evals::asr_eval::read_clip(path)?,
            });
        } else {
            let q = questions[qi % questions.len()];
            qi += 1;
            let audio = tts
                .speak_all(q, Duration::from_secs(60))
                .with_context(|| format!("synthesising {q:?}"))?;
            turns.push(UserTurn {
                source: format!("question:{qi}"),
                text: q.to_string(),
                audio: to_pipeline(&audio, tts.sample_rate())?,
            });
        }
    }
    drop(tts);
    let cancel = super::eval::install_interrupt()?;
    if args.paths.is_empty() {
        return run_path(
            cfg, &store, &args, None, &turns, &args.out, &cancel, &version,
        );
    }
    let mut code = ExitCode::SUCCESS;
    for path in args.paths.clone() {
        let out = args.out.join(path.name());
        code = run_path(
            cfg,
            &store,
            &args,
            Some(path),
            &turns,
            &out,
            &cancel,
            &version,
        )?;
        if code != ExitCode::SUCCESS {
            break;
        }
    }
    Ok(code)
}

/// `cfg` with `path`'s models: `dual` and `cascade` answer with `--slow`, `fast` with the
/// drafter; only `dual` drafts.
fn configure(cfg: &Config, args: &DialogArgs, path: PathArg) -> Result<(DialogConfig, LlmConfig)> {
    let (mut dialog, mut llm) = (cfg.dialog.clone(), cfg.llm.clone());
    dialog.dual.enabled = path == PathArg::Dual;
    if let Some(t) = args.threshold {
        dialog.dual.keep_threshold = t;
    }
    llm.model = match path {
        PathArg::Dual | PathArg::Cascade => args.slow.clone(),
        PathArg::Fast => dialog.dual.drafter.clone(),
    };
    vr_dialog::config::validate_together(&dialog, &llm)
        .with_context(|| format!("--paths {}", path.name()))?;
    Ok((dialog, llm))
}

#[allow(clippy::too_many_arguments)]
fn run_path(
    cfg: &Config,
    store: &vr_core::ModelStore,
    args: &DialogArgs,
    path: Option<PathArg>,
    turns: &[UserTurn],
    out: &std::path::Path,
    cancel: &std::sync::atomic::AtomicBool,
    version: &str,
) -> Result<ExitCode> {
    let (dialog, llm) = match path {
        Some(p) => configure(cfg, args, p)?,
        None => (cfg.dialog.clone(), cfg.llm.clone()),
    };
    let assistant = Assistant::from_configs(store, &dialog, &llm, &cfg.asr, &cfg.vad, &cfg.tts)?;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let bar = ProgressBar::new(turns.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} turns {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let opts = DialogOptions {
        gap: Duration::from_millis(args.gap_ms),
        answer_timeout: Duration::from_secs(args.answer_timeout_s),
    };
    let answers = out.join("answers.wav");
    let (results, barge_ins, errors, complete) =
        dialog_eval::run_dialog(&assistant, turns, &opts, &answers, cancel, |_, r| {
            bar.set_message(match &r.latency {
                Some(l) => format!("last onset {} ms", l.onset_ms),
                None => "last turn: no answer".into(),
            });
            bar.inc(1);
        })?;
    bar.finish_and_clear();
    if results.is_empty() {
        bail!("no turn was completed");
    }
    let settings = serde_json::json!({
        "turns": args.turns,
        "questions_only": args.questions_only,
        "gap_ms": args.gap_ms,
        "answer_timeout_s": args.answer_timeout_s,
        "path": path.map(PathArg::name),
        "llm": {"backend": format!("{:?}", llm.backend), "model": llm.model},
        "dual": dialog.dual.enabled.then(|| serde_json::json!({
            "drafter": dialog.dual.drafter,
            "draft_words": dialog.dual.draft_words,
            "keep_threshold": dialog.dual.keep_threshold,
            "early_draft": dialog.dual.early_draft,
        })),
        "asr": {"engine": cfg.asr.engine, "model": cfg.asr.model},
        "tts_voice": cfg.tts.voice,
        "dialog": {"max_answer_tokens": dialog.max_answer_tokens},
    });
    let report = dialog_eval::report(version, settings, results, barge_ins, errors, complete);
    let files = dialog_eval::write_dialog(out, &report)?;
    let s = &report.summary;
    let f = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.0}"));
    let dual = if s.drafts > 0 {
        format!(
            " | keep rate {} | drafted in the pause {} of {} | seam gap P50 {} P90 {} ms",
            s.keep_rate
                .map_or_else(|| "–".into(), |k| format!("{k:.2}")),
            s.early_drafts,
            s.drafts,
            f(s.seam_gap_ms.p50),
            f(s.seam_gap_ms.p90)
        )
    } else {
        String::new()
    };
    println!(
        "eval dialog{}: {} turns, {} answered, {} timed out{} | onset P50 {} P90 {} ms | endpointing P50 {} | ASR final P50 {} | LLM first token P50 {} | first clause P50 {} | TTS first chunk P50 {} ms{dual}",
        path.map_or_else(String::new, |p| format!(" [{}]", p.name())),
        s.turns,
        s.answered,
        s.timed_out,
        if report.complete { "" } else { " (PARTIAL)" },
        f(s.onset_ms.p50),
        f(s.onset_ms.p90),
        f(s.endpointing_ms.p50),
        f(s.asr_final_ms.p50),
        f(s.llm_first_token_ms.p50),
        f(s.first_clause_ms.p50),
        f(s.tts_first_chunk_ms.p50),
    );
    for e in &s.errors {
        println!("  loop error: {e}");
    }
    for p in files {
        println!("wrote {}", p.display());
    }
    Ok(if report.complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(130)
    })
}
