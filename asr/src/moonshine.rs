//! Moonshine streaming engine: a true streaming encoder over the sliding-window model in
//! [`crate::models::moonshine_streaming`], and [`MoonshineRecognizer`] on top of it.
//!
//! # Streaming encoder
//! Every stage is causal or bounded: the front end works on whole 5 ms frames and its two stride-2
//! convolutions keep only their 4 frames of left context; encoder layer `l` with window
//! `(left, right)` finalises frame `t` once its input frame `t + right - 1` has arrived, keeping
//! cached keys/values of only the last `left - 1` frames plus the queries still waiting for right
//! context. A 50 Hz frame therefore leaves the encoder a fixed `Σ max(right - 1, 0)` frames after
//! it entered (12 frames = 240 ms for the tiny layout), the per-chunk cost does not depend on the
//! stream position, and memory is bounded regardless of stream length. [`StreamingEncoder::finish`]
//! flushes the last frames with the truncated right context the offline model also sees, so the
//! concatenated output equals the offline encoding.
//!
//! # Recogniser
//! [`MoonshineRecognizer`] segments the stream into utterances with an [`Endpointer`] (the one
//! place the finalisation policy lives; an energy detector now, Silero VAD later), runs the
//! streaming encoder only inside utterances, decodes greedily over the frames so far for partials
//! (LocalAgreement-2 over consecutive hypotheses decides the committed prefix, which later decodes
//! are forced to keep) and decodes once more after the encoder flush for the final. `Final.words`
//! stays empty: the model has no word timing.
//!
//! Cost: a streaming push runs small matrices (a few rows); candle's multi-threaded CPU matmul
//! costs more than it saves at that size on a busy machine, so deployments that run several
//! engines should pin `RAYON_NUM_THREADS` low (measured ~6x faster pushes with 1 thread on the
//! fixture model while other jobs used the 2 cores).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Tensor};
use vr_core::{SampleIndex, SampleRate};

use crate::models::moonshine_streaming::{
    EncoderLayer, FrontEnd, MoonshineStreaming, CONV_LEFT_PAD, CONV_STRIDE,
};
use crate::{AsrError, AsrEvent, StreamingRecognizer};

fn cat0(a: Option<Tensor>, b: &Tensor, dim: usize) -> candle_core::Result<Tensor> {
    match a {
        Some(a) => Tensor::cat(&[&a, b], dim),
        None => Ok(b.clone()),
    }
}

/// Rows `from..` of `t` along `dim`, `None` when nothing is left; copied so the old storage is freed.
fn tail(t: Tensor, dim: usize, from: usize) -> candle_core::Result<Option<Tensor>> {
    let n = t.dim(dim)?;
    if from >= n {
        return Ok(None);
    }
    Ok(Some(t.narrow(dim, from, n - from)?.copy()?))
}

/// A causal stride-2 convolution fed incrementally: keeps only its left context.
#[derive(Debug, Clone)]
struct ConvState {
    /// Time-major input rows; row 0 is absolute input frame `start` (negative: zero padding).
    buf: Tensor,
    start: i64,
    next_out: usize,
}

impl ConvState {
    fn new(c_in: usize) -> candle_core::Result<Self> {
        Ok(Self {
            buf: Tensor::zeros((CONV_LEFT_PAD, c_in), DType::F32, &candle_core::Device::Cpu)?,
            start: -(CONV_LEFT_PAD as i64),
            next_out: 0,
        })
    }

    fn push(
        &mut self,
        rows: &Tensor,
        w: &Tensor,
        b: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        self.buf = Tensor::cat(&[&self.buf, rows], 0)?;
        let last = self.start + self.buf.dim(0)? as i64 - 1;
        let s = CONV_STRIDE as i64;
        let first_needed = s * self.next_out as i64;
        if last < first_needed {
            return Ok(None);
        }
        // Output j reads inputs s*j - 4 ..= s*j.
        let n_out = ((last - first_needed) / s + 1) as usize;
        let from = (first_needed - CONV_LEFT_PAD as i64 - self.start) as usize;
        let len = CONV_STRIDE * (n_out - 1) + CONV_LEFT_PAD + 1;
        let y = FrontEnd::conv(&self.buf.narrow(0, from, len)?, w, b)?;
        self.next_out += n_out;
        let keep_from = s * self.next_out as i64 - CONV_LEFT_PAD as i64;
        let drop = (keep_from - self.start) as usize;
        let n = self.buf.dim(0)?;
        self.buf = self.buf.narrow(0, drop.min(n), n - drop.min(n))?.copy()?;
        self.start += drop as i64;
        Ok(Some(y))
    }

