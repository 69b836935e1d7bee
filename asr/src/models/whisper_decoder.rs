//! Whisper's text decoder with a self-attention KV cache.
//!
//! candle's `TextDecoder` caches only the cross-attention keys/values; its self-attention runs
//! over the whole token sequence on every step, so greedy decoding costs O(n²) in the transcript
//! length (and the forced prefix of a streaming update is re-run for every new token). Here each
//! decode owns a [`DecoderCache`]: cross-attention K/V are projected once per encoder output, the
//! prefix (prompt, start-of-transcript, committed tokens) goes through in one batched pass, and
//! each further token attends to the cached self-attention K/V of everything before it.
//!
//! Same weights and Hugging Face names as candle's model (`model.decoder.*`), same arithmetic
//! (pre-norm residual blocks, q and k each scaled by `head_dim^-0.25`, GELU MLP, logits against
//! the tied token embedding), so the logits match candle's decoder (tested).
//!
//! The decoder can also hand back the cross-attention weights of chosen heads (Whisper's
//! "alignment heads") for each token, the input of word-level timestamp alignment.

use super::fast_gelu;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{IndexOp, Module, Result, Tensor, D};
use candle_nn::{Embedding, LayerNorm, Linear, VarBuilder};
use candle_transformers::models::whisper::Config;

/// A linear layer with an 8-bit (`Q8_0`) twin of its weight for single-token steps, where the
/// weight's bytes, not the arithmetic, are the cost.
/// Without the twin (the encoder's layers, which only run batched) it is a plain `Linear`.
pub(crate) struct QLinear {
    exact: Linear,
    q8: Option<QMatMul>,
}

