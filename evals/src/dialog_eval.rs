//! `eval dialog`: spoken user turns through the real conversation loop
//! ([`vr_dialog::conversation`]), measuring onset latency (end of the user's speech → first
//! answer sample played) and its per-stage breakdown as the loop itself reports it
//! (`TurnLatency`).
//!
//! The driver plays the part of a polite user on a real-time line: it feeds the 16 kHz input ring
//! at wall-clock pace (20 ms pieces, silence between turns, so the loop's clocks run as with a
//! microphone), speaks one turn, then keeps feeding silence until the loop has answered and is
//! back to `Listening` (or a timeout passes), and only then speaks the next turn. So no turn is a
//! barge-in, and every onset is a clean measurement. Answer audio goes to a [`WavOutput`], the
//! loop's simulated real-time device, whose clock the onsets are measured on.

use crate::plots;
use crate::schema::{Stats, SCHEMA_VERSION};
use crate::streaming::percentile;
use crate::EvalError;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use vr_audio::AudioFormat;
use vr_core::SampleRate;
use vr_dialog::{ConversationEvent, LoopState, TurnLatency};
use vr_pipeline::{Assistant, WavOutput};

/// One spoken user turn (16 kHz mono).
#[derive(Debug, Clone)]
pub struct UserTurn {
    /// "corpus:<id>" or "question:<n>".
    pub source: String,
    /// What the audio says.
    pub text: String,
    pub audio: Vec<f32>,
}

/// The loop's breakdown of one turn, in milliseconds (see `TurnLatency` in `vr_dialog`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageLatency {
    pub endpointing_ms: u64,
    pub asr_final_ms: u64,
    pub llm_first_token_ms: Option<u64>,
    pub first_clause_ms: Option<u64>,
    pub tts_first_chunk_ms: Option<u64>,
    pub onset_ms: u64,
}

