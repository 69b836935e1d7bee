//! Streaming Whisper: a bounded sliding window re-decoded every update, LocalAgreement-n commit.
//!
//! Policy (after Macháček et al. 2023, "Turning Whisper into Real-Time Transcription System"):
//! - The window runs from the last trim point to the newest sample. Each update encodes the
//!   window (never padded to 30 s: the encoder's positional table is sliced to the frames given;
//!   `pad_ms` of silence is appended, and the input can be padded up to `min_encode_ms`) and
//!   decodes greedily with the KV-cached decoder, *forcing* the tokens already committed in this
//!   window, so only the tail is re-decided and the forced prefix costs one batched pass.
//! - LocalAgreement-n: text tokens on which the last `n` hypotheses agree are committed up to a
//!   word boundary: a word is committed once every agreeing hypothesis continues with the start
//!   of another word after it (so a word still being spoken is never committed half-way).
//! - Pauses: the VAD's speech end does not end the utterance. The window is decoded once more and
//!   everything is committed (the audio up to the pause is complete), then the utterance stays
//!   open for `final_silence_ms`; speech resuming within it continues the same window, so a
//!   breath mid-sentence does not split the sentence. After that silence (or at
//!   [`StreamingRecognizer::finish`]) the committed text is emitted as the `Final` without
//!   another decode.
//! - When the window grows past `max_window_ms`, it is trimmed at the end of the last committed
//!   word (from the cross-attention alignment, in the gap before the next token): that audio and
//!   its tokens leave the window and their text becomes the decoding prompt. The per-update cost
//!   is therefore bounded by the window, not the utterance. With nothing committed, the newest
//!   hypothesis's words that ended a second before the audio are committed and cut at; only
//!   without any is the utterance finalised.
//! - Silence gating: hypotheses with high no-speech probability and low confidence count as empty;
//!   utterances consisting only of a known hallucination are dropped unless confident.
//! - Guards ([`crate::guards`]): a window whose text compresses too well (zlib ratio > 2.4) or
//!   whose new tokens are unlikely (mean log-probability < −1.0) commits nothing; loops in the
//!   new tail (back-to-back repeats beyond what speech does, copies the alignment gives no audio
//!   of their own) are cut, near copies of recent text removed, before agreement sees them.
//!
//! Word times come from DTW over the alignment heads' cross-attention (OpenAI's word timestamp
//! method), per decode: accurate to a few tens of milliseconds on clean speech.

use crate::config::AsrConfig;
use crate::guards::{
    compression_ratio, judge, near_repeat, repetition_cut, unsupported_copy, word_key, Thresholds,
    Verdict, WindowScores,
};
use crate::mel::{normalize, MelStream, HOP};
use crate::models::whisper::{DecodeSpec, WhisperModel};
use crate::vad::SileroVad;
use crate::{AsrError, AsrEvent, Word};
use vr_core::SampleIndex;

mod gate;

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

/// Upper bound on how late the VAD reports a speech start (its `min_speech_ms` plus a chunk):
/// that much audio is kept outside speech so the window can start at the onset.
const VAD_LAG_MS: u32 = 1000;

/// A short repeated phrase must take at least this fraction of its first copy's time to count
/// as spoken again ([`unsupported_copy`]).
const COPY_MIN_RATIO: f32 = 0.5;

/// A word of an uncommitted hypothesis counts as settled once this much audio follows it (used
/// only when the window must be trimmed and nothing in it was committed).
const SETTLED_MS: u32 = 1000;

fn normalize_simple(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_alphanumeric() || c.is_whitespace() || *c == '\'')
        .collect::<String>()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Where the decoded `tail` starts the window's transcript over: the first index `i` such that
