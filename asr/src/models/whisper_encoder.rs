//! Whisper's audio encoder: the same weights (`model.encoder.*`) and arithmetic as candle's
//! `AudioEncoder` (two GELU convolutions, sinusoidal positions, pre-norm residual blocks, q and
//! k each scaled by `head_dim^-0.25`, a final layer norm), tested equal to it.
//!
//! It exists for its GELU: candle's maps scalar `tanhf` over `frames × 4·d` values per block
//! on one thread, the largest single cost of a streaming update after the matmuls (see
//! [`super::fast_gelu`]). The attention and MLP layers are the cached decoder's.

use super::fast_gelu;
use super::whisper_decoder::{layer_norm, Attention, Mlp};
use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Conv1d, Conv1dConfig, LayerNorm, VarBuilder};
use candle_transformers::models::whisper::Config;

struct Block {
    attn: Attention,
    attn_ln: LayerNorm,
    mlp: Mlp,
}

pub struct WhisperEncoder {
    conv1: Conv1d,
    conv2: Conv1d,
    /// `(max_source_positions, d_model)`.
    positions: Tensor,
    blocks: Vec<Block>,
    ln_post: LayerNorm,
}

fn conv(c_in: usize, c_out: usize, stride: usize, vb: VarBuilder) -> Result<Conv1d> {
    let cfg = Conv1dConfig {
        padding: 1,
        stride,
        groups: 1,
        dilation: 1,
        cudnn_fwd_algo: None,
    };
    Ok(Conv1d::new(
        vb.get((c_out, c_in, 3), "weight")?,
        Some(vb.get(c_out, "bias")?),
        cfg,
    ))
}

/// Whisper's positional table: sin of `t / 10000^(i / (d/2 − 1))` for the first half of the
/// channels, cos for the second.
fn sinusoids(length: usize, channels: usize, device: &Device) -> Result<Tensor> {
    let half = channels / 2;
    let step = 10000f32.ln() / (half - 1) as f32;
    let inv: Vec<f32> = (0..half).map(|i| (-(i as f32) * step).exp()).collect();
    let inv = Tensor::new(inv.as_slice(), device)?.unsqueeze(0)?;
    let t = Tensor::arange(0, length as u32, device)?
        .to_dtype(DType::F32)?
        .unsqueeze(1)?;
    let scaled = t.broadcast_mul(&inv)?;
    Tensor::cat(&[scaled.sin()?, scaled.cos()?], 1)
}

impl WhisperEncoder {
    /// `vb` at `model.encoder`.
    pub fn load(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let d = cfg.d_model;
        let h = cfg.encoder_attention_heads;
        let blocks = (0..cfg.encoder_layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Block {
                    attn: Attention::load(d, h, vb.pp("self_attn"), false)?,
                    attn_ln: layer_norm(d, vb.pp("self_attn_layer_norm"))?,
                    mlp: Mlp::load(d, vb.clone(), false)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            conv1: conv(cfg.num_mel_bins, d, 1, vb.pp("conv1"))?,
            conv2: conv(d, d, 2, vb.pp("conv2"))?,
            positions: sinusoids(cfg.max_source_positions, d, vb.device())?,
            blocks,
            ln_post: layer_norm(d, vb.pp("layer_norm"))?,
        })
    }

    /// Log-mel `(1, n_mels, frames)` → `(1, ⌈frames / 2⌉, d_model)`.
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        let x = fast_gelu::gelu(&self.conv1.forward(mel)?)?;
        let x = fast_gelu::gelu(&self.conv2.forward(&x)?)?.transpose(1, 2)?;
        let n = x.dim(1)?;
        let mut x = x.broadcast_add(&self.positions.narrow(0, 0, n)?)?;
        for b in &self.blocks {
            let h = b.attn_ln.forward(&x)?;
            let (k, v) = b.attn.kv(&h, false)?;
            let (a, _) = b.attn.attend(&h, &k, &v, None, false)?;
            x = (x + a)?;
            x = (&x + b.mlp.forward(&x, false)?)?;
        }
        self.ln_post.forward(&x)
    }
}
