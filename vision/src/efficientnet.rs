//! EfficientNet-Lite0 (ImageNet-1k), inference only.
//!
//! Tan & Le, "EfficientNet: Rethinking Model Scaling for CNNs" (ICML 2019); the Lite variants
//! (TensorFlow `efficientnet/lite`, 2020) drop squeeze-and-excitation, use ReLU6 and keep the
//! stem (32) and head (1280) widths fixed. Tensor names follow lukemelas' EfficientNet-PyTorch
//! (`_conv_stem`, `_bn0`, `_blocks.N._expand_conv`/`_depthwise_conv`/`_project_conv` with
//! `_bn0`/`_bn1`/`_bn2`, `_conv_head`, `_bn1`, `_fc`), the layout of the checkpoint the model
//! store converts to safetensors.
//!
//! Everything but the strides is read from the checkpoint: block count, kernel sizes (3 or 5),
//! expansion and widths come from the weight shapes; the strides are the paper's per-stage table
//! ([`STAGES`]), checked against the block count. Batch norms (eps 1e-3) are folded into the
//! preceding convolution at load time, so a layer is one convolution plus bias.
//!
//! Layout: one image at a time, activations channels-last as `(height·width, channels)`.
//! Pointwise (1×1) convolutions and the classifier are candle matmuls; the stem is a candle
//! conv2d (transposed once to channels-last); depthwise convolutions are a plain loop here,
//! because candle's grouped conv2d splits the input into one convolution per group (1152 of them
//! in the last stages). Channels-last makes that loop's innermost run a contiguous update over
//! all channels of a pixel, which vectorises whatever the stride or the plane size (a
//! channels-first loop over 7×7 planes cost 2.5× more).

use crate::preprocess::INPUT_SIZE;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// (repeats, stride of the first block) per stage; EfficientNet-B0 / Lite0.
pub const STAGES: [(usize, usize); 7] = [(1, 1), (2, 2), (2, 2), (3, 2), (3, 1), (4, 2), (1, 1)];
/// Batch-norm epsilon of the TensorFlow-trained checkpoint.
const BN_EPS: f64 = 1e-3;
/// Width of the pooled feature vector.
pub const FEATURES: usize = 1280;

/// Where a stride-2 or odd-kernel convolution puts its zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// `k/2` on every side (PyTorch's usual `padding=k//2`).
    Symmetric,
    /// TensorFlow "SAME": output `ceil(in/stride)`, total padding split with the extra pixel at
    /// the bottom/right (what the TF-trained checkpoint saw in training).
    TfSame,
}

impl Padding {
    /// (padding before, output length) for one spatial axis.
    fn plan(self, len: usize, k: usize, stride: usize) -> (usize, usize) {
        match self {
            Padding::Symmetric => {
                let p = k / 2;
                (p, (len + 2 * p - k) / stride + 1)
            }
            Padding::TfSame => {
                let out = len.div_ceil(stride);
                let total = ((out - 1) * stride + k).saturating_sub(len);
                (total / 2, out)
            }
        }
    }
}

/// A convolution with its batch norm folded in. Stem: weight `(out, in, k, k)`, bias `(1, out)`;
/// pointwise: weight transposed to `(in, out)`, bias `(1, out)`.
struct Folded {
    weight: Tensor,
    bias: Tensor,
}

/// Depthwise k×k convolution (batch norm folded), weights as plain slices: `weight` is
/// `(k·k, channels)`, tap-major.
struct Depthwise {
    channels: usize,
    k: usize,
    stride: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
}

struct Block {
    expand: Option<Folded>,
    depthwise: Depthwise,
    project: Folded,
    residual: bool,
}

pub(crate) struct EfficientNet {
    stem: Folded,
    stem_k: usize,
    blocks: Vec<Block>,
    head: Folded,
    fc_weight: Tensor,
    fc_bias: Tensor,
    padding: Padding,
}

/// Spatial activation: `(h·w, channels)`.
struct Act {
    t: Tensor,
    h: usize,
    w: usize,
}

pub(crate) type Weights = HashMap<String, Tensor>;

fn get(ws: &Weights, name: &str, dims: &[usize]) -> Result<Tensor, String> {
    let t = ws.get(name).ok_or_else(|| format!("no tensor `{name}`"))?;
    if t.dims() != dims {
        return Err(format!(
            "tensor `{name}` has shape {:?}, expected {dims:?}",
            t.dims()
        ));
    }
    t.to_dtype(DType::F32).map_err(|e| e.to_string())
}

