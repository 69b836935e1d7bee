//! Moonshine streaming (Moonshine v2): a sliding-window encoder over raw 16 kHz audio and a
//! RoPE transformer decoder with cross-attention, in candle.
//!
//! Paper: "Moonshine v2" (arXiv 2602.12241). Reference implementation, ported module by module and
//! proven by parity on random weights (`asr/tests/moonshine_parity.rs`): PyPI `transformers` 5.23,
//! `models/moonshine_streaming/{configuration,modeling}_moonshine_streaming.py`. A checkpoint
//! directory written by that code (`config.json` + `model.safetensors`, optionally
//! `tokenizer.json`) loads as-is.
//!
//! Layout (batch size 1 throughout; tensors are time-major `[frames, channels]`):
//! - front end: 5 ms frames (80 samples) → per-frame CMVN → `asinh(exp(log_k)·x)` → `linear` + SiLU
//!   → two causal stride-2 convolutions (kernel 5, left pad 4) → 50 Hz frames;
//! - encoder: pre-norm layers (`LayerNorm` without affine times `gamma + 1`), attention without
//!   positions restricted per layer to a `(left, right)` window: frame `t` sees `t-left+1 ..= t+right-1`;
//!   then `final_norm`;
//! - decoder: `pos_emb` added to the encoder frames (+ `proj` when widths differ), layers of causal
//!   self-attention with interleaved partial RoPE, cross-attention, gated SiLU MLP; `norm`, `proj_out`.
//!
//! The offline encoder here computes every layer over the whole sequence with the window mask; the
//! streaming encoder (`crate::moonshine`) reuses the same per-layer pieces on bounded caches.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

use crate::AsrError;

/// Encoder hyper-parameters (`encoder_config` in `config.json`), defaults as in the reference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_gelu")]
    pub hidden_act: String,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    #[serde(default = "d_heads")]
    pub num_key_value_heads: usize,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default = "d_sample_rate")]
    pub sample_rate: u32,
    #[serde(default = "d_frame_ms")]
    pub frame_ms: f64,
    #[serde(default = "d_windows")]
    pub sliding_windows: Vec<(usize, usize)>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    // Generic fields `PreTrainedConfig` writes; accepted and ignored.
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub transformers_version: Option<String>,
}

/// The checkpoint's `config.json` (`MoonshineStreamingConfig`), defaults as in the reference.
/// Unknown fields are refused, so a config this port does not understand fails loudly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub encoder_config: EncoderConfig,
    #[serde(default = "d_vocab")]
    pub vocab_size: usize,
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    #[serde(default = "d_inter")]
    pub intermediate_size: usize,
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// Not declared by the reference config class but read by its decoder; written when set.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "d_silu")]
    pub hidden_act: String,
    #[serde(default = "d_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub use_cache: Option<bool>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    #[serde(default = "d_bos")]
    pub bos_token_id: Option<u32>,
    #[serde(default = "d_eos")]
    pub eos_token_id: Option<TokenIds>,
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub attention_dropout: f64,
    #[serde(default)]
    pub decoder_start_token_id: Option<u32>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// Zero-padding of q/k/v along the head dimension before attention: it changes neither the
    /// scores (zeros add nothing to dot products; the scale uses the unpadded head_dim) nor the
    /// sliced-back output, so it is accepted and has no effect here.
    #[serde(default)]
    pub pad_head_dim_to_multiple_of: Option<usize>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub is_encoder_decoder: Option<bool>,
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default)]
    pub architectures: Option<Vec<String>>,
    #[serde(default)]
    pub dtype: Option<String>,
    #[serde(default)]
    pub torch_dtype: Option<String>,
    #[serde(default)]
    pub transformers_version: Option<String>,
}

/// `eos_token_id` may be one id or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RopeParameters {
    #[serde(default = "d_rope_type")]
    pub rope_type: String,
    #[serde(default = "d_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

fn d_hidden() -> usize {
    320
}
fn d_inter() -> usize {
    1280
}
fn d_gelu() -> String {
    "gelu".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_layers() -> usize {
    6
}
fn d_heads() -> usize {
    8
}
fn d_max_pos() -> usize {
    4096
}
fn d_sample_rate() -> u32 {
    16_000
}
fn d_frame_ms() -> f64 {
    5.0
}
fn d_windows() -> Vec<(usize, usize)> {
    vec![(16, 4), (16, 4), (16, 0), (16, 0), (16, 4), (16, 4)]
}
fn d_vocab() -> usize {
    32768
}
fn d_bos() -> Option<u32> {
    Some(1)
}
fn d_eos() -> Option<TokenIds> {
    Some(TokenIds::One(2))
}
fn d_rope_type() -> String {
    "default".into()
}
fn d_theta() -> f64 {
    10_000.0
}

/// Activation functions by their `transformers` `ACT2FN` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu`: the exact erf form.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`.
    GeluTanh,
    Silu,
    Relu,
}

