//! Qwen2 / Qwen2.5 decoder (GGUF, quantized weights) with a truncatable KV cache.
//!
//! Adapted from candle-transformers 0.11.1 `models/quantized_qwen2.rs` (Apache-2.0/MIT,
//! <https://github.com/huggingface/candle>), itself following llama.cpp's `qwen2` graph
//! (Qwen2 technical report, arXiv:2407.10671). Changes here: the cache can be cut back to any
//! prefix length ([`ModelWeights::truncate_kv`]) so a conversation re-uses the shared prompt
//! prefix and speculative prefill can be rolled back; `forward` returns the final-norm hidden
//! state of the last position alongside its logits (the dual-path verifier's features); the rotary
//! table is sized to the configured context instead of the model's full 32k.

use candle_core::quantized::{gguf_file, QMatMul};
use candle_core::{DType, Device, IndexOp, Module, Result, Tensor};
use candle_nn::Embedding;
use candle_transformers::quantized_nn::RmsNorm;
use candle_transformers::utils::repeat_kv;

/// Rows (prompt positions in one forward pass) from which a projection uses the dense copy.
const DENSE_FROM_ROWS: usize = 4;

/// A weight matrix kept quantized for decoding and, optionally, dequantized to f32 as well for
/// prefill. candle's quantized CPU matmul costs the same per row whatever the row count (each row
/// is its own int8 dot-product sweep over the weights), so a 60-token prompt took as long as
/// decoding 60 tokens; a dense f32 GEMM amortises the weights over the rows and runs several
/// times faster from a handful of rows on. One row (decoding) stays on the quantized path, which
/// reads 7× fewer bytes.
#[derive(Debug, Clone)]
struct Proj {
    quantized: QMatMul,
    dense: Option<QMatMul>,
}

impl Proj {
    fn new(q: candle_core::quantized::QTensor, dense: bool) -> Result<Self> {
        let dense = if dense {
            Some(QMatMul::Tensor(q.dequantize(&q.device())?))
        } else {
            None
        };
        Ok(Self {
            quantized: QMatMul::from_qtensor(q)?,
            dense,
        })
    }
}

impl Module for Proj {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let rows = xs.elem_count() / xs.dim(candle_core::D::Minus1)?.max(1);
        match &self.dense {
            Some(d) if rows >= DENSE_FROM_ROWS => d.forward(xs),
            _ => self.quantized.forward(xs),
        }
    }
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Proj,
    down: Proj,
    up: Proj,
}

impl Module for Mlp {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let gate = self.gate.forward(xs)?;
        let up = self.up.forward(xs)?;
        self.down.forward(&(candle_nn::ops::silu(&gate)? * up)?)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    wq: Proj,
    wk: Proj,
    wv: Proj,
    bq: Tensor,
    bk: Tensor,
    bv: Tensor,
    wo: Proj,
    attention_norm: RmsNorm,
    mlp: Mlp,
    ffn_norm: RmsNorm,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    /// (k, v), each (batch, n_kv_head, positions, head_dim).
    kv_cache: Option<(Tensor, Tensor)>,
}