    fn cached_rows(&self) -> usize {
        self.buf.dims().first().copied().unwrap_or(0)
    }
}

/// One encoder layer's streaming state: keys/values of the frames later queries can still see,
/// queries and residuals of the frames waiting for their right context.
#[derive(Debug, Clone, Default)]
struct LayerState {
    k: Option<Tensor>,
    v: Option<Tensor>,
    k0: usize,
    q: Option<Tensor>,
    x: Option<Tensor>,
    next_out: usize,
    received: usize,
}

impl LayerState {
    fn push(
        &mut self,
        layer: &EncoderLayer,
        xs: Option<&Tensor>,
        flush: bool,
    ) -> candle_core::Result<Option<Tensor>> {
        if let Some(xs) = xs {
            let (q, k, v) = layer.qkv(xs)?;
            self.k = Some(cat0(self.k.take(), &k, 1)?);
            self.v = Some(cat0(self.v.take(), &v, 1)?);
            self.q = Some(cat0(self.q.take(), &q, 1)?);
            self.x = Some(cat0(self.x.take(), xs, 0)?);
            self.received += xs.dim(0)?;
        }
        let (left, right) = layer.window;
        let ready_end = if flush {
            self.received
        } else {
            self.received.saturating_sub(right.saturating_sub(1))
        };
        let n_ready = ready_end.saturating_sub(self.next_out);
        let (Some(q), Some(x), Some(k), Some(v)) = (self.q.take(), self.x.take(), &self.k, &self.v)
        else {
            return Ok(None);
        };
        if n_ready == 0 {
            self.q = Some(q);
            self.x = Some(x);
            return Ok(None);
        }
        let out = layer.finish(
            &x.narrow(0, 0, n_ready)?,
            &q.narrow(1, 0, n_ready)?,
            k,
            v,
            self.next_out,
            self.k0,
        )?;
        self.q = tail(q, 1, n_ready)?;
        self.x = tail(x, 0, n_ready)?;
        self.next_out += n_ready;
        // Later queries t >= next_out only see keys from t - left + 1 on.
        let new_k0 = self.next_out.saturating_sub(left - 1).max(self.k0);
        if new_k0 > self.k0 {
            let d = new_k0 - self.k0;
            self.k = match self.k.take() {
                Some(k) => tail(k, 1, d)?,
                None => None,
            };
            self.v = match self.v.take() {
                Some(v) => tail(v, 1, d)?,
                None => None,
            };
            self.k0 = new_k0;
        }
        Ok(Some(out))
    }

    fn cached_frames(&self) -> usize {
        let n = |t: &Option<Tensor>, d: usize| {
            t.as_ref()
                .and_then(|t| t.dims().get(d).copied())
                .unwrap_or(0)
        };
        n(&self.k, 1) + n(&self.q, 1)
    }
}

/// Push audio in any chunk size, get finalised encoder frames out (see the module doc).
#[derive(Debug, Clone)]
pub struct StreamingEncoder {
    model: Arc<MoonshineStreaming>,
    pending: Vec<f32>,
    conv1: ConvState,
    conv2: ConvState,
    layers: Vec<LayerState>,
    emitted: usize,
    finished: bool,
}

impl StreamingEncoder {
    pub fn new(model: Arc<MoonshineStreaming>) -> Result<Self, AsrError> {
        let c = model.config.encoder_config.hidden_size;
        let n = model.encoder.layers.len();
        Ok(Self {
            pending: Vec::with_capacity(model.encoder.front.frame_len()),
            conv1: ConvState::new(c)?,
            conv2: ConvState::new(2 * c)?,
            layers: vec![LayerState::default(); n],
            emitted: 0,
            finished: false,
            model,
        })
    }