impl Activation {
    fn parse(name: &str, field: &str) -> Result<Self, AsrError> {
        Ok(match name {
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            "relu" => Self::Relu,
            other => {
                return Err(AsrError::Config(format!(
                    "{field}: unsupported activation `{other}`"
                )))
            }
        })
    }

    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Gelu => xs.gelu_erf(),
            Self::GeluTanh => xs.gelu(),
            Self::Silu => xs.silu(),
            Self::Relu => xs.relu(),
        }
    }
}

impl Config {
    /// Reads and checks `config.json`; unknown fields and unsupported values are errors naming them.
    pub fn from_file(path: &Path) -> Result<Self, AsrError> {
        let text = std::fs::read_to_string(path).map_err(|source| AsrError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&text).map_err(|e| match e {
            AsrError::Config(msg) => AsrError::Config(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Self, AsrError> {
        let cfg: Config =
            serde_json::from_str(text).map_err(|e| AsrError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), AsrError> {
        let e = &self.encoder_config;
        let bad = |m: String| Err(AsrError::Config(m));
        if e.sliding_windows.len() != e.num_hidden_layers {
            return bad(format!(
                "encoder_config.sliding_windows has {} entries for {} layers",
                e.sliding_windows.len(),
                e.num_hidden_layers
            ));
        }
        if let Some(i) = e.sliding_windows.iter().position(|w| w.0 == 0) {
            return bad(format!(
                "encoder_config.sliding_windows[{i}]: left window 0 leaves frames with nothing to attend to"
            ));
        }
        if e.num_attention_heads == 0
            || e.num_key_value_heads == 0
            || !e.num_attention_heads.is_multiple_of(e.num_key_value_heads)
        {
            return bad(format!(
                "encoder_config.num_key_value_heads {} must divide num_attention_heads {}",
                e.num_key_value_heads, e.num_attention_heads
            ));
        }
        if self.num_attention_heads == 0 {
            return bad("num_attention_heads must be > 0".into());
        }
        // The reference decoder reshapes queries with num_key_value_heads, which only computes
        // multi-head attention when both are equal; anything else would silently differ.
        if let Some(kv) = self.num_key_value_heads {
            if kv != self.num_attention_heads {
                return bad(format!(
                    "num_key_value_heads {kv} != num_attention_heads {}: the reference decoder only supports equal counts",
                    self.num_attention_heads
                ));
            }
        }
        if self.frame_len() == 0 {
            return bad("encoder_config: sample_rate * frame_ms gives an empty frame".into());
        }
        let rope = self.rope();
        if rope.rope_type != "default" {
            return bad(format!(
                "rope_parameters.rope_type `{}` is not supported (only `default`)",
                rope.rope_type
            ));
        }
        if self.rotary_dim() > self.dec_head_dim() {
            return bad(format!(
                "rope_parameters.partial_rotary_factor gives {} rotary dims for head_dim {}",
                self.rotary_dim(),
                self.dec_head_dim()
            ));
        }
        Activation::parse(&e.hidden_act, "encoder_config.hidden_act")?;
        Activation::parse(&self.hidden_act, "hidden_act")?;
        Ok(())
    }

    /// Samples per front-end frame (80 at 16 kHz, 5 ms).
    pub fn frame_len(&self) -> usize {
        let e = &self.encoder_config;
        (f64::from(e.sample_rate) * e.frame_ms / 1000.0).round() as usize
    }

    pub fn enc_head_dim(&self) -> usize {
        let e = &self.encoder_config;
        e.head_dim
            .unwrap_or(e.hidden_size / e.num_attention_heads.max(1))
    }

    pub fn dec_head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn rope(&self) -> RopeParameters {
        self.rope_parameters.clone().unwrap_or(RopeParameters {
            rope_type: d_rope_type(),
            rope_theta: d_theta(),
            partial_rotary_factor: Some(0.8),
        })
    }

    /// Frequencies of the decoder RoPE: `int(head_dim * factor)` split in pairs, rounded up.
    fn rope_freqs(&self) -> usize {
        let factor = self.rope().partial_rotary_factor.unwrap_or(1.0);
        let dim = (self.dec_head_dim() as f64 * factor) as usize;
        dim.div_ceil(2)
    }

    /// Dims the decoder RoPE rotates (`2 * frequencies`, may exceed `int(head_dim * factor)` by one).
    pub fn rotary_dim(&self) -> usize {
        2 * self.rope_freqs()
    }

    /// Frames of right context the whole encoder needs: per layer `max(right - 1, 0)`.
    pub fn encoder_lookahead(&self) -> usize {
        self.encoder_config
            .sliding_windows
            .iter()
            .map(|&(_, r)| r.saturating_sub(1))
            .sum()
    }

    pub fn decoder_start_token(&self) -> u32 {
        self.decoder_start_token_id
            .or(self.bos_token_id)
            .unwrap_or(1)
    }

    pub fn eos_tokens(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(TokenIds::One(t)) => vec![*t],
            Some(TokenIds::Many(v)) => v.clone(),
            None => Vec::new(),
        }
    }
}

/// Loads tensors and names the full tensor path in every failure.
struct Loader<'a> {
    vb: VarBuilder<'a>,
    file: String,
}

impl<'a> Loader<'a> {
    fn pp(&self, s: &str) -> Loader<'a> {
        Loader {
            vb: self.vb.pp(s),
            file: self.file.clone(),
        }
    }

    fn get(&self, shape: &[usize], name: &str) -> Result<Tensor, AsrError> {
        let full = if self.vb.prefix().is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.vb.prefix())
        };
        if !self.vb.contains_tensor(name) {
            return Err(AsrError::Checkpoint {
                path: self.file.clone(),
                reason: format!("missing tensor `{full}` (expected shape {shape:?})"),
            });
        }
        let t =
            self.vb
                .get_unchecked_dtype(name, DType::F32)
                .map_err(|e| AsrError::Checkpoint {
                    path: self.file.clone(),
                    reason: format!("tensor `{full}`: {e}"),
                })?;
        if t.dims() != shape {
            return Err(AsrError::Checkpoint {
                path: self.file.clone(),
                reason: format!(
                    "tensor `{full}` has shape {:?}, expected {shape:?}",
                    t.dims()
                ),
            });
        }
        Ok(t)
    }