/// `tail[i..]` repeats the beginning of `committed ++ tail[..i]` for at least two tokens (all of
/// `tail[i..]`, or three tokens of it). Tokens are compared by a key (their lower-cased text:
/// the restart is often capitalised differently). Whisper does this when the forced prefix already covers
/// the audio and the padding invites more text ("he could wait no longer he could wait no").
pub fn restart_at<T: PartialEq + Clone>(committed: &[T], tail: &[T]) -> Option<usize> {
    let c = committed.len();
    let all: Vec<T> = committed.iter().chain(tail).cloned().collect();
    let first = if c > 0 { 0 } else { 1 };
    (first..tail.len()).find(|&i| {
        let rest = &tail[i..];
        let k = rest
            .iter()
            .zip(&all[..c + i])
            .take_while(|(a, b)| a == b)
            .count();
        k >= 3 || (k >= 2 && k == rest.len())
    })
}

/// Timing of one update, for benches and the eval harness.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateStats {
    /// Mel frames given to the encoder (audio plus padding).
    pub window_frames: usize,
    pub forced_tokens: usize,
    pub new_tokens: usize,
    /// Tokens of the previous hypothesis offered as a draft, and how many the decode kept.
    pub draft_tokens: usize,
    pub draft_accepted: usize,
}

pub struct WhisperStream {
    model: WhisperModel,
    cfg: AsrConfig,
    s: StreamState,
    vad: Option<SileroVad>,
    /// The caller runs the VAD and hands its decisions in ([`StreamingRecognizer::push_with_vad`]).
    external_vad: bool,
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
    /// Absolute (start, end) mel frames of `committed ++ history.last()`, from the last decode.
    token_frames: Vec<(usize, usize)>,
    /// Committed text, tokens and words of the utterance that already left the window.
    done_text: String,
    done_tokens: Vec<u32>,
    done_words: Vec<Word>,
    /// Utterance in progress: first sample.
    utt_start: Option<u64>,
    /// The VAD reported the end of speech at this sample; the utterance waits for
    /// `final_silence_ms` before it is finalised.
    paused_at: Option<u64>,
    last_partial: String,
    /// Text tokens of the previous utterance(s), the decoding prompt for the next one.
    context: Vec<u32>,
    last_no_speech: f32,
    last_logprob: f32,
    last_stats: UpdateStats,
    vad_active: bool,
    /// Draft tokens offered to the decoder and kept, over every decode so far.
    draft_offered: usize,
    draft_kept: usize,
    /// The last decode failed OpenAI's checks (repetitive or unlikely): nothing of it may be
    /// committed by agreement.
    window_failed: bool,
    /// Encoder + decoder runs so far.
    decodes: u64,
    /// `decodes` after the decode made at the VAD's latest pause hint.
    hint_decode: Option<u64>,
}

impl WhisperStream {
    pub fn new(mut model: WhisperModel, cfg: AsrConfig) -> Result<Self, AsrError> {
        cfg.validate()
            .map_err(|e| AsrError::Config(e.to_string()))?;
        model.quantized_logits = cfg.quantized_logits;
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
                token_frames: Vec::new(),
                done_text: String::new(),
                done_tokens: Vec::new(),
                done_words: Vec::new(),
                utt_start: None,
                paused_at: None,
                last_partial: String::new(),
                context: Vec::new(),
                last_no_speech: 0.0,
                last_logprob: 0.0,
                last_stats: UpdateStats::default(),
                vad_active: false,
                draft_offered: 0,
                draft_kept: 0,
                window_failed: false,
                decodes: 0,
                hint_decode: None,
            },
            vad: None,
            external_vad: false,
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

    /// Window decodes (encoder and decoder runs) so far.
    pub fn decode_count(&self) -> u64 {
        self.s.decodes
    }

    /// Draft tokens offered to the decoder and kept, over every decode so far
    /// (`asr.draft_decoding`); each kept token is a decoder step saved.
    pub fn draft_totals(&self) -> (usize, usize) {
        (self.s.draft_offered, self.s.draft_kept)
    }

    pub fn model_mut(&mut self) -> &mut WhisperModel {
        &mut self.model
    }

    fn ms_to_frames(ms: u32) -> usize {
        ms as usize / 10
    }

    fn ms_to_samples(ms: u32) -> u64 {
        u64::from(ms) * 16
    }

    /// Gate decoding on this VAD (speech start opens an utterance window, speech end
    /// finalises it). Without one every sample counts as speech and `finish` finalises.
    pub fn with_vad(mut self, vad: SileroVad) -> Self {
        self.vad = Some(vad);
        self
    }

