//! Streaming voice activity detection: Silero VAD probabilities per 32 ms chunk, turned into
//! speech-start and speech-end events on the 16 kHz sample clock.
//!
//! [`SileroVad::push`] takes samples in any block size; it buffers to whole 512-sample chunks, so
//! the probabilities (and therefore the events) are the same whatever the block sizes are: a
//! stream scored block by block equals the same samples scored offline.
//!
//! The [`Segmenter`] is the decision logic alone (no model), so it is tested on exact probability
//! sequences:
//! - **start**: a chunk with probability ≥ `start_threshold` opens a candidate; it becomes speech
//!   once it has lasted `min_speech_ms` without a chunk falling below `end_threshold` (the
//!   hysteresis band in between keeps it going). The event is reported then, dated back to the
//!   candidate's first chunk minus `speech_pad_ms` (never before the previous end).
//! - **end**: in speech, the first chunk below `end_threshold` marks a possible end; a chunk at or
//!   above `start_threshold` cancels it (as silero-vad's own `VADIterator`); once `min_silence_ms`
//!   of audio has passed since the mark (the hangover), speech ends at the mark plus
//!   `speech_pad_ms` (never later than the audio seen).
//! - **pause**: `pause_hint_ms` into such a possible end (and before the hangover is over) a
//!   [`VadEvent::Pause`] says where speech would end: a hint, not a boundary. The recogniser
//!   decodes then, so that at the speech end its transcript is already current.
//!
//! Event positions are sample indices since the stream began (or since [`SileroVad::reset`]).

use crate::models::silero::{Silero, SileroState, CHUNK};
use crate::{AsrError, AsrEvent};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use vr_core::{check_range, ConfigError, SampleIndex, SampleRate};

/// Samples per VAD decision (32 ms at 16 kHz).
pub const CHUNK_SAMPLES: usize = CHUNK;

/// A speech boundary on the 16 kHz sample clock. Converts into the matching [`AsrEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum VadEvent {
    /// Speech began at this sample (padding included).
    SpeechStarted { at: SampleIndex },
    /// Speech ended at this sample (padding included); reported after the hangover.
    SpeechEnded { at: SampleIndex },
    /// Speech has paused for `pause_hint_ms`: if the pause lasts the hangover, speech ended at
    /// `at` (padding included). Speech may resume, so this is not a boundary.
    Pause { at: SampleIndex },
}

impl VadEvent {
    pub fn at(self) -> SampleIndex {
        match self {
            VadEvent::SpeechStarted { at }
            | VadEvent::SpeechEnded { at }
            | VadEvent::Pause { at } => at,
        }
    }

    /// The speech boundary as the recogniser reports it; a pause hint is none.
    pub fn boundary(self) -> Option<AsrEvent> {
        match self {
            VadEvent::SpeechStarted { at } => Some(AsrEvent::SpeechStarted { at }),
            VadEvent::SpeechEnded { at } => Some(AsrEvent::SpeechEnded { at }),
            VadEvent::Pause { .. } => None,
        }
    }
}

/// The `[vad]` config section (documented in `configs/default.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VadConfig {
    /// Probability at or above which a chunk counts as speech (opens or continues speech).
    pub start_threshold: f32,
    /// Probability below which a chunk counts as silence; must not exceed `start_threshold`.
    pub end_threshold: f32,
    /// Speech shorter than this is ignored (no events).
    pub min_speech_ms: u32,
    /// Silence that must pass before speech is declared over (the hangover).
    pub min_silence_ms: u32,
    /// Added before the start and after the end of each speech region.
    pub speech_pad_ms: u32,
    /// Silence after which a [`VadEvent::Pause`] hint is given (0 = never; no hint when it is
    /// not shorter than `min_silence_ms`).
    pub pause_hint_ms: u32,
}

impl Default for VadConfig {
    /// silero-vad's defaults (threshold 0.5, end 0.15 lower, 250 ms minimum speech, 30 ms pad),
    /// with a 200 ms hangover so a short breath inside a sentence does not end it.
    fn default() -> Self {
        Self {
            start_threshold: 0.5,
            end_threshold: 0.35,
            min_speech_ms: 250,
            min_silence_ms: 200,
            speech_pad_ms: 30,
            pause_hint_ms: 96,
        }
    }
}