    fn linear(
        &self,
        name: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
    ) -> Result<Linear, AsrError> {
        let l = self.pp(name);
        let w = l.get(&[out_dim, in_dim], "weight")?;
        let b = if bias {
            Some(l.get(&[out_dim], "bias")?)
        } else {
            None
        };
        Ok(Linear::new(w, b))
    }
}

/// `LayerNorm` without affine, times a weight; `beta` is zero unless the checkpoint has one.
#[derive(Debug, Clone)]
struct Norm {
    alpha: Tensor,
    beta: Tensor,
}

const NORM_EPS: f32 = 1e-5;

impl Norm {
    /// Encoder norm: the weight is `gamma + 1` (unit offset).
    fn gamma(l: &Loader, name: &str, dim: usize) -> Result<Self, AsrError> {
        let g = l.pp(name).get(&[dim], "gamma")?;
        let alpha = (g + 1.0)?;
        let beta = alpha.zeros_like()?;
        Ok(Self { alpha, beta })
    }

    /// Decoder norm: `nn.LayerNorm(bias=False)`.
    fn weight(l: &Loader, name: &str, dim: usize) -> Result<Self, AsrError> {
        let alpha = l.pp(name).get(&[dim], "weight")?;
        let beta = alpha.zeros_like()?;
        Ok(Self { alpha, beta })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(xs, &self.alpha, &self.beta, NORM_EPS)
    }
}

fn softmax_attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    mask: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    // q [h, m, d], k/v [h, n, d], mask [m, n] additive.
    let mut s = (q.matmul(&k.t()?)? * scale)?;
    if let Some(m) = mask {
        s = s.broadcast_add(m)?;
    }
    candle_nn::ops::softmax_last_dim(&s)?.matmul(v)
}

/// `[n, heads*dim]` → `[heads, n, dim]`.
fn split_heads(x: &Tensor, heads: usize, dim: usize) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    x.reshape((n, heads, dim))?.transpose(0, 1)?.contiguous()
}

/// `[heads, n, dim]` → `[n, heads*dim]`.
fn merge_heads(x: &Tensor) -> candle_core::Result<Tensor> {
    let (h, n, d) = x.dims3()?;
    x.transpose(0, 1)?.contiguous()?.reshape((n, h * d))
}

