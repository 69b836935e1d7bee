//! Streaming Whisper: a bounded sliding window re-decoded every update, LocalAgreement-n commit.
//!
//! Policy (after Macháček et al. 2023, "Turning Whisper into Real-Time Transcription System"):
//! - The window runs from the last trim point to the newest sample. Each update encodes the whole
//!   window (never padded to 30 s) and decodes greedily, *forcing* the tokens already committed in
//!   this window as the start of the transcript, so only the tail is re-decided.
//! - LocalAgreement-n: text tokens on which the last `n` hypotheses agree are committed, cut back
//!   to a word boundary that the newest hypothesis confirms (the next token starts a new word).
//! - When the window grows past `max_window_ms`, it is trimmed at the last committed segment end
//!   (a timestamp token): that audio and its tokens leave the window, the remaining forced tokens'
//!   timestamps shift. The per-update cost is therefore bounded by the window, not the utterance.
//! - Finalisation (VAD speech end or [`StreamingRecognizer::finish`]) decodes the window once more
//!   unless the last hypothesis already covers all of it, and emits a `Final`.
//! - Silence gating: hypotheses with high no-speech probability and low confidence count as empty;
//!   utterances consisting only of a known hallucination are dropped unless confident.
//!
//! Word times come from Whisper's segment timestamps, spread over the segment's words in
//! proportion to their length: approximate (±0.2 s), not forced alignment.

use crate::config::AsrConfig;
use crate::mel::{normalize, MelStream, HOP};
use crate::models::whisper::{WhisperModel, TIMESTAMP_STEP_S};
use crate::vad::{SileroVad, VadEvent};
use crate::{AsrError, AsrEvent, StreamingRecognizer, Word};
use vr_core::SampleIndex;

/// Texts Whisper is known to produce on silence or noise (normalised: lower case, no punctuation).
pub const HALLUCINATIONS: &[&str] = &[
    "thank you",
    "thank you very much",
    "thanks for watching",
    "thank you for watching",
    "thanks for watching and see you next time",
    "please subscribe",
    "subscribe",
    "you",
    "bye",
    "so",
    "okay",
    "oh",
    "uh",
    "um",
    "hmm",
    "the end",
];

fn normalize_simple(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '\'')
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Timing of one update, for benches and the eval harness.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    pub window_frames: usize,
    pub forced_tokens: usize,
    pub new_tokens: usize,
}

pub struct WhisperStream {
    model: WhisperModel,
    cfg: AsrConfig,
    s: StreamState,
    vad: Option<SileroVad>,
}

/// Everything a stream remembers besides the model: cheap to clone, so a caller (the benchmark)
/// can snapshot a stream at some point and replay updates from it.
#[derive(Debug, Clone)]
pub struct StreamState {
    mel: MelStream,
    /// Samples pushed since the start / reset.
    total: u64,
    /// Absolute frame where the window starts.
    window_start: usize,
    /// Frame end covered by the last decode.
    last_decode_end: usize,
    /// Committed tokens inside the window (forced into every decode).
    committed: Vec<u32>,
    /// Uncommitted tails of the most recent hypotheses (newest last), for LocalAgreement.
    history: Vec<Vec<u32>>,
    /// Committed text and words of the utterance that already left the window.
    done_text: String,
    done_words: Vec<Word>,
    /// Utterance in progress: first sample.
    utt_start: Option<u64>,
    last_partial: String,
    /// Text tokens of the previous utterance(s), the decoding prompt for the next one.
    context: Vec<u32>,
    last_no_speech: f32,
    last_logprob: f32,
    last_stats: UpdateStats,
    vad_active: bool,
}

impl WhisperStream {
    pub fn new(model: WhisperModel, cfg: AsrConfig) -> Result<Self, AsrError> {
        cfg.validate()
            .map_err(|e| AsrError::Config(e.to_string()))?;
        let mel = MelStream::new(model.front_end().clone());
        Ok(Self {
            model,
            cfg,
            s: StreamState {
                mel,
                total: 0,
                window_start: 0,
                last_decode_end: 0,
                committed: Vec::new(),
                history: Vec::new(),
                done_text: String::new(),
                done_words: Vec::new(),
                utt_start: None,
                last_partial: String::new(),
                context: Vec::new(),
                last_no_speech: 0.0,
                last_logprob: 0.0,
                last_stats: UpdateStats::default(),
                vad_active: false,
            },
            vad: None,
        })
    }

    pub fn state(&self) -> &StreamState {
        &self.s
    }

    pub fn set_state(&mut self, s: StreamState) {
        self.s = s;
    }