impl QLinear {
    fn new(exact: Linear, with_q8: bool) -> Result<Self> {
        if !with_q8 {
            return Ok(Self { exact, q8: None });
        }
        // The reader may hand out views into a fused projection (CTranslate2 stores q, k and v
        // as one matrix); `quantize` reads the storage from its start, so give it its own copy.
        let w = exact.weight();
        let own = Tensor::from_vec(w.flatten_all()?.to_vec1::<f32>()?, w.shape(), w.device())?;
        let q8 = QMatMul::from_qtensor(QTensor::quantize(&own, GgmlDType::Q8_0)?)?;
        Ok(Self {
            exact,
            q8: Some(q8),
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, quantized: bool) -> Result<Tensor> {
        let Some(q8) = self.q8.as_ref().filter(|_| quantized) else {
            return self.exact.forward(x);
        };
        let y = q8.forward(x)?;
        match self.exact.bias() {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

pub(crate) struct Attention {
    q: QLinear,
    k: QLinear,
    v: QLinear,
    out: QLinear,
    n_head: usize,
}

impl Attention {
    /// `with_q8`: keep 8-bit twins of the projections for single-token steps.
    pub(crate) fn load(d: usize, n_head: usize, vb: VarBuilder, with_q8: bool) -> Result<Self> {
        Ok(Self {
            q: QLinear::new(candle_nn::linear(d, d, vb.pp("q_proj"))?, with_q8)?,
            k: QLinear::new(candle_nn::linear_no_bias(d, d, vb.pp("k_proj"))?, with_q8)?,
            v: QLinear::new(candle_nn::linear(d, d, vb.pp("v_proj"))?, with_q8)?,
            out: QLinear::new(candle_nn::linear(d, d, vb.pp("out_proj"))?, with_q8)?,
            n_head,
        })
    }

    /// `(1, n, d)` → `(1, heads, n, head_dim)`, contiguous.
    fn heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, n, d) = x.dims3()?;
        x.reshape((b, n, self.n_head, d / self.n_head))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values of `x` in head layout.
    pub(crate) fn kv(&self, x: &Tensor, quantized: bool) -> Result<(Tensor, Tensor)> {
        Ok((
            self.heads(&self.k.forward(x, quantized)?)?,
            self.heads(&self.v.forward(x, quantized)?)?,
        ))
    }

    /// Attention of the queries from `x` over `k`/`v` (head layout); returns the output
    /// projection and the attention weights `(1, heads, n, t)`.
    pub(crate) fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        quantized: bool,
    ) -> Result<(Tensor, Tensor)> {
        let hd = x.dim(D::Minus1)? / self.n_head;
        let scale = (hd as f64).powf(-0.25);
        let q = (self.heads(&self.q.forward(x, quantized)?)? * scale)?;
        let kt = (k.transpose(2, 3)? * scale)?;
        let mut qk = q.matmul(&kt)?;
        if let Some(m) = mask {
            qk = qk.broadcast_add(m)?;
        }
        let w = candle_nn::ops::softmax_last_dim(&qk)?;
        let wv = w.matmul(v)?.transpose(1, 2)?.flatten_from(2)?;
        Ok((self.out.forward(&wv, quantized)?, w))
    }
}

/// A block's pre-norm GELU MLP (`final_layer_norm`, `fc1`, `fc2`), shared by the encoder and
/// the decoder; `forward` gives what the block adds to its residual stream.
pub(crate) struct Mlp {
    ln: LayerNorm,
    fc1: QLinear,
    fc2: QLinear,
}

impl Mlp {
    /// `vb` at the block; `with_q8`: keep 8-bit twins for single-token steps.
    pub(crate) fn load(d: usize, vb: VarBuilder, with_q8: bool) -> Result<Self> {
        Ok(Self {
            ln: layer_norm(d, vb.pp("final_layer_norm"))?,
            fc1: QLinear::new(candle_nn::linear(d, 4 * d, vb.pp("fc1"))?, with_q8)?,
            fc2: QLinear::new(candle_nn::linear(4 * d, d, vb.pp("fc2"))?, with_q8)?,
        })
    }

    pub(crate) fn forward(&self, x: &Tensor, quantized: bool) -> Result<Tensor> {
        let h = self.fc1.forward(&self.ln.forward(x)?, quantized)?;
        self.fc2.forward(&fast_gelu::gelu(&h)?, quantized)
    }
}

struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    cross: Attention,
    cross_ln: LayerNorm,
    mlp: Mlp,
}

pub(crate) fn layer_norm(d: usize, vb: VarBuilder) -> Result<LayerNorm> {
    Ok(LayerNorm::new(
        vb.get(d, "weight")?,
        vb.get(d, "bias")?,
        1e-5,
    ))
}

/// Per-decode state: cross-attention K/V for one encoder output and the self-attention K/V of
/// the tokens decoded so far. Create one per encoder output with [`KvDecoder::cache_for`].
pub struct DecoderCache {
    cross: Vec<(Tensor, Tensor)>,
    /// Per layer: keys and values `(1, heads, len, head_dim)` of the tokens so far.
    own: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl DecoderCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keep the first `len` tokens (a rejected draft's positions are dropped).
    pub fn truncate(&mut self, len: usize) -> Result<()> {
        if len >= self.len {
            return Ok(());
        }
        for (k, v) in self.own.iter_mut().flatten() {
            *k = k.narrow(2, 0, len)?;
            *v = v.narrow(2, 0, len)?;
        }
        self.len = len;
        Ok(())
    }

    /// Forget the tokens (keep the cross-attention K/V): the next forward starts at position 0.
    pub fn clear_tokens(&mut self) {
        self.own.iter_mut().for_each(|o| *o = None);
        self.len = 0;
    }
}

/// Whisper's decoder stack with incremental (cached) forward.
pub struct KvDecoder {
    embed: Embedding,
    /// The embedding table in 8-bit blocks (`Q8_0`) for one position's logits: a decoding step
    /// reads the 51 865 × d table once for a single row, so its cost is the table's bytes
    /// (80 MB in f32, 22 MB here: ~11 ms → ~2 ms on the dev machine).
    embed_q8: QMatMul,
    pos: Tensor,
    blocks: Vec<Block>,
    ln: LayerNorm,
    n_ctx: usize,
}

impl KvDecoder {
    /// Loads from a VarBuilder rooted at `model.decoder`.
    pub fn load(vb: VarBuilder, cfg: &Config) -> Result<Self> {
        let d = cfg.d_model;
        let h = cfg.decoder_attention_heads;
        let embed = candle_nn::embedding(cfg.vocab_size, d, vb.pp("embed_tokens"))?;
        let pos = vb.get((cfg.max_target_positions, d), "embed_positions.weight")?;
        let blocks = (0..cfg.decoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Block {
                    attn: Attention::load(d, h, vb.pp("self_attn"), true)?,
                    attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    cross: Attention::load(d, h, vb.pp("encoder_attn"), true)?,
                    cross_ln: layer_norm(d, vb.pp("encoder_attn_layer_norm"))?,
                    mlp: Mlp::load(d, vb.clone(), true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let embed_q8 =
            QMatMul::from_qtensor(QTensor::quantize(embed.embeddings(), GgmlDType::Q8_0)?)?;
        Ok(Self {
            embed,
            embed_q8,
            pos,
            blocks,
            ln: layer_norm(d, vb.pp("layer_norm"))?,
            n_ctx: cfg.max_target_positions,
        })
    }

    /// Longest token sequence the positional table allows.
    pub fn max_tokens(&self) -> usize {
        self.n_ctx
    }

    /// Projects the encoder output `(1, frames, d)` to every layer's cross-attention K/V: done
    /// once per encoder output, however many tokens are decoded against it.
    pub fn cache_for(&self, enc: &Tensor) -> Result<DecoderCache> {
        let cross = self
            .blocks
            .iter()
            .map(|b| b.cross.kv(enc, false))
            .collect::<Result<Vec<_>>>()?;
        Ok(DecoderCache {
            cross,
            own: vec![None; self.blocks.len()],
            len: 0,
        })
    }

    /// Runs `tokens` (continuing the cached sequence) and returns the final hidden states
    /// `(1, n, d)`. When `align` lists (layer, head) pairs, also returns their cross-attention
    /// weights, `(n, pairs, frames)` as one row-major vector per token.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut DecoderCache,
        align: &[(usize, usize)],
    ) -> Result<(Tensor, Vec<Vec<f32>>)> {
        self.forward_with(tokens, cache, align, false)
    }

    /// [`KvDecoder::forward`]; with `quantized`, a single token's linears run on the 8-bit
    /// weights (a batch keeps f32: it reads each weight once for all its rows anyway).
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut DecoderCache,
        align: &[(usize, usize)],
        quantized: bool,
    ) -> Result<(Tensor, Vec<Vec<f32>>)> {
        let n = tokens.len();
        let quantized = quantized && n == 1;
        let past = cache.len;
        if n == 0 || past + n > self.n_ctx {
            candle_core::bail!(
                "decoder input of {n} tokens after {past} exceeds {} positions",
                self.n_ctx
            );
        }
        let dev = self.pos.device();
        let ids = Tensor::new(tokens, dev)?.unsqueeze(0)?;
        let mut x = self
            .embed
            .forward(&ids)?
            .broadcast_add(&self.pos.narrow(0, past, n)?)?;
        // Causal mask over (new queries) × (past + new keys); a single new token sees everything.
        let mask = if n > 1 {
            let m: Vec<f32> = (0..n)
                .flat_map(|i| {
                    (0..past + n).map(move |j| if j > past + i { f32::NEG_INFINITY } else { 0.0 })
                })
                .collect();
            Some(Tensor::from_vec(m, (n, past + n), dev)?)
        } else {
            None
        };
        let mut align_w: Vec<Tensor> = Vec::new();
        for (li, b) in self.blocks.iter().enumerate() {
            let h = b.attn_ln.forward(&x)?;
            let (k_new, v_new) = b.attn.kv(&h, quantized)?;
            let (k, v) = match &cache.own[li] {
                Some((k0, v0)) => (
                    Tensor::cat(&[k0, &k_new], 2)?,
                    Tensor::cat(&[v0, &v_new], 2)?,
                ),
                None => (k_new, v_new),
            };
            let (a, _) = b.attn.attend(&h, &k, &v, mask.as_ref(), quantized)?;
            cache.own[li] = Some((k, v));
            x = (x + a)?;
            let (ck, cv) = &cache.cross[li];
            let (c, w) = b
                .cross
                .attend(&b.cross_ln.forward(&x)?, ck, cv, None, quantized)?;
            for &(l, head) in align {
                if l == li {
                    align_w.push(w.i((0, head))?);
                }
            }
            x = (x + c)?;
            x = (&x + b.mlp.forward(&x, quantized)?)?;
        }
        cache.len += n;
        let rows = if align_w.is_empty() {
            Vec::new()
        } else {
            // (pairs, n, frames) → per token: (pairs × frames).
            let w = Tensor::stack(&align_w, 0)?.transpose(0, 1)?.contiguous()?;
            let frames = w.dim(2)?;
            let flat: Vec<f32> = w.flatten_all()?.to_vec1()?;
            flat.chunks(align_w.len() * frames)
                .map(|c| c.to_vec())
                .collect()
        };
        Ok((self.ln.forward(&x)?, rows))
    }

    /// Logits of one position's hidden state `(d,)` against the tied token embedding, in
    /// 8-bit (`quantized`) or exactly.
    pub fn logits(&self, h: &Tensor, quantized: bool) -> Result<Vec<f32>> {
        if quantized {
            return self
                .embed_q8
                .forward(&h.unsqueeze(0)?)?
                .squeeze(0)?
                .to_vec1();
        }
        h.unsqueeze(0)?
            .matmul(&self.embed.embeddings().t()?)?
            .squeeze(0)?
            .to_vec1()
    }

    /// Logits of several positions' hidden states `(n, d)` in one product: the embedding table
    /// (the largest weight, 51 865 × d) is read once for all of them.
    pub fn logits_rows(&self, h: &Tensor) -> Result<Vec<Vec<f32>>> {
        h.matmul(&self.embed.embeddings().t()?)?.to_vec2()
    }
}
