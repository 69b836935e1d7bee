//! Greedy decoding against one encoder output: the prompt and forced prefix in one batched
//! pass, then either one token per step against the KV cache or, given a draft (the previous
//! update's hypothesis), the whole draft verified in one batched pass.

use super::{Decoded, WhisperModel, FRAMES_PER_SECOND, TIMESTAMP_STEP_S};
use crate::AsrError;
use candle_core::{IndexOp, Tensor};

/// What to decode: the context before the transcript, the tokens that must come first, and a
/// guess of what follows them.
#[derive(Debug, Clone, Copy)]
pub struct DecodeSpec<'a> {
    /// Text tokens of earlier speech (the last 64 go in as `<|startofprev|>` context).
    pub prompt: &'a [u32],
    /// Tokens already agreed: forced after the start of transcript, never changed.
    pub forced: &'a [u32],
    /// Expected continuation of `forced` (the previous hypothesis); verified, never trusted.
    pub draft: &'a [u32],
    pub timestamps: bool,
    /// Mel frames of real audio in the encoder input.
    pub audio_frames: usize,
    pub max_new_tokens: usize,
}

/// Bookkeeping of one greedy decode.
struct Sampling {
    sample_begin: usize,
    n_prefix: usize,
    max_ts: u32,
    timestamps: bool,
    sum_logprob: f32,
    n_sampled: usize,
    ended: bool,
    /// EOT, no valid token, or a loop cut: nothing more is sampled.
    stopped: bool,
}

impl WhisperModel {
    /// Greedy decoding on encoder output `enc`, continuing after `forced` (tokens that are already
    /// agreed and must not change). `audio_frames` (mel frames of real audio in the encoder input)
    /// bounds the timestamps the model may emit and the span word alignment searches.
    pub fn decode(
        &mut self,
        enc: &Tensor,
        prompt: &[u32],
        forced: &[u32],
        timestamps: bool,
        audio_frames: usize,
        max_new_tokens: usize,
    ) -> Result<Decoded, AsrError> {
        self.decode_spec(
            enc,
            &DecodeSpec {
                prompt,
                forced,
                draft: &[],
                timestamps,
                audio_frames,
                max_new_tokens,
            },
        )
    }