fn repeat_kv(x: Tensor, n_rep: usize) -> candle_core::Result<Tensor> {
    if n_rep == 1 {
        return Ok(x);
    }
    let (h, n, d) = x.dims3()?;
    x.unsqueeze(1)?
        .expand((h, n_rep, n, d))?
        .reshape((h * n_rep, n, d))
}

/// Additive window mask for queries at absolute frames `q0..q0+m` over keys `k0..k0+n`, exactly
/// the reference's `sliding_window_mask_function`.
pub(crate) fn window_mask(
    q0: usize,
    m: usize,
    k0: usize,
    n: usize,
    window: (usize, usize),
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (left, right) = window;
    let mut data = vec![0f32; m * n];
    for i in 0..m {
        let t = (q0 + i) as i64;
        for j in 0..n {
            let dist = t - (k0 + j) as i64;
            let ok = (dist >= 0 && dist < left as i64) || (dist < 0 && -dist < right as i64);
            if !ok {
                data[i * n + j] = f32::NEG_INFINITY;
            }
        }
    }
    Tensor::from_vec(data, (m, n), device)
}

/// Causal front end: raw audio → 50 Hz frames.
#[derive(Debug, Clone)]
pub struct FrontEnd {
    k: f32,
    linear: Linear,
    pub(crate) conv1_w: Tensor,
    pub(crate) conv1_b: Tensor,
    pub(crate) conv2_w: Tensor,
    pub(crate) conv2_b: Tensor,
    frame_len: usize,
    hidden: usize,
}

/// Causal left padding of both convolutions (`kernel - 1`).
pub(crate) const CONV_LEFT_PAD: usize = 4;
pub(crate) const CONV_STRIDE: usize = 2;

impl FrontEnd {
    fn load(l: &Loader, cfg: &Config) -> Result<Self, AsrError> {
        let c = cfg.encoder_config.hidden_size;
        let fl = cfg.frame_len();
        let log_k = l.pp("comp").get(&[], "log_k")?;
        let k = log_k.exp()?.to_scalar::<f32>()?;
        let k_size = CONV_LEFT_PAD + 1;
        Ok(Self {
            k,
            linear: l.linear("linear", fl, c, false)?,
            conv1_w: l.pp("conv1").get(&[2 * c, c, k_size], "weight")?,
            conv1_b: l.pp("conv1").get(&[2 * c], "bias")?,
            conv2_w: l.pp("conv2").get(&[c, 2 * c, k_size], "weight")?,
            conv2_b: l.pp("conv2").get(&[c], "bias")?,
            frame_len: fl,
            hidden: c,
        })
    }

    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    /// 200 Hz embeddings of whole frames: CMVN, asinh compression, `linear`, SiLU. `valid` of the
    /// frames are real; the rest are the processor's zero padding, whose embedding the reference
    /// zeroes through its padding mask.
    pub(crate) fn embed_frames(
        &self,
        samples: &[f32],
        valid: usize,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let fl = self.frame_len;
        let n = samples.len() / fl;
        let mut comp = Vec::with_capacity(n * fl);
        for frame in samples.chunks_exact(fl) {
            let mean = frame.iter().sum::<f32>() / fl as f32;
            let var = frame.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / fl as f32;
            let rms = (var + 1e-6).sqrt();
            comp.extend(frame.iter().map(|x| (self.k * ((x - mean) / rms)).asinh()));
        }
        let x = Tensor::from_vec(comp, (n, fl), device)?;
        let h = self.linear.forward(&x)?.silu()?;
        if valid >= n {
            return Ok(h);
        }
        let keep = h.narrow(0, 0, valid)?;
        let zeros = Tensor::zeros((n - valid, self.hidden), DType::F32, device)?;
        Tensor::cat(&[&keep, &zeros], 0)
    }

    /// One causal stride-2 convolution over time-major rows `[n, c_in]` whose first
    /// `CONV_LEFT_PAD` rows are the left context; returns `[n_out, c_out]`.
    pub(crate) fn conv(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.t()?.unsqueeze(0)?.conv1d(w, 0, CONV_STRIDE, 1, 1)?;
        y.squeeze(0)?.t()?.broadcast_add(b)
    }