fn dims_of(ws: &Weights, name: &str) -> Result<Vec<usize>, String> {
    Ok(ws
        .get(name)
        .ok_or_else(|| format!("no tensor `{name}`"))?
        .dims()
        .to_vec())
}

/// Folds batch norm `bn` into conv weight `w` (first dim = output channels): `(w', b')` with
/// `w'` flattened to `(out, rest)` and `b'` as `(out, 1)`.
fn fold(ws: &Weights, w: Tensor, bn: &str) -> Result<(Tensor, Tensor), String> {
    let out = w.dims()[0];
    let p = |s: &str| get(ws, &format!("{bn}.{s}"), &[out]);
    let e = |e: candle_core::Error| e.to_string();
    let (gamma, beta, mean, var) = (
        p("weight")?,
        p("bias")?,
        p("running_mean")?,
        p("running_var")?,
    );
    let scale = (gamma / (var + BN_EPS).map_err(e)?.sqrt().map_err(e)?).map_err(e)?;
    let bias = (beta - (mean * &scale).map_err(e)?).map_err(e)?;
    let w = w.flatten_from(1).map_err(e)?;
    let w = w
        .broadcast_mul(&scale.unsqueeze(1).map_err(e)?)
        .map_err(e)?;
    Ok((w, bias.unsqueeze(1).map_err(e)?))
}

/// Folded conv `conv` + batch norm `bn`: weight `(out, in·k·k)` transposed to `(in·k·k, out)`,
/// bias `(1, out)`.
fn folded(ws: &Weights, conv: &str, bn: &str, dims: &[usize]) -> Result<Folded, String> {
    let e = |e: candle_core::Error| e.to_string();
    let (weight, bias) = fold(ws, get(ws, &format!("{conv}.weight"), dims)?, bn)?;
    Ok(Folded {
        weight: weight.t().map_err(e)?.contiguous().map_err(e)?,
        bias: bias.t().map_err(e)?.contiguous().map_err(e)?,
    })
}

impl EfficientNet {
    /// Builds the network from a lukemelas-style state dict; the reason names the first tensor
    /// that is missing or misshapen.
    pub(crate) fn from_weights(ws: &Weights, padding: Padding) -> Result<Self, String> {
        let stem_dims = dims_of(ws, "_conv_stem.weight")?;
        let [stem_out, 3, stem_k, _] = stem_dims[..] else {
            return Err(format!(
                "stem weight has shape {stem_dims:?}, expected (C, 3, k, k)"
            ));
        };
        let e = |e: candle_core::Error| e.to_string();
        let (w, bias) = fold(
            ws,
            get(ws, "_conv_stem.weight", &[stem_out, 3, stem_k, stem_k])?,
            "_bn0",
        )?;
        let stem = Folded {
            weight: w.reshape((stem_out, 3, stem_k, stem_k)).map_err(e)?,
            bias: bias.t().map_err(e)?.contiguous().map_err(e)?,
        };

        let strides: Vec<usize> = STAGES
            .iter()
            .flat_map(|&(n, s)| (0..n).map(move |i| if i == 0 { s } else { 1 }))
            .collect();
        let count = (0..)
            .take_while(|i| ws.contains_key(&format!("_blocks.{i}._depthwise_conv.weight")))
            .count();
        if count != strides.len() {
            return Err(format!(
                "{count} blocks in the checkpoint, EfficientNet-Lite0 has {}",
                strides.len()
            ));
        }
        let mut blocks = Vec::with_capacity(count);
        let mut cin = stem_out;
        for (i, &stride) in strides.iter().enumerate() {
            let b = format!("_blocks.{i}");
            let expand_name = format!("{b}._expand_conv.weight");
            let (expand, mid) = if ws.contains_key(&expand_name) {
                let mid = dims_of(ws, &expand_name)?[0];
                let f = folded(
                    ws,
                    &format!("{b}._expand_conv"),
                    &format!("{b}._bn0"),
                    &[mid, cin, 1, 1],
                )?;
                (Some(f), mid)
            } else {
                (None, cin)
            };
            let dw_dims = dims_of(ws, &format!("{b}._depthwise_conv.weight"))?;
            let k = dw_dims.get(2).copied().unwrap_or(0);
            let dw = folded(
                ws,
                &format!("{b}._depthwise_conv"),
                &format!("{b}._bn1"),
                &[mid, 1, k, k],
            )?;
            let depthwise = Depthwise {
                channels: mid,
                k,
                stride,
                weight: dw.weight.flatten_all().map_err(e)?.to_vec1().map_err(e)?, // (k·k, C)
                bias: dw.bias.flatten_all().map_err(e)?.to_vec1().map_err(e)?,
            };
            let cout = dims_of(ws, &format!("{b}._project_conv.weight"))?[0];
            let project = folded(
                ws,
                &format!("{b}._project_conv"),
                &format!("{b}._bn2"),
                &[cout, mid, 1, 1],
            )?;
            blocks.push(Block {
                expand,
                depthwise,
                project,
                residual: stride == 1 && cin == cout,
            });
            cin = cout;
        }
        let head = folded(ws, "_conv_head", "_bn1", &[FEATURES, cin, 1, 1])?;
        let classes = crate::classes::NUM_CLASSES;
        let fc_weight = get(ws, "_fc.weight", &[classes, FEATURES])?
            .t()
            .map_err(e)?
            .contiguous()
            .map_err(e)?;
        let fc_bias = get(ws, "_fc.bias", &[classes])?.unsqueeze(0).map_err(e)?;
        Ok(Self {
            stem,
            stem_k,
            blocks,
            head,
            fc_weight,
            fc_bias,
            padding,
        })
    }