    /// Greedy decoding as [`WhisperModel::decode`], with a draft of the tokens expected after
    /// the forced prefix (speculative decoding with the previous hypothesis as the drafter).
    ///
    /// The prompt, start-of-transcript, forced and draft tokens go through the decoder in one
    /// batched pass. Each draft token is kept while it is exactly the greedy choice at its
    /// position (same suppression and timestamp rules); at the first disagreement the cache is
    /// cut back and decoding goes on one token per step against the KV cache. The result is the
    /// greedy decode whatever the draft; a good draft only saves single-token steps (each of
    /// which reads the whole 51 865-row embedding table for its logits). Cross-attention weights of the
    /// alignment heads are kept per token and aligned to the audio by DTW (see
    /// [`Decoded::token_frames`]).
    pub fn decode_spec(&mut self, enc: &Tensor, spec: &DecodeSpec) -> Result<Decoded, AsrError> {
        let sp = self.special.clone();
        // Previous text as context (`<|startofprev|> text`), as OpenAI's `initial_prompt` /
        // `condition_on_previous_text`; limited to the last 64 text tokens.
        let mut tokens = Vec::new();
        if !spec.prompt.is_empty() {
            if let Some(prev) = sp.start_of_prev {
                tokens.push(prev);
                tokens.extend_from_slice(&spec.prompt[spec.prompt.len().saturating_sub(64)..]);
            }
        }
        let sot_at = tokens.len() + sp.sot_sequence.len() - 1;
        tokens.extend_from_slice(&sp.sot_sequence);
        if !spec.timestamps {
            tokens.push(sp.no_timestamps);
        }
        let sample_begin = tokens.len();
        tokens.extend_from_slice(spec.forced);
        let n_prefix = tokens.len();
        let max_ts =
            (spec.audio_frames as f64 / FRAMES_PER_SECOND as f64 / TIMESTAMP_STEP_S).round() as u32;
        let max_ctx = self.decoder.max_tokens();
        if n_prefix >= max_ctx {
            return Err(AsrError::Config(format!(
                "decoder prefix of {n_prefix} tokens leaves no room in {max_ctx} positions"
            )));
        }
        // The draft may fill the context but one position, and be at most one token shorter
        // than the decode may grow: the token after the draft is sampled from its last row.
        let draft_len = if self.use_kv_cache {
            spec.draft
                .len()
                .min(max_ctx - n_prefix - 1)
                .min(spec.max_new_tokens.saturating_sub(1))
        } else {
            0
        };
        let draft = &spec.draft[..draft_len];
        let mut st = Sampling {
            sample_begin,
            n_prefix,
            max_ts,
            timestamps: spec.timestamps,
            sum_logprob: 0.0,
            n_sampled: 0,
            ended: false,
            stopped: false,
        };
        let mut cache = self.decoder.cache_for(enc)?;
        // Alignment rows: the cross-attention of the position *predicting* each token, i.e. the
        // rows of positions sample_begin - 1 .. (one per forced/sampled token, plus the final one).
        let heads = self.alignment_heads.clone();
        let mut first = tokens.clone();
        first.extend_from_slice(draft);
        let (ys, r) = self.decoder.forward(&first, &mut cache, &heads)?;
        // One product for the no-speech row and rows n_prefix - 1 ..= n_prefix - 1 + draft_len
        // (each predicts one token): the embedding table is read once for all of them.
        let wanted: Vec<u32> = std::iter::once(sot_at)
            .chain(n_prefix - 1..n_prefix + draft_len)
            .map(|i| i as u32)
            .collect();
        let wanted = Tensor::new(wanted.as_slice(), &self.device)?;
        let mut verify = self
            .decoder
            .logits_rows(&ys.i(0)?.index_select(&wanted, 0)?)?;
        let no_speech_prob = softmax_at(&verify.remove(0), sp.no_speech as usize);
        let mut rows: Vec<Vec<f32>> = r.into_iter().skip(sample_begin - 1).collect();
        let mut accepted = 0;
        // Nothing may be sampled when nothing was asked for.
        let rows_to_verify = if spec.max_new_tokens == 0 {
            0
        } else {
            verify.len()
        };
        for (i, mut l) in verify.into_iter().take(rows_to_verify).enumerate() {
            let Some(best) = self.sample(&mut l, &mut tokens, &mut st) else {
                break;
            };
            if i < draft_len && best == draft[i] && !st.stopped {
                accepted += 1;
            } else {
                break;
            }
        }
        // Keep the cache and the rows of the prefix and the accepted draft tokens only: the
        // rejected draft positions saw tokens that are not in the transcript.
        cache.truncate(n_prefix + accepted)?;
        rows.truncate(n_prefix + accepted + 1 - sample_begin);
        while !st.stopped && st.n_sampled < spec.max_new_tokens && tokens.len() < max_ctx {
            let (ys, r) = if self.use_kv_cache {
                self.decoder.forward_with(
                    &tokens[tokens.len() - 1..],
                    &mut cache,
                    &heads,
                    self.quantized_logits,
                )?
            } else {
                cache.clear_tokens();
                let (ys, mut r) = self.decoder.forward(&tokens, &mut cache, &heads)?;
                let last = r.pop().map(|x| vec![x]).unwrap_or_default();
                (ys, last)
            };
            rows.extend(r);
            let n = ys.dim(1)?;
            let mut l = self
                .decoder
                .logits(&ys.i((0, n - 1))?, self.quantized_logits)?;
            if self.sample(&mut l, &mut tokens, &mut st).is_none() {
                break;
            }
        }
        let n_out = tokens.len() - sample_begin;
        rows.truncate(n_out + 1);
        let token_frames = if rows.len() == n_out + 1 && n_out > 0 {
            align_tokens(&rows, heads.len(), spec.audio_frames)
        } else {
            Vec::new()
        };
        Ok(Decoded {
            tokens: tokens[n_prefix..].to_vec(),
            no_speech_prob,
            avg_logprob: if st.n_sampled > 0 {
                st.sum_logprob / st.n_sampled as f32
            } else {
                0.0
            },
            ended: st.ended,
            token_frames,
            draft_accepted: accepted,
        })
    }