    /// Offline front end over a whole utterance (the reference processor's padding + mask).
    pub fn forward(&self, samples: &[f32], device: &Device) -> candle_core::Result<Tensor> {
        let fl = self.frame_len;
        let valid = samples.len() / fl;
        let total = samples.len().div_ceil(fl);
        let mut padded = samples.to_vec();
        padded.resize(total * fl, 0.0);
        let h = self.embed_frames(&padded, valid, device)?;
        let pad1 = Tensor::zeros((CONV_LEFT_PAD, self.hidden), DType::F32, device)?;
        let h = Self::conv(&Tensor::cat(&[&pad1, &h], 0)?, &self.conv1_w, &self.conv1_b)?.silu()?;
        let pad2 = Tensor::zeros((CONV_LEFT_PAD, 2 * self.hidden), DType::F32, device)?;
        Self::conv(&Tensor::cat(&[&pad2, &h], 0)?, &self.conv2_w, &self.conv2_b)
    }
}

/// One encoder layer; the streaming encoder drives the same pieces on its caches.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    fc1: Linear,
    fc2: Linear,
    norm1: Norm,
    norm2: Norm,
    act: Activation,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    pub window: (usize, usize),
}

impl EncoderLayer {
    fn load(l: &Loader, cfg: &Config, idx: usize) -> Result<Self, AsrError> {
        let e = &cfg.encoder_config;
        let (c, hd) = (e.hidden_size, cfg.enc_head_dim());
        let a = l.pp("self_attn");
        let bias = e.attention_bias;
        let m = l.pp("mlp");
        Ok(Self {
            q: a.linear("q_proj", c, e.num_attention_heads * hd, bias)?,
            k: a.linear("k_proj", c, e.num_key_value_heads * hd, bias)?,
            v: a.linear("v_proj", c, e.num_key_value_heads * hd, bias)?,
            o: a.linear("o_proj", e.num_attention_heads * hd, c, bias)?,
            fc1: m.linear("fc1", c, e.intermediate_size, true)?,
            fc2: m.linear("fc2", e.intermediate_size, c, true)?,
            norm1: Norm::gamma(l, "input_layernorm", c)?,
            norm2: Norm::gamma(l, "post_attention_layernorm", c)?,
            act: Activation::parse(&e.hidden_act, "encoder_config.hidden_act")?,
            heads: e.num_attention_heads,
            kv_heads: e.num_key_value_heads,
            head_dim: hd,
            window: e.sliding_windows[idx],
        })
    }

    /// Queries `[heads, n, d]`, keys and values `[kv_heads, n, d]` of input rows `[n, c]`.
    pub(crate) fn qkv(&self, xs: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let h = self.norm1.forward(xs)?;
        let q = split_heads(&self.q.forward(&h)?, self.heads, self.head_dim)?;
        let k = split_heads(&self.k.forward(&h)?, self.kv_heads, self.head_dim)?;
        let v = split_heads(&self.v.forward(&h)?, self.kv_heads, self.head_dim)?;
        Ok((q, k, v))
    }

    /// Finishes the layer for query rows: windowed attention over `k`/`v` (whose first row is
    /// absolute frame `k0`), residual, MLP. `q0` is the absolute frame of the first query.
    pub(crate) fn finish(
        &self,
        residual: &Tensor,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        q0: usize,
        k0: usize,
    ) -> candle_core::Result<Tensor> {
        let m = q.dim(1)?;
        let n = k.dim(1)?;
        let mask = window_mask(q0, m, k0, n, self.window, q.device())?;
        let rep = self.heads / self.kv_heads;
        let q = q.contiguous()?;
        let k = repeat_kv(k.contiguous()?, rep)?;
        let v = repeat_kv(v.contiguous()?, rep)?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let a = softmax_attend(&q, &k, &v, scale, Some(&mask))?;
        let x = (residual + self.o.forward(&merge_heads(&a)?)?)?;
        let h = self.norm2.forward(&x)?;
        let h = self.fc2.forward(&self.act.apply(&self.fc1.forward(&h)?)?)?;
        x + h
    }

    /// Whole-sequence layer. Queries go in blocks, each against only the keys its window can
    /// reach, so long inputs cost linear time and memory (a dense `T x T` mask would not).
    pub fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        const BLOCK: usize = 256;
        let (q, k, v) = self.qkv(xs)?;
        let t = xs.dim(0)?;
        let (left, right) = self.window;
        let mut out = Vec::with_capacity(t.div_ceil(BLOCK));
        for s in (0..t).step_by(BLOCK) {
            let e = (s + BLOCK).min(t);
            let k0 = s.saturating_sub(left.saturating_sub(1));
            let k1 = (e + right.saturating_sub(1)).min(t);
            out.push(self.finish(
                &xs.narrow(0, s, e - s)?,
                &q.narrow(1, s, e - s)?,
                &k.narrow(1, k0, k1 - k0)?,
                &v.narrow(1, k0, k1 - k0)?,
                s,
                k0,
            )?);
        }
        Tensor::cat(&out, 0)
    }
}

