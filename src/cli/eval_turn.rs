//! `voicerelay eval turn`: endpointing latency and false cut-offs, silence timer vs Smart Turn
//! vs the dialog LM's own end of turn (`--lm`), side by side on the same audio and VAD events
//! (see `vr_evals::turn_eval` for the method).

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vr_dialog::smart_turn::SmartTurn;
use vr_dialog::turn::EndOfTurn;
use vr_evals::turn_eval::{self, Judge, Row};
use vr_evals::EvalError;

use crate::config::Config;

#[derive(clap::Args)]
pub struct TurnArgs {
    /// Corpus directory; default: VOICERELAY_CORPUS or ../shared/corpus.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Tune on dev, report on test.
    #[arg(long, value_enum, default_value = "test")]
    split: super::eval::SplitArg,
    /// Only the first N utterances of the split (and the paused turns made from them).
    #[arg(long)]
    limit: Option<usize>,
    /// Silence timeouts to run the timer with, ms (the configured one is always included).
    #[arg(long, value_delimiter = ',', default_value = "300,400,600,800")]
    timers: Vec<u64>,
    /// Smart Turn thresholds (the configured one is always included).
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.5,0.7")]
    thresholds: Vec<f32>,
    /// Smart Turn fallback timeouts, ms (the configured one is always included).
    #[arg(long, value_delimiter = ',', default_value = "1000,1500,2000")]
    fallbacks: Vec<u64>,
    /// Also judge every pause by this dialog LM's own end-of-turn probability (a model-store
    /// entry run on llama.cpp, e.g. `qwen2.5-0.5b`), alone and together with Smart Turn.
    #[arg(long)]
    lm: Option<String>,
    /// LM thresholds (with `--lm`).
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.05,0.1,0.3,0.5")]
    lm_thresholds: Vec<f32>,
    /// Output directory for turn.json.
    #[arg(long, default_value = "eval-results/turn")]
    out: PathBuf,
}

#[derive(serde::Serialize)]
struct Report {
    version: String,
    split: String,
    method: &'static str,
    vad: vr_asr::vad::VadConfig,
    utterances: usize,
    paused_turns: usize,
    model_compute_p50_ms: Option<f64>,
    model_compute_p90_ms: Option<f64>,
    model_runs: usize,
    lm: Option<String>,
    lm_compute_p50_ms: Option<f64>,
    lm_compute_p90_ms: Option<f64>,
    rows: Vec<Row>,
    /// Per clip, for the configured timer and the configured Smart Turn settings.
    cases: Vec<serde_json::Value>,
}