impl From<&TurnLatency> for StageLatency {
    fn from(l: &TurnLatency) -> Self {
        Self {
            // Eval turns are spoken, so the speech stages are always present.
            endpointing_ms: l.endpointing_ms.unwrap_or_default(),
            asr_final_ms: l.asr_final_ms.unwrap_or_default(),
            llm_first_token_ms: l.llm_first_token_ms,
            first_clause_ms: l.first_clause_ms,
            tts_first_chunk_ms: l.tts_first_chunk_ms,
            onset_ms: l.onset_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialogTurnResult {
    pub index: usize,
    pub source: String,
    pub spoken_text: String,
    pub audio_s: f64,
    /// Final transcripts that arrived during this turn's window.
    pub transcript: String,
    /// Answer clauses as they started playing.
    pub answer: String,
    /// The loop's breakdown for the (last) user turn it detected in this window.
    pub latency: Option<StageLatency>,
    /// User turns the loop detected in this window (1 normally; 2+ when a pause split the turn).
    pub detected_turns: usize,
    /// No answer finished within the timeout.
    pub timed_out: bool,
    /// Dual path: the verifier's decision on the draft, its score and the text.
    #[serde(default)]
    pub draft_kept: Option<bool>,
    #[serde(default)]
    pub draft_score: Option<f32>,
    #[serde(default)]
    pub draft: Option<String>,
    /// Dual path: the draft was made in the user's pause, before the turn ended.
    #[serde(default)]
    pub draft_early: Option<bool>,
    /// Dual path: silence between the kept draft and the slow model's continuation.
    #[serde(default)]
    pub seam_gap_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialogSummary {
    pub turns: usize,
    pub answered: usize,
    pub timed_out: usize,
    pub split_turns: usize,
    pub barge_ins: usize,
    pub errors: Vec<String>,
    pub onset_ms: Stats,
    pub endpointing_ms: Stats,
    pub asr_final_ms: Stats,
    pub llm_first_token_ms: Stats,
    pub first_clause_ms: Stats,
    pub tts_first_chunk_ms: Stats,
    /// Dual path: turns with a judged draft, and the share of them whose draft was kept.
    #[serde(default)]
    pub drafts: usize,
    #[serde(default)]
    pub keep_rate: Option<f64>,
    /// Dual path: of the judged drafts, those made in the user's pause (early drafts).
    #[serde(default)]
    pub early_drafts: usize,
    /// Dual path: the seam gap over the turns whose kept draft had a continuation.
    #[serde(default)]
    pub seam_gap_ms: Stats,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DialogReport {
    pub schema_version: u32,
    /// Always "dialog".
    pub kind: String,
    pub version: String,
    pub complete: bool,
    pub latency_clock: String,
    pub settings: serde_json::Value,
    pub summary: DialogSummary,
    pub turns: Vec<DialogTurnResult>,
}

/// Piece of input fed per step (20 ms at 16 kHz).
const PIECE: usize = 320;

/// Options of a dialog run.
#[derive(Debug, Clone)]
pub struct DialogOptions {
    /// Silence before each turn (after the previous answer finished).
    pub gap: Duration,
    /// Longest wait for an answer to finish after a turn's audio ended.
    pub answer_timeout: Duration,
}

fn stats_ms(v: Vec<f64>) -> Stats {
    let mut v: Vec<f64> = v.into_iter().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    Stats {
        n: v.len(),
        mean: (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64),
        p50: percentile(&v, 50.0),
        p90: percentile(&v, 90.0),
        p99: percentile(&v, 99.0),
        max: v.last().copied(),
        values: v,
    }
}

/// Summary statistics over the turns that got an answer.
pub fn summarise(
    turns: &[DialogTurnResult],
    barge_ins: usize,
    errors: Vec<String>,
) -> DialogSummary {
    let lat: Vec<&StageLatency> = turns.iter().filter_map(|t| t.latency.as_ref()).collect();
    let kept: Vec<bool> = turns.iter().filter_map(|t| t.draft_kept).collect();
    let col = |f: &dyn Fn(&StageLatency) -> Option<u64>| {
        stats_ms(lat.iter().filter_map(|l| f(l)).map(|v| v as f64).collect())
    };
    DialogSummary {
        turns: turns.len(),
        answered: lat.len(),
        timed_out: turns.iter().filter(|t| t.timed_out).count(),
        split_turns: turns.iter().filter(|t| t.detected_turns > 1).count(),
        barge_ins,
        errors,
        onset_ms: col(&|l| Some(l.onset_ms)),
        endpointing_ms: col(&|l| Some(l.endpointing_ms)),
        asr_final_ms: col(&|l| Some(l.asr_final_ms)),
        llm_first_token_ms: col(&|l| l.llm_first_token_ms),
        first_clause_ms: col(&|l| l.first_clause_ms),
        tts_first_chunk_ms: col(&|l| l.tts_first_chunk_ms),
        drafts: kept.len(),
        early_drafts: turns.iter().filter(|t| t.draft_early == Some(true)).count(),
        keep_rate: (!kept.is_empty())
            .then(|| kept.iter().filter(|k| **k).count() as f64 / kept.len() as f64),
        seam_gap_ms: stats_ms(
            turns
                .iter()
                .filter_map(|t| t.seam_gap_ms)
                .map(|v| v as f64)
                .collect(),
        ),
    }
}

/// What the feeder learned from the loop's events while one turn was in flight.
#[derive(Default)]
struct Window {
    finals: Vec<String>,
    answer: Vec<String>,
    latencies: Vec<TurnLatency>,
    listening: bool,
    spoke: bool,
    /// The last draft's (text, score, kept, early).
    draft: Option<(String, Option<f32>, bool, bool)>,
    seam_gap_ms: Option<u64>,
}

fn absorb(ev: ConversationEvent, w: &mut Window, barge_ins: &mut usize, errors: &mut Vec<String>) {
    match ev {
        ConversationEvent::Final { text, .. } if !text.trim().is_empty() => w.finals.push(text),
        ConversationEvent::AssistantText { text, .. } => w.answer.push(text),
        ConversationEvent::TurnLatency(l) => w.latencies.push(l),
        ConversationEvent::State { to, .. } => {
            if to == LoopState::Speaking {
                w.spoke = true;
            }
            w.listening = to == LoopState::Listening;
        }
        ConversationEvent::BargeIn { .. } => *barge_ins += 1,
        ConversationEvent::Draft {
            text,
            score,
            kept,
            early,
            ..
        } => w.draft = Some((text, score, kept, early)),
        ConversationEvent::Seam { gap_ms } => w.seam_gap_ms = Some(gap_ms),
        ConversationEvent::Error { message } => errors.push(message),
        _ => {}
    }
}

impl Window {
    fn into_result(self, i: usize, turn: &UserTurn, timed_out: bool) -> DialogTurnResult {
        DialogTurnResult {
            index: i + 1,
            source: turn.source.clone(),
            spoken_text: turn.text.clone(),
            audio_s: turn.audio.len() as f64 / f64::from(SampleRate::PIPELINE.hz()),
            transcript: self.finals.join(" "),
            answer: self.answer.join(" "),
            latency: self.latencies.last().map(StageLatency::from),
            detected_turns: self.latencies.len(),
            timed_out,
            draft_kept: self.draft.as_ref().map(|d| d.2),
            draft_score: self.draft.as_ref().and_then(|d| d.1),
            draft_early: self.draft.as_ref().map(|d| d.3),
            draft: self.draft.map(|d| d.0),
            seam_gap_ms: self.seam_gap_ms,
        }
    }
}

/// Drains the loop's events while it finishes (it waits whenever the event channel is full) and
/// says how it ended when that was not cleanly.
fn wait_for_the_end(
    runner: std::thread::JoinHandle<
        Result<vr_dialog::ConversationSummary, vr_pipeline::PipelineError>,
    >,
    rx: &mpsc::Receiver<ConversationEvent>,
    barge_ins: &mut usize,
    errors: &mut Vec<String>,
) -> Option<String> {
    let mut tail = Window::default();
    while !runner.is_finished() {
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(20)) {
            absorb(ev, &mut tail, barge_ins, errors);
        }
    }
    let joined = runner.join();
    while let Ok(ev) = rx.try_recv() {
        absorb(ev, &mut tail, barge_ins, errors);
    }
    match joined {
        Ok(Ok(_summary)) => None,
        Ok(Err(e)) => Some(format!("conversation ended with an error: {e}")),
        Err(_) => Some("the conversation thread panicked".into()),
    }
}

/// Runs `turns` through one conversation of `assistant`, writing the answer audio to
/// `answer_wav`. `cancel` stops after the current turn (the report is then partial).
pub fn run_dialog(
    assistant: &Assistant,
    turns: &[UserTurn],
    opts: &DialogOptions,
    answer_wav: &Path,
    cancel: &AtomicBool,
    mut progress: impl FnMut(usize, &DialogTurnResult),
) -> Result<(Vec<DialogTurnResult>, usize, Vec<String>, bool), EvalError> {
    let dialog = |e: vr_pipeline::PipelineError| EvalError::Dialog(e.to_string());
    let (mut producer, consumer) =
        // A minute of input: a recogniser slower than real time falls behind without dropping
        // audio (its delay shows in the latencies instead).
        vr_audio::audio_ring("eval-dialog", AudioFormat::PIPELINE, 16_000 * 60)
            .map_err(|e| EvalError::Dialog(e.to_string()))?;
    let conversation = assistant.conversation().map_err(dialog)?;
    let handle = conversation.handle();
    let mut output = WavOutput::create(answer_wav, SampleRate::PIPELINE).map_err(dialog)?;
    // Drained every 20 ms piece; a full channel holds the loop back rather than lose events.
    let (tx, rx) = mpsc::sync_channel::<ConversationEvent>(1024);
    output.restart_clock();
    let runner = std::thread::Builder::new()
        .name("conversation".into())
        .spawn(move || conversation.run(consumer, Box::new(output), tx))
        .map_err(|e| EvalError::Dialog(format!("cannot start the conversation thread: {e}")))?;

    let silence = [0f32; PIECE];
    let start = Instant::now();
    let mut fed = 0u64;
    let mut dropped = 0u64;
    // Feeds one piece at its wall-clock time and drains the loop's events into `w`.
    let mut step = |piece: &[f32],
                    w: &mut Window,
                    barge_ins: &mut usize,
                    errors: &mut Vec<String>|
     -> Result<(), EvalError> {
        fed += piece.len() as u64;
        let due = SampleRate::PIPELINE.duration_of(fed);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        // A microphone does not wait: what does not fit in the ring is dropped (and counted).
        let stored = producer.push(piece);
        dropped += (piece.len() - stored) as u64;
        while let Ok(ev) = rx.try_recv() {
            absorb(ev, w, barge_ins, errors);
        }
        Ok(())
    };
    let (mut barge_ins, mut errors) = (0usize, Vec::new());
    let mut results = Vec::new();
    let mut failure = None;
    'turns: for (i, turn) in turns.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let mut w = Window {
            listening: true,
            ..Default::default()
        };
        let gap = SampleRate::PIPELINE.samples_in(opts.gap) as usize;
        let mut fed_turn = Vec::with_capacity(gap + turn.audio.len());
        fed_turn.resize(gap, 0.0);
        fed_turn.extend_from_slice(&turn.audio);
        for piece in fed_turn.chunks(PIECE) {
            if let Err(e) = step(piece, &mut w, &mut barge_ins, &mut errors) {
                failure = Some(e);
                break 'turns;
            }
        }
        let audio_end = Instant::now();
        let mut timed_out = false;
        // Silence until the answer has played and the loop listens again.
        while !(w.spoke && w.listening && !w.latencies.is_empty()) {
            if audio_end.elapsed() > opts.answer_timeout || cancel.load(Ordering::Relaxed) {
                timed_out = true;
                break;
            }
            if let Err(e) = step(&silence, &mut w, &mut barge_ins, &mut errors) {
                failure = Some(e);
                break 'turns;
            }
        }
        let r = w.into_result(i, turn, timed_out);
        progress(i, &r);
        results.push(r);
    }
    let complete = failure.is_none() && results.len() == turns.len();
    if dropped > 0 {
        errors.push(format!(
            "{:.1} s of input were dropped: the recogniser fell more than the ring's 60 s behind real time",
            dropped as f64 / f64::from(SampleRate::PIPELINE.hz())
        ));
    }
    // End of input: the loop finishes once it has drained it.
    drop(producer);
    let ended = wait_for_the_end(runner, &rx, &mut barge_ins, &mut errors);
    handle.stop();
    if let Some(e) = failure {
        return Err(match ended {
            Some(why) => EvalError::Dialog(why),
            None => e,
        });
    }
    errors.extend(ended);
    Ok((results, barge_ins, errors, complete))
}

/// Builds the report (and its HTML) from the turn results.
pub fn report(
    version: &str,
    settings: serde_json::Value,
    turns: Vec<DialogTurnResult>,
    barge_ins: usize,
    errors: Vec<String>,
    complete: bool,
) -> DialogReport {
    DialogReport {
        schema_version: SCHEMA_VERSION,
        kind: "dialog".into(),
        version: version.into(),
        complete,
        latency_clock: "real time: input fed at wall-clock pace; stages on the loop's input clock, onset on the output device's clock (WavOutput, simulated real-time)".into(),
        settings,
        summary: summarise(&turns, barge_ins, errors),
        turns,
    }
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0}"))
}

/// Writes `dialog.json`, `dialog.html` and `plots/dialog_latency_cdf.svg` into `dir`.
pub fn write_dialog(dir: &Path, r: &DialogReport) -> Result<Vec<std::path::PathBuf>, EvalError> {
    let io = |p: &Path| {
        let p = p.display().to_string();
        move |source| EvalError::Io { path: p, source }
    };
    std::fs::create_dir_all(dir.join("plots")).map_err(io(dir))?;
    let json = dir.join("dialog.json");
    let text = serde_json::to_string_pretty(r).map_err(|e| EvalError::Json {
        path: json.display().to_string(),
        reason: e.to_string(),
    })?;
    std::fs::write(&json, text).map_err(io(&json))?;
    let s = &r.summary;
    let secs = |st: &Stats| Stats {
        values: st.values.iter().map(|v| v / 1000.0).collect(),
        max: st.max.map(|v| v / 1000.0),
        ..st.clone()
    };
    let rows: [(&str, &Stats); 6] = [
        ("onset (end of speech → first answer audio)", &s.onset_ms),
        ("endpointing wait", &s.endpointing_ms),
        ("ASR finalisation", &s.asr_final_ms),
        ("LLM first token", &s.llm_first_token_ms),
        ("first clause", &s.first_clause_ms),
        ("TTS first chunk", &s.tts_first_chunk_ms),
    ];
    let as_secs: Vec<(&str, Stats)> = rows.iter().map(|(n, st)| (*n, secs(st))).collect();
    let series: Vec<(&str, &Stats)> = as_secs.iter().map(|(n, st)| (*n, st)).collect();
    let svg = plots::latency_cdf("Dialog latency CDF (per stage)", &series)?;
    let plot = dir.join("plots").join("dialog_latency_cdf.svg");
    std::fs::write(&plot, &svg).map_err(io(&plot))?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>VoiceRelay eval dialog</title><style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px}}</style></head><body><h1>eval dialog</h1>\
         <p>Version <code>{}</code>. {} turns, {} answered, {} timed out, {} split by a pause, {} barge-ins.{} Clock: {}.</p>\
         <p>Settings: <code>{}</code></p><table><tr><th>stage (ms)</th><th>n</th><th>P50</th><th>P90</th><th>mean</th></tr>",
        r.version,
        s.turns,
        s.answered,
        s.timed_out,
        s.split_turns,
        s.barge_ins,
        if r.complete { "" } else { " <b>Partial run.</b>" },
        r.latency_clock,
        r.settings
    );
    for (name, st) in rows {
        let _ = write!(
            h,
            "<tr><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            st.n,
            cell(st.p50),
            cell(st.p90),
            cell(st.mean)
        );
    }
    h.push_str("</table>");
    if s.drafts > 0 {
        let _ = write!(
            h,
            "<p>Dual path: {} drafts, keep rate {}, seam gap P50 {} P90 {} ms (n = {}).</p>",
            s.drafts,
            s.keep_rate
                .map_or_else(|| "–".into(), |k| format!("{k:.2}")),
            cell(s.seam_gap_ms.p50),
            cell(s.seam_gap_ms.p90),
            s.seam_gap_ms.n
        );
    }
    h.push_str(&svg);
    h.push_str("<h2>Turns</h2><table><tr><th>#</th><th>source</th><th>said / heard / answer</th><th>onset ms</th></tr>");
    for t in &r.turns {
        let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;");
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}<br><i>{}</i><br>{}</td><td>{}</td></tr>",
            t.index,
            esc(&t.source),
            esc(&t.spoken_text),
            esc(&t.transcript),
            esc(&t.answer),
            t.latency
                .as_ref()
                .map_or_else(|| "–".into(), |l| l.onset_ms.to_string())
        );
    }
    h.push_str("</table></body></html>\n");
    let html = dir.join("dialog.html");
    std::fs::write(&html, h).map_err(io(&html))?;
    Ok(vec![json, html, plot])
}

