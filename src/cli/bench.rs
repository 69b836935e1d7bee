//! `voicerelay bench`: what each stage of the pipeline costs on this machine, and how many
//! sessions' recognisers keep real time at once.
//!
//! Stages run one after another on the same corpus audio, so the process's CPU time over a
//! stage (getrusage: every thread, ONNX Runtime's and llama.cpp's included) is that stage's
//! cost. Figures are per second of audio heard (VAD, ASR), per call (turn model), per token
//! (LLM) and per second of audio spoken (TTS). The machine's load average is recorded before
//! and after: on a shared machine the wall-clock figures move with it, the CPU figures much less.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use vr_core::SampleRate;
use vr_evals::asr_eval::read_clip;
use vr_evals::resources::cpu_time;
use vr_evals::streaming::percentile;
use vr_tts::Synthesizer;

use crate::config::Config;

#[derive(clap::Args)]
pub struct Args {
    /// Corpus directory (with manifest.jsonl); default: VOICERELAY_CORPUS or ../shared/corpus.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Seconds of corpus speech (test split, whole utterances, 1 s of silence between) each
    /// stage and each simulated session is fed (5 ..= 300).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(5..=300))]
    seconds: u32,
    /// Most simultaneous sessions to try (1 ..= 16).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=16))]
    max_sessions: u32,
    /// A session keeps real time while its recogniser is never further behind the audio clock
    /// than this, in ms (100 ..= 10000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(100..=10_000))]
    max_lag_ms: u32,
    /// Utterances whose transcripts are answered (LLM) and spoken (TTS) (1 ..= 20).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    turns: u32,
    /// Tokens per LLM answer (4 ..= 256).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(4..=256))]
    answer_tokens: u32,
    /// Also run the sessions with one 32 ms piece per recogniser push (the pipeline's rule
    /// before backlogged audio went in as one push), for the ratio in the same run.
    #[arg(long)]
    compare_fixed_pushes: bool,
    /// JSON report; default `eval-results/bench.json`.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One stage's cost over its whole run.
#[derive(Debug, Serialize)]
struct Stage {
    stage: &'static str,
    /// What `per` counts: "audio_s", "call", "token", "spoken_s".
    unit: &'static str,
    /// How many units the stage processed.
    units: f64,
    cpu_ms: f64,
    wall_ms: f64,
    /// CPU time per unit, in ms.
    cpu_ms_per_unit: f64,
    /// Wall time per unit (for audio units: the real-time factor × 1000).
    wall_ms_per_unit: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
}

/// `n` recognisers fed the same audio at once, each at real-time pace.
#[derive(Debug, Serialize)]
struct SessionsRun {
    sessions: usize,
    pushes: Pushes,
    /// Per session: the furthest its recogniser fell behind the audio clock, in ms.
    max_lag_ms: Vec<f64>,
    /// Per session: end of audio → final transcript, in ms.
    finalisation_ms: Vec<f64>,
    kept_up: bool,
    cpu_ms_per_audio_s: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    version: String,
    build: &'static str,
    cores: usize,
    load_before: Option<[f64; 3]>,
    load_after: Option<[f64; 3]>,
    audio_s: f64,
    utterances: usize,
    stages: Vec<Stage>,
    sessions: Vec<SessionsRun>,
    /// Most sessions whose recognisers all kept real time.
    realtime_sessions: usize,
}

fn load_average() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

/// CPU and wall time of `f`, in ms.
fn measured<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, f64, f64)> {
    let cpu0 = cpu_time().context("getrusage failed")?;
    let t0 = Instant::now();
    let out = f()?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let cpu = (cpu_time().context("getrusage failed")? - cpu0).as_secs_f64() * 1e3;
    Ok((out, cpu, wall))
}

fn stage(
    name: &'static str,
    unit: &'static str,
    units: f64,
    cpu_ms: f64,
    wall_ms: f64,
    detail: Option<serde_json::Value>,
) -> Stage {
    let per = |x: f64| if units > 0.0 { x / units } else { f64::NAN };
    Stage {
        stage: name,
        unit,
        units,
        cpu_ms,
        wall_ms,
        cpu_ms_per_unit: per(cpu_ms),
        wall_ms_per_unit: per(wall_ms),
        detail,
    }
}

/// The bench's audio: whole test-split utterances with a second of silence after each, until
/// `seconds` are filled; with each utterance's transcript and end sample.
struct Audio {
    samples: Vec<f32>,
    turns: Vec<(String, usize)>,
}