    /// Encode + decode the current window with the committed tokens forced. Returns the new
    /// tail after the committed tokens (empty when gated as silence).
    fn decode_window(&mut self) -> Result<Option<Vec<u32>>, AsrError> {
        let raw = self.s.mel.frames_from(self.s.window_start);
        let n_mels = self.s.mel.n_mels();
        if raw.len() < n_mels * 10 {
            return Ok(None);
        }
        let n_audio = raw.len() / n_mels;
        let pad = Self::ms_to_frames(self.cfg.pad_ms)
            .max(Self::ms_to_frames(self.cfg.min_encode_ms).saturating_sub(n_audio));
        // The encoder takes at most 30 s; the window is bounded well below that by config.
        let pad = pad.min((2 * self.model.config.max_source_positions).saturating_sub(n_audio));
        let mut padded = Vec::with_capacity(raw.len() + pad * n_mels);
        padded.extend_from_slice(raw);
        // log10 of the 1e-10 floor: exactly what the front end gives for digital silence.
        padded.resize(raw.len() + pad * n_mels, -10.0);
        let (mel, n) = normalize(&padded, n_mels);
        self.s.decodes += 1;
        let t0 = std::time::Instant::now();
        let enc = self.model.encode(&mel, n)?;
        let encode_ms = t0.elapsed().as_secs_f64() * 1e3;
        let max_new = 16 + n_audio / 10;
        let mut prompt = self.s.context.clone();
        prompt.extend_from_slice(&self.s.done_tokens);
        // The newest hypothesis's tail is the draft: a window that grew by one update mostly
        // decodes to the same words again, which then cost one batched pass.
        let draft = if self.cfg.draft_decoding {
            self.s.history.last().map(Vec::as_slice).unwrap_or_default()
        } else {
            &[]
        };
        let d = self.model.decode_spec(
            &enc,
            &DecodeSpec {
                prompt: &prompt,
                forced: &self.s.committed,
                draft,
                timestamps: false,
                audio_frames: n_audio,
                max_new_tokens: max_new,
            },
        )?;
        let decode_ms = t0.elapsed().as_secs_f64() * 1e3 - encode_ms;
        self.s.last_decode_end = self.s.mel.end_frame();
        self.s.last_no_speech = d.no_speech_prob;
        self.s.last_logprob = d.avg_logprob;
        self.s.draft_offered += draft.len();
        self.s.draft_kept += d.draft_accepted;
        self.s.last_stats = UpdateStats {
            window_frames: n,
            forced_tokens: self.s.committed.len(),
            new_tokens: d.tokens.len(),
            draft_tokens: draft.len(),
            draft_accepted: d.draft_accepted,
        };
        // OpenAI's per-window checks, on the window's whole text as decoded (forced prefix and
        // new tokens, before any cut below: a window that looped is not trusted even once the
        // loop is cut off).
        let mut window = self.s.committed.clone();
        window.extend_from_slice(&d.tokens);
        let scores = WindowScores {
            no_speech_prob: d.no_speech_prob,
            avg_logprob: Some(d.avg_logprob),
            compression_ratio: compression_ratio(&self.text_of(&window)?),
        };
        let verdict = judge(
            &scores,
            &Thresholds {
                compression_ratio: self.cfg.compression_ratio_threshold,
                logprob: self.cfg.logprob_threshold,
                no_speech: self.cfg.no_speech_threshold,
            },
        );
        // Silence with text already committed in the window: the committed words had audio;
        // only the new tail is unsupported, which a failed window already keeps uncommitted.
        let silent = verdict == Verdict::Silence && self.s.committed.is_empty();
        self.s.window_failed = matches!(verdict, Verdict::Failed(_) | Verdict::Silence);
        tracing::debug!(
            frames = n,
            forced = self.s.committed.len(),
            new = d.tokens.len(),
            draft = draft.len(),
            draft_accepted = d.draft_accepted,
            no_speech = d.no_speech_prob,
            logprob = d.avg_logprob,
            compression = scores.compression_ratio,
            ?verdict,
            encode_ms,
            decode_ms,
            "whisper update"
        );
        let ws = self.s.window_start;
        self.s.token_frames = d
            .token_frames
            .iter()
            .map(|(a, b)| (ws + a, ws + b))
            .collect();
        if silent {
            self.s.token_frames.truncate(self.s.committed.len());
            return Ok(Some(Vec::new()));
        }
        let mut tokens = d.tokens;
        // Tokens the alignment squeezes onto the last encoder frame have no audio of their own:
        // a continuation Whisper invents past the speech (commonly the transcript's first word
        // again). Live, a word really starting there is simply picked up by the next update.
        let c = self.s.committed.len();
        if let Some(cut) = (0..tokens.len()).find(|&i| {
            d.token_frames
                .get(c + i)
                .is_some_and(|f| f.0 + 2 >= n_audio)
        }) {
            tokens.truncate(cut);
            self.s.token_frames.truncate(c + cut);
        }
        let key = |t: &u32| {
            self.model
                .text(&[*t])
                .unwrap_or_default()
                .trim()
                .to_lowercase()
        };
        let committed_keys: Vec<String> = self.s.committed.iter().map(key).collect();
        let tail_keys: Vec<String> = tokens.iter().map(key).collect();
        if let Some(cut) = restart_at(&committed_keys, &tail_keys) {
            tracing::debug!(cut, "hypothesis restarts the window's transcript; cut");
            tokens.truncate(cut);
            self.s.token_frames.truncate(self.s.committed.len() + cut);
        }
        self.guard_loops(&mut tokens)?;
        Ok(Some(tokens))
    }

