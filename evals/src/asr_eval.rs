//! `eval asr`: drive a streaming recogniser over corpus clips, record a [`RunTrace`], and score
//! any trace (ours or a peer's) into an [`AsrReport`].
//!
//! Clocks. Fast mode hands over chunk `i` once it has "arrived" (its audio time) and the previous
//! call has returned, and stamps the events of a call with the time it returned (simulated clock +
//! measured compute). Real-time mode sleeps until each chunk's wall-clock arrival and stamps events
//! with the wall clock. A recogniser that keeps up gives the same latencies both ways; one that
//! falls behind accumulates the backlog in both.
//!
//! Speech onset and end are not taken from the recogniser under test (its VAD would grade its own
//! homework): [`speech_bounds`] finds them from the clip's energy, identically for every system.

use crate::corpus::Corpus;
use crate::normalize::normalize;
use crate::resources;
use crate::schema::{
    AsrReport, CategoryRow, CostBin, EventKind, Mode, RunTrace, Stats, Step, Summary, TimedEvent,
    UtteranceResult, UtteranceTrace, SCHEMA_VERSION,
};
use crate::streaming::percentile;
use crate::wer::{char_errors, word_errors, ErrorCounts};
use crate::EvalError;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vr_asr::{AsrEvent, StreamingRecognizer};
use vr_core::{SampleIndex, SampleRate};

/// Frame length of the energy onset detector.
const ONSET_FRAME_MS: usize = 10;
/// A frame is speech when its energy is within this many dB of the clip's loudest frame ...
const ONSET_REL_DB: f64 = 35.0;
/// ... and above this absolute level (dBFS), so a silent clip has no speech at all.
const ONSET_ABS_DBFS: f64 = -55.0;

pub const ONSET_DETECTOR: &str = "energy: 10 ms frames; speech = frames within 35 dB of the clip's loudest frame and above -55 dBFS; onset = start of the first such frame, end = end of the last";

pub const NORMALISER: &str = "evals/src/normalize.rs: lower-case, numbers spelt out (TTS verbaliser), contractions expanded, punctuation removed, mr/mrs/dr/ok expanded";

/// Speech onset and end (exclusive) on the clip's sample clock, or `None` for a silent clip.
pub fn speech_bounds(samples: &[f32], rate: SampleRate) -> Option<(SampleIndex, SampleIndex)> {
    let frame = (rate.hz() as usize * ONSET_FRAME_MS / 1000).max(1);
    let db: Vec<f64> = samples
        .chunks(frame)
        .map(|f| {
            let e = f.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>() / f.len() as f64;
            10.0 * e.max(1e-20).log10()
        })
        .collect();
    let peak = db.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let threshold = (peak - ONSET_REL_DB).max(ONSET_ABS_DBFS);
    let first = db.iter().position(|&d| d >= threshold)?;
    let last = db.iter().rposition(|&d| d >= threshold)?;
    Some((
        SampleIndex((first * frame) as u64),
        SampleIndex((((last + 1) * frame).min(samples.len())) as u64),
    ))
}

/// Reads a 16 kHz mono 16-bit corpus clip (the corpus is stored that way; anything else is an
/// error naming the file).
pub fn read_clip(path: &Path) -> Result<Vec<f32>, EvalError> {
    let name = path.display().to_string();
    let bad = |reason: String| EvalError::Audio {
        path: name.clone(),
        reason,
    };
    let mut r = hound::WavReader::open(path).map_err(|e| bad(e.to_string()))?;
    let spec = r.spec();
    if spec.sample_rate != SampleRate::PIPELINE.hz()
        || spec.channels != 1
        || spec.bits_per_sample != 16
        || spec.sample_format != hound::SampleFormat::Int
    {
        return Err(bad(format!(
            "expected 16 kHz mono 16-bit PCM, found {} Hz, {} channel(s), {}-bit {:?}",
            spec.sample_rate, spec.channels, spec.bits_per_sample, spec.sample_format
        )));
    }
    r.samples::<i16>()
        .map(|s| s.map(|v| f32::from(v) / 32768.0))
        .collect::<Result<_, _>>()
        .map_err(|e| bad(e.to_string()))
}

/// How clips are fed.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    /// Samples per `push`.
    pub chunk: usize,
    pub mode: Mode,
    /// Silence appended after the clip before `finish()`, so the recogniser's own endpointing
    /// gets the chance a live session would give it.
    pub tail_silence: Duration,
}

fn text_of(e: &AsrEvent) -> Option<(EventKind, &str)> {
    match e {
        AsrEvent::Partial { text, .. } => Some((EventKind::Partial, text)),
        AsrEvent::Final { text, .. } => Some((EventKind::Final, text)),
        _ => None,
    }
}