fn corpus_audio(dir: &std::path::Path, seconds: u32) -> Result<Audio> {
    let corpus = super::eval::open_corpus(dir)?;
    let rate = SampleRate::PIPELINE.hz() as usize;
    let want = seconds as usize * rate;
    let mut samples = Vec::with_capacity(want + 30 * rate);
    let mut turns = Vec::new();
    for u in corpus.split(vr_evals::corpus::Split::Test) {
        if samples.len() >= want {
            break;
        }
        samples.extend(read_clip(&corpus.wav_path(u))?);
        turns.push((u.text.clone(), samples.len()));
        samples.extend(std::iter::repeat_n(0.0, rate));
    }
    if samples.len() < want {
        bail!(
            "the corpus's test split holds {:.1} s of audio, fewer than --seconds {seconds}",
            samples.len() as f64 / rate as f64
        );
    }
    Ok(Audio { samples, turns })
}

/// Whether a session whose recogniser fell at most `max_lag_ms` behind kept real time.
fn keeps_up(max_lag_ms: &[f64], limit_ms: f64) -> bool {
    !max_lag_ms.is_empty() && max_lag_ms.iter().all(|&l| l.is_finite() && l <= limit_ms)
}

pub fn run(cfg: &Config, args: Args) -> Result<ExitCode> {
    let store = crate::cli::models::store(cfg)?;
    let dir = super::eval::corpus_dir(args.corpus.clone());
    let audio = corpus_audio(&dir, args.seconds)?;
    let rate = f64::from(SampleRate::PIPELINE.hz());
    let audio_s = audio.samples.len() as f64 / rate;
    let load_before = load_average();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "bench: {audio_s:.1} s of audio from {} utterances, {cores} cores, load {load_before:?}",
        audio.turns.len()
    );
    let mut stages = Vec::new();

    eprintln!("[1/6] VAD (Silero) ...");
    let mut vad = vr_asr::vad::SileroVad::from_store(&store, cfg.vad.clone())?;
    let (segments, cpu, wall) = measured(|| {
        let mut n = 0usize;
        for c in audio.samples.chunks(512) {
            n += vad.push(c)?.len();
        }
        Ok(n)
    })?;
    stages.push(stage(
        "vad",
        "audio_s",
        audio_s,
        cpu,
        wall,
        Some(serde_json::json!({ "events": segments })),
    ));

    eprintln!("[2/6] turn model (Smart Turn) ...");
    let turn = vr_dialog::smart_turn::SmartTurn::from_store(
        &store,
        &vr_pipeline::onnx_environment(&store)?,
        cfg.dialog.turn.threads,
    )
    .context("loading Smart Turn (scripts/bootstrap assembles it)")?;
    let window = 8 * SampleRate::PIPELINE.hz() as usize;
    let (probabilities, cpu, wall) = measured(|| {
        let mut p = Vec::new();
        for (_, end) in &audio.turns {
            p.push(turn.probability(&audio.samples[end.saturating_sub(window)..*end])?);
        }
        Ok(p)
    })?;
    stages.push(stage(
        "turn_model",
        "call",
        probabilities.len() as f64,
        cpu,
        wall,
        Some(serde_json::json!({ "end_of_turn_probabilities": probabilities })),
    ));

    eprintln!("[3/6] ASR ...");
    let mut rec = super::transcribe::build_recognizer(cfg, &store, None)?;
    let chunk = SampleRate::PIPELINE.hz() as usize / 10;
    let mut push_ms = Vec::new();
    let ((finals, finish_ms), cpu, wall) = measured(|| {
        let mut finals = Vec::new();
        let mut take = |events: Vec<vr_asr::AsrEvent>| {
            for e in events {
                if let vr_asr::AsrEvent::Final { text, .. } = e {
                    finals.push(text);
                }
            }
        };
        for c in audio.samples.chunks(chunk) {
            let t = Instant::now();
            take(rec.push(c)?);
            push_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let t = Instant::now();
        take(rec.finish()?);
        Ok((finals, t.elapsed().as_secs_f64() * 1e3))
    })?;
    drop(rec);
    if finals.is_empty() {
        bail!("the recogniser produced no transcript from {audio_s:.1} s of corpus speech");
    }
    stages.push(stage(
        "asr",
        "audio_s",
        audio_s,
        cpu,
        wall,
        // A push that decodes blocks for the whole decode: its spread is the lag a live
        // session sees, which CPU per second alone hides.
        Some(serde_json::json!({
            "finals": finals,
            "push_ms_p50": percentile(&push_ms, 50.0),
            "push_ms_p90": percentile(&push_ms, 90.0),
            "push_ms_max": push_ms.iter().copied().fold(0.0, f64::max),
            "finish_ms": finish_ms,
        })),
    ));

    let turns: Vec<&str> = audio
        .turns
        .iter()
        .take(args.turns as usize)
        .map(|(t, _)| t.as_str())
        .collect();

    eprintln!("[4/6] LLM ({}) ...", cfg.llm.model);
    let engine = cfg.llm.build_engine(&store)?;
    let system = cfg.dialog.system_message();
    let mut prefill_tps = Vec::new();
    let mut decode_tps = Vec::new();
    let mut first_token_ms = Vec::new();
    let (tokens, cpu, wall) = measured(|| {
        let mut tokens = 0usize;
        for t in &turns {
            let mut req = vr_dialog::llm::GenerateRequest::new(vec![
                system.clone(),
                vr_dialog::ChatMessage::user(*t),
            ]);
            req.max_tokens = args.answer_tokens as usize;
            let (_, _, finished) = engine.generate(req)?.blocking_collect()?;
            let Some(f) = finished else {
                bail!("the LLM stream ended without its finish record");
            };
            let s = f.stats;
            let ttft = s.time_to_first_token.as_secs_f64();
            let computed = s.prompt_tokens.saturating_sub(s.reused_tokens);
            if ttft > 0.0 {
                prefill_tps.push(computed as f64 / ttft);
            }
            let decode = (s.total - s.time_to_first_token).as_secs_f64();
            if s.generated_tokens > 1 && decode > 0.0 {
                decode_tps.push((s.generated_tokens - 1) as f64 / decode);
            }
            first_token_ms.push(ttft * 1e3);
            tokens += s.generated_tokens;
        }
        Ok(tokens)
    })?;
    stages.push(stage(
        "llm",
        "token",
        tokens as f64,
        cpu,
        wall,
        Some(serde_json::json!({
            "engine": engine.describe(),
            "prefill_tokens_per_s_p50": percentile(&prefill_tps, 50.0),
            "decode_tokens_per_s_p50": percentile(&decode_tps, 50.0),
            "first_token_ms_p50": percentile(&first_token_ms, 50.0),
        })),
    ));
    drop(engine);

    eprintln!("[5/6] TTS ({:?}) ...", cfg.tts.voice);
    let synth = vr_tts::StreamingSynthesizer::from_config(&cfg.tts, &store)?;
    let tts_rate = f64::from(synth.sample_rate().hz());
    let (spoken, cpu, wall) = measured(|| {
        let mut n = 0usize;
        for t in &turns {
            n += synth.speak_all(t, Duration::from_secs(60))?.len();
        }
        Ok(n)
    })?;
    let spoken_s = spoken as f64 / tts_rate;
    if spoken_s <= 0.0 {
        bail!(
            "the synthesizer produced no audio for {} turns",
            turns.len()
        );
    }
    stages.push(stage("tts", "spoken_s", spoken_s, cpu, wall, None));
    drop(synth);

    eprintln!("[6/6] simultaneous sessions ...");
    let mut sessions = Vec::new();
    let mut realtime_sessions = 0;
    let mut policies = vec![Pushes::Backlog];
    if args.compare_fixed_pushes {
        policies.push(Pushes::Fixed);
    }
    for pushes in policies {
        for n in 1..=args.max_sessions as usize {
            let run = sessions_run(cfg, &store, &audio.samples, n, pushes)?;
            let ok = keeps_up(&run.max_lag_ms, f64::from(args.max_lag_ms));
            eprintln!(
                "  {n} session(s), {pushes:?} pushes: furthest behind {:.0} ms, {}",
                run.max_lag_ms.iter().copied().fold(0.0, f64::max),
                if ok { "real time" } else { "fell behind" }
            );
            sessions.push(SessionsRun { kept_up: ok, ..run });
            // Every count is run (how the lag grows says more than where it crossed the
            // limit); the count reported is the largest below which all kept up.
            if pushes == Pushes::Backlog && ok && realtime_sessions == n - 1 {
                realtime_sessions = n;
            }
        }
    }

    let report = Report {
        version: super::eval::source_version(),
        build: crate::BUILD_PROFILE,
        cores,
        load_before,
        load_after: load_average(),
        audio_s,
        utterances: audio.turns.len(),
        stages,
        sessions,
        realtime_sessions,
    };
    print_table(&report)?;
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from("eval-results/bench.json"));
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

