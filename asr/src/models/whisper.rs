//! Whisper (Radford et al. 2022, "Robust Speech Recognition via Large-Scale Weak Supervision") on
//! candle, loaded from a CTranslate2 `model.bin` (faster-whisper's format) or a Hugging Face
//! checkpoint directory (`model.safetensors` + `config.json`).
//!
//! The network is our own encoder ([`super::whisper_encoder`]) and cached decoder
//! ([`super::whisper_decoder`]), each tested equal to `candle_transformers`' Whisper, which is
//! loaded beside them as that reference. This file maps checkpoints onto the Hugging Face tensor
//! names and runs greedy decoding with OpenAI's timestamp rules (reference:
//! `whisper/decoding.py`, `ApplyTimestampRules`).
//!
//! CTranslate2's `config.json` holds only decoding metadata (`suppress_ids`, `lang_ids`,
//! alignment heads), not the architecture, so the Hugging Face [`Config`] is derived from the
//! weights: `d_model` and `vocab_size` from the token embedding, `max_target_positions` /
//! `max_source_positions` from the decoder / encoder position tables, `num_mel_bins` from
//! `conv1`, layer counts from the `layer_N` names, head counts from the `num_heads` scalars, and
//! `suppress_tokens` from `suppress_ids`.
//!
//! Audio is never padded to 30 s: the encoder runs on the frames given (its positional table is
//! sliced to that length), which is what makes a short streaming window cheap.

mod decode;

pub use decode::{align_tokens, DecodeSpec};

use super::whisper_decoder::KvDecoder;
use super::whisper_encoder::WhisperEncoder;
use crate::ct2::Ct2Model;
use crate::AsrError;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::whisper::{model::Whisper, Config};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use tokenizers::Tokenizer;

/// Seconds per timestamp token step.
pub const TIMESTAMP_STEP_S: f64 = 0.02;
/// Mel frames per second (hop 160 at 16 kHz).
pub const FRAMES_PER_SECOND: usize = 100;

/// Tensors with Hugging Face Whisper names, plus the derived config.
pub struct HfWeights {
    pub tensors: HashMap<String, Tensor>,
    pub config: Config,
    /// Cross-attention (layer, head) pairs that track the audio position of each token (OpenAI's
    /// `alignment_heads`), used for word timestamps.
    pub alignment_heads: Vec<(usize, usize)>,
}

/// `[[layer, head], ...]` from a JSON value; `None` when absent or malformed.
fn parse_alignment_heads(v: Option<&serde_json::Value>) -> Option<Vec<(usize, usize)>> {
    v?.as_array()?
        .iter()
        .map(|p| {
            let a = p.as_array()?;
            Some((a.first()?.as_u64()? as usize, a.get(1)?.as_u64()? as usize))
        })
        .collect()
}

/// OpenAI's fallback when a checkpoint names no alignment heads: every head of the upper half
/// of the decoder layers.
fn default_alignment_heads(c: &Config) -> Vec<(usize, usize)> {
    (c.decoder_layers / 2..c.decoder_layers)
        .flat_map(|l| (0..c.decoder_attention_heads).map(move |h| (l, h)))
        .collect()
}