    /// Shape of the most recent update.
    pub fn last_stats(&self) -> UpdateStats {
        self.s.last_stats
    }

    pub fn model_mut(&mut self) -> &mut WhisperModel {
        &mut self.model
    }

    fn ms_to_frames(ms: u32) -> usize {
        ms as usize / 10
    }

    /// Gate decoding on this VAD (speech start opens an utterance window, speech end
    /// finalises it). Without one every sample counts as speech and `finish` finalises.
    pub fn with_vad(mut self, vad: SileroVad) -> Self {
        self.vad = Some(vad);
        self
    }

    fn on_vad(&mut self, e: VadEvent, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        match e {
            VadEvent::SpeechStarted { at } => {
                out.push(AsrEvent::SpeechStarted { at });
                let pre = Self::ms_to_frames(self.cfg.pre_roll_ms);
                let frame = (at.0 as usize / HOP).saturating_sub(pre);
                self.s.window_start = frame.max(self.s.mel.first_frame());
                self.s.last_decode_end = self.s.window_start;
                self.s.utt_start = Some(at.0);
                self.s.vad_active = true;
            }
            VadEvent::SpeechEnded { at } => {
                out.push(AsrEvent::SpeechEnded { at });
                self.finalize(out)?;
                self.s.vad_active = false;
            }
        }
        Ok(())
    }

    /// Encode + decode the current window with the committed tokens forced.
    fn decode_window(&mut self) -> Result<Option<Vec<u32>>, AsrError> {
        let raw = self.s.mel.frames_from(self.s.window_start);
        let n_mels = self.s.mel.n_mels();
        if raw.len() < n_mels * 10 {
            return Ok(None);
        }
        let n_audio = raw.len() / n_mels;
        let pad = Self::ms_to_frames(self.cfg.pad_ms);
        let mut padded = Vec::with_capacity(raw.len() + pad * n_mels);
        padded.extend_from_slice(raw);
        // log10 of the 1e-10 floor: exactly what the front end gives for digital silence.
        padded.resize(raw.len() + pad * n_mels, -10.0);
        let (mel, n) = normalize(&padded, n_mels);
        let enc = self.model.encode(&mel, n)?;
        let max_new = 16 + n_audio / 10;
        let d = self.model.decode(
            &enc,
            &self.s.context,
            &self.s.committed,
            false,
            n_audio,
            max_new,
        )?;
        self.s.last_decode_end = self.s.mel.end_frame();
        self.s.last_no_speech = d.no_speech_prob;
        self.s.last_logprob = d.avg_logprob;
        self.s.last_stats = UpdateStats {
            window_frames: n,
            forced_tokens: self.s.committed.len(),
            new_tokens: d.tokens.len(),
        };
        let silent = self.s.committed.is_empty()
            && d.no_speech_prob > self.cfg.no_speech_threshold
            && d.avg_logprob < self.cfg.logprob_threshold;
        tracing::debug!(
            frames = n,
            forced = self.s.committed.len(),
            new = d.tokens.len(),
            no_speech = d.no_speech_prob,
            logprob = d.avg_logprob,
            silent,
            "whisper update"
        );
        if silent {
            return Ok(Some(Vec::new()));
        }
        Ok(Some(d.tokens))
    }

    /// Number of leading tokens of `new` that the last `agreement - 1` hypotheses agree on (text
    /// tokens compared, timestamps ignored), cut back to a confirmed word boundary.
    fn agreed_len(&self, new: &[u32]) -> usize {
        let n = self.cfg.agreement as usize;
        if n <= 1 {
            return self.boundary_before(new, new.len());
        }
        if self.s.history.len() < n - 1 {
            return 0;
        }
        let text = |h: &[u32]| -> Vec<(usize, u32)> {
            h.iter()
                .copied()
                .enumerate()
                .filter(|(_, t)| !self.model.is_timestamp(*t))
                .collect()
        };
        let new_t = text(new);
        let mut common = new_t.len();
        for h in &self.s.history[self.s.history.len() - (n - 1)..] {
            let ht = text(h);
            let l = new_t
                .iter()
                .zip(ht.iter())
                .take_while(|(a, b)| a.1 == b.1)
                .count();
            common = common.min(l);
        }
        if common == 0 {
            return 0;
        }
        // Commit up to (not including) the agreed text token that starts the last agreed word:
        // the words before it are confirmed complete by both hypotheses.
        let mut q = common - 1;
        while q > 0 && !self.model.starts_word(new_t[q].1) {
            q -= 1;
        }
        if q == 0 {
            return 0;
        }
        new_t[q].0
    }