/// How the simulated sessions hand audio to their recognisers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Pushes {
    /// As the pipeline's ASR thread does: everything waiting, up to
    /// [`vr_pipeline::ASR_MAX_PUSH`] samples, in one push.
    Backlog,
    /// One VAD piece per push however far behind (the pipeline before the backlog rule).
    Fixed,
}

/// Samples per VAD piece: the unit the VAD thread hands on.
const PIECE: usize = 512;

/// `n` threads, each with its own recogniser, fed `samples` as a live session's VAD thread
/// would: one 32 ms piece becomes available every 32 ms of wall time from one shared start.
fn sessions_run(
    cfg: &Config,
    store: &vr_core::ModelStore,
    samples: &[f32],
    n: usize,
    pushes: Pushes,
) -> Result<SessionsRun> {
    let mut recs = Vec::with_capacity(n);
    for _ in 0..n {
        recs.push(super::transcribe::build_recognizer(cfg, store, None)?);
    }
    let hz = f64::from(SampleRate::PIPELINE.hz());
    let audio_s = samples.len() as f64 / hz;
    let max_push = match pushes {
        Pushes::Backlog => vr_pipeline::ASR_MAX_PUSH,
        Pushes::Fixed => PIECE,
    };
    let cpu0 = cpu_time().context("getrusage failed")?;
    let start = Instant::now();
    let results: Vec<Result<(f64, f64)>> = std::thread::scope(|s| {
        let handles: Vec<_> = recs
            .into_iter()
            .map(|mut rec| {
                s.spawn(move || -> Result<(f64, f64)> {
                    let mut max_lag = 0.0f64;
                    let mut pushed = 0usize;
                    while pushed < samples.len() {
                        let now = start.elapsed().as_secs_f64();
                        let heard = ((now * hz) as usize / PIECE * PIECE).min(samples.len());
                        if heard <= pushed {
                            // The next piece is heard at the end of its 32 ms.
                            let next = (pushed + PIECE).min(samples.len()) as f64 / hz;
                            std::thread::sleep(Duration::from_secs_f64((next - now).max(0.0)));
                            continue;
                        }
                        let to = heard.min(pushed + max_push);
                        rec.push(&samples[pushed..to])?;
                        pushed = to;
                        let lag = start.elapsed().as_secs_f64() - pushed as f64 / hz;
                        max_lag = max_lag.max(lag * 1e3);
                    }
                    rec.finish()?;
                    let fin = start.elapsed().as_secs_f64() - audio_s;
                    Ok((max_lag, fin.max(0.0) * 1e3))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a session thread panicked")))
            })
            .collect()
    });
    let cpu = (cpu_time().context("getrusage failed")? - cpu0).as_secs_f64() * 1e3;
    let mut max_lag_ms = Vec::new();
    let mut finalisation_ms = Vec::new();
    for r in results {
        let (lag, fin) = r?;
        max_lag_ms.push(lag);
        finalisation_ms.push(fin);
    }
    Ok(SessionsRun {
        sessions: n,
        pushes,
        max_lag_ms,
        finalisation_ms,
        kept_up: false,
        cpu_ms_per_audio_s: cpu / (audio_s * n as f64),
    })
}

fn print_table(r: &Report) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<11} {:>9} {:>10} {:>12} {:>13}",
        "stage", "units", "unit", "CPU ms/unit", "wall ms/unit"
    )?;
    for s in &r.stages {
        writeln!(
            out,
            "{:<11} {:>9.1} {:>10} {:>12.1} {:>13.1}",
            s.stage, s.units, s.unit, s.cpu_ms_per_unit, s.wall_ms_per_unit
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<9} {:<8} {:>16} {:>20} {:>13}",
        "sessions", "pushes", "behind max (ms)", "finalisation P50 ms", "CPU ms/aud-s"
    )?;
    for s in &r.sessions {
        writeln!(
            out,
            "{:<9} {:<8} {:>16.0} {:>20.0} {:>13.1}",
            s.sessions,
            format!("{:?}", s.pushes).to_lowercase(),
            s.max_lag_ms.iter().copied().fold(0.0, f64::max),
            percentile(&s.finalisation_ms, 50.0).unwrap_or(f64::NAN),
            s.cpu_ms_per_audio_s
        )?;
    }
    writeln!(
        out,
        "\n{} session(s) kept real time on {} cores (load {:?} → {:?})",
        r.realtime_sessions, r.cores, r.load_before, r.load_after
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_keeps_up_only_if_every_recogniser_stayed_within_the_lag() {
        assert!(keeps_up(&[0.0, 120.0, 999.0], 1000.0));
        assert!(!keeps_up(&[0.0, 1000.5], 1000.0));
        assert!(!keeps_up(&[f64::NAN], 1000.0));
        assert!(!keeps_up(&[], 1000.0));
    }

    #[test]
    fn a_stage_divides_by_its_units_and_says_so_when_it_had_none() {
        let s = stage("asr", "audio_s", 20.0, 4000.0, 10_000.0, None);
        assert_eq!(s.cpu_ms_per_unit, 200.0);
        assert_eq!(s.wall_ms_per_unit, 500.0);
        assert!(stage("tts", "spoken_s", 0.0, 1.0, 1.0, None)
            .cpu_ms_per_unit
            .is_nan());
    }
}
