//! End-of-turn eval: how soon the turn detector ends a finished turn (endpointing latency: the
//! VAD's speech end → `TurnEnded`) and how often it ends one that goes on (a false cut-off: a
//! `TurnEnded` inside a pause of speech that continues), for the silence timer and for Smart
//! Turn side by side, on the same audio and the same VAD events.
//!
//! Audio:
//! - **utterances**: each corpus utterance of the split as a complete turn (300 ms of silence
//!   before, [`TAIL_SILENCE_MS`] after). Natural pauses inside them count as well.
//! - **paused turns**: the same utterances with one mid-sentence pause inserted: at a dip in
//!   the energy (a word gap, found by [`word_gaps`]) at least 400 ms after the speech onset and
//!   before its end, [`PAUSE_MIN_MS`]–[`PAUSE_MAX_MS`] of silence (spread evenly over the turns)
//!   is spliced in. The speaker's own prosody is kept: no TTS.
//!
//! Timing is virtual: the stand-alone Silero VAD (the `[vad]` config, as in the conversation loop)
//! is run once per clip and its events are replayed at the sample position where it reported
//! them. Smart Turn runs on the audio up to that report position (the short stop is the VAD's
//! `min_silence_ms` hangover); its verdict reaches the detector after its measured compute time
//! on this machine, so the latency includes the model's real cost. Each clip's verdicts are
//! computed once and replayed for every configuration, so the sweep is cheap.
//!
//! The **dialog LM's own end of turn** ([`judge_with_lm`], optional): at each VAD speech end, the
//! audio so far is transcribed offline by Whisper (standing in for a recogniser that has caught
//! up with the speech) and the LM gives the probability that the user's message ends after
//! those words (`LlamaCppLlm::end_of_turn_probability`: the end-of-turn token's probability at
//! the open user turn, which the speculative prefill computes anyway). Its verdict reaches the
//! detector after the LM's measured compute time; the transcription's time is not counted (a
//! streaming recogniser has the words when the speech ends — that is its own issue's target).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use vr_asr::vad::{SileroVad, VadEvent};
use vr_core::{SampleIndex, SampleRate};
use vr_dialog::smart_turn::SmartTurn;
use vr_dialog::turn::{EndOfTurn, TurnConfig, TurnDetector, TurnEvent, TurnEventKind};

use crate::corpus::{Corpus, Split};
use crate::streaming::percentile;
use crate::EvalError;

pub const LEAD_SILENCE_MS: u64 = 300;
/// After each clip: longer than the longest fallback timeout swept plus the model's time.
pub const TAIL_SILENCE_MS: u64 = 3000;
pub const PAUSE_MIN_MS: u64 = 300;
pub const PAUSE_MAX_MS: u64 = 900;
/// A pause is inserted no closer than this to the speech onset or end.
const EDGE_MS: u64 = 400;
/// Inserted pauses in one utterance are at least this far apart (each makes its own turn).
const GAP_SPACING_MS: u64 = 500;
/// A word gap is a frame at least this far below the speech's median frame level.
const GAP_DIP_DB: f64 = 10.0;
/// At most this many paused turns per utterance, 1.5 per second of speech...
const GAPS_PER_UTTERANCE: usize = 6;
/// ... and only from utterances up to this long (the 50–80 s readings would cost 100 times the
/// model runs of a sentence for the same one pause).
const PAUSED_MAX_S: f64 = 15.0;
/// Energy frames for the gap finder.
const FRAME_MS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CaseKind {
    Utterance,
    Paused,
}

/// One user turn to replay.
#[derive(Debug, Clone)]
pub struct TurnCase {
    pub id: String,
    pub kind: CaseKind,
    pub audio: Vec<f32>,
    /// Paused turns: the inserted pause's length.
    pub pause_ms: Option<u64>,
}

fn ms_samples(ms: u64) -> usize {
    (ms * u64::from(SampleRate::PIPELINE.hz()) / 1000) as usize
}