    /// Largest index ≤ `end` at which a word starts (or `end` itself if it is the end).
    fn boundary_before(&self, toks: &[u32], end: usize) -> usize {
        if end >= toks.len() {
            return toks.len();
        }
        let mut i = end;
        while i > 0 && !(self.model.is_timestamp(toks[i]) || self.model.starts_word(toks[i])) {
            i -= 1;
        }
        i
    }

    fn text_of(&self, toks: &[u32]) -> Result<String, AsrError> {
        self.model.text(toks)
    }

    fn join(a: &str, b: &str) -> String {
        let b = b.trim();
        if a.is_empty() {
            b.to_string()
        } else if b.is_empty() {
            a.to_string()
        } else {
            format!("{a} {b}")
        }
    }

    fn update(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let Some(hyp) = self.decode_window()? else {
            return Ok(());
        };
        let k = self.agreed_len(&hyp);
        self.s.committed.extend_from_slice(&hyp[..k]);
        let tail = hyp[k..].to_vec();
        // Older tails lose the text tokens that were just committed, so every hypothesis in the
        // history stays relative to the new committed prefix.
        let tb = self.model.special.timestamp_begin;
        let n_committed_text = hyp[..k].iter().filter(|t| **t < tb).count();
        for h in self.s.history.iter_mut() {
            let mut seen = 0;
            let mut drop = 0;
            for (i, t) in h.iter().enumerate() {
                if seen == n_committed_text {
                    break;
                }
                if *t < tb {
                    seen += 1;
                }
                drop = i + 1;
            }
            h.drain(..drop);
        }
        self.s.history.push(tail.clone());
        let keep = self.cfg.agreement as usize;
        if self.s.history.len() > keep {
            self.s.history.remove(0);
        }
        let stable = Self::join(&self.s.done_text, &self.text_of(&self.s.committed)?);
        let full = Self::join(&stable, &self.text_of(&tail)?);
        if full != self.s.last_partial && !full.is_empty() {
            self.s.last_partial = full.clone();
            out.push(AsrEvent::Partial {
                text: full,
                stable_prefix_len: stable.len(),
            });
        }
        self.trim(out)?;
        Ok(())
    }

    /// Keeps the window bounded: past `max_window_ms` without a VAD pause the utterance is
    /// finalised with its current hypothesis and a new window starts at the newest sample.
    fn trim(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let len = self.s.mel.end_frame().saturating_sub(self.s.window_start);
        if len > Self::ms_to_frames(self.cfg.max_window_ms) {
            let start = self.s.mel.end_frame() as u64 * HOP as u64;
            self.finalize(out)?;
            self.s.utt_start = Some(start);
        }
        Ok(())
    }

    /// Words of tokens decoded in the current window, with absolute times spread over each
    /// timestamped segment by character count.
    fn words_of(&self, toks: &[u32]) -> Result<(Vec<Word>, String), AsrError> {
        let tb = self.model.special.timestamp_begin;
        let base = self.s.window_start as u64 * HOP as u64;
        let ts_sample = |t: u32| base + ((t - tb) as f64 * TIMESTAMP_STEP_S * 16000.0) as u64;
        let mut words = Vec::new();
        let mut seg_start: Option<u64> = None;
        let mut seg: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mut flush =
            |seg: &mut Vec<u32>, s: u64, e: u64, words: &mut Vec<Word>| -> Result<(), AsrError> {
                if seg.is_empty() {
                    return Ok(());
                }
                let t = self.text_of(seg)?;
                text = Self::join(&text, &t);
                let ws: Vec<&str> = t.split_whitespace().collect();
                let total: usize = ws.iter().map(|w| w.len()).sum::<usize>().max(1);
                let mut acc = 0usize;
                let span = e.saturating_sub(s);
                for w in ws {
                    let ws_ = s + span * acc as u64 / total as u64;
                    acc += w.len();
                    let we = s + span * acc as u64 / total as u64;
                    words.push(Word {
                        text: w.to_string(),
                        start: SampleIndex(ws_),
                        end: SampleIndex(we),
                    });
                }
                seg.clear();
                Ok(())
            };
        let end_now = self.s.mel.end_frame() as u64 * HOP as u64;
        for &t in toks {
            if t >= tb {
                let at = ts_sample(t);
                if seg.is_empty() {
                    seg_start = Some(at);
                } else {
                    flush(&mut seg, seg_start.unwrap_or(base), at, &mut words)?;
                    seg_start = None;
                }
            } else {
                seg.push(t);
            }
        }
        flush(&mut seg, seg_start.unwrap_or(base), end_now, &mut words)?;
        Ok((words, text))
    }