impl Layer {
    fn attention(
        &mut self,
        x: &Tensor,
        mask: Option<&Tensor>,
        index_pos: usize,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b_sz, seq_len, n_embd) = x.dims3()?;
        let q = self.wq.forward(x)?.broadcast_add(&self.bq)?;
        let k = self.wk.forward(x)?.broadcast_add(&self.bk)?;
        let v = self.wv.forward(x)?.broadcast_add(&self.bv)?;
        let q = q
            .reshape((b_sz, seq_len, self.n_head, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let k = k
            .reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let v = v
            .reshape((b_sz, seq_len, self.n_kv_head, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?;
        let cos = cos.narrow(0, index_pos, seq_len)?;
        let sin = sin.narrow(0, index_pos, seq_len)?;
        let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
        let k = candle_nn::rotary_emb::rope(&k, &cos, &sin)?;

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
        let att = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let att = match mask {
            None => att,
            Some(mask) => {
                let mask = mask.broadcast_as(att.shape())?;
                let neg_inf =
                    Tensor::new(f32::NEG_INFINITY, att.device())?.broadcast_as(att.shape())?;
                mask.where_cond(&neg_inf, &att)?
            }
        };
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v.contiguous()?)?;
        let y = y.transpose(1, 2)?.reshape((b_sz, seq_len, n_embd))?;
        self.wo.forward(&y)
    }
}

pub struct ModelWeights {
    tok_embeddings: Embedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
    hidden_size: usize,
}

fn rope_tables(
    head_dim: usize,
    freq_base: f32,
    len: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let theta: Vec<f32> = (0..head_dim)
        .step_by(2)
        .map(|i| 1f32 / freq_base.powf(i as f32 / head_dim as f32))
        .collect();
    let theta = Tensor::new(theta.as_slice(), device)?;
    let idx_theta = Tensor::arange(0, len as u32, device)?
        .to_dtype(DType::F32)?
        .reshape((len, 1))?
        .matmul(&theta.reshape((1, theta.elem_count()))?)?;
    Ok((idx_theta.cos()?, idx_theta.sin()?))
}

impl ModelWeights {
    /// Loads the weights; positions are limited to `min(max_positions, qwen2.context_length)`.
    pub fn from_gguf<R: std::io::Seek + std::io::Read>(
        ct: &gguf_file::Content,
        reader: &mut R,
        device: &Device,
        max_positions: usize,
        dense_prefill: bool,
    ) -> Result<Self> {
        let md_get = |s: &str| match ct.metadata.get(s) {
            None => candle_core::bail!("cannot find {s} in GGUF metadata"),
            Some(v) => Ok(v),
        };
        let head_count = md_get("qwen2.attention.head_count")?.to_u32()? as usize;
        let head_count_kv = md_get("qwen2.attention.head_count_kv")?.to_u32()? as usize;
        let embedding_length = md_get("qwen2.embedding_length")?.to_u32()? as usize;
        let context_length = md_get("qwen2.context_length")?.to_u32()? as usize;
        let block_count = md_get("qwen2.block_count")?.to_u32()? as usize;
        let rms_norm_eps = md_get("qwen2.attention.layer_norm_rms_epsilon")?.to_f32()? as f64;
        let rope_freq_base = md_get("qwen2.rope.freq_base")
            .and_then(|m| m.to_f32())
            .unwrap_or(10000f32);
        let head_dim = embedding_length / head_count;
        let max_positions = max_positions.min(context_length);

        let tok_embeddings = ct
            .tensor(reader, "token_embd.weight", device)?
            .dequantize(device)?;
        let norm = RmsNorm::from_qtensor(
            ct.tensor(reader, "output_norm.weight", device)?,
            rms_norm_eps,
        )?;
        let output = match ct.tensor(reader, "output.weight", device) {
            Ok(v) => QMatMul::from_qtensor(v)?,
            // Tied embeddings (the 0.5B model has no separate output matrix).
            Err(_) => QMatMul::from_qtensor(ct.tensor(reader, "token_embd.weight", device)?)?,
        };
        let (cos, sin) = rope_tables(head_dim, rope_freq_base, max_positions, device)?;

        let mut layers = Vec::with_capacity(block_count);
        for i in 0..block_count {
            let p = format!("blk.{i}");
            let mut t = |name: &str| ct.tensor(reader, &format!("{p}.{name}"), device);
            let layer = Layer {
                wq: Proj::new(t("attn_q.weight")?, dense_prefill)?,
                wk: Proj::new(t("attn_k.weight")?, dense_prefill)?,
                wv: Proj::new(t("attn_v.weight")?, dense_prefill)?,
                bq: t("attn_q.bias")?.dequantize(device)?,
                bk: t("attn_k.bias")?.dequantize(device)?,
                bv: t("attn_v.bias")?.dequantize(device)?,
                wo: Proj::new(t("attn_output.weight")?, dense_prefill)?,
                attention_norm: RmsNorm::from_qtensor(t("attn_norm.weight")?, rms_norm_eps)?,
                mlp: Mlp {
                    gate: Proj::new(t("ffn_gate.weight")?, dense_prefill)?,
                    down: Proj::new(t("ffn_down.weight")?, dense_prefill)?,
                    up: Proj::new(t("ffn_up.weight")?, dense_prefill)?,
                },
                ffn_norm: RmsNorm::from_qtensor(t("ffn_norm.weight")?, rms_norm_eps)?,
                n_head: head_count,
                n_kv_head: head_count_kv,
                head_dim,
                kv_cache: None,
            };
            layers.push(layer);
        }
        Ok(Self {
            tok_embeddings: Embedding::new(tok_embeddings, embedding_length),
            layers,
            norm,
            output,
            cos,
            sin,
            max_positions,
            hidden_size: embedding_length,
        })
    }

    /// The most positions (prompt + generated tokens) the cache can hold.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    pub fn hidden_size(&self) -> usize {
        self.hidden_size
    }

    /// Keeps the first `len` cached positions of every layer and drops the rest.
    pub fn truncate_kv(&mut self, len: usize) -> Result<()> {
        for layer in &mut self.layers {
            if len == 0 {
                layer.kv_cache = None;
            } else if let Some((k, v)) = &layer.kv_cache {
                let have = k.dim(2)?;
                if len < have {
                    // `contiguous` copies, so the dropped tail is really freed.
                    layer.kv_cache = Some((
                        k.narrow(2, 0, len)?.contiguous()?,
                        v.narrow(2, 0, len)?.contiguous()?,
                    ));
                }
            }
        }
        Ok(())
    }

    /// Runs `x` (batch, seq) at positions `index_pos..index_pos + seq`, appending to the cache
    /// (which must hold exactly `index_pos` positions). Returns the logits (batch, vocab) and the
    /// final-norm hidden state (batch, hidden) of the last position.
    pub fn forward(&mut self, x: &Tensor, index_pos: usize) -> Result<(Tensor, Tensor)> {
        let (_b_sz, seq_len) = x.dims2()?;
        if index_pos + seq_len > self.max_positions {
            candle_core::bail!(
                "context overflow: {} positions, the cache holds {}",
                index_pos + seq_len,
                self.max_positions
            );
        }
        let mask = if seq_len == 1 {
            None
        } else {
            Some(candle_transformers::utils::build_causal_mask(
                seq_len,
                index_pos,
                x.device(),
            )?)
        };
        let mut h = self.tok_embeddings.forward(x)?;
        for layer in &mut self.layers {
            let residual = &h;
            let a = layer.attention_norm.forward(&h)?;
            let a = layer.attention(&a, mask.as_ref(), index_pos, &self.cos, &self.sin)?;
            let x = (a + residual)?;
            let residual = &x;
            let m = layer.mlp.forward(&layer.ffn_norm.forward(&x)?)?;
            h = (m + residual)?;
        }
        let h = self.norm.forward(&h)?;
        let last = h.i((.., seq_len - 1, ..))?.contiguous()?;
        let logits = self.output.forward(&last)?;
        Ok((logits, last))
    }
}