    /// Words of `toks` as (first token, end token, [`word_key`]); a word is a token that starts
    /// one (or the first token) and the tokens up to the next; words with an empty key
    /// (punctuation) are left out.
    fn word_keys(&self, toks: &[u32]) -> Result<Vec<(usize, usize, String)>, AsrError> {
        let eot = self.model.special.eot;
        let mut out = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            let mut j = i + 1;
            while j < toks.len() && !self.model.starts_word(toks[j]) {
                j += 1;
            }
            let piece: Vec<u32> = toks[i..j].iter().copied().filter(|t| *t < eot).collect();
            let key = word_key(&self.text_of(&piece)?);
            if !key.is_empty() {
                out.push((i, j, key));
            }
            i = j;
        }
        Ok(out)
    }

    /// Applies the word-level loop guards to a decode's new `tail` (token frames in
    /// `self.s.token_frames` after the committed tokens), judged over the recent text: the
    /// previous utterances', the text that left the window, the committed tokens. Cut only in
    /// `tail`: a loop ([`repetition_cut`]) or a short copy the audio cannot hold
    /// ([`unsupported_copy`]) ends the tail; a near copy of recent text ([`near_repeat`]) is
    /// removed and what follows it kept (the speech goes on after a re-transcribed stretch).
    fn guard_loops(&mut self, tokens: &mut Vec<u32>) -> Result<(), AsrError> {
        let c = self.s.committed.len();
        let mut prior: Vec<u32> = self.s.context.clone();
        prior.extend_from_slice(&self.s.done_tokens);
        let prior = self.word_keys(&prior[prior.len().saturating_sub(96)..])?;
        let committed = self.word_keys(&self.s.committed)?;
        let words = self.word_keys(tokens)?;
        let from = prior.len() + committed.len();
        let frames = &self.s.token_frames;
        let span = |a: usize, b: usize| -> Option<(usize, usize)> {
            Some((frames.get(a)?.0, frames.get(b.checked_sub(1)?)?.1))
        };
        let seq: Vec<&str> = prior
            .iter()
            .chain(&committed)
            .chain(&words)
            .map(|w| w.2.as_str())
            .collect();
        let spans: Vec<Option<(usize, usize)>> = prior
            .iter()
            .map(|_| None)
            .chain(committed.iter().map(|w| span(w.0, w.1)))
            .chain(words.iter().map(|w| span(c + w.0, c + w.1)))
            .collect();
        let looped = repetition_cut(&seq, from);
        let squeezed = unsupported_copy(&seq, &spans, from, COPY_MIN_RATIO);
        let cut = match (looped, squeezed) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(w) = cut.and_then(|w| words.get(w - from)) {
            tracing::debug!(?looped, ?squeezed, "hypothesis repeats itself; cut");
            tokens.truncate(w.0);
            self.s.token_frames.truncate(c + w.0);
        }
        let words = self.word_keys(tokens)?;
        let seq: Vec<&str> = prior
            .iter()
            .chain(&committed)
            .chain(&words)
            .map(|w| w.2.as_str())
            .collect();
        if let Some((i, len)) = near_repeat(&seq, from) {
            let (a, b) = (i - from, i - from + len);
            if let (Some(first), Some(last)) = (words.get(a), words.get(b - 1)) {
                tracing::debug!(i, len, "hypothesis re-transcribes recent text; removed");
                let (ta, tb) = (first.0, last.1);
                tokens.drain(ta..tb);
                if self.s.token_frames.len() >= c + tb {
                    self.s.token_frames.drain(c + ta..c + tb);
                } else {
                    self.s.token_frames.truncate(c + ta);
                }
            }
        }
        Ok(())
    }

    /// Number of leading tokens of `new` that the last `agreement - 1` hypotheses agree on (text
    /// tokens compared, timestamps ignored), cut back to a word boundary every one of them
    /// confirms.
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
        let olds: Vec<Vec<(usize, u32)>> = self.s.history[self.s.history.len() - (n - 1)..]
            .iter()
            .map(|h| text(h))
            .collect();
        let mut common = new_t.len();
        for ht in &olds {
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
        // The agreed prefix is cut at the last position q ≤ common where every hypothesis
        // starts a new word: the words before q are complete in all of them.
        let starts_at =
            |h: &[(usize, u32)], q: usize| h.get(q).is_some_and(|t| self.model.starts_word(t.1));
        let mut q = common;
        while q > 0 && !(starts_at(&new_t, q) && olds.iter().all(|h| starts_at(h, q))) {
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

    /// Commits the first `k` tokens of `hyp` (a decode's tail) and records the rest as the
    /// newest hypothesis.
    fn commit(&mut self, hyp: &[u32], k: usize) {
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
        self.s.history.push(tail);
        let keep = self.cfg.agreement as usize;
        if self.s.history.len() > keep {
            self.s.history.remove(0);
        }
    }

    fn emit_partial(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let tail = self.s.history.last().cloned().unwrap_or_default();
        let stable = Self::join(&self.s.done_text, &self.text_of(&self.s.committed)?);
        let full = Self::join(&stable, &self.text_of(&tail)?);
        if full != self.s.last_partial && !full.is_empty() {
            self.s.last_partial = full.clone();
            out.push(AsrEvent::Partial {
                text: full,
                stable_prefix_len: stable.len(),
            });
        }
        Ok(())
    }

    fn update(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let Some(hyp) = self.decode_window()? else {
            return Ok(());
        };
        // A failed window is shown (as the partial's tail) but commits nothing: the committed
        // prefix only grows from windows that pass the checks.
        let k = if self.s.window_failed {
            0
        } else {
            self.agreed_len(&hyp)
        };
        self.commit(&hyp, k);
        self.emit_partial(out)?;
        self.trim(out)
    }

    /// At a pause the audio so far is complete: decode it (unless the last decode already saw
    /// all of it, or was the one made at the VAD's pause hint and saw the audio up to the
    /// speech end `end_frame`: the VAD holds what follows to be silence) and commit the whole
    /// hypothesis.
    fn settle(&mut self, end_frame: usize, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let hinted = self.s.hint_decode.take() == Some(self.s.decodes);
        let tail = if self.s.last_decode_end >= self.s.mel.end_frame()
            || (hinted && self.s.last_decode_end >= end_frame)
        {
            self.s.history.last().cloned()
        } else {
            None
        };
        let tail = match tail {
            Some(t) => Some(t),
            None => self.decode_window()?,
        };
        let Some(tail) = tail else {
            return Ok(());
        };
        self.s.history.clear();
        self.commit(&tail, tail.len());
        self.emit_partial(out)
    }

    /// Keeps the window bounded: past `max_window_ms` the window is cut at the end of the last
    /// committed word; the words before the cut leave the window (and become the prompt).
    fn trim(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let len = self.s.mel.end_frame().saturating_sub(self.s.window_start);
        if len <= Self::ms_to_frames(self.cfg.max_window_ms) {
            return Ok(());
        }
        if self.s.committed.is_empty() {
            self.commit_settled_words();
        }
        let n = self.s.committed.len();
        // Cut in the gap between the last committed word and the next token (by the alignment),
        // not at the word's aligned end: the DTW end is only accurate to a few frames, and a
        // sliver of the committed word left at the window start is re-transcribed as a
        // duplicate, while a sliver of the next word cut off loses it.
        let cut = if n > 0 && self.s.token_frames.len() >= n {
            let end = self.s.token_frames[n - 1].1;
            Some(match self.s.token_frames.get(n) {
                Some(&(next, _)) if next > end => (end + next) / 2,
                _ => end,
            })
        } else {
            None
        };
        match cut {
            Some(cut) if cut > self.s.window_start => {
                let toks = std::mem::take(&mut self.s.committed);
                let (mut words, text) = self.words_of(&toks, &self.s.token_frames[..n])?;
                self.s.done_words.append(&mut words);
                self.s.done_text = Self::join(&self.s.done_text, &text);
                let eot = self.model.special.eot;
                self.s
                    .done_tokens
                    .extend(toks.iter().copied().filter(|t| *t < eot));
                self.s.token_frames.drain(..n);
                self.s.window_start = cut;
                self.s.mel.drain_front(cut);
                tracing::debug!(cut, "window trimmed at a committed word");
            }
            _ => {
                let start = self.s.mel.end_frame() as u64 * HOP as u64;
                self.finalize(out)?;
                self.s.utt_start = Some(start);
            }
        }
        Ok(())
    }

    /// The window must be trimmed but nothing in it was committed (every recent window failed its
    /// checks, or the hypotheses kept changing): commit the newest hypothesis's words that end
    /// at least `SETTLED_MS` before the audio does, so the trim can cut at a word boundary.
    /// Finalising instead would cut at the newest sample, through a word still being spoken.
    fn commit_settled_words(&mut self) {
        let Some(hyp) = self.s.history.last().cloned() else {
            return;
        };
        let c = self.s.committed.len();
        if self.s.token_frames.len() < c + hyp.len() {
            return;
        }
        let limit = self
            .s
            .mel
            .end_frame()
            .saturating_sub(Self::ms_to_frames(SETTLED_MS));
        let k = (1..=hyp.len())
            .rev()
            .find(|&k| {
                let boundary = k == hyp.len() || self.model.starts_word(hyp[k]);
                boundary && self.s.token_frames[c + k - 1].1 <= limit
            })
            .unwrap_or(0);
        if k > 0 {
            tracing::debug!(
                k,
                "window full with nothing committed: settled words committed"
            );
            self.s.history.pop();
            self.commit(&hyp, k);
        }
    }

    /// Words of `toks` with their absolute (start, end) mel frames `frames` (same length, or
    /// empty when alignment failed: then the words get the window's span).
    fn words_of(
        &self,
        toks: &[u32],
        frames: &[(usize, usize)],
    ) -> Result<(Vec<Word>, String), AsrError> {
        let eot = self.model.special.eot;
        let mut words = Vec::new();
        let fallback = (self.s.window_start, self.s.mel.end_frame());
        let mut i = 0;
        while i < toks.len() {
            let mut j = i + 1;
            while j < toks.len() && !self.model.starts_word(toks[j]) {
                j += 1;
            }
            let piece: Vec<u32> = toks[i..j].iter().copied().filter(|t| *t < eot).collect();
            let text = self.text_of(&piece)?;
            let text = text.trim();
            if !text.is_empty() {
                let s = frames.get(i).map(|f| f.0).unwrap_or(fallback.0);
                let e = frames.get(j - 1).map(|f| f.1).unwrap_or(fallback.1);
                words.push(Word {
                    text: text.to_string(),
                    start: SampleIndex((s * HOP) as u64),
                    end: SampleIndex((e.max(s) * HOP) as u64),
                });
            }
            i = j;
        }
        let text = self.text_of(toks)?.trim().to_string();
        Ok((words, text))
    }

    /// Decode once more if needed, commit everything, emit the Final, start a new utterance.
    fn finalize(&mut self, out: &mut Vec<AsrEvent>) -> Result<(), AsrError> {
        let Some(start) = self.s.utt_start.take() else {
            return Ok(());
        };
        // After a pause `settle` already decoded and committed the whole utterance; the audio
        // since is silence by the VAD's account, and decoding it again only lets Whisper repeat
        // the last word or catch the onset of the next one ("one two three" → "1 1 2 2 3").
        let paused_at = self.s.paused_at.take();
        let settled = paused_at.is_some();
        let tail = if settled {
            Vec::new()
        } else if self.s.last_decode_end >= self.s.mel.end_frame() && !self.s.history.is_empty() {
            self.s.history.last().cloned().unwrap_or_default()
        } else {
            self.decode_window()?.unwrap_or_default()
        };
        let mut all = std::mem::take(&mut self.s.committed);
        all.extend_from_slice(&tail);
        let frames = std::mem::take(&mut self.s.token_frames);
        let frames = if frames.len() == all.len() {
            frames
        } else {
            Vec::new()
        };
        let (mut words, text) = self.words_of(&all, &frames)?;
        let mut full_words = std::mem::take(&mut self.s.done_words);
        full_words.append(&mut words);
        let text = Self::join(&std::mem::take(&mut self.s.done_text), &text);
        let mut utt_tokens = std::mem::take(&mut self.s.done_tokens);
        let end = full_words
            .last()
            .map(|w| w.end.0)
            .unwrap_or(self.s.total)
            .min(self.s.total);
        let hallucination = self.cfg.suppress_hallucinations
            && HALLUCINATIONS.contains(&normalize_simple(&text).as_str())
            && (self.s.last_no_speech > 0.2 || self.s.last_logprob < -0.7);
        if hallucination {
            tracing::debug!(%text, no_speech = self.s.last_no_speech, "dropped hallucination");
        }
        if !text.is_empty() && !hallucination {
            let eot = self.model.special.eot;
            utt_tokens.extend(all.iter().copied().filter(|t| *t < eot));
            self.s.context.extend(utt_tokens);
            let excess = self.s.context.len().saturating_sub(64);
            self.s.context.drain(..excess);
            out.push(AsrEvent::Final {
                text,
                start: SampleIndex(start),
                end: SampleIndex(end.max(start)),
                words: full_words,
            });
        }
        self.s.history.clear();
        self.s.last_partial.clear();
        // A settled utterance ends at its speech end (or its last word, if later); the silence
        // after it stays available, so the next utterance's pre-roll can reach a soft first word
        // the VAD only caught the end of ("waiting. But he could…").
        self.s.window_start = match paused_at {
            Some(p) => ((p.max(end) as usize) / HOP).min(self.s.mel.end_frame()),
            None => self.s.mel.end_frame(),
        };
        self.s.mel.drain_front(self.s.window_start);
        self.s.last_decode_end = self.s.window_start;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::restart_at;

    #[test]
    fn restarts_of_the_transcript_are_found() {
        // "a b c d" committed, then the tail starts over.
        assert_eq!(restart_at(&[1, 2, 3, 4], &[5, 1, 2]), Some(1));
        assert_eq!(restart_at(&[1, 2, 3, 4], &[1, 2, 3, 9]), Some(0));
        assert_eq!(restart_at(&[], &[1, 2, 3, 4, 1, 2, 3]), Some(4));
        // A single repeated word ("five five") is speech, not a restart.
        assert_eq!(restart_at(&[7], &[7]), None);
        let k = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            restart_at(&k("he could"), &k("wait no longer . he could")),
            Some(4)
        );
        assert_eq!(restart_at(&[1, 2, 3], &[4, 1, 9]), None);
    }
}