impl VadConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("vad.start_threshold", self.start_threshold, 0.01..=0.99)?;
        check_range("vad.end_threshold", self.end_threshold, 0.01..=0.99)?;
        if self.end_threshold > self.start_threshold {
            return Err(ConfigError::Invalid {
                key: "vad.end_threshold".into(),
                value: self.end_threshold.to_string(),
                reason: format!(
                    "must not exceed vad.start_threshold ({})",
                    self.start_threshold
                ),
            });
        }
        check_range("vad.min_speech_ms", self.min_speech_ms, 0..=5_000)?;
        check_range("vad.min_silence_ms", self.min_silence_ms, 0..=10_000)?;
        check_range("vad.speech_pad_ms", self.speech_pad_ms, 0..=1_000)?;
        check_range("vad.pause_hint_ms", self.pause_hint_ms, 0..=10_000)?;
        Ok(())
    }

    fn samples(ms: u32) -> u64 {
        SampleRate::PIPELINE.samples_in(std::time::Duration::from_millis(u64::from(ms)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Silence,
    /// Above the start threshold since `start`, not yet long enough.
    Candidate {
        start: SampleIndex,
    },
    /// Speech reported; `silent_since` marks a possible end.
    Speech {
        silent_since: Option<SampleIndex>,
        /// The pause hint for `silent_since` was given.
        hinted: bool,
    },
}

/// Hysteresis segmenter over per-chunk speech probabilities (see the module docs).
#[derive(Debug, Clone)]
pub struct Segmenter {
    start_threshold: f32,
    end_threshold: f32,
    min_speech: u64,
    min_silence: u64,
    pad: u64,
    /// 0 = no pause hints.
    pause_hint: u64,
    phase: Phase,
    last_end: SampleIndex,
}

impl Segmenter {
    /// `config` must have passed [`VadConfig::validate`].
    pub fn new(config: &VadConfig) -> Self {
        Self {
            start_threshold: config.start_threshold,
            end_threshold: config.end_threshold,
            min_speech: VadConfig::samples(config.min_speech_ms),
            min_silence: VadConfig::samples(config.min_silence_ms),
            pad: VadConfig::samples(config.speech_pad_ms),
            pause_hint: if config.pause_hint_ms < config.min_silence_ms {
                VadConfig::samples(config.pause_hint_ms)
            } else {
                0
            },
            phase: Phase::Silence,
            last_end: SampleIndex::ZERO,
        }
    }

    /// Whether speech has been reported and not yet ended.
    pub fn in_speech(&self) -> bool {
        matches!(self.phase, Phase::Speech { .. })
    }

    /// Takes the probability of the chunk covering `[start, end)`; chunks arrive in order.
    pub fn observe(
        &mut self,
        start: SampleIndex,
        end: SampleIndex,
        prob: f32,
        out: &mut Vec<VadEvent>,
    ) {
        match self.phase {
            Phase::Silence => {
                if prob >= self.start_threshold {
                    self.phase = Phase::Candidate { start };
                    self.confirm(end, out);
                }
            }
            Phase::Candidate { .. } => {
                if prob < self.end_threshold {
                    self.phase = Phase::Silence;
                } else {
                    self.confirm(end, out);
                }
            }
            Phase::Speech {
                silent_since,
                hinted,
            } => {
                let (silent_since, mut hinted) = if prob < self.end_threshold {
                    (
                        silent_since.or(Some(start)),
                        hinted && silent_since.is_some(),
                    )
                } else if prob >= self.start_threshold {
                    (None, false)
                } else {
                    (silent_since, hinted)
                };
                if let Some(mark) = silent_since {
                    let at = SampleIndex(mark.0.saturating_add(self.pad)).min(end);
                    let silent = end.since(mark);
                    if silent >= self.min_silence.max(1) {
                        self.end_at(at, out);
                        return;
                    }
                    if self.pause_hint > 0 && !hinted && silent >= self.pause_hint {
                        out.push(VadEvent::Pause { at });
                        hinted = true;
                    }
                }
                self.phase = Phase::Speech {
                    silent_since,
                    hinted,
                };
            }
        }
    }

    fn confirm(&mut self, now: SampleIndex, out: &mut Vec<VadEvent>) {
        if let Phase::Candidate { start } = self.phase {
            if now.since(start) >= self.min_speech {
                let at = SampleIndex(start.0.saturating_sub(self.pad)).max(self.last_end);
                out.push(VadEvent::SpeechStarted { at });
                self.phase = Phase::Speech {
                    silent_since: None,
                    hinted: false,
                };
            }
        }
    }

    fn end_at(&mut self, at: SampleIndex, out: &mut Vec<VadEvent>) {
        out.push(VadEvent::SpeechEnded { at });
        self.last_end = at;
        self.phase = Phase::Silence;
    }

    /// End of stream at `end`: closes open speech (at its pending end mark plus padding, or at
    /// `end`); a candidate shorter than the minimum is dropped.
    pub fn finish(&mut self, end: SampleIndex, out: &mut Vec<VadEvent>) {
        match self.phase {
            Phase::Speech { silent_since, .. } => {
                let at = silent_since
                    .map(|m| SampleIndex(m.0.saturating_add(self.pad)).min(end))
                    .unwrap_or(end);
                self.end_at(at, out);
            }
            Phase::Candidate { .. } => self.phase = Phase::Silence,
            Phase::Silence => {}
        }
    }

    pub fn reset(&mut self) {
        self.phase = Phase::Silence;
        self.last_end = SampleIndex::ZERO;
    }
}

/// Streaming Silero VAD: model state, the partial chunk buffer and the segmenter for one stream.
pub struct SileroVad {
    model: Arc<Silero>,
    config: VadConfig,
    state: SileroState,
    segmenter: Segmenter,
    pending: [f32; CHUNK],
    pending_len: usize,
    /// Samples accepted since the start (scored or pending).
    pushed: u64,
    /// Probabilities of the chunks completed by the latest `push`.
    last_probs: Vec<f32>,
    last_prob: Option<f32>,
}

impl std::fmt::Debug for SileroVad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SileroVad")
            .field("config", &self.config)
            .field("pushed", &self.pushed)
            .field("in_speech", &self.segmenter.in_speech())
            .finish_non_exhaustive()
    }
}