    /// Frames a pushed frame waits for right context: `Σ max(right - 1, 0)` (12 for tiny).
    pub fn lookahead_frames(&self) -> usize {
        self.model.config.encoder_lookahead()
    }

    /// Encoder frames emitted since the start (or the last reset).
    pub fn frames_emitted(&self) -> usize {
        self.emitted
    }

    /// Frames currently held in caches (keys/values, waiting queries, convolution context): the
    /// encoder's whole state, bounded by the windows and the last chunk size.
    pub fn cached_frames(&self) -> usize {
        self.layers
            .iter()
            .map(LayerState::cached_frames)
            .sum::<usize>()
            + self.conv1.cached_rows()
            + self.conv2.cached_rows()
            + self
                .pending
                .len()
                .div_ceil(self.model.encoder.front.frame_len().max(1))
    }

    /// Feeds samples; returns the encoder frames `[n, hidden]` that became final, if any.
    pub fn push(&mut self, samples: &[f32]) -> Result<Option<Tensor>, AsrError> {
        if self.finished {
            return Err(AsrError::Config(
                "StreamingEncoder::push after finish (call reset)".into(),
            ));
        }
        let fl = self.model.encoder.front.frame_len();
        self.pending.extend_from_slice(samples);
        let n = self.pending.len() / fl;
        if n == 0 {
            return Ok(None);
        }
        let rows = self.model.encoder.front.embed_frames(
            &self.pending[..n * fl],
            n,
            &self.model.device,
        )?;
        self.pending.drain(..n * fl);
        self.run(Some(rows), false)
    }

    /// End of stream: a trailing partial 5 ms frame counts as the reference's zero-padded, masked
    /// frame, and every layer emits its remaining frames with the right context that exists.
    pub fn finish(&mut self) -> Result<Option<Tensor>, AsrError> {
        if self.finished {
            return Ok(None);
        }
        self.finished = true;
        let rows = if self.pending.is_empty() {
            None
        } else {
            let fl = self.model.encoder.front.frame_len();
            let mut frame = std::mem::take(&mut self.pending);
            frame.resize(fl, 0.0);
            Some(
                self.model
                    .encoder
                    .front
                    .embed_frames(&frame, 0, &self.model.device)?,
            )
        };
        self.run(rows, true)
    }

    pub fn reset(&mut self) -> Result<(), AsrError> {
        *self = Self::new(self.model.clone())?;
        Ok(())
    }

    fn run(&mut self, rows: Option<Tensor>, flush: bool) -> Result<Option<Tensor>, AsrError> {
        let enc = &self.model.encoder;
        let front = &enc.front;
        let mut x = match rows {
            Some(r) => match self.conv1.push(&r, &front.conv1_w, &front.conv1_b)? {
                Some(c1) => self
                    .conv2
                    .push(&c1.silu()?, &front.conv2_w, &front.conv2_b)?,
                None => None,
            },
            None => None,
        };
        for (state, layer) in self.layers.iter_mut().zip(&enc.layers) {
            x = state.push(layer, x.as_ref(), flush)?;
        }
        match x {
            Some(x) => {
                self.emitted += x.dim(0)?;
                Ok(Some(enc.final_norm(&x)?))
            }
            None => Ok(None),
        }
    }
}

/// A decision of the finalisation policy, on the input sample clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boundary {
    /// Speech began at this sample (the recogniser starts encoding here).
    Start(SampleIndex),
    /// Speech ended at this sample; the utterance is finalised now.
    End(SampleIndex),
}

/// Where utterances start and end: the single place the finalisation policy lives, so the energy
/// detector can be replaced by Silero VAD without touching the recogniser.
pub trait Endpointer: Send {
    /// Observes the next block of samples, which starts at `at`; returns the decisions it allows.
    fn push(&mut self, samples: &[f32], at: SampleIndex) -> Vec<Boundary>;
    /// Forgets the stream.
    fn reset(&mut self);
}

