//! Gemma 3 text decoder (GGUF, quantized weights) with a truncatable KV cache.
//!
//! Adapted from candle-transformers 0.11.1 `models/quantized_gemma3.rs` (Apache-2.0/MIT,
//! <https://github.com/huggingface/candle>), following llama.cpp's `gemma3` graph and the Gemma 3
//! technical report (arXiv:2503.19786): per-head q/k RMSNorm, pre- and post-norms around both
//! blocks, embeddings scaled by sqrt(hidden), local sliding-window layers interleaved 5:1 with
//! global layers, each with its own RoPE base. Changes here:
//! - the attention mask is built on absolute positions, so a chunk appended to a non-empty cache
//!   sees the cached prefix (the stock mask hid it, which breaks incremental prefill) and
//!   sliding-window layers keep masking once the context outgrows the window, also during
//!   single-token decoding;
//! - the cache can be cut back to any prefix ([`ModelWeights::truncate_kv`]);
//! - two RoPE tables sized to the configured context are shared by all layers (the stock code
//!   builds a 128k-position table per layer: gigabytes for a 270M model);
//! - the gated MLP uses GELU (tanh approximation) as Gemma 3 and llama.cpp do; the stock file
//!   used SiLU;
//! - `forward` also returns the final-norm hidden state of the last position.

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::repeat_kv;

const DEFAULT_SLIDING_WINDOW_TYPE: usize = 6;
const DEFAULT_ROPE_FREQUENCY: f32 = 1_000_000.;
const DEFAULT_ROPE_FREQUENCY_SLIDING: f32 = 10_000.;

#[derive(Debug, Clone)]
struct Mlp {
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        // Gemma 3 uses GELU (tanh approximation) in its gated MLP.
        let gate = self.gate.forward(xs)?.gelu()?;
        let up = self.up.forward(xs)?;
        self.down.forward(&(gate * up)?)
    }
}