/// Cut points (sample indices) at word gaps: the quietest 10 ms frames at least `EDGE_MS` inside
/// the speech, each at least `GAP_DIP_DB` below the speech's median frame level (a real dip, not
/// a quieter syllable), `GAP_SPACING_MS` apart, at most 1.5 per second of speech and
/// `GAPS_PER_UTTERANCE` in all.
pub fn word_gaps(audio: &[f32]) -> Vec<usize> {
    let frame = ms_samples(FRAME_MS);
    let db: Vec<f64> = audio
        .chunks(frame)
        .map(|f| {
            let e = f.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / f.len() as f64;
            10.0 * e.max(1e-20).log10()
        })
        .collect();
    let Some((start, end)) = crate::asr_eval::speech_bounds(audio, SampleRate::PIPELINE) else {
        return Vec::new();
    };
    let (first, last) = (start.0 as usize / frame, end.0 as usize / frame);
    let edge = (EDGE_MS / FRAME_MS) as usize;
    if last <= first + 2 * edge {
        return Vec::new();
    }
    let mut speech: Vec<f64> = db[first..last].to_vec();
    speech.sort_by(|a, b| a.total_cmp(b));
    let median = speech[speech.len() / 2];
    let mut candidates: Vec<usize> = (first + edge..last - edge)
        .filter(|&i| db[i] < median - GAP_DIP_DB)
        .collect();
    candidates.sort_by(|&a, &b| db[a].total_cmp(&db[b]).then(a.cmp(&b)));
    let most = ((last - first) * FRAME_MS as usize * 3 / 2000).clamp(1, GAPS_PER_UTTERANCE);
    let spacing = (GAP_SPACING_MS / FRAME_MS) as usize;
    let mut picked: Vec<usize> = Vec::new();
    for c in candidates {
        if picked.len() >= most {
            break;
        }
        if picked.iter().all(|&p| p.abs_diff(c) >= spacing) {
            picked.push(c);
        }
    }
    picked.sort_unstable();
    picked.into_iter().map(|i| i * frame + frame / 2).collect()
}

/// The utterances of `split` as complete turns, then every paused turn made from them.
pub fn build_cases(
    corpus: &Corpus,
    split: Split,
    limit: Option<usize>,
) -> Result<Vec<TurnCase>, EvalError> {
    let lead = vec![0f32; ms_samples(LEAD_SILENCE_MS)];
    let tail = vec![0f32; ms_samples(TAIL_SILENCE_MS)];
    let mut cases = Vec::new();
    let mut paused = Vec::new();
    let mut n_pause = 0u64;
    for u in corpus.split(split).take(limit.unwrap_or(usize::MAX)) {
        let clip = crate::asr_eval::read_clip(&corpus.wav_path(u))?;
        let whole = |parts: &[&[f32]]| parts.concat();
        cases.push(TurnCase {
            id: u.id.clone(),
            kind: CaseKind::Utterance,
            audio: whole(&[&lead, &clip, &tail]),
            pause_ms: None,
        });
        if u.duration_s > PAUSED_MAX_S {
            continue;
        }
        for (k, cut) in word_gaps(&clip).into_iter().enumerate() {
            // Evenly spread over 300..=900 ms, in a fixed order (golden-ratio steps).
            let frac = (n_pause as f64 * 0.618_033_988_75).fract();
            n_pause += 1;
            let pause = PAUSE_MIN_MS + (frac * (PAUSE_MAX_MS - PAUSE_MIN_MS) as f64).round() as u64;
            let gap = vec![0f32; ms_samples(pause)];
            paused.push(TurnCase {
                id: format!("{}#pause{k}@{:.2}s", u.id, cut as f64 / 16_000.0),
                kind: CaseKind::Paused,
                audio: whole(&[&lead, &clip[..cut], &gap, &clip[cut..], &tail]),
                pause_ms: Some(pause),
            });
        }
    }
    cases.extend(paused);
    Ok(cases)
}

/// A VAD event and the input position at which the VAD reported it.
#[derive(Debug, Clone, Copy)]
pub struct Reported {
    pub pos: SampleIndex,
    pub event: VadEvent,
}

/// Smart Turn's verdict on one pause.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Verdict {
    pub probability: f32,
    /// Model compute time (features + ONNX run), measured.
    pub compute_ms: f64,
}