/// Feeds one clip through `rec` (after `reset()`), returning its trace, or `None` if `cancel`
/// was raised part-way.
pub fn run_utterance(
    rec: &mut dyn StreamingRecognizer,
    id: &str,
    clip: &[f32],
    opts: &FeedOptions,
    cancel: &AtomicBool,
) -> Result<Option<UtteranceTrace>, EvalError> {
    rec.reset();
    let sr = f64::from(rec.sample_rate().hz());
    let tail = (opts.tail_silence.as_secs_f64() * sr).round() as usize;
    let mut audio = Vec::with_capacity(clip.len() + tail);
    audio.extend_from_slice(clip);
    audio.resize(clip.len() + tail, 0.0);
    let realtime = opts.mode == Mode::Realtime;
    let cpu0 = resources::cpu_time();
    let start = Instant::now();
    let mut clock = 0.0f64;
    let mut compute = 0.0f64;
    let mut events = Vec::new();
    let mut steps = Vec::new();
    let mut pos = 0usize;
    let stamp = |evs: Vec<AsrEvent>, t: f64, end: bool, events: &mut Vec<TimedEvent>| {
        for e in &evs {
            if let Some((kind, text)) = text_of(e) {
                events.push(TimedEvent {
                    t_s: t,
                    kind,
                    text: text.to_string(),
                    at_end_of_stream: end,
                });
            }
        }
    };
    for c in audio.chunks(opts.chunk.max(1)) {
        if cancel.load(Ordering::Relaxed) {
            return Ok(None);
        }
        pos += c.len();
        let arrival = pos as f64 / sr;
        if realtime {
            if let Some(wait) = Duration::from_secs_f64(arrival).checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        } else {
            clock = clock.max(arrival);
        }
        let t0 = Instant::now();
        let evs = rec.push(c).map_err(EvalError::Asr)?;
        let dt = t0.elapsed().as_secs_f64();
        compute += dt;
        clock += dt;
        steps.push(Step {
            position_s: arrival,
            compute_s: dt,
        });
        let t = if realtime {
            start.elapsed().as_secs_f64()
        } else {
            clock
        };
        stamp(evs, t, false, &mut events);
    }
    let fed_s = audio.len() as f64 / sr;
    clock = clock.max(fed_s);
    let t0 = Instant::now();
    let evs = rec.finish().map_err(EvalError::Asr)?;
    let dt = t0.elapsed().as_secs_f64();
    compute += dt;
    clock += dt;
    let t = if realtime {
        start.elapsed().as_secs_f64()
    } else {
        clock
    };
    stamp(evs, t, true, &mut events);
    let cpu_s = match (cpu0, resources::cpu_time()) {
        (Some(a), Some(b)) => Some((b - a).as_secs_f64()),
        _ => None,
    };
    Ok(Some(UtteranceTrace {
        id: id.to_string(),
        fed_s,
        events,
        compute_s: compute,
        cpu_s,
        steps,
    }))
}

fn stats(mut v: Vec<f64>) -> Stats {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let mean = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    Stats {
        n: v.len(),
        mean,
        p50: percentile(&v, 50.0),
        p90: percentile(&v, 90.0),
        p99: percentile(&v, 99.0),
        max: v.last().copied(),
        values: v,
    }
}

/// Width of the cost-vs-position bins.
const COST_BIN_S: f64 = 1.0;

fn cost_bins(traces: &[UtteranceTrace]) -> Vec<CostBin> {
    let mut bins: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for s in traces.iter().flat_map(|t| &t.steps) {
        let b = (s.position_s / COST_BIN_S).floor().max(0.0) as u64;
        bins.entry(b).or_default().push(s.compute_s * 1000.0);
    }
    bins.into_iter()
        .map(|(b, mut v)| {
            v.sort_by(f64::total_cmp);
            CostBin {
                position_s: b as f64 * COST_BIN_S,
                calls: v.len(),
                mean_ms: v.iter().sum::<f64>() / v.len() as f64,
                p90_ms: percentile(&v, 90.0).unwrap_or(0.0),
                max_ms: v.last().copied().unwrap_or(0.0),
            }
        })
        .collect()
}