#[derive(Debug, Clone)]
struct Rope {
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn new(head_dim: usize, base: f32, len: usize, device: &Device) -> Result<Self> {
        let theta: Vec<f32> = (0..head_dim)
            .step_by(2)
            .map(|i| 1f32 / base.powf(i as f32 / head_dim as f32))
            .collect();
        let theta = Tensor::new(theta.as_slice(), device)?;
        let idx_theta = Tensor::arange(0, len as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((len, 1))?
            .matmul(&theta.reshape((1, theta.elem_count()))?)?;
        Ok(Self {
            cos: idx_theta.cos()?,
            sin: idx_theta.sin()?,
        })
    }

    fn apply(&self, x: &Tensor, index_pos: usize) -> Result<Tensor> {
        let (_b, _h, seq_len, _d) = x.dims4()?;
        let cos = self.cos.narrow(0, index_pos, seq_len)?;
        let sin = self.sin.narrow(0, index_pos, seq_len)?;
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    wq: QMatMul,
    wk: QMatMul,
    wv: QMatMul,
    wo: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attention_norm: RmsNorm,
    post_attention_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    mlp: Mlp,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// `Some(w)`: a local layer, a query attends to the `w` most recent positions (itself included).
    sliding_window: Option<usize>,
    /// Index into the model's two RoPE tables: 0 global, 1 local.
    rope: usize,
    kv_cache: Option<(Tensor, Tensor)>,
}

/// True where a query at absolute position `i` must not see key position `j`.
fn masked(i: usize, j: usize, window: Option<usize>) -> bool {
    j > i || window.is_some_and(|w| i - j >= w)
}

fn build_mask(
    seq_len: usize,
    index_pos: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Option<Tensor>> {
    let kv_len = index_pos + seq_len;
    let any = (0..seq_len).any(|r| (0..kv_len).any(|j| masked(index_pos + r, j, window)));
    if !any {
        return Ok(None);
    }
    let mask: Vec<u8> = (0..seq_len)
        .flat_map(|r| (0..kv_len).map(move |j| u8::from(masked(index_pos + r, j, window))))
        .collect();
    Ok(Some(Tensor::from_slice(&mask, (seq_len, kv_len), device)?))
}

impl Layer {
    fn attention(&mut self, x: &Tensor, index_pos: usize, rope: &Rope) -> Result<Tensor> {
        let (b_sz, seq_len, _) = x.dims3()?;
        let q = self
            .wq
            .forward(x)?
            .reshape((b_sz, seq_len, self.n_head, self.head_dim))?
            .transpose(1, 2)?;
        let k = self
            .wk
            .forward(x)?
            .reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?
            .transpose(1, 2)?;
        let v = self
            .wv
            .forward(x)?
            .reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.q_norm.forward(&q.contiguous()?)?;
        let k = self.k_norm.forward(&k.contiguous()?)?;
        let q = rope.apply(&q, index_pos)?;
        let k = rope.apply(&k, index_pos)?;

        let (k, v) = match &self.kv_cache {
            Some((k_cache, v_cache)) if index_pos > 0 => (
                Tensor::cat(&[k_cache, &k], 2)?,
                Tensor::cat(&[v_cache, &v], 2)?,
            ),
            _ => (k, v),
        };
        self.kv_cache = Some((k.clone(), v.clone()));

        let k = repeat_kv(k, self.n_head / self.n_kv_head)?;
        let v = repeat_kv(v, self.n_head / self.n_kv_head)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let mut att = (q.matmul(&k.transpose(2, 3)?)? * scale)?;
        if let Some(mask) = build_mask(seq_len, index_pos, self.sliding_window, x.device())? {
            let mask = mask.broadcast_as(att.shape())?;
            let neg_inf =
                Tensor::new(f32::NEG_INFINITY, att.device())?.broadcast_as(att.shape())?;
            att = mask.where_cond(&neg_inf, &att)?;
        }
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b_sz, seq_len, self.n_head * self.head_dim))?;
        self.wo.forward(&y)
    }
}

pub struct ModelWeights {
    tok_embeddings: Embedding,
    embedding_length: usize,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    ropes: [Rope; 2],
    max_positions: usize,
}

impl ModelWeights {
    /// Loads the weights; positions are limited to `min(max_positions, <arch>.context_length)`.
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        max_positions: usize,
    ) -> Result<Self> {
        let prefix = ["gemma3", "gemma2", "gemma"]
            .iter()
            .find(|p| {
                ct.metadata
                    .contains_key(&format!("{p}.attention.head_count"))
            })
            .copied()
            .unwrap_or("gemma3");
        let md_get = |s: &str| {
            let key = format!("{prefix}.{s}");
            match ct.metadata.get(&key) {
                None => candle_core::bail!("cannot find {key} in GGUF metadata"),
                Some(v) => Ok(v),
            }
        };
        let head_count = md_get("attention.head_count")?.to_u32()? as usize;
        let head_count_kv = md_get("attention.head_count_kv")?.to_u32()? as usize;
        let block_count = md_get("block_count")?.to_u32()? as usize;
        let embedding_length = md_get("embedding_length")?.to_u32()? as usize;
        let key_length = md_get("attention.key_length")?.to_u32()? as usize;
        let rms_norm_eps = md_get("attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let sliding_window_size = md_get("attention.sliding_window")?.to_u32()? as usize;
        let context_length = md_get("context_length")?.to_u32()? as usize;
        let sliding_window_type = md_get("attention.sliding_window_type")
            .and_then(|m| Ok(m.to_u32()? as usize))
            .unwrap_or(DEFAULT_SLIDING_WINDOW_TYPE);
        let rope_freq_base = md_get("rope.freq_base")
            .and_then(|m| m.to_f32())
            .unwrap_or(DEFAULT_ROPE_FREQUENCY);
        let rope_freq_base_sliding = md_get("rope.local_freq_base")
            .and_then(|m| m.to_f32())
            .unwrap_or(DEFAULT_ROPE_FREQUENCY_SLIDING);
        let max_positions = max_positions.min(context_length);

        let tok_embeddings = ct
            .tensor(reader, "token_embd.weight", device)?
            .dequantize(device)?;
        let norm = RmsNorm::from_qtensor(
            ct.tensor(reader, "output_norm.weight", device)?,
            rms_norm_eps,
        )?;
        let output = match ct.tensor(reader, "output.weight", device) {
            Ok(t) => t,
            Err(_) => ct.tensor(reader, "token_embd.weight", device)?,
        };
        let ropes = [
            Rope::new(key_length, rope_freq_base, max_positions, device)?,
            Rope::new(key_length, rope_freq_base_sliding, max_positions, device)?,
        ];

        let mut layers = Vec::with_capacity(block_count);
        for i in 0..block_count {
            let p = format!("blk.{i}");
            let mut t = |name: &str| ct.tensor(reader, &format!("{p}.{name}"), device);
            let is_sliding = (i + 1) % sliding_window_type > 0;
            layers.push(Layer {
                wq: QMatMul::from_qtensor(t("attn_q.weight")?)?,
                wk: QMatMul::from_qtensor(t("attn_k.weight")?)?,
                wv: QMatMul::from_qtensor(t("attn_v.weight")?)?,
                wo: QMatMul::from_qtensor(t("attn_output.weight")?)?,
                q_norm: RmsNorm::from_qtensor(t("attn_q_norm.weight")?, rms_norm_eps)?,
                k_norm: RmsNorm::from_qtensor(t("attn_k_norm.weight")?, rms_norm_eps)?,
                attention_norm: RmsNorm::from_qtensor(t("attn_norm.weight")?, rms_norm_eps)?,
                post_attention_norm: RmsNorm::from_qtensor(
                    t("post_attention_norm.weight")?,
                    rms_norm_eps,
                )?,
                ffn_norm: RmsNorm::from_qtensor(t("ffn_norm.weight")?, rms_norm_eps)?,
                post_ffn_norm: RmsNorm::from_qtensor(t("post_ffw_norm.weight")?, rms_norm_eps)?,
                mlp: Mlp {
                    gate: QMatMul::from_qtensor(t("ffn_gate.weight")?)?,
                    up: QMatMul::from_qtensor(t("ffn_up.weight")?)?,
                    down: QMatMul::from_qtensor(t("ffn_down.weight")?)?,
                },
                n_head: head_count,
                n_kv_head: head_count_kv,
                head_dim: key_length,
                sliding_window: is_sliding.then_some(sliding_window_size),
                rope: usize::from(is_sliding),
                kv_cache: None,
            });
        }
        Ok(Self {
            tok_embeddings: Embedding::new(tok_embeddings, embedding_length),
            embedding_length,
            layers,
            norm,
            output: QMatMul::from_qtensor(output)?,
            ropes,
            max_positions,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    pub fn hidden_size(&self) -> usize {
        self.embedding_length
    }

    /// Keeps the first `len` cached positions of every layer and drops the rest.
    pub fn truncate_kv(&mut self, len: usize) -> Result<()> {
        for layer in &mut self.layers {
            if len == 0 {
                layer.kv_cache = None;
            } else if let Some((k, v)) = &layer.kv_cache {
                if len < k.dim(2)? {
                    layer.kv_cache = Some((
                        k.narrow(2, 0, len)?.contiguous()?,
                        v.narrow(2, 0, len)?.contiguous()?,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Same contract as the Qwen2 model: appends `x` at `index_pos`, returns the last position's
    /// logits (batch, vocab) and final-norm hidden state (batch, hidden).
    pub fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<(Tensor, Tensor)> {
        let (_b_sz, seq_len) = x.dims2()?;
        if index_pos + seq_len > self.max_positions {
            candle_core::bail!(
                "context overflow: {} positions, the cache holds {}",
                index_pos + seq_len,
                self.max_positions
            );
        }
        let mut h = self.tok_embeddings.forward(x)?;
        h = (h * (self.embedding_length as f64).sqrt())?;
        for layer in &mut self.layers {
            let residual = &h;
            let a = layer.attention_norm.forward(&h)?;
            let a = layer.attention(&a, index_pos, &self.ropes[layer.rope])?;
            let a = layer.post_attention_norm.forward(&a)?;
            let x = (a + residual)?;
            let residual = &x;
            let m = layer.mlp.forward(&layer.ffn_norm.forward(&x)?)?;
            let m = layer.post_ffn_norm.forward(&m)?;
            h = (m + residual)?;
        }
        let last = h.i((.., seq_len - 1, ..))?;
        let last = self.norm.forward(&last)?.contiguous()?;
        let logits = self.output.forward(&last)?;
        Ok((logits, last))
    }
}