/// Energy endpointing: 20 ms blocks above `threshold_dbfs` are voiced; `min_speech` voiced blocks
/// in a row start an utterance (backdated by `preroll`), `hangover` unvoiced blocks end it, and an
/// utterance is cut at `max_utterance` so the decoder's position table is never exceeded.
#[derive(Debug, Clone)]
pub struct EnergyEndpointer {
    pub threshold_dbfs: f32,
    pub block: usize,
    pub min_speech_blocks: usize,
    pub hangover_blocks: usize,
    pub preroll: usize,
    pub max_utterance: usize,
    buf: Vec<f32>,
    buf_at: SampleIndex,
    voiced_run: usize,
    unvoiced_run: usize,
    in_speech: bool,
    utt_start: SampleIndex,
    last_voiced_end: SampleIndex,
}

impl EnergyEndpointer {
    /// Defaults at 16 kHz: -45 dBFS, 20 ms blocks, 60 ms to start, 500 ms hangover, 200 ms preroll.
    pub fn new(max_utterance_samples: usize) -> Self {
        let ms = |m: usize| m * SampleRate::PIPELINE.hz() as usize / 1000;
        Self {
            threshold_dbfs: -45.0,
            block: ms(20),
            min_speech_blocks: 3,
            hangover_blocks: 25,
            preroll: ms(200),
            max_utterance: max_utterance_samples,
            buf: Vec::new(),
            buf_at: SampleIndex::ZERO,
            voiced_run: 0,
            unvoiced_run: 0,
            in_speech: false,
            utt_start: SampleIndex::ZERO,
            last_voiced_end: SampleIndex::ZERO,
        }
    }
}

impl Endpointer for EnergyEndpointer {
    fn push(&mut self, samples: &[f32], at: SampleIndex) -> Vec<Boundary> {
        if self.buf.is_empty() {
            self.buf_at = at;
        }
        self.buf.extend_from_slice(samples);
        let mut out = Vec::new();
        let block = self.block.max(1);
        let mut off = 0;
        while self.buf.len() - off >= block {
            let b = &self.buf[off..off + block];
            let start = self.buf_at.advance(off as u64);
            let end = start.advance(block as u64);
            off += block;
            let ms = b.iter().map(|x| x * x).sum::<f32>() / block as f32;
            let db = 10.0 * (ms + 1e-12).log10();
            let voiced = db > self.threshold_dbfs;
            if voiced {
                self.voiced_run += 1;
                self.unvoiced_run = 0;
                self.last_voiced_end = end;
            } else {
                self.voiced_run = 0;
                self.unvoiced_run += 1;
            }
            if !self.in_speech {
                if self.voiced_run >= self.min_speech_blocks {
                    let first = end.0.saturating_sub((self.voiced_run * block) as u64);
                    self.utt_start = SampleIndex(first.saturating_sub(self.preroll as u64));
                    self.in_speech = true;
                    out.push(Boundary::Start(self.utt_start));
                }
            } else if self.unvoiced_run >= self.hangover_blocks {
                self.in_speech = false;
                out.push(Boundary::End(self.last_voiced_end));
            } else if end.since(self.utt_start) as usize + block > self.max_utterance {
                // Cut here and continue at once with a fresh utterance if speech goes on.
                out.push(Boundary::End(end));
                out.push(Boundary::Start(end));
                self.utt_start = end;
            }
        }
        self.buf.drain(..off);
        self.buf_at = self.buf_at.advance(off as u64);
        out
    }

    fn reset(&mut self) {
        *self = Self::new(self.max_utterance);
    }
}

/// Decoding knobs of [`MoonshineRecognizer`].
#[derive(Debug, Clone)]
pub struct RecognizerOptions {
    /// New encoder frames between partial decodes (0: no partials).
    pub partial_every_frames: usize,
    /// Token budget per second of audio (the reference tooling uses ~6.5).
    pub max_tokens_per_second: f32,
}

impl Default for RecognizerOptions {
    fn default() -> Self {
        Self {
            partial_every_frames: 15,
            max_tokens_per_second: 6.5,
        }
    }
}