#[derive(Debug, Clone)]
pub struct Encoder {
    pub front: FrontEnd,
    pub layers: Vec<EncoderLayer>,
    final_norm: Norm,
}

impl Encoder {
    fn load(l: &Loader, cfg: &Config) -> Result<Self, AsrError> {
        let n = cfg.encoder_config.num_hidden_layers;
        let lay = l.pp("layers");
        let layers = (0..n)
            .map(|i| EncoderLayer::load(&lay.pp(&i.to_string()), cfg, i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            front: FrontEnd::load(&l.pp("embedder"), cfg)?,
            layers,
            final_norm: Norm::gamma(l, "final_norm", cfg.encoder_config.hidden_size)?,
        })
    }

    pub(crate) fn final_norm(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.final_norm.forward(xs)
    }

    /// Offline encoding of a whole utterance: `[frames, hidden]`.
    pub fn forward(&self, samples: &[f32], device: &Device) -> candle_core::Result<Tensor> {
        let mut x = self.front.forward(samples, device)?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        self.final_norm.forward(&x)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    head_dim: usize,
}

impl Attention {
    fn load(l: &Loader, cfg: &Config, kv_in: usize) -> Result<Self, AsrError> {
        let (h, hd, n) = (cfg.hidden_size, cfg.dec_head_dim(), cfg.num_attention_heads);
        let b = cfg.attention_bias;
        Ok(Self {
            q: l.linear("q_proj", h, n * hd, b)?,
            k: l.linear("k_proj", kv_in, n * hd, b)?,
            v: l.linear("v_proj", kv_in, n * hd, b)?,
            o: l.linear("o_proj", n * hd, h, false)?,
            heads: n,
            head_dim: hd,
        })
    }
}

#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: Attention,
    cross_attn: Attention,
    fc1: Linear,
    fc2: Linear,
    norm1: Norm,
    norm2: Norm,
    norm3: Norm,
    act: Activation,
    inter: usize,
}

/// Decoder caches for one utterance: self-attention keys/values per layer and the
/// cross-attention keys/values of the encoder frames (computed once).
#[derive(Debug, Clone)]
pub struct DecoderState {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    cross_kv: Vec<(Tensor, Tensor)>,
    pos: usize,
}