/// One clip's replayable inputs: VAD events and, per VAD speech end, the model's verdict.
#[derive(Debug, Clone)]
pub struct CaseTrace {
    pub id: String,
    pub kind: CaseKind,
    pub pause_ms: Option<u64>,
    pub events: Vec<Reported>,
    /// Keyed by the speech end's `at` sample.
    pub verdicts: HashMap<u64, Verdict>,
    /// The dialog LM's end-of-turn verdicts ([`judge_with_lm`]), keyed the same way.
    pub lm_verdicts: HashMap<u64, LmVerdict>,
}

/// The dialog LM's verdict on one pause: the transcript it judged and its probability that the
/// user's message ends there.
#[derive(Debug, Clone, Serialize)]
pub struct LmVerdict {
    pub transcript: String,
    pub probability: f32,
    /// The LM's compute time (the prompt's prefill past what its cache held), measured.
    pub compute_ms: f64,
}

/// What the LM said of one transcript, and how long it took.
#[derive(Debug, Clone, Copy)]
pub struct LmJudgement {
    pub probability: f32,
    pub compute_ms: f64,
}

/// Which end-of-turn verdicts a replay hands the detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judge {
    SmartTurn,
    /// The dialog LM's own end-of-turn probability.
    Lm,
    /// Both must call the turn complete: the smaller probability, known when the slower is.
    Both,
}

/// Runs the dialog LM's end-of-turn judgement at every VAD speech end of `trace`: `transcribe`
/// gives the words of the audio up to the VAD's report (what a recogniser that keeps up with
/// the speech would hold then), `judge` the LM's probability that the message ends there and its
/// compute time.
pub fn judge_with_lm(
    case: &TurnCase,
    trace: &mut CaseTrace,
    transcribe: &mut dyn FnMut(&[f32]) -> Result<String, EvalError>,
    judge: &mut dyn FnMut(&str) -> Result<LmJudgement, EvalError>,
) -> Result<(), EvalError> {
    for r in &trace.events {
        let VadEvent::SpeechEnded { at } = r.event else {
            continue;
        };
        let end = usize::try_from(r.pos.0)
            .unwrap_or(usize::MAX)
            .min(case.audio.len());
        let transcript = transcribe(&case.audio[..end])?;
        let LmJudgement {
            probability,
            compute_ms,
        } = judge(transcript.trim())?;
        trace.lm_verdicts.insert(
            at.0,
            LmVerdict {
                transcript,
                probability,
                compute_ms,
            },
        );
    }
    Ok(())
}

/// Runs the VAD over `case` in 512-sample pieces (as the conversation loop's VAD thread does)
/// and, if a model is given, judges the audio at every reported speech end.
pub fn trace_case(
    case: &TurnCase,
    vad: &mut SileroVad,
    model: Option<&SmartTurn>,
) -> Result<CaseTrace, EvalError> {
    vad.reset().map_err(EvalError::Asr)?;
    let mut events = Vec::new();
    let mut verdicts = HashMap::new();
    let mut pos = 0usize;
    for piece in case.audio.chunks(vr_asr::vad::CHUNK_SAMPLES) {
        pos += piece.len();
        for event in vad.push(piece).map_err(EvalError::Asr)? {
            if let (VadEvent::SpeechEnded { at }, Some(m)) = (event, model) {
                let t0 = Instant::now();
                let probability = m
                    .probability(&case.audio[..pos])
                    .map_err(|e| EvalError::Dialog(e.to_string()))?;
                let compute_ms = t0.elapsed().as_secs_f64() * 1e3;
                verdicts.insert(
                    at.0,
                    Verdict {
                        probability,
                        compute_ms,
                    },
                );
            }
            events.push(Reported {
                pos: SampleIndex(pos as u64),
                event,
            });
        }
    }
    for event in vad.finish() {
        events.push(Reported {
            pos: SampleIndex(pos as u64),
            event,
        });
    }
    Ok(CaseTrace {
        id: case.id.clone(),
        kind: case.kind,
        pause_ms: case.pause_ms,
        events,
        verdicts,
        lm_verdicts: HashMap::new(),
    })
}

/// What the detector did with one clip.
#[derive(Debug, Clone, Serialize)]
pub struct CaseOutcome {
    pub id: String,
    pub kind: CaseKind,
    /// The turn ended before the speech's last VAD end (inside a pause of speech that goes on).
    pub cut_off: bool,
    /// ... and the speech did not resume within the grace period: the turn was split in two
    /// (the assistant answers the first part). A cut-off that is not a split only costs the
    /// answer started too early, which the loop drops.
    pub split: bool,
    /// The VAD's last speech end → the `TurnEnded` after it, ms.
    pub latency_ms: Option<f64>,
    /// What ended it: "timer" or "model".
    pub ended_by: Option<&'static str>,
}