/// Streaming Moonshine ASR implementing [`StreamingRecognizer`].
pub struct MoonshineRecognizer {
    model: Arc<MoonshineStreaming>,
    encoder: StreamingEncoder,
    endpointer: Box<dyn Endpointer>,
    opts: RecognizerOptions,
    /// Recent input, for starting an utterance at a backdated boundary.
    history: VecDeque<f32>,
    history_cap: usize,
    clock: SampleIndex,
    utt: Option<Utterance>,
}

struct Utterance {
    start: SampleIndex,
    frames: Vec<Tensor>,
    n_frames: usize,
    frames_at_last_partial: usize,
    committed: Vec<u32>,
    last_hyp: Vec<u32>,
}

impl MoonshineRecognizer {
    /// Loads a checkpoint directory (`config.json`, `model.safetensors`, `tokenizer.json`).
    pub fn load(dir: &Path) -> Result<Self, AsrError> {
        Self::new(
            Arc::new(MoonshineStreaming::load(dir)?),
            RecognizerOptions::default(),
        )
    }

    /// A recogniser over a loaded model with the energy endpointer.
    pub fn new(model: Arc<MoonshineStreaming>, opts: RecognizerOptions) -> Result<Self, AsrError> {
        // 20 ms per encoder frame; keep a margin below the decoder's position table.
        let max_frames = model.decoder.max_encoder_frames().saturating_sub(8).max(1);
        let max_samples = max_frames * 320;
        let ep = EnergyEndpointer::new(max_samples.saturating_sub(320 * 2 + 80).max(320));
        Self::with_endpointer(model, opts, Box::new(ep))
    }

    /// A recogniser with another finalisation policy (e.g. a VAD).
    pub fn with_endpointer(
        model: Arc<MoonshineStreaming>,
        opts: RecognizerOptions,
        endpointer: Box<dyn Endpointer>,
    ) -> Result<Self, AsrError> {
        Ok(Self {
            encoder: StreamingEncoder::new(model.clone())?,
            model,
            endpointer,
            opts,
            history: VecDeque::new(),
            history_cap: SampleRate::PIPELINE.hz() as usize,
            clock: SampleIndex::ZERO,
            utt: None,
        })
    }

    pub fn model(&self) -> &Arc<MoonshineStreaming> {
        &self.model
    }

    fn begin(&mut self, at: SampleIndex) -> Result<(), AsrError> {
        self.encoder.reset()?;
        self.utt = Some(Utterance {
            start: at,
            frames: Vec::new(),
            n_frames: 0,
            frames_at_last_partial: 0,
            committed: Vec::new(),
            last_hyp: Vec::new(),
        });
        Ok(())
    }

    fn add_frames(&mut self, f: Option<Tensor>) -> Result<(), AsrError> {
        if let (Some(f), Some(u)) = (f, self.utt.as_mut()) {
            u.n_frames += f.dim(0)?;
            u.frames.push(f);
        }
        Ok(())
    }

    /// Greedy decode over the utterance's frames so far, forced to start with the committed ids.
    fn decode(&self, u: &Utterance) -> Result<Vec<u32>, AsrError> {
        if u.n_frames == 0 {
            return Ok(Vec::new());
        }
        let frames = Tensor::cat(&u.frames, 0)?;
        let dec = &self.model.decoder;
        let secs = u.n_frames as f32 * 0.02;
        let budget = (secs * self.opts.max_tokens_per_second).ceil() as usize + 4;
        let eos = self.model.config.eos_tokens();
        let mut state = dec.start(&frames)?;
        let mut prompt = vec![self.model.config.decoder_start_token()];
        prompt.extend_from_slice(&u.committed);
        let mut ids = u.committed.clone();
        let mut logits = dec.forward(&mut state, &prompt)?;
        while ids.len() < budget.max(u.committed.len() + 1) {
            let last = logits.dim(0)? - 1;
            let next = logits
                .get(last)?
                .argmax(candle_core::D::Minus1)?
                .to_scalar::<u32>()?;
            if eos.contains(&next) {
                break;
            }
            ids.push(next);
            logits = dec.forward(&mut state, &[next])?;
        }
        Ok(ids)
    }