impl SileroVad {
    /// Loads the verified model from the store (`silero-vad/ggml-silero-v6.2.0.bin`).
    pub fn from_store(store: &vr_core::ModelStore, config: VadConfig) -> Result<Self, AsrError> {
        Self::new(Arc::new(Silero::from_store(store)?), config)
    }

    /// Loads a whisper.cpp Silero ggml file from `path`.
    pub fn load(path: &Path, config: VadConfig) -> Result<Self, AsrError> {
        Self::new(Arc::new(Silero::load(path)?), config)
    }

    /// A stream over an already loaded model (one model serves any number of streams).
    pub fn new(model: Arc<Silero>, config: VadConfig) -> Result<Self, AsrError> {
        config
            .validate()
            .map_err(|e| AsrError::Config(e.to_string()))?;
        let state = model.new_state()?;
        Ok(Self {
            segmenter: Segmenter::new(&config),
            model,
            config,
            state,
            pending: [0.0; CHUNK],
            pending_len: 0,
            pushed: 0,
            last_probs: Vec::new(),
            last_prob: None,
        })
    }

    pub fn model(&self) -> &Arc<Silero> {
        &self.model
    }

    pub fn config(&self) -> &VadConfig {
        &self.config
    }

    /// Feeds 16 kHz mono samples (any count) and returns the boundaries that became known.
    /// Non-finite samples are scored as 0.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<VadEvent>, AsrError> {
        let mut events = Vec::new();
        self.last_probs.clear();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (CHUNK - self.pending_len).min(rest.len());
            for (dst, &s) in self.pending[self.pending_len..self.pending_len + take]
                .iter_mut()
                .zip(&rest[..take])
            {
                *dst = if s.is_finite() { s } else { 0.0 };
            }
            self.pending_len += take;
            self.pushed += take as u64;
            rest = &rest[take..];
            if self.pending_len == CHUNK {
                let prob = self.model.forward_chunk(&mut self.state, &self.pending)?;
                self.pending_len = 0;
                let end = SampleIndex(self.pushed);
                let start = SampleIndex(self.pushed - CHUNK as u64);
                self.segmenter.observe(start, end, prob, &mut events);
                self.last_probs.push(prob);
                self.last_prob = Some(prob);
            }
        }
        Ok(events)
    }

    /// End of stream: closes speech still open (a trailing partial chunk is not scored).
    pub fn finish(&mut self) -> Vec<VadEvent> {
        let mut events = Vec::new();
        self.segmenter.finish(SampleIndex(self.pushed), &mut events);
        events
    }

    /// Forgets the stream; the sample clock restarts at 0. The model stays loaded.
    pub fn reset(&mut self) -> Result<(), AsrError> {
        self.state = self.model.new_state()?;
        self.segmenter.reset();
        self.pending_len = 0;
        self.pushed = 0;
        self.last_probs.clear();
        self.last_prob = None;
        Ok(())
    }

    /// Speech probabilities of the chunks completed during the latest [`SileroVad::push`], in
    /// order; chunk `k` of the stream covers samples `[512 k, 512 (k + 1))`.
    pub fn chunk_probabilities(&self) -> &[f32] {
        &self.last_probs
    }

    /// The most recent chunk's speech probability.
    pub fn last_probability(&self) -> Option<f32> {
        self.last_prob
    }

    /// Whether the segmenter is inside speech (after `SpeechStarted`, before `SpeechEnded`).
    pub fn in_speech(&self) -> bool {
        self.segmenter.in_speech()
    }

    /// Samples pushed since the start or the last reset.
    pub fn position(&self) -> SampleIndex {
        SampleIndex(self.pushed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK as u64;

    fn run(config: &VadConfig, probs: &[f32]) -> Vec<VadEvent> {
        let mut s = Segmenter::new(config);
        let mut out = Vec::new();
        for (k, &p) in probs.iter().enumerate() {
            let k = k as u64;
            s.observe(SampleIndex(k * C), SampleIndex((k + 1) * C), p, &mut out);
        }
        s.finish(SampleIndex(probs.len() as u64 * C), &mut out);
        out
    }

    fn cfg(min_speech_ms: u32, min_silence_ms: u32, pad_ms: u32) -> VadConfig {
        VadConfig {
            start_threshold: 0.5,
            end_threshold: 0.35,
            min_speech_ms,
            min_silence_ms,
            speech_pad_ms: pad_ms,
            pause_hint_ms: 0,
        }
    }

    fn pause(at: u64) -> VadEvent {
        VadEvent::Pause {
            at: SampleIndex(at),
        }
    }

    fn started(at: u64) -> VadEvent {
        VadEvent::SpeechStarted {
            at: SampleIndex(at),
        }
    }
    fn ended(at: u64) -> VadEvent {
        VadEvent::SpeechEnded {
            at: SampleIndex(at),
        }
    }

    #[test]
    fn start_waits_for_min_speech_and_is_dated_back() {
        // 100 ms = 1600 samples: the candidate at chunk 2 is confirmed at the end of chunk 5
        // (4 chunks = 2048 samples), and dated to chunk 2 minus 30 ms (480 samples).
        let c = cfg(100, 100, 30);
        let mut s = Segmenter::new(&c);
        let mut out = Vec::new();
        let probs = [0.1, 0.2, 0.9, 0.9, 0.9, 0.9, 0.9];
        for (k, &p) in probs.iter().enumerate() {
            let k = k as u64;
            s.observe(SampleIndex(k * C), SampleIndex((k + 1) * C), p, &mut out);
            if k < 5 {
                assert!(out.is_empty(), "event before min speech at chunk {k}");
            }
        }
        assert_eq!(out, vec![started(2 * C - 480)]);
    }

    #[test]
    fn short_bursts_are_ignored() {
        let c = cfg(250, 100, 30);
        // 3 chunks (96 ms) of speech, twice, with silence between: never 250 ms.
        let probs = [0.0, 0.9, 0.9, 0.9, 0.1, 0.0, 0.8, 0.7, 0.6, 0.2, 0.0];
        assert!(run(&c, &probs).is_empty());
    }

    #[test]
    fn hysteresis_band_keeps_speech_and_candidates_alive() {
        let c = cfg(100, 100, 0);
        // After the start, 0.4 lies between the thresholds: neither ends speech nor cancels
        // a pending end; 0.3 marks the end at chunk 8; 0.4 does not cancel it; after 100 ms
        // (4 chunks, through chunk 11) speech ends at chunk 8's start.
        let probs = [
            0.9, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.3, 0.4, 0.4, 0.2, 0.0, 0.0,
        ];
        assert_eq!(run(&c, &probs), vec![started(0), ended(8 * C)]);
    }

    #[test]
    fn a_confident_chunk_cancels_a_pending_end() {
        let c = cfg(0, 200, 0);
        // 200 ms = 3200 samples = 6.25 chunks: the end marked at chunk 3 would fire at the end
        // of chunk 9; the 0.9 at chunk 6 cancels it; the mark at chunk 7 fires at chunk 13.
        let probs = [
            0.9, 0.9, 0.9, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1,
        ];
        assert_eq!(run(&c, &probs), vec![started(0), ended(7 * C)]);
        let mut s = Segmenter::new(&c);
        let mut out = Vec::new();
        for (k, &p) in probs.iter().enumerate().take(13) {
            let k = k as u64;
            s.observe(SampleIndex(k * C), SampleIndex((k + 1) * C), p, &mut out);
        }
        assert_eq!(out, vec![started(0)], "ended before the hangover passed");
        s.observe(SampleIndex(13 * C), SampleIndex(14 * C), 0.1, &mut out);
        assert_eq!(out, vec![started(0), ended(7 * C)]);
    }

    #[test]
    fn a_pause_is_hinted_once_per_mark_before_the_hangover_ends() {
        let c = VadConfig {
            pause_hint_ms: 64,
            ..cfg(0, 200, 30)
        };
        // Mark at chunk 3, cancelled by the 0.9 at chunk 4 before its hint was due (64 ms = 2
        // chunks of silence); mark at chunk 6 is hinted at the end of chunk 7, kept through the
        // 0.4 (hysteresis) without a second hint, and ends at chunk 12 (200 ms = 6.25 chunks).
        let probs = [
            0.9, 0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.4, 0.1, 0.1, 0.1, 0.1,
        ];
        let mut s = Segmenter::new(&c);
        let mut out = Vec::new();
        let mut when = Vec::new();
        for (k, &p) in probs.iter().enumerate() {
            let k = k as u64;
            let n = out.len();
            s.observe(SampleIndex(k * C), SampleIndex((k + 1) * C), p, &mut out);
            when.extend(out[n..].iter().map(|e| (*e, k)));
        }
        assert_eq!(
            when,
            vec![
                (started(0), 0),
                (pause(6 * C + 480), 7),
                (ended(6 * C + 480), 12)
            ]
        );
        // A hint not shorter than the hangover is never given.
        let c = VadConfig {
            pause_hint_ms: 200,
            ..cfg(0, 200, 30)
        };
        assert_eq!(run(&c, &probs), vec![started(0), ended(6 * C + 480)]);
    }

    #[test]
    fn padding_never_crosses_the_previous_end_or_the_audio_seen() {
        let c = cfg(0, 0, 500);
        // min_silence 0: speech ends on the first silent chunk, at mark + pad clamped to that
        // chunk's end; the next start's padding is clamped to that end.
        let probs = [0.9, 0.1, 0.9, 0.1];
        assert_eq!(
            run(&c, &probs),
            vec![started(0), ended(2 * C), started(2 * C), ended(4 * C)]
        );
    }

    #[test]
    fn finish_closes_open_speech_and_drops_candidates() {
        let c = cfg(100, 1000, 30);
        let probs = [0.0, 0.9, 0.9, 0.9, 0.9, 0.9];
        assert_eq!(run(&c, &probs), vec![started(C - 480), ended(6 * C)]);
        let probs = [0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.1, 0.1];
        assert_eq!(run(&c, &probs), vec![started(C - 480), ended(6 * C + 480)]);
        let probs = [0.0, 0.0, 0.9, 0.9];
        assert!(run(&c, &probs).is_empty());
    }

    #[test]
    fn config_validation_names_the_key() {
        assert!(VadConfig::default().validate().is_ok());
        let c = VadConfig {
            start_threshold: 1.2,
            ..VadConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("vad.start_threshold"));
        let c = VadConfig {
            end_threshold: 0.6,
            ..VadConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("vad.end_threshold") && e.contains("start_threshold"),
            "{e}"
        );
        let c = VadConfig {
            min_silence_ms: 60_000,
            ..VadConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("vad.min_silence_ms"));
        let e = serde_json::from_str::<VadConfig>(r#"{"start_treshold": 0.5}"#).unwrap_err();
        assert!(e.to_string().contains("start_treshold"), "{e}");
        // A partial section keeps the defaults for the keys it leaves out.
        let c: VadConfig = serde_json::from_str(r#"{"min_silence_ms": 500}"#).unwrap();
        assert_eq!(c.min_silence_ms, 500);
        assert_eq!(c.start_threshold, VadConfig::default().start_threshold);
    }
}