/// The verdict `judge` gives on the pause that began at `speech_end`: (probability, compute ms).
fn verdict(trace: &CaseTrace, speech_end: u64, judge: Judge) -> Option<(f32, f64)> {
    let smart = trace
        .verdicts
        .get(&speech_end)
        .map(|v| (v.probability, v.compute_ms));
    let lm = trace
        .lm_verdicts
        .get(&speech_end)
        .map(|v| (v.probability, v.compute_ms));
    match judge {
        Judge::SmartTurn => smart,
        Judge::Lm => lm,
        Judge::Both => {
            let ((ps, ms), (pl, ml)) = (smart?, lm?);
            Some((ps.min(pl), ms.max(ml)))
        }
    }
}

/// Replays one trace through a detector with `cfg`, Smart Turn giving the verdicts.
pub fn replay(trace: &CaseTrace, cfg: TurnConfig) -> Option<CaseOutcome> {
    replay_with(trace, cfg, Judge::SmartTurn)
}

/// Replays one trace through a detector with `cfg`, `judge` giving the verdicts.
pub fn replay_with(trace: &CaseTrace, cfg: TurnConfig, judge: Judge) -> Option<CaseOutcome> {
    let rate = cfg.sample_rate;
    let last_end = trace.events.iter().rev().find_map(|r| match r.event {
        VadEvent::SpeechEnded { at } => Some(at),
        _ => None,
    })?;
    // The timeline: VAD events at their report positions, model verdicts at report position +
    // compute time. Stable sort keeps a verdict after the event that asked for it.
    enum Input {
        Vad(VadEvent),
        Model { speech_end: SampleIndex, p: f32 },
    }
    let mut timeline: Vec<(SampleIndex, Input)> = Vec::new();
    for r in &trace.events {
        timeline.push((r.pos, Input::Vad(r.event)));
        if let (VadEvent::SpeechEnded { at }, EndOfTurn::Model { .. }) = (r.event, cfg.end_of_turn)
        {
            if let Some((p, compute_ms)) = verdict(trace, at.0, judge) {
                let delay = rate.samples_in(Duration::from_secs_f64(compute_ms / 1e3));
                timeline.push((r.pos.advance(delay), Input::Model { speech_end: at, p }));
            }
        }
    }
    timeline.sort_by_key(|(t, _)| *t);
    let mut d = TurnDetector::new(cfg);
    let mut out: Vec<TurnEvent> = Vec::new();
    for (t, input) in timeline {
        out.extend(d.tick(t));
        out.extend(match input {
            Input::Vad(VadEvent::SpeechStarted { at }) => d.speech_started(at),
            Input::Vad(VadEvent::SpeechEnded { at }) => d.speech_ended(at),
            Input::Vad(VadEvent::Pause { .. }) => Vec::new(),
            Input::Model { speech_end, p } => d.turn_model(speech_end, p, t),
        });
    }
    out.extend(d.tick(SampleIndex(u64::MAX / 2)));
    let ends: Vec<&TurnEvent> = out
        .iter()
        .filter(|e| e.kind == TurnEventKind::TurnEnded)
        .collect();
    let cut_off = ends.iter().any(|e| e.at < last_end);
    let split = out
        .iter()
        .any(|e| e.kind == TurnEventKind::TurnCommitted && e.at < last_end);
    let fin = ends.iter().find(|e| e.at >= last_end);
    Some(CaseOutcome {
        id: trace.id.clone(),
        kind: trace.kind,
        cut_off,
        split,
        latency_ms: fin.map(|e| rate.duration_of(e.at.since(last_end)).as_secs_f64() * 1e3),
        ended_by: fin.map(|e| match e.reason {
            vr_dialog::turn::TurnReason::TurnModelComplete { .. } => "model",
            _ => "timer",
        }),
    })
}