    /// Decode once more if needed, commit everything, emit the Final, start a new utterance.
    fn finalize(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let Some(start) = self.s.utt_start.take() else {
            return Ok(());
        };
        let tail = if self.s.last_decode_end >= self.s.mel.end_frame() && !self.s.history.is_empty()
        {
            self.s.history.last().cloned().unwrap_or_default()
        } else {
            self.decode_window()?.unwrap_or_default()
        };
        let mut all = std::mem::take(&mut self.s.committed);
        all.extend_from_slice(&tail);
        let (mut words, text) = self.words_of(&all)?;
        let mut full_words = std::mem::take(&mut self.s.done_words);
        full_words.append(&mut words);
        let text = Self::join(&std::mem::take(&mut self.s.done_text), &text);
        let end = self.s.total;
        let hallucination = self.cfg.suppress_hallucinations
            && HALLUCINATIONS.contains(&normalize_simple(&text).as_str())
            && (self.s.last_no_speech > 0.2 || self.s.last_logprob < -0.7);
        if hallucination {
            tracing::debug!(%text, no_speech = self.s.last_no_speech, "dropped hallucination");
        }
        if !text.is_empty() && !hallucination {
            let eot = self.model.special.eot;
            self.s
                .context
                .extend(all.iter().copied().filter(|t| *t < eot));
            let excess = self.s.context.len().saturating_sub(64);
            self.s.context.drain(..excess);
            out.push(AsrEvent::Final {
                text,
                start: SampleIndex(start),
                end: SampleIndex(end),
                words: full_words,
            });
        }
        self.s.history.clear();
        self.s.last_partial.clear();
        self.s.window_start = self.s.mel.end_frame();
        self.s.mel.drain_front(self.s.window_start);
        self.s.last_decode_end = self.s.window_start;
        Ok(())
    }
}

impl StreamingRecognizer for WhisperStream {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<AsrEvent>, AsrError> {
        let mut out = Vec::new();
        self.s.mel.push(samples)?;
        self.s.total += samples.len() as u64;
        let vad_events = match self.vad.as_mut() {
            Some(v) => v.push(samples)?,
            None => Vec::new(),
        };
        let onset = vad_events
            .iter()
            .any(|e| matches!(e, VadEvent::SpeechStarted { .. }));
        for e in vad_events {
            self.on_vad(e, &mut out)?;
        }
        if onset && self.s.vad_active {
            // Hand the speech start out before the first (slow) decode of the new utterance: a
            // barge-in must not wait for Whisper. The next push decodes.
            return Ok(out);
        }
        if self.vad.is_some() && !self.s.vad_active {
            // Outside speech only the pre-roll is kept.
            let keep = Self::ms_to_frames(self.cfg.pre_roll_ms);
            let from = self.s.mel.end_frame().saturating_sub(keep);
            self.s.mel.drain_front(from);
            self.s.window_start = from;
            self.s.last_decode_end = from;
            return Ok(out);
        }
        if self.s.utt_start.is_none() {
            self.s.utt_start = Some(self.s.window_start as u64 * HOP as u64);
        }
        let end = self.s.mel.end_frame();
        let since_start = end.saturating_sub(self.s.window_start);
        let due = if self.s.last_decode_end <= self.s.window_start {
            since_start >= Self::ms_to_frames(self.cfg.first_update_ms)
        } else {
            end.saturating_sub(self.s.last_decode_end)
                >= Self::ms_to_frames(self.cfg.update_interval_ms)
        };
        if due {
            self.update(&mut out)?;
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<AsrEvent>, AsrError> {
        let mut out = Vec::new();
        self.s.mel.finish()?;
        let vad_events = match self.vad.as_mut() {
            Some(v) => v.finish(),
            None => Vec::new(),
        };
        for e in vad_events {
            self.on_vad(e, &mut out)?;
        }
        if self.vad.is_none() {
            self.finalize(&mut out)?;
        }
        Ok(out)
    }

    fn reset(&mut self) {
        self.s.mel.reset();
        self.s.total = 0;
        self.s.window_start = 0;
        self.s.last_decode_end = 0;
        self.s.committed.clear();
        self.s.history.clear();
        self.s.done_text.clear();
        self.s.done_words.clear();
        self.s.utt_start = None;
        self.s.last_partial.clear();
        self.s.context.clear();
        self.s.vad_active = false;
        if let Some(v) = self.vad.as_mut() {
            if let Err(e) = v.reset() {
                tracing::warn!(error = %e, "VAD reset failed; VAD gating disabled for this stream");
                self.vad = None;
            }
        }
    }
}