/// Scores one utterance trace against its reference and clip.
pub fn score_utterance(
    trace: &UtteranceTrace,
    reference_text: &str,
    category: &str,
    clip: &[f32],
) -> UtteranceResult {
    let sr = SampleRate::PIPELINE;
    let secs = |s: SampleIndex| s.0 as f64 / f64::from(sr.hz());
    let bounds = speech_bounds(clip, sr);
    let onset = bounds.map(|b| secs(b.0));
    let end = bounds.map(|b| secs(b.1));
    let reference = normalize(reference_text);
    let ref_words: HashSet<&str> = reference.split_whitespace().collect();
    let finals: Vec<&TimedEvent> = trace
        .events
        .iter()
        .filter(|e| e.kind == EventKind::Final && !e.text.trim().is_empty())
        .collect();
    let hypothesis = normalize(
        &finals
            .iter()
            .map(|e| e.text.trim())
            .collect::<Vec<_>>()
            .join(" "),
    );
    let first_correct = trace.events.iter().find(|e| {
        normalize(&e.text)
            .split_whitespace()
            .any(|w| ref_words.contains(w))
    });
    let ttft_s = match (first_correct, onset) {
        (Some(e), Some(o)) => Some(e.t_s - o),
        _ => None,
    };
    let last_final = finals.last();
    let finalisation_s = match (last_final, end) {
        (Some(e), Some(en)) => Some(e.t_s - en),
        _ => None,
    };
    let we = word_errors(&reference, &hypothesis);
    let ce = char_errors(&reference, &hypothesis);
    UtteranceResult {
        id: trace.id.clone(),
        category: category.to_string(),
        audio_s: clip.len() as f64 / f64::from(sr.hz()),
        fed_s: trace.fed_s,
        speech_onset_s: onset,
        speech_end_s: end,
        reference,
        hypothesis,
        wer: we.rate(),
        cer: ce.rate(),
        word_errors: we,
        char_errors: ce,
        ttft_s,
        finalisation_s,
        final_at_end_of_stream: last_final.is_some_and(|e| e.at_end_of_stream),
        partials: trace
            .events
            .iter()
            .filter(|e| e.kind == EventKind::Partial)
            .count(),
        finals: finals.len(),
        compute_s: trace.compute_s,
        rtf: if trace.fed_s > 0.0 {
            trace.compute_s / trace.fed_s
        } else {
            0.0
        },
        cpu_s: trace.cpu_s,
    }
}