/// The question list (`evals/questions.txt`): one question per line, `#` comments.
pub fn questions(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(onset: u64, llm: Option<u64>) -> DialogTurnResult {
        DialogTurnResult {
            index: 1,
            source: "question:1".into(),
            spoken_text: String::new(),
            audio_s: 1.0,
            transcript: String::new(),
            answer: String::new(),
            latency: Some(StageLatency {
                endpointing_ms: 600,
                asr_final_ms: 300,
                llm_first_token_ms: llm,
                first_clause_ms: llm.map(|v| v + 100),
                tts_first_chunk_ms: Some(200),
                onset_ms: onset,
            }),
            detected_turns: 1,
            timed_out: false,
            draft_kept: None,
            draft_score: None,
            draft: None,
            draft_early: None,
            seam_gap_ms: None,
        }
    }

    #[test]
    fn keep_rate_and_seam_gap_count_only_judged_drafts() {
        let mut turns: Vec<_> = (1..=4).map(|i| turn(i * 100, Some(10))).collect();
        turns[0].draft_kept = Some(true);
        turns[0].seam_gap_ms = Some(0);
        turns[1].draft_kept = Some(true);
        turns[1].seam_gap_ms = Some(120);
        turns[2].draft_kept = Some(false);
        let s = summarise(&turns, 0, vec![]);
        assert_eq!(s.drafts, 3);
        assert_eq!(s.keep_rate, Some(2.0 / 3.0));
        assert_eq!(s.seam_gap_ms.n, 2);
        assert_eq!(s.seam_gap_ms.max, Some(120.0));
        let none = summarise(&turns[3..], 0, vec![]);
        assert_eq!(
            (none.drafts, none.keep_rate, none.seam_gap_ms.n),
            (0, None, 0)
        );
    }

    #[test]
    fn summary_percentiles_skip_missing_stages() {
        let mut turns: Vec<_> = (1..=10).map(|i| turn(i * 100, Some(i * 10))).collect();
        turns.push(turn(5000, None));
        let mut missing = turn(0, None);
        missing.latency = None;
        missing.timed_out = true;
        turns.push(missing);
        let s = summarise(&turns, 0, vec![]);
        assert_eq!((s.turns, s.answered, s.timed_out), (12, 11, 1));
        assert_eq!(s.onset_ms.n, 11);
        assert_eq!(s.onset_ms.p50, Some(600.0));
        assert_eq!(s.onset_ms.p90, Some(1000.0));
        assert_eq!(s.llm_first_token_ms.n, 10);
        assert_eq!(s.llm_first_token_ms.p90, Some(90.0));
        assert_eq!(s.endpointing_ms.p50, Some(600.0));
    }

    #[test]
    fn question_list_has_enough_questions() {
        let q = questions(include_str!("../questions.txt"));
        assert!(q.len() >= 12, "{}", q.len());
        assert!(q.iter().all(|l| l.ends_with('?')), "{q:?}");
    }
}