fn ckpt_err(path: &Path, reason: impl Into<String>) -> AsrError {
    AsrError::Checkpoint {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// Maps a CTranslate2 Whisper checkpoint onto Hugging Face names, splitting the fused
/// self-attention q/k/v and cross-attention k/v projections.
pub fn ct2_to_hf(
    ct2: &Ct2Model,
    ct2_config: &serde_json::Value,
    path: &Path,
    device: &Device,
) -> Result<HfWeights, AsrError> {
    if ct2.spec != "WhisperSpec" {
        return Err(ckpt_err(
            path,
            format!("spec is {:?}, expected WhisperSpec", ct2.spec),
        ));
    }
    let get = |name: &str| -> Result<Tensor, AsrError> {
        let v = ct2
            .get(name)
            .ok_or_else(|| ckpt_err(path, format!("missing variable {name}")))?;
        v.to_f32_tensor(device)
            .map_err(|e| ckpt_err(path, format!("variable {name}: {e}")))
    };
    let scalar = |name: &str| -> Result<usize, AsrError> {
        ct2.get(name)
            .and_then(|v| v.scalar_i64())
            .filter(|v| *v > 0)
            .map(|v| v as usize)
            .ok_or_else(|| ckpt_err(path, format!("missing or invalid scalar {name}")))
    };
    let count_layers = |prefix: &str| {
        (0..)
            .take_while(|i| {
                ct2.variables
                    .contains_key(&format!("{prefix}/layer_{i}/ffn/linear_0/weight"))
            })
            .count()
    };
    let emb = get("decoder/embeddings/weight")?;
    let (vocab_size, d_model) = emb.dims2()?;
    let dec_pos = get("decoder/position_encodings/encodings")?;
    let enc_pos = get("encoder/position_encodings/encodings")?;
    let conv1 = get("encoder/conv1/weight")?;
    let suppress_tokens = ct2_config
        .get("suppress_ids")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_u64())
                .map(|x| x as u32)
                .collect()
        })
        .unwrap_or_default();
    let config = Config {
        num_mel_bins: conv1.dim(1)?,
        max_source_positions: enc_pos.dim(0)?,
        d_model,
        encoder_attention_heads: scalar("encoder/num_heads")?,
        encoder_layers: count_layers("encoder"),
        vocab_size,
        max_target_positions: dec_pos.dim(0)?,
        decoder_attention_heads: scalar("decoder/num_heads")?,
        decoder_layers: count_layers("decoder"),
        suppress_tokens,
    };
    if config.encoder_layers == 0 || config.decoder_layers == 0 {
        return Err(ckpt_err(path, "no encoder or decoder layers found"));
    }
    let mut t = HashMap::new();
    t.insert("model.decoder.embed_tokens.weight".to_string(), emb);
    t.insert("model.decoder.embed_positions.weight".to_string(), dec_pos);
    t.insert("model.encoder.embed_positions.weight".to_string(), enc_pos);
    for side in ["encoder", "decoder"] {
        if side == "encoder" {
            for c in ["conv1", "conv2"] {
                for p in ["weight", "bias"] {
                    t.insert(
                        format!("model.encoder.{c}.{p}"),
                        get(&format!("encoder/{c}/{p}"))?,
                    );
                }
            }
        }
        let n = if side == "encoder" {
            config.encoder_layers
        } else {
            config.decoder_layers
        };
        let ln = |t: &mut HashMap<String, Tensor>, from: &str, to: &str| -> Result<(), AsrError> {
            t.insert(format!("{to}.weight"), get(&format!("{from}/gamma"))?);
            t.insert(format!("{to}.bias"), get(&format!("{from}/beta"))?);
            Ok(())
        };
        let lin = |t: &mut HashMap<String, Tensor>, from: &str, to: &str| -> Result<(), AsrError> {
            t.insert(format!("{to}.weight"), get(&format!("{from}/weight"))?);
            t.insert(format!("{to}.bias"), get(&format!("{from}/bias"))?);
            Ok(())
        };
        ln(
            &mut t,
            &format!("{side}/layer_norm"),
            &format!("model.{side}.layer_norm"),
        )?;
        for i in 0..n {
            let c = format!("{side}/layer_{i}");
            let h = format!("model.{side}.layers.{i}");
            ln(
                &mut t,
                &format!("{c}/self_attention/layer_norm"),
                &format!("{h}.self_attn_layer_norm"),
            )?;
            let w = get(&format!("{c}/self_attention/linear_0/weight"))?;
            let b = get(&format!("{c}/self_attention/linear_0/bias"))?;
            if w.dim(0)? != 3 * d_model {
                return Err(ckpt_err(
                    path,
                    format!("{c} fused qkv has shape {:?}", w.dims()),
                ));
            }
            for (k, name) in ["q_proj", "k_proj", "v_proj"].iter().enumerate() {
                t.insert(
                    format!("{h}.self_attn.{name}.weight"),
                    w.narrow(0, k * d_model, d_model)?.contiguous()?,
                );
                // Whisper's key projection has no bias (CTranslate2 stores zeros there).
                if *name != "k_proj" {
                    t.insert(
                        format!("{h}.self_attn.{name}.bias"),
                        b.narrow(0, k * d_model, d_model)?.contiguous()?,
                    );
                }
            }
            lin(
                &mut t,
                &format!("{c}/self_attention/linear_1"),
                &format!("{h}.self_attn.out_proj"),
            )?;
            ln(
                &mut t,
                &format!("{c}/ffn/layer_norm"),
                &format!("{h}.final_layer_norm"),
            )?;
            lin(&mut t, &format!("{c}/ffn/linear_0"), &format!("{h}.fc1"))?;
            lin(&mut t, &format!("{c}/ffn/linear_1"), &format!("{h}.fc2"))?;
            if side == "decoder" {
                ln(
                    &mut t,
                    &format!("{c}/attention/layer_norm"),
                    &format!("{h}.encoder_attn_layer_norm"),
                )?;
                lin(
                    &mut t,
                    &format!("{c}/attention/linear_0"),
                    &format!("{h}.encoder_attn.q_proj"),
                )?;
                let w = get(&format!("{c}/attention/linear_1/weight"))?;
                let b = get(&format!("{c}/attention/linear_1/bias"))?;
                if w.dim(0)? != 2 * d_model {
                    return Err(ckpt_err(
                        path,
                        format!("{c} fused kv has shape {:?}", w.dims()),
                    ));
                }
                t.insert(
                    format!("{h}.encoder_attn.k_proj.weight"),
                    w.narrow(0, 0, d_model)?.contiguous()?,
                );
                t.insert(
                    format!("{h}.encoder_attn.v_proj.weight"),
                    w.narrow(0, d_model, d_model)?.contiguous()?,
                );
                t.insert(
                    format!("{h}.encoder_attn.v_proj.bias"),
                    b.narrow(0, d_model, d_model)?.contiguous()?,
                );
                lin(
                    &mut t,
                    &format!("{c}/attention/linear_2"),
                    &format!("{h}.encoder_attn.out_proj"),
                )?;
            }
        }
    }
    let mut alignment_heads = parse_alignment_heads(ct2_config.get("alignment_heads"))
        .unwrap_or_else(|| default_alignment_heads(&config));
    alignment_heads
        .retain(|(l, h)| *l < config.decoder_layers && *h < config.decoder_attention_heads);
    Ok(HfWeights {
        tensors: t,
        config,
        alignment_heads,
    })
}

