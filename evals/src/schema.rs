//! The result files every system writes, VoiceRelay and peers alike.
//!
//! Two documents, both JSON, both carrying `schema_version`:
//! - a **trace** ([`RunTrace`]): what a recogniser said and when, per utterance, on a stated clock,
//!   plus the compute it used. Peers (`evals/peers/*.py`) write this; so does `voicerelay eval asr`
//!   internally.
//! - a **report** ([`AsrReport`]): the trace scored against the corpus by
//!   [`crate::asr_eval::score`] (one normaliser, one WER, one onset detector for every system), with
//!   summaries, per-category rows and cost-vs-position bins. `voicerelay eval compare` reads two.
//!
//! Times are seconds (`f64`) measured from the first sample of the utterance's audio. A field that
//! could not be measured is `null`, never 0.
//!
//! Version history: 1 — first version.

use crate::wer::ErrorCounts;
use serde::{Deserialize, Serialize};

pub const SCHEMA_VERSION: u32 = 1;

/// How audio was fed, which decides what the latencies mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// As fast as the recogniser runs; event times are on the audio clock plus measured compute
    /// (a chunk is processed once it has "arrived" and the previous call has returned).
    Fast,
    /// Chunks handed over at wall-clock pace; event times are wall-clock times.
    Realtime,
    /// The whole clip is decoded after it has fully arrived (offline peers); event times are the
    /// clip length plus measured decode time.
    Batch,
}

impl Mode {
    pub fn clock_description(self) -> &'static str {
        match self {
            Mode::Fast => "audio clock + measured compute (fast mode: no sleeping; a chunk is processed once it has arrived and the previous call returned)",
            Mode::Realtime => "wall clock (real-time mode: audio fed at wall-clock pace)",
            Mode::Batch => "audio clock + measured compute (batch: the clip is decoded after it has fully arrived)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Partial,
    Final,
}

/// One recogniser output with the time it became visible.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimedEvent {
    pub t_s: f64,
    pub kind: EventKind,
    pub text: String,
    /// Emitted only because the stream was closed (`finish()`), not by the recogniser's own
    /// endpointing: a live session that never closes would not have seen it at that time.
    #[serde(default)]
    pub at_end_of_stream: bool,
}

/// One call into the recogniser: how much audio had been fed and how long the call took.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub position_s: f64,
    pub compute_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceTrace {
    pub id: String,
    /// Audio fed, including any silence appended after the clip.
    pub fed_s: f64,
    pub events: Vec<TimedEvent>,
    pub compute_s: f64,
    /// Process CPU time (user + system, all threads) spent on this utterance, if measured.
    #[serde(default)]
    pub cpu_s: Option<f64>,
    #[serde(default)]
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunTrace {
    pub schema_version: u32,
    /// Who produced it: "voicerelay", "faster-whisper", "whisper_streaming", ...
    pub system: String,
    pub engine: String,
    pub model: String,
    /// Version of the recogniser that ran (a commit, a package version).
    pub version: String,
    pub mode: Mode,
    /// Free-form settings worth recording (chunk size, beam, VAD, ...).
    #[serde(default)]
    pub settings: serde_json::Value,
    /// False when the run was interrupted (Ctrl-C) or failed part-way.
    pub complete: bool,
    #[serde(default)]
    pub wall_s: Option<f64>,
    #[serde(default)]
    pub cpu_s: Option<f64>,
    #[serde(default)]
    pub peak_rss_mb: Option<f64>,
    pub utterances: Vec<UtteranceTrace>,
}

/// Distribution summary; percentiles are nearest-rank.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub n: usize,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// The samples themselves, sorted (for CDF plots and re-analysis).
    pub values: Vec<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceResult {
    pub id: String,
    pub category: String,
    pub audio_s: f64,
    pub fed_s: f64,
    /// Speech onset/end from the energy detector ([`crate::asr_eval::speech_bounds`]).
    pub speech_onset_s: Option<f64>,
    pub speech_end_s: Option<f64>,
    pub reference: String,
    pub hypothesis: String,
    pub wer: f64,
    pub cer: f64,
    pub word_errors: ErrorCounts,
    pub char_errors: ErrorCounts,
    /// Speech onset → first output (partial or final) containing a word of the reference.
    pub ttft_s: Option<f64>,
    /// End of speech → last final.
    pub finalisation_s: Option<f64>,
    /// The last final came from `finish()` rather than from the recogniser's endpointing.
    pub final_at_end_of_stream: bool,
    pub partials: usize,
    pub finals: usize,
    pub compute_s: f64,
    pub rtf: f64,
    pub cpu_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoryRow {
    pub category: String,
    pub utterances: usize,
    pub wer: f64,
    pub word_errors: ErrorCounts,
}

/// Compute per recogniser call, binned by how far into the stream the call was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostBin {
    pub position_s: f64,
    pub calls: usize,
    pub mean_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub utterances: usize,
    pub audio_s: f64,
    pub fed_s: f64,
    pub wer: f64,
    pub cer: f64,
    pub word_errors: ErrorCounts,
    pub char_errors: ErrorCounts,
    pub ttft_s: Stats,
    pub finalisation_s: Stats,
    /// Utterances whose last final came from `finish()` rather than endpointing.
    pub finals_at_end_of_stream: usize,
    /// Utterances with no text at all.
    pub empty_hypotheses: usize,
    pub compute_s: f64,
    /// Compute time over audio fed.
    pub rtf: f64,
    pub cpu_s: Option<f64>,
    pub cpu_s_per_audio_s: Option<f64>,
    pub peak_rss_mb: Option<f64>,
    pub wall_s: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AsrReport {
    pub schema_version: u32,
    /// Always "asr" for this document.
    pub kind: String,
    pub system: String,
    pub engine: String,
    pub model: String,
    pub version: String,
    pub mode: Mode,
    /// In words: the clock the latencies were measured on.
    pub latency_clock: String,
    pub corpus: String,
    pub split: String,
    pub complete: bool,
    pub settings: serde_json::Value,
    pub normaliser: String,
    pub onset_detector: String,
    pub summary: Summary,
    pub by_category: Vec<CategoryRow>,
    pub cost_by_position: Vec<CostBin>,
    pub utterances: Vec<UtteranceResult>,
}