/// One configuration's figures over a set of clips.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub system: String,
    pub audio: String,
    pub turns: usize,
    pub latency_p50_ms: Option<f64>,
    pub latency_p90_ms: Option<f64>,
    pub cut_offs: usize,
    pub cut_off_rate: f64,
    /// Cut-offs where the speech did not resume within the grace period (turn split in two).
    pub splits: usize,
    pub split_rate: f64,
    /// Turns the model ended (the rest: the timer).
    pub ended_by_model: usize,
}

pub fn row(system: &str, audio: &str, outcomes: &[&CaseOutcome]) -> Row {
    let lat: Vec<f64> = outcomes.iter().filter_map(|o| o.latency_ms).collect();
    let cut_offs = outcomes.iter().filter(|o| o.cut_off).count();
    let splits = outcomes.iter().filter(|o| o.split).count();
    let rate = |n: usize| {
        if outcomes.is_empty() {
            0.0
        } else {
            n as f64 / outcomes.len() as f64
        }
    };
    Row {
        system: system.to_string(),
        audio: audio.to_string(),
        turns: outcomes.len(),
        latency_p50_ms: percentile(&lat, 50.0),
        latency_p90_ms: percentile(&lat, 90.0),
        cut_offs,
        cut_off_rate: rate(cut_offs),
        splits,
        split_rate: rate(splits),
        ended_by_model: outcomes
            .iter()
            .filter(|o| o.ended_by == Some("model"))
            .count(),
    }
}

/// Rows for one configuration: utterances, paused turns, and both together.
pub fn rows_for(system: &str, traces: &[CaseTrace], cfg: TurnConfig, judge: Judge) -> Vec<Row> {
    let outcomes: Vec<CaseOutcome> = traces
        .iter()
        .filter_map(|t| replay_with(t, cfg, judge))
        .collect();
    let of = |k: Option<CaseKind>| -> Vec<&CaseOutcome> {
        outcomes
            .iter()
            .filter(|o| k.is_none_or(|k| o.kind == k))
            .collect()
    };
    vec![
        row(system, "utterances", &of(Some(CaseKind::Utterance))),
        row(system, "paused turns", &of(Some(CaseKind::Paused))),
        row(system, "all", &of(None)),
    ]
}

/// Compute time P50/P90 over every verdict of Smart Turn (`lm` false) or the LM, ms.
pub fn compute_percentiles(traces: &[CaseTrace], lm: bool) -> (Option<f64>, Option<f64>, usize) {
    let v: Vec<f64> = if lm {
        traces
            .iter()
            .flat_map(|t| t.lm_verdicts.values().map(|v| v.compute_ms))
            .collect()
    } else {
        traces
            .iter()
            .flat_map(|t| t.verdicts.values().map(|v| v.compute_ms))
            .collect()
    };
    (percentile(&v, 50.0), percentile(&v, 90.0), v.len())
}

/// A plain-text table of rows.
pub fn table(rows: &[Row]) -> String {
    let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.0}"));
    let mut s = format!(
        "{:<48} {:<13} {:>5} {:>7} {:>7} {:>12} {:>12} {:>6}\n",
        "system", "audio", "turns", "P50 ms", "P90 ms", "cut-offs", "splits", "model"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<48} {:<13} {:>5} {:>7} {:>7} {:>4} {:>6.1}% {:>4} {:>6.1}% {:>6}\n",
            r.system,
            r.audio,
            r.turns,
            f(r.latency_p50_ms),
            f(r.latency_p90_ms),
            r.cut_offs,
            100.0 * r.cut_off_rate,
            r.splits,
            100.0 * r.split_rate,
            r.ended_by_model
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_found_in_dips_inside_the_speech() {
        // 1 s tone, 80 ms of near-silence, 1 s tone: one gap, inside the dip.
        let tone =
            |n: usize| -> Vec<f32> { (0..n).map(|i| 0.3 * (i as f32 * 0.07).sin()).collect() };
        let mut a = vec![0f32; 3200];
        a.extend(tone(16_000));
        a.extend(vec![0.0005f32; 1280]);
        a.extend(tone(16_000));
        a.extend(vec![0f32; 3200]);
        let g = word_gaps(&a);
        assert_eq!(g.len(), 1, "{g:?}");
        assert!(
            (3200 + 16_000..3200 + 16_000 + 1280).contains(&g[0]),
            "{g:?}"
        );
    }
}