/// Which checkpoint layout a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointKind {
    /// `model.bin` + CTranslate2 `config.json`.
    CTranslate2,
    /// `model.safetensors` + Hugging Face `config.json`.
    HuggingFace,
}

/// Reads the weights of a checkpoint directory into Hugging Face-named tensors.
pub fn load_weights(dir: &Path, device: &Device) -> Result<(HfWeights, CheckpointKind), AsrError> {
    let read_json = |p: &Path| -> Result<serde_json::Value, AsrError> {
        let text = std::fs::read_to_string(p).map_err(|source| AsrError::Io {
            path: p.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|e| ckpt_err(p, format!("invalid JSON: {e}")))
    };
    let st = dir.join("model.safetensors");
    if st.exists() {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_value(read_json(&config_path)?)
            .map_err(|e| ckpt_err(&config_path, format!("not a Whisper config: {e}")))?;
        let tensors = candle_core::safetensors::load(&st, device)
            .map_err(|e| ckpt_err(&st, e.to_string()))?;
        let tensors = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
            .collect::<Result<HashMap<_, _>, candle_core::Error>>()?;
        let gen = dir.join("generation_config.json");
        let mut alignment_heads = if gen.exists() {
            parse_alignment_heads(read_json(&gen)?.get("alignment_heads"))
        } else {
            None
        }
        .unwrap_or_else(|| default_alignment_heads(&config));
        alignment_heads
            .retain(|(l, h)| *l < config.decoder_layers && *h < config.decoder_attention_heads);
        return Ok((
            HfWeights {
                tensors,
                config,
                alignment_heads,
            },
            CheckpointKind::HuggingFace,
        ));
    }
    let bin = dir.join("model.bin");
    let ct2 = Ct2Model::read(&bin)?;
    let cfg = read_json(&dir.join("config.json"))?;
    Ok((
        ct2_to_hf(&ct2, &cfg, &bin, device)?,
        CheckpointKind::CTranslate2,
    ))
}

/// Writes weights as a Hugging Face checkpoint directory (`model.safetensors`, `config.json`).
pub fn save_hf(weights: &HfWeights, dir: &Path) -> Result<(), AsrError> {
    std::fs::create_dir_all(dir).map_err(|source| AsrError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let st = dir.join("model.safetensors");
    candle_core::safetensors::save(&weights.tensors, &st)
        .map_err(|e| ckpt_err(&st, e.to_string()))?;
    let c = &weights.config;
    let cfg = serde_json::json!({
        "model_type": "whisper",
        "num_mel_bins": c.num_mel_bins,
        "max_source_positions": c.max_source_positions,
        "d_model": c.d_model,
        "encoder_attention_heads": c.encoder_attention_heads,
        "encoder_layers": c.encoder_layers,
        "vocab_size": c.vocab_size,
        "max_target_positions": c.max_target_positions,
        "decoder_attention_heads": c.decoder_attention_heads,
        "decoder_layers": c.decoder_layers,
        "suppress_tokens": c.suppress_tokens,
    });
    let p = dir.join("config.json");
    std::fs::write(&p, cfg.to_string()).map_err(|source| AsrError::Io {
        path: p.display().to_string(),
        source,
    })?;
    let heads: Vec<[usize; 2]> = weights
        .alignment_heads
        .iter()
        .map(|(l, h)| [*l, *h])
        .collect();
    let p = dir.join("generation_config.json");
    std::fs::write(
        &p,
        serde_json::json!({ "alignment_heads": heads }).to_string(),
    )
    .map_err(|source| AsrError::Io {
        path: p.display().to_string(),
        source,
    })
}

/// Special token ids, looked up in the tokenizer (they differ between English-only and
/// multilingual vocabularies).
#[derive(Debug, Clone)]
pub struct SpecialTokens {
    pub sot: u32,
    pub eot: u32,
    pub no_timestamps: u32,
    pub no_speech: u32,
    pub timestamp_begin: u32,
    /// `[sot]` for English-only models, `[sot, <|en|>, <|transcribe|>]` for multilingual ones.
    pub sot_sequence: Vec<u32>,
    /// `<|startofprev|>`, which introduces previous text as context.
    pub start_of_prev: Option<u32>,
}

/// One greedy decode of one audio window.
#[derive(Debug, Clone)]
pub struct Decoded {
    /// Sampled tokens after the forced prefix (text and timestamp tokens, no EOT).
    pub tokens: Vec<u32>,
    /// Probability of the no-speech token at the first position.
    pub no_speech_prob: f32,
    /// Mean log-probability of the sampled tokens (the EOT included).
    pub avg_logprob: f32,
    /// Whether decoding stopped on EOT (rather than the length limit).
    pub ended: bool,
    /// Per token of `forced ++ tokens`: its (start, end) in mel frames (10 ms) from the start of
    /// the encoder input, by DTW over the alignment heads' cross-attention. Empty when nothing
    /// was decoded.
    pub token_frames: Vec<(usize, usize)>,
    /// Leading tokens of the draft ([`DecodeSpec::draft`]) the decode kept: each was the greedy
    /// choice at its position.
    pub draft_accepted: usize,
}

/// A loaded Whisper model with its tokenizer and mel filters; kept in memory and reused.
///
/// Cloning is cheap and is how several streams share one load: candle tensors are reference
/// counted, and the tokenizer, cached decoder and vocabulary tables sit behind `Arc`s. Only the
/// clone's own mutable state is fresh (candle's decoder keeps a cross-attention cache; the
/// clone starts with it empty), so clones may run on different threads at once.
pub struct WhisperModel {
    /// candle's model: kept as the reference the encoder and the cached decoder (its decoder has
    /// no self-attention cache) are tested against.
    model: Whisper,
    encoder: Arc<WhisperEncoder>,
    decoder: Arc<KvDecoder>,
    alignment_heads: Arc<[(usize, usize)]>,
    /// Decode with the self-attention KV cache (default). Off re-runs the whole token sequence
    /// for every new token, as candle's decoder does: kept for the benchmark's baseline.
    pub use_kv_cache: bool,
    /// Single-token decoding steps run on 8-bit linears and take their logits from the 8-bit
    /// embedding table (`asr.quantized_logits`); the batched first pass stays exact.
    pub quantized_logits: bool,
    /// Suppressed at the first sampled position (blank and EOT, from the CT2 config's
    /// `suppress_ids_begin`; OpenAI's `SuppressBlank`).
    suppress_begin: Arc<[u32]>,
    tokenizer: Arc<Tokenizer>,
    pub special: SpecialTokens,
    pub config: Config,
    mel: crate::mel::MelFrontEnd,
    suppress: Arc<[u32]>,
    /// Per token id: does its text begin a new word (leading space)?
    word_start: Arc<[bool]>,
    device: Device,
}

impl Clone for WhisperModel {
    fn clone(&self) -> Self {
        let mut model = self.model.clone();
        model.reset_kv_cache();
        Self {
            model,
            encoder: Arc::clone(&self.encoder),
            decoder: Arc::clone(&self.decoder),
            alignment_heads: Arc::clone(&self.alignment_heads),
            use_kv_cache: self.use_kv_cache,
            quantized_logits: self.quantized_logits,
            suppress_begin: Arc::clone(&self.suppress_begin),
            tokenizer: Arc::clone(&self.tokenizer),
            special: self.special.clone(),
            config: self.config.clone(),
            mel: self.mel.clone(),
            suppress: Arc::clone(&self.suppress),
            word_start: Arc::clone(&self.word_start),
            device: self.device.clone(),
        }
    }
}

impl WhisperModel {
    /// Loads `dir` (CTranslate2 or Hugging Face layout, plus `tokenizer.json`) and the 80-bin mel
    /// filter bank file.
    pub fn load(dir: &Path, mel_filters: &Path) -> Result<Self, AsrError> {
        let device = Device::Cpu;
        let (w, _) = load_weights(dir, &device)?;
        Self::from_weights(w, &dir.join("tokenizer.json"), mel_filters, &device)
    }

    pub fn from_weights(
        w: HfWeights,
        tokenizer_path: &Path,
        mel_filters: &Path,
        device: &Device,
    ) -> Result<Self, AsrError> {
        let config = w.config.clone();
        let vb = VarBuilder::from_tensors(w.tensors, DType::F32, device);
        let misfit = |what: &str, e: candle_core::Error| AsrError::Checkpoint {
            path: tokenizer_path
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            reason: format!("{what} do not fit: {e}"),
        };
        let model = Whisper::load(&vb, config.clone())
            .map_err(|e| misfit("weights (the Whisper architecture)", e))?;
        let decoder = KvDecoder::load(vb.pp("model.decoder"), &config)
            .map_err(|e| misfit("decoder weights", e))?;
        let encoder = WhisperEncoder::load(&config, vb.pp("model.encoder"))
            .map_err(|e| misfit("encoder weights", e))?;
        let tokenizer = vr_core::catch_parser_panic(|| Tokenizer::from_file(tokenizer_path))
            .map_err(|e| e.into())
            .and_then(|r| r)
            .map_err(|e| AsrError::Tokenizer(format!("{}: {e}", tokenizer_path.display())))?;
        let id = |s: &str| {
            tokenizer
                .token_to_id(s)
                .ok_or_else(|| AsrError::Tokenizer(format!("tokenizer has no {s}")))
        };
        let sot = id("<|startoftranscript|>")?;
        let no_timestamps = id("<|notimestamps|>")?;
        let multilingual = config.vocab_size >= 51865;
        let sot_sequence = if multilingual {
            vec![sot, id("<|en|>")?, id("<|transcribe|>")?]
        } else {
            vec![sot]
        };
        let no_speech = id("<|nospeech|>").or_else(|_| id("<|nocaptions|>"))?;
        let special = SpecialTokens {
            sot,
            eot: id("<|endoftext|>")?,
            no_timestamps,
            no_speech,
            timestamp_begin: no_timestamps + 1,
            sot_sequence,
            start_of_prev: tokenizer.token_to_id("<|startofprev|>"),
        };
        let bytes = std::fs::read(mel_filters).map_err(|source| AsrError::Io {
            path: mel_filters.display().to_string(),
            source,
        })?;
        let expected = config.num_mel_bins * crate::mel::N_FREQ * 4;
        if bytes.len() != expected {
            return Err(ckpt_err(
                mel_filters,
                format!(
                    "mel filter file has {} bytes, expected {expected}",
                    bytes.len()
                ),
            ));
        }
        let filters: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mel = crate::mel::MelFrontEnd::new(&filters)?;
        // Suppress what OpenAI's decoder suppresses during transcription: the config's list plus
        // every special token except EOT and timestamps.
        let mut suppress = config.suppress_tokens.clone();
        for t in tokenizer.get_added_tokens_decoder().keys() {
            if *t != special.eot && *t < special.timestamp_begin {
                suppress.push(*t);
            }
        }
        suppress.sort_unstable();
        suppress.dedup();
        suppress.retain(|t| (*t as usize) < config.vocab_size);
        let word_start: Arc<[bool]> = (0..config.vocab_size as u32)
            .map(|i| {
                tokenizer
                    .id_to_token(i)
                    .map(|s| s.starts_with('\u{120}'))
                    .unwrap_or(false)
            })
            .collect();
        let suppress_begin = match tokenizer.token_to_id("\u{120}") {
            Some(blank) => vec![blank, special.eot],
            None => vec![special.eot],
        };
        Ok(Self {
            model,
            encoder: Arc::new(encoder),
            decoder: Arc::new(decoder),
            alignment_heads: w.alignment_heads.into(),
            use_kv_cache: true,
            quantized_logits: true,
            suppress_begin: suppress_begin.into(),
            tokenizer: Arc::new(tokenizer),
            special,
            config,
            mel,
            suppress: suppress.into(),
            word_start,
            device: device.clone(),
        })
    }

    pub fn front_end(&self) -> &crate::mel::MelFrontEnd {
        &self.mel
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn is_timestamp(&self, t: u32) -> bool {
        t >= self.special.timestamp_begin
    }

    /// Does this text token start a new word (its text begins with a space)?
    pub fn starts_word(&self, t: u32) -> bool {
        self.word_start.get(t as usize).copied().unwrap_or(false)
    }

    /// Text of the given tokens, special and timestamp tokens skipped.
    pub fn text(&self, tokens: &[u32]) -> Result<String, AsrError> {
        let ids: Vec<u32> = tokens
            .iter()
            .copied()
            .filter(|t| *t < self.special.eot)
            .collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| AsrError::Tokenizer(e.to_string()))
    }

    /// Runs the encoder on normalised log-mel frames laid out `(n_mels, n_frames)`.
    pub fn encode(&mut self, mel: &[f32], n_frames: usize) -> Result<Tensor, AsrError> {
        Ok(self.encoder.forward(&self.mel_input(mel, n_frames)?)?)
    }

    /// [`WhisperModel::encode`] on candle's own encoder: the reference ours is tested against.
    pub fn reference_encode(&mut self, mel: &[f32], n_frames: usize) -> Result<Tensor, AsrError> {
        let x = self.mel_input(mel, n_frames)?;
        Ok(self.model.encoder.forward(&x, true)?)
    }

    fn mel_input(&self, mel: &[f32], n_frames: usize) -> Result<Tensor, AsrError> {
        let max = 2 * self.config.max_source_positions;
        if n_frames == 0 || n_frames > max {
            return Err(AsrError::Config(format!(
                "encoder input of {n_frames} frames is outside 1..={max}"
            )));
        }
        Ok(Tensor::from_slice(
            mel,
            (1, self.config.num_mel_bins, n_frames),
            &self.device,
        )?)
    }

    /// Offline transcription of a whole clip (≤ 30 s) the way Whisper was trained: padded with
    /// silence to 30 s, one window, greedy, no timestamps. The reference the streaming path is
    /// compared with.
    pub fn transcribe(&mut self, samples: &[f32]) -> Result<(String, Decoded), AsrError> {
        let full = 2 * self.config.max_source_positions;
        if samples.len() > full * crate::mel::HOP {
            return Err(AsrError::Config(format!(
                "offline transcription takes at most 30 s, got {} samples",
                samples.len()
            )));
        }
        let n_audio = samples.len().div_ceil(crate::mel::HOP);
        let mut s = samples.to_vec();
        // `full` hops of audio give exactly `full` frames once the front end pads the tail.
        s.resize(full * crate::mel::HOP, 0.0);
        let (mel, n) = self.mel.log_mel_padded(&s)?;
        let enc = self.encode(&mel, n)?;
        let d = self.decode(&enc, &[], &[], false, n_audio, 224)?;
        Ok((self.text(&d.tokens)?, d))
    }
}

/// Loads the configured Whisper model: `cfg.model_dir` when set, else `whisper-<cfg.model>` from
/// the verified model store (the mel filter bank always comes from the store's `whisper-mel`).
pub fn load_configured(
    cfg: &crate::config::AsrConfig,
    store: &vr_core::ModelStore,
) -> Result<WhisperModel, AsrError> {
    let mel = store.file("whisper-mel", "melfilters.bytes")?;
    let dir = if cfg.model_dir.is_empty() {
        store.dir(&cfg.whisper_cache_name())?
    } else {
        std::path::PathBuf::from(&cfg.model_dir)
    };
    WhisperModel::load(&dir, &mel)
}