pub fn run(cfg: &Config, args: TurnArgs) -> Result<ExitCode> {
    let store = crate::cli::models::store(cfg)?;
    let dir = super::eval::corpus_dir(args.corpus.clone());
    let corpus = super::eval::open_corpus(&dir)?;
    let cases = turn_eval::build_cases(&corpus, args.split.split(), args.limit)?;
    let n_utt = cases
        .iter()
        .filter(|c| c.kind == turn_eval::CaseKind::Utterance)
        .count();
    eprintln!(
        "{} utterances + {} paused turns from the {} split",
        n_utt,
        cases.len() - n_utt,
        args.split.name()
    );
    let mut vad = vr_asr::vad::SileroVad::from_store(&store, cfg.vad.clone())?;
    let model = SmartTurn::from_store(
        &store,
        &vr_pipeline::onnx_environment(&store)?,
        cfg.dialog.turn.threads,
    )
    .context("loading Smart Turn (scripts/bootstrap assembles it)")?;
    let t0 = Instant::now();
    let mut traces = Vec::with_capacity(cases.len());
    for (i, c) in cases.iter().enumerate() {
        traces.push(turn_eval::trace_case(c, &mut vad, Some(&model))?);
        if (i + 1) % 25 == 0 {
            eprintln!("  {}/{} clips traced", i + 1, cases.len());
        }
    }
    let (c50, c90, runs) = turn_eval::compute_percentiles(&traces, false);
    eprintln!(
        "traced in {:.1} s; Smart Turn ran {runs} times, compute P50 {:.0} ms / P90 {:.0} ms",
        t0.elapsed().as_secs_f64(),
        c50.unwrap_or(f64::NAN),
        c90.unwrap_or(f64::NAN)
    );
    if let Some(name) = &args.lm {
        judge_with_lm(cfg, &store, name, &cases, &mut traces)?;
    }
    let (l50, l90, _) = turn_eval::compute_percentiles(&traces, true);

    let base = cfg.dialog.turn_config();
    let configured = cfg.dialog.turn.clone();
    let mut timers = args.timers.clone();
    timers.push(cfg.dialog.silence_timeout_ms);
    timers.sort_unstable();
    timers.dedup();
    let mut thresholds = args.thresholds.clone();
    thresholds.push(configured.threshold);
    thresholds.sort_by(|a, b| a.total_cmp(b));
    thresholds.dedup();
    let mut fallbacks = args.fallbacks.clone();
    fallbacks.push(configured.fallback_timeout_ms);
    fallbacks.sort_unstable();
    fallbacks.dedup();

    let mut rows = Vec::new();
    let timer_cfg = |ms: u64| vr_dialog::turn::TurnConfig {
        silence_timeout: Duration::from_millis(ms),
        end_of_turn: EndOfTurn::Timer,
        ..base
    };
    let model_cfg = |th: f32, fb: u64| vr_dialog::turn::TurnConfig {
        end_of_turn: EndOfTurn::Model {
            threshold: th,
            fallback_timeout: Duration::from_millis(fb),
        },
        ..base
    };
    for &ms in &timers {
        let mark = if ms == cfg.dialog.silence_timeout_ms {
            " (configured)"
        } else {
            ""
        };
        rows.extend(turn_eval::rows_for(
            &format!("timer {ms} ms{mark}"),
            &traces,
            timer_cfg(ms),
            Judge::SmartTurn,
        ));
    }
    for &th in &thresholds {
        for &fb in &fallbacks {
            let mark = if th == configured.threshold && fb == configured.fallback_timeout_ms {
                " (configured)"
            } else {
                ""
            };
            rows.extend(turn_eval::rows_for(
                &format!("smart_turn p>{th} fallback {fb} ms{mark}"),
                &traces,
                model_cfg(th, fb),
                Judge::SmartTurn,
            ));
        }
    }
    if args.lm.is_some() {
        for &th in &args.lm_thresholds {
            for &fb in &fallbacks {
                for (judge, name) in [(Judge::Lm, "lm"), (Judge::Both, "smart_turn+lm")] {
                    rows.extend(turn_eval::rows_for(
                        &format!("{name} p>{th} fallback {fb} ms"),
                        &traces,
                        model_cfg(th, fb),
                        judge,
                    ));
                }
            }
        }
    }
    print!("{}", turn_eval::table(&rows));

    let mut per_case = Vec::new();
    for t in &traces {
        let timer = turn_eval::replay(t, timer_cfg(cfg.dialog.silence_timeout_ms));
        let smart = turn_eval::replay(
            t,
            model_cfg(configured.threshold, configured.fallback_timeout_ms),
        );
        let probs: Vec<f32> = {
            let mut v: Vec<(u64, f32)> = t
                .verdicts
                .iter()
                .map(|(k, v)| (*k, v.probability))
                .collect();
            v.sort_by_key(|(k, _)| *k);
            v.into_iter().map(|(_, p)| p).collect()
        };
        let mut lm: Vec<(&u64, &turn_eval::LmVerdict)> = t.lm_verdicts.iter().collect();
        lm.sort_by_key(|(k, _)| **k);
        let lm: Vec<&turn_eval::LmVerdict> = lm.into_iter().map(|(_, v)| v).collect();
        per_case.push(serde_json::json!({
            "id": t.id, "kind": t.kind, "pause_ms": t.pause_ms,
            "smart_turn_probabilities": probs, "timer": timer, "smart_turn": smart,
            "lm_verdicts": lm,
        }));
    }
    let report = Report {
        version: super::eval::source_version(),
        split: args.split.name().to_string(),
        method: "vr_evals::turn_eval: Silero VAD events replayed at their report positions; Smart Turn on the audio up to each VAD speech end's report, verdict delivered after its measured compute time; latency = last VAD speech end -> TurnEnded; cut-off = a TurnEnded before the last VAD speech end",
        vad: cfg.vad.clone(),
        utterances: n_utt,
        paused_turns: cases.len() - n_utt,
        model_compute_p50_ms: c50,
        model_compute_p90_ms: c90,
        model_runs: runs,
        lm: args.lm.clone(),
        lm_compute_p50_ms: l50,
        lm_compute_p90_ms: l90,
        rows,
        cases: per_case,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let path = args.out.join("turn.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// Every pause judged by the dialog LM `name`: the audio up to each VAD speech end transcribed
/// offline by the configured Whisper, then the LM's end-of-turn probability after those words
/// (system prompt as configured; the LM keeps its cache between calls, as the live loop's
/// speculative prefill does, so the compute time is the prefill of what changed).
fn judge_with_lm(
    cfg: &Config,
    store: &vr_core::ModelStore,
    name: &str,
    cases: &[turn_eval::TurnCase],
    traces: &mut [turn_eval::CaseTrace],
) -> Result<()> {
    use vr_dialog::llm::llamacpp::{LlamaCppModel, LlamaCppOptions};
    let model = LlamaCppModel::from_store(store, name)
        .with_context(|| format!("loading {name} (scripts/bootstrap assembles it)"))?;
    let mut llm = model.session(&LlamaCppOptions {
        max_context: 2048,
        prefill_chunk: 64,
        threads: cfg.llm.threads.max(1),
        hidden_states: false,
    })?;
    let mut whisper = vr_asr::models::whisper::load_configured(&cfg.asr, store)
        .context("loading Whisper (scripts/bootstrap assembles it)")?;
    let system = cfg.dialog.system_message();
    let t0 = Instant::now();
    let mut transcribe = |audio: &[f32]| -> Result<String, EvalError> {
        // Offline Whisper takes ≤ 30 s: a longer turn is judged on its last 30 s.
        let from = audio.len().saturating_sub(30 * 16_000);
        let (text, _) = whisper.transcribe(&audio[from..]).map_err(EvalError::Asr)?;
        Ok(text)
    };
    let mut judge = |text: &str| -> Result<turn_eval::LmJudgement, EvalError> {
        let messages = [system.clone(), vr_dialog::ChatMessage::user(text)];
        let t = Instant::now();
        let probability = llm
            .end_of_turn_probability(&messages)
            .map_err(|e| EvalError::Dialog(e.to_string()))?;
        Ok(turn_eval::LmJudgement {
            probability,
            compute_ms: t.elapsed().as_secs_f64() * 1e3,
        })
    };
    for (i, (case, trace)) in cases.iter().zip(traces.iter_mut()).enumerate() {
        turn_eval::judge_with_lm(case, trace, &mut transcribe, &mut judge)?;
        if (i + 1) % 25 == 0 {
            eprintln!("  {}/{} clips judged by {name}", i + 1, cases.len());
        }
    }
    eprintln!("LM judged in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