    /// Greedy choice from one position's logits `l` under the suppression and timestamp rules;
    /// appends it to `tokens` unless it is EOT. `None` on EOT or when no token is valid. A loop
    /// cut returns the token but truncates `tokens`. Either way `st.stopped` says decoding ends.
    fn sample(&self, l: &mut [f32], tokens: &mut Vec<u32>, st: &mut Sampling) -> Option<u32> {
        let sp = &self.special;
        for &s in self.suppress.iter() {
            l[s as usize] = f32::NEG_INFINITY;
        }
        if tokens.len() == st.sample_begin {
            for &s in self.suppress_begin.iter() {
                l[s as usize] = f32::NEG_INFINITY;
            }
        }
        if st.timestamps {
            self.apply_timestamp_rules(l, &tokens[st.sample_begin..], st.max_ts);
        } else {
            for v in l.iter_mut().skip(sp.timestamp_begin as usize) {
                *v = f32::NEG_INFINITY;
            }
        }
        let logp = log_softmax(l);
        let (best, lp) =
            logp.iter()
                .copied()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |a, (i, v)| {
                    if v > a.1 {
                        (i, v)
                    } else {
                        a
                    }
                });
        if best >= self.config.vocab_size || lp == f32::NEG_INFINITY {
            st.stopped = true;
            return None;
        }
        st.sum_logprob += lp;
        st.n_sampled += 1;
        let best = best as u32;
        if best == sp.eot {
            st.ended = true;
            st.stopped = true;
            return None;
        }
        tokens.push(best);
        // A loop ("and so and so and so"), judged over the forced prefix too (a loop can start
        // in it) but cut only in the new tokens: keep the first copy, stop decoding.
        if let Some(cut) =
            crate::guards::runaway_cut(&tokens[st.sample_begin..], st.n_prefix - st.sample_begin)
        {
            tokens.truncate(st.sample_begin + cut);
            st.stopped = true;
        }
        Some(best)
    }

    /// Logits of the last position of `tokens` from candle's own decoder (no self-attention
    /// cache): the reference the cached decoder is checked against.
    pub fn reference_logits(&mut self, enc: &Tensor, tokens: &[u32]) -> Result<Vec<f32>, AsrError> {
        let t = Tensor::new(tokens, &self.device)?.unsqueeze(0)?;
        let ys = self.model.decoder.forward(&t, enc, true)?;
        let n = tokens.len();
        Ok(self
            .model
            .decoder
            .final_linear(&ys.i((.., n - 1..n))?)?
            .i(0)?
            .i(0)?
            .to_vec1()?)
    }

    /// Logits after each of `tokens`, fed one token at a time through the cached decoder, with
    /// 8-bit linears and embedding table (`quantized`) or the f32 ones: what single-token steps
    /// see, for comparing the two on the same (teacher-forced) sequence.
    pub fn step_logits(
        &self,
        enc: &Tensor,
        tokens: &[u32],
        quantized: bool,
    ) -> Result<Vec<Vec<f32>>, AsrError> {
        let mut cache = self.decoder.cache_for(enc)?;
        tokens
            .iter()
            .map(|t| {
                let ys = self
                    .decoder
                    .forward_with(&[*t], &mut cache, &[], quantized)?
                    .0;
                Ok(self.decoder.logits(&ys.i((0, 0))?, quantized)?)
            })
            .collect()
    }

    /// Logits of the last position of `tokens` from the cached decoder, fed one token at a time.
    pub fn incremental_logits(&self, enc: &Tensor, tokens: &[u32]) -> Result<Vec<f32>, AsrError> {
        let mut cache = self.decoder.cache_for(enc)?;
        let mut last = None;
        for t in tokens {
            last = Some(self.decoder.forward(&[*t], &mut cache, &[])?.0);
        }
        match last {
            Some(ys) => Ok(self.decoder.logits(&ys.i((0, 0))?, false)?),
            None => Err(AsrError::Config("no tokens to decode".into())),
        }
    }

    /// OpenAI's timestamp rules: timestamps pair up, never decrease, the first token is a
    /// timestamp no later than 1 s, and a timestamp wins when their total probability beats the
    /// best text token. Additionally no timestamp past the audio actually given.
    fn apply_timestamp_rules(&self, l: &mut [f32], sampled: &[u32], max_ts: u32) {
        let tb = self.special.timestamp_begin as usize;
        let eot = self.special.eot as usize;
        let is_ts = |t: u32| t as usize >= tb;
        let last_ts = sampled.last().is_some_and(|t| is_ts(*t));
        let penult_ts = sampled.len() < 2 || is_ts(sampled[sampled.len() - 2]);
        if last_ts {
            if penult_ts {
                for v in l.iter_mut().skip(tb) {
                    *v = f32::NEG_INFINITY;
                }
            } else {
                for v in l.iter_mut().take(eot) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        if let Some(&last) = sampled.iter().rev().find(|t| is_ts(**t)) {
            // A closing timestamp may repeat the last one; otherwise strictly later.
            let min = if last_ts && !penult_ts {
                last
            } else {
                last + 1
            };
            for v in l.iter_mut().take(min as usize).skip(tb) {
                *v = f32::NEG_INFINITY;
            }
        }
        if sampled.is_empty() {
            for v in l.iter_mut().take(tb) {
                *v = f32::NEG_INFINITY;
            }
            let max_initial = tb + 50;
            for v in l.iter_mut().skip(max_initial + 1) {
                *v = f32::NEG_INFINITY;
            }
        }
        let cap = tb + max_ts as usize;
        for v in l.iter_mut().skip(cap + 1) {
            *v = f32::NEG_INFINITY;
        }
        let logp = log_softmax(l);
        let ts_lse = log_sum_exp(&logp[tb..]);
        let text_max = logp[..tb].iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if ts_lse > text_max {
            for v in l.iter_mut().take(tb) {
                *v = f32::NEG_INFINITY;
            }
        }
    }
}

/// Softmax probability of index `i` in `l`.
fn softmax_at(l: &[f32], i: usize) -> f32 {
    let lse = log_sum_exp(l);
    l.get(i).map(|v| (v - lse).exp()).unwrap_or(0.0)
}

/// Token times from cross-attention, after OpenAI's `timing.py`: per head, normalise each frame
/// column over tokens (z-score), median-filter along time (width 7), average the heads, and find
/// the monotonic path through −weights by DTW. `rows[j]` is the attention (heads × encoder
/// frames, row-major) of the position predicting token j (the last row predicts what follows
/// the last token). Returns (start, end) per token in mel frames (2 per encoder frame).
// Index loops: the column-wise normalisation and the filter read across rows and columns.
#[allow(clippy::needless_range_loop)]
pub fn align_tokens(rows: &[Vec<f32>], n_heads: usize, audio_frames: usize) -> Vec<(usize, usize)> {
    let n_rows = rows.len();
    if n_rows < 2 || n_heads == 0 {
        return Vec::new();
    }
    let enc_frames = rows[0].len() / n_heads;
    let t = (audio_frames / 2).clamp(1, enc_frames.max(1));
    // matrix[j][f]: mean over heads of the normalised, filtered weights.
    let mut matrix = vec![vec![0f32; t]; n_rows];
    let mut col = vec![0f32; n_rows];
    let mut w = vec![vec![0f32; t]; n_rows];
    for h in 0..n_heads {
        for f in 0..t {
            for (j, r) in rows.iter().enumerate() {
                col[j] = r.get(h * enc_frames + f).copied().unwrap_or(0.0);
            }
            let mean = col.iter().sum::<f32>() / n_rows as f32;
            let var =
                col.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / (n_rows - 1) as f32;
            let sd = var.sqrt().max(1e-8);
            for j in 0..n_rows {
                w[j][f] = (col[j] - mean) / sd;
            }
        }
        let mut win = Vec::with_capacity(7);
        for (j, row) in w.iter().enumerate() {
            for f in 0..t {
                // Reflect at the edges, as scipy/torch median filters in timing.py do.
                win.clear();
                for d in -3i64..=3 {
                    let mut g = f as i64 + d;
                    if g < 0 {
                        g = -g;
                    }
                    if g >= t as i64 {
                        g = 2 * (t as i64 - 1) - g;
                    }
                    win.push(row[g.clamp(0, t as i64 - 1) as usize]);
                }
                win.sort_by(|a, b| a.total_cmp(b));
                matrix[j][f] += win[3] / n_heads as f32;
            }
        }
    }
    // DTW on cost = −matrix: steps (1,1), (1,0) (next token, same frame), (0,1).
    let inf = f32::INFINITY;
    let mut cost = vec![vec![inf; t + 1]; n_rows + 1];
    let mut trace = vec![vec![0u8; t + 1]; n_rows + 1];
    cost[0][0] = 0.0;
    for i in 1..=n_rows {
        for j in 1..=t {
            let (c0, c1, c2) = (cost[i - 1][j - 1], cost[i - 1][j], cost[i][j - 1]);
            let (c, tr) = if c0 <= c1 && c0 <= c2 {
                (c0, 0)
            } else if c1 <= c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            cost[i][j] = -matrix[i - 1][j - 1] + c;
            trace[i][j] = tr;
        }
    }
    let (mut i, mut j) = (n_rows, t);
    let mut path = Vec::new();
    while i > 0 && j > 0 {
        path.push((i - 1, j - 1));
        match trace[i][j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    path.reverse();
    // The frame at which each row is first reached.
    let mut jump = vec![usize::MAX; n_rows];
    for (r, f) in path {
        if jump[r] == usize::MAX {
            jump[r] = f;
        }
    }
    let mut last = 0;
    for v in jump.iter_mut() {
        if *v == usize::MAX {
            *v = last;
        }
        last = *v;
    }
    (0..n_rows - 1)
        .map(|k| (2 * jump[k], 2 * jump[k + 1]))
        .collect()
}

fn log_sum_exp(v: &[f32]) -> f32 {
    let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if m == f32::NEG_INFINITY {
        return m;
    }
    m + v.iter().map(|x| (x - m).exp()).sum::<f32>().ln()
}

fn log_softmax(v: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(v);
    v.iter().map(|x| x - lse).collect()
}