    /// Planar CHW input of 3×224×224 → (pooled features [1280], logits [1000]).
    pub(crate) fn forward(&self, input: Vec<f32>) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        let n = INPUT_SIZE;
        let x = Tensor::from_vec(input, (1, 3, n, n), &Device::Cpu)?;

        // Stem: 3×3 stride 2, explicit (possibly asymmetric) zero padding, then conv without.
        let (k, s) = (self.stem_k, 2);
        let (pad, out) = self.padding.plan(n, k, s);
        let after = ((out - 1) * s + k).saturating_sub(n + pad);
        let x = x
            .pad_with_zeros(2, pad, after)?
            .pad_with_zeros(3, pad, after)?;
        let cout = self.stem.weight.dims()[0];
        let x = x.conv2d(&self.stem.weight, 0, s, 1, 1)?;
        let x = x.reshape((cout, out * out))?.t()?.contiguous()?;
        let x = relu6(&x.broadcast_add(&self.stem.bias)?)?;
        let mut a = Act {
            t: x,
            h: out,
            w: out,
        };

        for b in &self.blocks {
            let input = a.t.clone();
            let mut t = match &b.expand {
                Some(f) => relu6(&pointwise(f, &a.t)?)?,
                None => a.t,
            };
            let (t2, h, w) = b.depthwise.forward(&t, a.h, a.w, self.padding)?;
            t = pointwise(&b.project, &t2)?;
            if b.residual {
                t = (t + input)?;
            }
            a = Act { t, h, w };
        }
        let x = relu6(&pointwise(&self.head, &a.t)?)?;
        let features = x.mean_keepdim(0)?; // (1, 1280)
        let logits = features.matmul(&self.fc_weight)?.add(&self.fc_bias)?;
        Ok((
            features.flatten_all()?.to_vec1()?,
            logits.flatten_all()?.to_vec1()?,
        ))
    }
}

fn relu6(x: &Tensor) -> candle_core::Result<Tensor> {
    x.clamp(0f32, 6f32)
}

fn pointwise(f: &Folded, x: &Tensor) -> candle_core::Result<Tensor> {
    x.matmul(&f.weight)?.broadcast_add(&f.bias)
}