    fn partial(&mut self) -> Result<Option<AsrEvent>, AsrError> {
        let Some(u) = self.utt.as_ref() else {
            return Ok(None);
        };
        if self.opts.partial_every_frames == 0
            || u.n_frames < u.frames_at_last_partial + self.opts.partial_every_frames
        {
            return Ok(None);
        }
        let hyp = self.decode(u)?;
        let Some(u) = self.utt.as_mut() else {
            return Ok(None);
        };
        u.frames_at_last_partial = u.n_frames;
        // LocalAgreement-2: commit what two consecutive hypotheses agree on.
        let agree = hyp
            .iter()
            .zip(&u.last_hyp)
            .take_while(|(a, b)| a == b)
            .count();
        if agree > u.committed.len() {
            u.committed = hyp[..agree].to_vec();
        }
        u.last_hyp = hyp.clone();
        let committed = u.committed.clone();
        let text = self.model.detokenize(&hyp)?;
        let stable = self.model.detokenize(&committed)?;
        let stable_prefix_len = if text.starts_with(&stable) {
            stable.len()
        } else {
            text.bytes()
                .zip(stable.bytes())
                .take_while(|(a, b)| a == b)
                .count()
        };
        let mut cut = stable_prefix_len;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        Ok(Some(AsrEvent::Partial {
            text,
            stable_prefix_len: cut,
        }))
    }

    fn end(&mut self, at: SampleIndex) -> Result<Vec<AsrEvent>, AsrError> {
        let f = self.encoder.finish()?;
        self.add_frames(f)?;
        let Some(u) = self.utt.take() else {
            return Ok(Vec::new());
        };
        let ids = self.decode(&u)?;
        let text = self.model.detokenize(&ids)?.trim().to_string();
        let mut out = vec![AsrEvent::SpeechEnded { at }];
        if !text.is_empty() {
            out.push(AsrEvent::Final {
                text,
                start: u.start,
                end: at.max(u.start),
                words: Vec::new(),
            });
        }
        Ok(out)
    }
}

impl StreamingRecognizer for MoonshineRecognizer {
    fn push(&mut self, samples: &[f32]) -> Result<Vec<AsrEvent>, AsrError> {
        let at = self.clock;
        self.clock = self.clock.advance(samples.len() as u64);
        for &s in samples {
            if self.history.len() == self.history_cap {
                self.history.pop_front();
            }
            self.history.push_back(s);
        }
        let mut events = Vec::new();
        let mut fed_to = at;
        for b in self.endpointer.push(samples, at) {
            match b {
                Boundary::Start(start) => {
                    self.begin(start)?;
                    events.push(AsrEvent::SpeechStarted { at: start });
                    // Feed from the boundary to the end of this chunk out of the history.
                    let from = self.clock.since(start) as usize;
                    let from = from.min(self.history.len());
                    let skip = self.history.len() - from;
                    let audio: Vec<f32> = self.history.iter().skip(skip).copied().collect();
                    let f = self.encoder.push(&audio)?;
                    self.add_frames(f)?;
                    fed_to = self.clock;
                }
                Boundary::End(end) => {
                    // Audio of this chunk up to the decision is part of the utterance.
                    events.extend(self.end(end)?);
                    fed_to = self.clock;
                }
            }
        }
        if self.utt.is_some() && fed_to < self.clock {
            let skip = fed_to.since(at) as usize;
            let f = self.encoder.push(&samples[skip.min(samples.len())..])?;
            self.add_frames(f)?;
        }
        events.extend(self.partial()?);
        Ok(events)
    }

    fn finish(&mut self) -> Result<Vec<AsrEvent>, AsrError> {
        if self.utt.is_none() {
            return Ok(Vec::new());
        }
        self.end(self.clock)
    }

    fn reset(&mut self) {
        self.endpointer.reset();
        self.history.clear();
        self.clock = SampleIndex::ZERO;
        self.utt = None;
        // Rebuilding the empty state allocates only zero-filled convolution context.
        if let Ok(enc) = StreamingEncoder::new(self.model.clone()) {
            self.encoder = enc;
        }
    }
}