impl DecoderState {
    /// Tokens fed so far.
    pub fn len(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
}

#[derive(Debug, Clone)]
pub struct Decoder {
    embed: Embedding,
    pos_emb: Tensor,
    proj: Option<Linear>,
    layers: Vec<DecoderLayer>,
    norm: Norm,
    proj_out: Linear,
    inv_freq: Vec<f32>,
    max_positions: usize,
}

impl Decoder {
    fn load(root: &Loader, cfg: &Config) -> Result<Self, AsrError> {
        let l = root.pp("model").pp("decoder");
        let (h, v) = (cfg.hidden_size, cfg.vocab_size);
        let enc_h = cfg.encoder_config.hidden_size;
        let embed_w = l.pp("embed_tokens").get(&[v, h], "weight")?;
        let proj_out_w = if cfg.tie_word_embeddings {
            embed_w.clone()
        } else {
            root.pp("proj_out").get(&[v, h], "weight")?
        };
        let lay = l.pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let p = lay.pp(&i.to_string());
                let m = p.pp("mlp");
                Ok(DecoderLayer {
                    self_attn: Attention::load(&p.pp("self_attn"), cfg, h)?,
                    cross_attn: Attention::load(&p.pp("encoder_attn"), cfg, h)?,
                    fc1: m.linear("fc1", h, 2 * cfg.intermediate_size, true)?,
                    fc2: m.linear("fc2", cfg.intermediate_size, h, true)?,
                    norm1: Norm::weight(&p, "input_layernorm", h)?,
                    norm2: Norm::weight(&p, "post_attention_layernorm", h)?,
                    norm3: Norm::weight(&p, "final_layernorm", h)?,
                    act: Activation::parse(&cfg.hidden_act, "hidden_act")?,
                    inter: cfg.intermediate_size,
                })
            })
            .collect::<Result<Vec<_>, AsrError>>()?;
        let rope = cfg.rope();
        let dim = (cfg.dec_head_dim() as f64 * rope.partial_rotary_factor.unwrap_or(1.0)) as usize;
        let inv_freq = (0..cfg.rope_freqs())
            .map(|i| (1.0 / rope.rope_theta.powf((2 * i) as f64 / dim as f64)) as f32)
            .collect();
        Ok(Self {
            embed: Embedding::new(embed_w, h),
            pos_emb: l
                .pp("pos_emb")
                .get(&[cfg.max_position_embeddings, enc_h], "weight")?,
            proj: if enc_h != h {
                Some(l.linear("proj", enc_h, h, false)?)
            } else {
                None
            },
            layers,
            norm: Norm::weight(&l, "norm", h)?,
            proj_out: Linear::new(proj_out_w, None),
            inv_freq,
            max_positions: cfg.max_position_embeddings,
        })
    }

    /// Most encoder frames one decoder pass can attend to (`max_position_embeddings`).
    pub fn max_encoder_frames(&self) -> usize {
        self.max_positions
    }

    /// Prepares the caches for encoder frames `[frames, enc_hidden]`.
    pub fn start(&self, encoder_frames: &Tensor) -> Result<DecoderState, AsrError> {
        let t = encoder_frames.dim(0)?;
        if t > self.max_positions {
            return Err(AsrError::Config(format!(
                "{t} encoder frames exceed max_position_embeddings {}",
                self.max_positions
            )));
        }
        let mut mem = (encoder_frames + self.pos_emb.narrow(0, 0, t)?)?;
        if let Some(p) = &self.proj {
            mem = p.forward(&mem)?;
        }
        let cross_kv = self
            .layers
            .iter()
            .map(|l| {
                let a = &l.cross_attn;
                let k = split_heads(&a.k.forward(&mem)?, a.heads, a.head_dim)?;
                let v = split_heads(&a.v.forward(&mem)?, a.heads, a.head_dim)?;
                Ok((k, v))
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(DecoderState {
            self_kv: vec![None; self.layers.len()],
            cross_kv,
            pos: 0,
        })
    }

    fn rope(&self, x: &Tensor, pos0: usize) -> candle_core::Result<Tensor> {
        let (h, t, d) = x.dims3()?;
        let nf = self.inv_freq.len();
        let rot = 2 * nf;
        if nf == 0 {
            return Ok(x.clone());
        }
        let mut cos = Vec::with_capacity(t * nf);
        let mut sin = Vec::with_capacity(t * nf);
        for p in pos0..pos0 + t {
            for f in &self.inv_freq {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        let cos = Tensor::from_vec(cos, (t, nf), x.device())?;
        let sin = Tensor::from_vec(sin, (t, nf), x.device())?;
        let xr = x.narrow(2, 0, rot)?.contiguous()?.unsqueeze(0)?;
        let xr = candle_nn::rotary_emb::rope_i(&xr, &cos, &sin)?.squeeze(0)?;
        if rot == d {
            return Ok(xr);
        }
        let _ = h;
        Tensor::cat(&[&xr, &x.narrow(2, rot, d - rot)?], 2)
    }

    /// Feeds `tokens` (after those already in `state`) and returns their logits `[tokens, vocab]`.
    pub fn forward(&self, state: &mut DecoderState, tokens: &[u32]) -> Result<Tensor, AsrError> {
        let device = self.pos_emb.device();
        let t = tokens.len();
        let pos0 = state.pos;
        let ids = Tensor::new(tokens, device)?;
        let mut x = self.embed.forward(&ids)?;
        let causal = if t > 1 {
            let mut m = vec![0f32; t * (pos0 + t)];
            for i in 0..t {
                for j in pos0 + i + 1..pos0 + t {
                    m[i * (pos0 + t) + j] = f32::NEG_INFINITY;
                }
            }
            Some(Tensor::from_vec(m, (t, pos0 + t), device)?)
        } else {
            None
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let a = &layer.self_attn;
            let scale = (a.head_dim as f64).powf(-0.5);
            let h = layer.norm1.forward(&x)?;
            let q = self.rope(&split_heads(&a.q.forward(&h)?, a.heads, a.head_dim)?, pos0)?;
            let k = self.rope(&split_heads(&a.k.forward(&h)?, a.heads, a.head_dim)?, pos0)?;
            let v = split_heads(&a.v.forward(&h)?, a.heads, a.head_dim)?;
            let (k, v) = match state.self_kv[li].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 1)?, Tensor::cat(&[&pv, &v], 1)?),
                None => (k, v),
            };
            let o = softmax_attend(&q, &k, &v, scale, causal.as_ref())?;
            state.self_kv[li] = Some((k, v));
            x = (x + a.o.forward(&merge_heads(&o)?)?)?;

            let c = &layer.cross_attn;
            let h = layer.norm2.forward(&x)?;
            let q = split_heads(&c.q.forward(&h)?, c.heads, c.head_dim)?;
            let (ck, cv) = &state.cross_kv[li];
            let o = softmax_attend(&q, ck, cv, scale, None)?;
            x = (x + c.o.forward(&merge_heads(&o)?)?)?;

            let h = layer.fc1.forward(&layer.norm3.forward(&x)?)?;
            let up = h.narrow(1, 0, layer.inter)?;
            let gate = h.narrow(1, layer.inter, layer.inter)?;
            let h = layer.fc2.forward(&(layer.act.apply(&gate)? * up)?)?;
            x = (x + h)?;
        }
        state.pos += t;
        Ok(self.proj_out.forward(&self.norm.forward(&x)?)?)
    }
}