/// Scores a whole trace: every utterance id must be in `corpus` (an unknown id is an error, so a
/// peer run on the wrong corpus cannot be compared by accident).
pub fn score(corpus: &Corpus, split: &str, trace: &RunTrace) -> Result<AsrReport, EvalError> {
    if trace.schema_version != SCHEMA_VERSION {
        return Err(EvalError::Schema {
            found: trace.schema_version,
            expected: SCHEMA_VERSION,
        });
    }
    let mut results = Vec::with_capacity(trace.utterances.len());
    for t in &trace.utterances {
        let u = corpus
            .utterances
            .iter()
            .find(|u| u.id == t.id)
            .ok_or_else(|| EvalError::UnknownUtterance { id: t.id.clone() })?;
        let clip = read_clip(&corpus.wav_path(u))?;
        results.push(score_utterance(t, &u.text, &u.category, &clip));
    }
    let word: ErrorCounts = results.iter().map(|r| r.word_errors).sum();
    let chars: ErrorCounts = results.iter().map(|r| r.char_errors).sum();
    let mut cats: BTreeMap<&str, (usize, ErrorCounts)> = BTreeMap::new();
    for r in &results {
        let c = cats.entry(r.category.as_str()).or_default();
        c.0 += 1;
        c.1 = c.1 + r.word_errors;
    }
    let by_category = cats
        .into_iter()
        .map(|(category, (n, e))| CategoryRow {
            category: category.to_string(),
            utterances: n,
            wer: e.rate(),
            word_errors: e,
        })
        .collect();
    let audio_s: f64 = results.iter().map(|r| r.audio_s).sum();
    let fed_s: f64 = trace.utterances.iter().map(|t| t.fed_s).sum();
    let compute_s: f64 = trace.utterances.iter().map(|t| t.compute_s).sum();
    let summary = Summary {
        utterances: results.len(),
        audio_s,
        fed_s,
        wer: word.rate(),
        cer: chars.rate(),
        word_errors: word,
        char_errors: chars,
        ttft_s: stats(results.iter().filter_map(|r| r.ttft_s).collect()),
        finalisation_s: stats(results.iter().filter_map(|r| r.finalisation_s).collect()),
        finals_at_end_of_stream: results.iter().filter(|r| r.final_at_end_of_stream).count(),
        empty_hypotheses: results.iter().filter(|r| r.hypothesis.is_empty()).count(),
        compute_s,
        rtf: if fed_s > 0.0 { compute_s / fed_s } else { 0.0 },
        cpu_s: trace.cpu_s,
        cpu_s_per_audio_s: trace.cpu_s.filter(|_| fed_s > 0.0).map(|c| c / fed_s),
        peak_rss_mb: trace.peak_rss_mb,
        wall_s: trace.wall_s,
    };
    Ok(AsrReport {
        schema_version: SCHEMA_VERSION,
        kind: "asr".into(),
        system: trace.system.clone(),
        engine: trace.engine.clone(),
        model: trace.model.clone(),
        version: trace.version.clone(),
        mode: trace.mode,
        latency_clock: trace.mode.clock_description().into(),
        corpus: corpus.dir.display().to_string(),
        split: split.to_string(),
        complete: trace.complete,
        settings: trace.settings.clone(),
        normaliser: NORMALISER.into(),
        onset_detector: ONSET_DETECTOR.into(),
        summary,
        by_category,
        cost_by_position: cost_bins(&trace.utterances),
        utterances: results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16000.0).sin())
            .collect()
    }

    #[test]
    fn onset_and_end_of_a_tone_between_silences() {
        let mut x = vec![0.0; 8000];
        x.extend(tone(16000, 0.3));
        x.extend(vec![0.0; 4000]);
        let (a, b) = speech_bounds(&x, SampleRate::PIPELINE).unwrap();
        assert_eq!((a.0, b.0), (8000, 24000));
        // A quiet hiss 50 dB below the tone is not speech.
        let mut y: Vec<f32> = (0..8000)
            .map(|i| if i % 2 == 0 { 0.001 } else { -0.001 })
            .collect();
        y.extend(tone(1600, 0.3));
        let (a, b) = speech_bounds(&y, SampleRate::PIPELINE).unwrap();
        assert_eq!((a.0, b.0), (8000, 9600));
        assert_eq!(speech_bounds(&vec![0.0; 16000], SampleRate::PIPELINE), None);
        assert_eq!(speech_bounds(&[], SampleRate::PIPELINE), None);
    }

    fn ev(t: f64, kind: EventKind, text: &str, end: bool) -> TimedEvent {
        TimedEvent {
            t_s: t,
            kind,
            text: text.into(),
            at_end_of_stream: end,
        }
    }

    #[test]
    fn ttft_finalisation_and_wer_from_a_trace() {
        // Speech from 0.5 s to 1.5 s.
        let mut clip = vec![0.0; 8000];
        clip.extend(tone(16000, 0.3));
        clip.extend(vec![0.0; 8000]);
        let trace = UtteranceTrace {
            id: "u".into(),
            fed_s: 3.0,
            events: vec![
                // "uh" is not in the reference: not the first correct word.
                ev(0.8, EventKind::Partial, "Uh", false),
                ev(1.1, EventKind::Partial, "Uh, the cat", false),
                ev(1.9, EventKind::Final, "The cat sat.", false),
                ev(3.2, EventKind::Final, "", true),
            ],
            compute_s: 0.6,
            cpu_s: Some(1.2),
            steps: vec![],
        };
        let r = score_utterance(&trace, "THE CAT SAT DOWN", "read", &clip);
        assert!((r.ttft_s.unwrap() - 0.6).abs() < 1e-9, "{:?}", r.ttft_s);
        assert!((r.finalisation_s.unwrap() - 0.4).abs() < 1e-9);
        assert!(!r.final_at_end_of_stream);
        assert_eq!(r.hypothesis, "the cat sat");
        assert_eq!(r.word_errors.deletions, 1);
        assert!((r.wer - 0.25).abs() < 1e-12);
        assert!((r.rtf - 0.2).abs() < 1e-12);
        assert_eq!((r.partials, r.finals), (2, 1));
    }

    #[test]
    fn cost_bins_group_calls_by_position() {
        let t = UtteranceTrace {
            id: "u".into(),
            fed_s: 2.0,
            events: vec![],
            compute_s: 0.0,
            cpu_s: None,
            steps: [(0.1, 0.010), (0.5, 0.030), (1.2, 0.050)]
                .map(|(p, c)| Step {
                    position_s: p,
                    compute_s: c,
                })
                .to_vec(),
        };
        let b = cost_bins(&[t]);
        assert_eq!(b.len(), 2);
        assert_eq!((b[0].calls, b[1].calls), (2, 1));
        assert!((b[0].mean_ms - 20.0).abs() < 1e-9);
        assert!((b[0].max_ms - 30.0).abs() < 1e-9);
        assert_eq!(b[1].position_s, 1.0);
    }
}