impl Depthwise {
    /// `(h·w, C)` → ReLU6(depthwise conv + bias), `(oh·ow, C)`, with the output size.
    fn forward(
        &self,
        x: &Tensor,
        h: usize,
        w: usize,
        padding: Padding,
    ) -> candle_core::Result<(Tensor, usize, usize)> {
        let (k, s, c) = (self.k, self.stride, self.channels);
        let (pt, oh) = padding.plan(h, k, s);
        let (pl, ow) = padding.plan(w, k, s);
        let src = x.flatten_all()?.to_vec1::<f32>()?;
        if src.len() != c * h * w {
            candle_core::bail!(
                "depthwise input has {} values, expected {h}x{w}x{c}",
                src.len()
            );
        }
        let mut out = vec![0f32; oh * ow * c];
        for (o, px) in out.chunks_exact_mut(c).enumerate() {
            let (oy, ox) = (o / ow, o % ow);
            px.copy_from_slice(&self.bias);
            for ky in 0..k {
                // Input row oy·s + ky − pt; taps in the padding contribute nothing.
                let Some(iy) = (oy * s + ky).checked_sub(pt).filter(|&iy| iy < h) else {
                    continue;
                };
                for kx in 0..k {
                    let Some(ix) = (ox * s + kx).checked_sub(pl).filter(|&ix| ix < w) else {
                        continue;
                    };
                    let inp = &src[(iy * w + ix) * c..(iy * w + ix + 1) * c];
                    let wt = &self.weight[(ky * k + kx) * c..(ky * k + kx + 1) * c];
                    for ((d, v), wv) in px.iter_mut().zip(inp).zip(wt) {
                        *d += wv * v;
                    }
                }
            }
            for v in px.iter_mut() {
                *v = v.clamp(0.0, 6.0);
            }
        }
        Ok((Tensor::from_vec(out, (oh * ow, c), &Device::Cpu)?, oh, ow))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_plans() {
        // TF "same": 224 → 112 with 3×3 s2 pads 0 before, 1 after; 5×5 s2 on 56 pads 1 / 2.
        assert_eq!(Padding::TfSame.plan(224, 3, 2), (0, 112));
        assert_eq!(Padding::TfSame.plan(56, 5, 2), (1, 28));
        assert_eq!(Padding::TfSame.plan(14, 5, 1), (2, 14));
        assert_eq!(Padding::Symmetric.plan(224, 3, 2), (1, 112));
        assert_eq!(Padding::Symmetric.plan(56, 5, 2), (2, 28));
    }

    /// The depthwise loop against candle's grouped conv2d on random data, both paddings, both
    /// strides, both kernel sizes, odd and even sizes.
    #[test]
    fn depthwise_matches_candle_grouped_conv() {
        let dev = Device::Cpu;
        for (k, s, h, w, padding) in [
            (3, 1, 7, 9, Padding::Symmetric),
            (5, 2, 8, 11, Padding::Symmetric),
            (3, 2, 10, 10, Padding::TfSame),
            (5, 2, 9, 12, Padding::TfSame),
            (5, 1, 6, 5, Padding::TfSame),
        ] {
            let c = 4;
            let x = Tensor::randn(0f32, 1., (c, h, w), &dev).unwrap();
            let wt = Tensor::randn(0f32, 1., (c, 1, k, k), &dev).unwrap();
            let bias = Tensor::randn(0f32, 1., c, &dev).unwrap();
            let dw = Depthwise {
                channels: c,
                k,
                stride: s,
                weight: wt
                    .reshape((c, k * k))
                    .unwrap()
                    .t()
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
                bias: bias.to_vec1().unwrap(),
            };
            let channels_last = x.reshape((c, h * w)).unwrap().t().unwrap();
            let (got, oh, ow) = dw.forward(&channels_last, h, w, padding).unwrap();
            let got = got.t().unwrap();

            let (pt, oh2) = padding.plan(h, k, s);
            let (pl, ow2) = padding.plan(w, k, s);
            assert_eq!((oh, ow), (oh2, ow2));
            let bottom = ((oh - 1) * s + k).saturating_sub(h + pt);
            let right = ((ow - 1) * s + k).saturating_sub(w + pl);
            let xp = x
                .unsqueeze(0)
                .unwrap()
                .pad_with_zeros(2, pt, bottom)
                .unwrap()
                .pad_with_zeros(3, pl, right)
                .unwrap();
            let want = xp
                .conv2d(&wt, 0, s, 1, c)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .broadcast_add(&bias.reshape((c, 1, 1)).unwrap())
                .unwrap()
                .clamp(0f32, 6f32)
                .unwrap()
                .reshape((c, oh * ow))
                .unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                diff < 1e-4,
                "k{k} s{s} {h}x{w} {padding:?}: max diff {diff}"
            );
        }
    }
}