/// A loaded checkpoint: config, encoder, decoder and (if the directory has one) tokenizer.
pub struct MoonshineStreaming {
    pub config: Config,
    pub encoder: Encoder,
    pub decoder: Decoder,
    pub tokenizer: Option<tokenizers::Tokenizer>,
    pub device: Device,
}

impl std::fmt::Debug for MoonshineStreaming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MoonshineStreaming")
            .field("config", &self.config)
            .field("tokenizer", &self.tokenizer.is_some())
            .finish_non_exhaustive()
    }
}

impl MoonshineStreaming {
    /// Loads `dir/config.json`, `dir/model.safetensors` and `dir/tokenizer.json` (if present), on CPU.
    pub fn load(dir: &Path) -> Result<Self, AsrError> {
        let config = Config::from_file(&dir.join("config.json"))?;
        let weights = dir.join("model.safetensors");
        let data = std::fs::read(&weights).map_err(|source| AsrError::Io {
            path: weights.display().to_string(),
            source,
        })?;
        let device = Device::Cpu;
        let vb = VarBuilder::from_buffered_safetensors(data, DType::F32, &device).map_err(|e| {
            AsrError::Checkpoint {
                path: weights.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let mut model = Self::from_var_builder(config, vb, &weights)?;
        let tok = dir.join("tokenizer.json");
        if tok.exists() {
            model.tokenizer = Some(
                vr_core::catch_parser_panic(|| tokenizers::Tokenizer::from_file(&tok))
                    .map_err(|e| e.into())
                    .and_then(|r| r)
                    .map_err(|e| AsrError::Tokenizer(format!("{}: {e}", tok.display())))?,
            );
        }
        Ok(model)
    }

    /// Builds the model from a `VarBuilder` holding the reference tensor names; `source` names
    /// the weights in errors.
    pub fn from_var_builder(
        config: Config,
        vb: VarBuilder,
        source: &Path,
    ) -> Result<Self, AsrError> {
        let device = vb.device().clone();
        let root = Loader {
            vb,
            file: PathBuf::from(source).display().to_string(),
        };
        let encoder = Encoder::load(&root.pp("model").pp("encoder"), &config)?;
        let decoder = Decoder::load(&root, &config)?;
        Ok(Self {
            config,
            encoder,
            decoder,
            tokenizer: None,
            device,
        })
    }

    /// Offline encoder output for a whole utterance: `[frames, hidden]`.
    pub fn encode(&self, samples: &[f32]) -> Result<Tensor, AsrError> {
        Ok(self.encoder.forward(samples, &self.device)?)
    }

    /// Greedy decoding with the KV cache: the ids after the start token, ending at (and including)
    /// an end token or after `max_tokens`. Also returns each step's logits `[vocab]`.
    pub fn greedy(
        &self,
        encoder_frames: &Tensor,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, Vec<Tensor>), AsrError> {
        let eos = self.config.eos_tokens();
        let mut state = self.decoder.start(encoder_frames)?;
        let mut next = self.config.decoder_start_token();
        let mut ids = Vec::new();
        let mut steps = Vec::new();
        for _ in 0..max_tokens {
            let logits = self.decoder.forward(&mut state, &[next])?.squeeze(0)?;
            next = logits.argmax(D::Minus1)?.to_scalar::<u32>()?;
            steps.push(logits);
            ids.push(next);
            if eos.contains(&next) {
                break;
            }
        }
        Ok((ids, steps))
    }

    /// Text of token ids (special tokens skipped); ids joined by spaces when there is no tokenizer.
    pub fn detokenize(&self, ids: &[u32]) -> Result<String, AsrError> {
        match &self.tokenizer {
            Some(t) => t
                .decode(ids, true)
                .map_err(|e| AsrError::Tokenizer(e.to_string())),
            None => Ok(ids
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")),
        }
    }
}
