//! The local engine: a quantized GGUF model run by candle on this machine.
//!
//! [`LocalLlm`] is the synchronous core. It keeps the token ids whose keys/values sit in the
//! model's KV cache; every request is rendered with the model's chat template, tokenized, and only
//! the part after the longest common prefix with the cache is computed, so a conversation's
//! earlier turns are never prefilled twice. The same mechanism gives speculative prefill: while the
//! user is still talking, [`LocalLlm::prefill_open_turn`] computes the prompt up to the partial
//! transcript; when the final transcript differs, the next request simply rolls the cache back to
//! the common prefix and recomputes from there.
//!
//! [`LocalEngine`] puts a `LocalLlm` on its own worker thread behind the [`LlmEngine`] trait: jobs
//! queue in order, a speculative prefill yields (between prefill chunks) as soon as any newer job
//! arrives, and a generation checks its cancel token before every forward pass.

use super::sampling::{features, Sampler};
use super::template::{ChatTemplate, PromptEnd};
use super::worker::Worker;
use super::{
    CancelToken, ChatMessage, FinishReason, Finished, GenerateRequest, Generation, GenerationStats,
    LlmEngine, LlmEvent, Token, TokenFeatures,
};
use crate::models::{gemma3, qwen2};
use crate::DialogError;
use candle_core::{Device, Tensor};
use std::path::Path;
use std::time::Instant;
use tokenizers::Tokenizer;

/// Options fixed when the model is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalOptions {
    /// KV-cache capacity in positions (prompt + answer); memory grows linearly with it.
    pub max_context: usize,
    /// Prompt tokens per forward pass during prefill. Larger is faster per token; smaller lets a
    /// speculative prefill yield sooner.
    pub prefill_chunk: usize,
    /// Also hold the layer weights dequantized to f32 and run prompt chunks through a dense GEMM
    /// (Qwen2; several times faster prefill for ~4× the weights' memory: 1.4 GB more for
    /// Qwen2.5-0.5B). Decoding stays on the quantized weights.
    pub dense_prefill: bool,
}

impl Default for LocalOptions {
    fn default() -> Self {
        Self {
            max_context: 4096,
            prefill_chunk: 64,
            dense_prefill: true,
        }
    }
}

enum Arch {
    Qwen2(qwen2::ModelWeights),
    Gemma3(gemma3::ModelWeights),
}

impl Arch {
    fn forward(&mut self, x: &Tensor, pos: usize) -> candle_core::Result<(Tensor, Tensor)> {
        match self {
            Arch::Qwen2(m) => m.forward(x, pos),
            Arch::Gemma3(m) => m.forward(x, pos),
        }
    }
    fn truncate_kv(&mut self, len: usize) -> candle_core::Result<()> {
        match self {
            Arch::Qwen2(m) => m.truncate_kv(len),
            Arch::Gemma3(m) => m.truncate_kv(len),
        }
    }
    fn max_positions(&self) -> usize {
        match self {
            Arch::Qwen2(m) => m.max_positions(),
            Arch::Gemma3(m) => m.max_positions(),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Arch::Qwen2(_) => "qwen2",
            Arch::Gemma3(_) => "gemma3",
        }
    }
}

/// What bringing the cache up to a prompt cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PrefillStats {
    pub prompt_tokens: usize,
    /// Positions kept from the previous cache contents.
    pub reused: usize,
    /// Positions computed now.
    pub computed: usize,
    /// False when interrupted before reaching the end of the prompt.
    pub complete: bool,
}

/// Logits and hidden state after the last cached position: what the next token is chosen from.
struct Head {
    logits: Vec<f32>,
    hidden: Vec<f32>,
}

pub struct LocalLlm {
    arch: Arch,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
    device: Device,
    /// Ids whose keys/values are in the cache, in order.
    cached: Vec<u32>,
    /// Output at the last cached position; `None` when it was not kept (after a rollback).
    head: Option<Head>,
    prefill_chunk: usize,
    label: String,
}

impl LocalLlm {
    /// Loads `model` (a directory with `model.gguf` and `tokenizer.json`) from the verified store.
    pub fn from_store(
        store: &vr_core::ModelStore,
        model: &str,
        opts: &LocalOptions,
    ) -> Result<Self, DialogError> {
        let dir = store.dir(model)?;
        Self::from_files(&dir.join("model.gguf"), &dir.join("tokenizer.json"), opts)
    }

    pub fn from_files(
        gguf: &Path,
        tokenizer: &Path,
        opts: &LocalOptions,
    ) -> Result<Self, DialogError> {
        let gguf_err = |reason: String| DialogError::Gguf {
            path: gguf.display().to_string(),
            reason,
        };
        let mut file = std::fs::File::open(gguf).map_err(|e| gguf_err(e.to_string()))?;
        let len = file.metadata().map_err(|e| gguf_err(e.to_string()))?.len();
        let content = crate::models::gguf::read_header(&mut file, len).map_err(gguf_err)?;
        let meta_str = |k: &str| {
            content
                .metadata
                .get(k)
                .and_then(|v| v.to_string().ok())
                .cloned()
        };
        let arch_name = meta_str("general.architecture")
            .ok_or_else(|| gguf_err("no general.architecture".into()))?;
        let tokenizer = vr_core::catch_parser_panic(|| Tokenizer::from_file(tokenizer))
            .map_err(|e| e.into())
            .and_then(|r| r)
            .map_err(|e| DialogError::Tokenizer(format!("{}: {e}", tokenizer.display())))?;
        let template = ChatTemplate::detect(meta_str("tokenizer.chat_template").as_deref(), |t| {
            tokenizer.token_to_id(t).is_some()
        })?;
        let device = Device::Cpu;
        let max_context = opts.max_context.max(16);
        let arch = match arch_name.as_str() {
            "qwen2" => Arch::Qwen2(qwen2::ModelWeights::from_gguf(
                &content,
                &mut file,
                &device,
                max_context,
                opts.dense_prefill,
            )?),
            "gemma3" => Arch::Gemma3(gemma3::ModelWeights::from_gguf(
                &content,
                &mut file,
                &device,
                max_context,
            )?),
            other => {
                return Err(DialogError::UnsupportedArchitecture {
                    arch: other.to_string(),
                })
            }
        };
        let mut stop_ids: Vec<u32> = template
            .stop_tokens()
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        if let Some(eos) = content
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
        {
            if !stop_ids.contains(&eos) {
                stop_ids.push(eos);
            }
        }
        if stop_ids.is_empty() {
            return Err(DialogError::Tokenizer(format!(
                "no end-of-turn token for {}",
                template.name()
            )));
        }
        let name = meta_str("general.name").unwrap_or_else(|| arch_name.clone());
        let label = format!(
            "local {} ({}, {} template from {})",
            name,
            arch.name(),
            template.name(),
            template.source
        );
        tracing::info!(model = %label, max_context = arch.max_positions(), "loaded local LLM");
        Ok(Self {
            arch,
            tokenizer,
            template,
            stop_ids,
            device,
            cached: Vec::new(),
            head: None,
            prefill_chunk: opts.prefill_chunk.max(1),
            label,
        })
    }

    pub fn describe(&self) -> &str {
        &self.label
    }

    /// The model's tokenizer (clone it for a [`crate::memory::ConversationMemory`] counter).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    pub fn capacity(&self) -> usize {
        self.arch.max_positions()
    }

    /// Token ids currently in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the cache (a new conversation).
    pub fn reset(&mut self) -> Result<(), DialogError> {
        self.arch.truncate_kv(0)?;
        self.cached.clear();
        self.head = None;
        Ok(())
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DialogError> {
        let enc = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| DialogError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Tokens of the prompt for `messages` ending as `end`.
    pub fn prompt_tokens(
        &self,
        messages: &[ChatMessage],
        end: PromptEnd<'_>,
    ) -> Result<Vec<u32>, DialogError> {
        self.tokenize(&self.template.render(messages, end)?)
    }

    /// Counts the tokens of one message as the template renders it (for memory budgeting).
    pub fn count_tokens(&self, text: &str) -> Result<usize, DialogError> {
        Ok(self.tokenize(text)?.len())
    }

    /// Brings the cache to exactly `tokens`, computing only what differs from its current
    /// contents. `interrupt` is polled between chunks; when it returns true the work done so far
    /// stays cached (still a valid prefix) and `complete` is false.
    pub fn sync_prompt(
        &mut self,
        tokens: &[u32],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<PrefillStats, DialogError> {
        if tokens.is_empty() {
            return Err(DialogError::BadRequest {
                reason: "empty prompt".into(),
            });
        }
        if tokens.len() > self.capacity() {
            return Err(DialogError::ContextOverflow {
                needed: tokens.len(),
                capacity: self.capacity(),
            });
        }
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        if common == tokens.len() && self.cached.len() == tokens.len() && self.head.is_some() {
            return Ok(PrefillStats {
                prompt_tokens: tokens.len(),
                reused: common,
                computed: 0,
                complete: true,
            });
        }
        // The next token is chosen from the output at the prompt's last position, so that position
        // is recomputed when the cache holds the whole prompt but not its output.
        let keep = common.min(tokens.len() - 1);
        if keep < self.cached.len() {
            self.arch.truncate_kv(keep)?;
            self.cached.truncate(keep);
            self.head = None;
        }
        let mut stats = PrefillStats {
            prompt_tokens: tokens.len(),
            reused: keep,
            computed: 0,
            complete: false,
        };
        for chunk in tokens[keep..].chunks(self.prefill_chunk) {
            if interrupt() {
                return Ok(stats);
            }
            self.feed(chunk)?;
            stats.computed += chunk.len();
        }
        stats.complete = true;
        Ok(stats)
    }

    fn feed(&mut self, chunk: &[u32]) -> Result<(), DialogError> {
        let pos = self.cached.len();
        if pos + chunk.len() > self.capacity() {
            return Err(DialogError::ContextOverflow {
                needed: pos + chunk.len(),
                capacity: self.capacity(),
            });
        }
        let x = Tensor::new(chunk, &self.device)?.unsqueeze(0)?;
        let (logits, hidden) = match self.arch.forward(&x, pos) {
            Ok(out) => out,
            Err(e) => {
                // A failed step may have left some layers longer than others: start clean.
                self.reset()?;
                return Err(e.into());
            }
        };
        self.cached.extend_from_slice(chunk);
        self.head = Some(Head {
            logits: logits
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?,
            hidden: hidden
                .squeeze(0)?
                .to_dtype(candle_core::DType::F32)?
                .to_vec1()?,
        });
        Ok(())
    }

    /// Logits at the last cached position (after a complete `sync_prompt` or a generated token).
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.head.as_ref().map(|h| h.logits.as_slice())
    }

    /// Speculative prefill: caches the prompt up to the user's unfinished turn (`messages` ends
    /// with the partial user message).
    pub fn prefill_open_turn(
        &mut self,
        messages: &[ChatMessage],
        interrupt: &dyn Fn() -> bool,
    ) -> Result<PrefillStats, DialogError> {
        let tokens = self.prompt_tokens(messages, PromptEnd::OpenUserTurn)?;
        self.sync_prompt(&tokens, interrupt)
    }

    /// Runs one generation, handing each event to `emit` (which returns false to stop, e.g. when
    /// the consumer has gone). Returns how it finished.
    pub fn generate(
        &mut self,
        req: &GenerateRequest,
        cancel: &CancelToken,
        emit: &mut dyn FnMut(LlmEvent) -> bool,
    ) -> Result<Finished, DialogError> {
        let started = Instant::now();
        let prompt = self.prompt_tokens(
            &req.messages,
            PromptEnd::Assistant {
                prefix: &req.assistant_prefix,
            },
        )?;
        let prefill = self.sync_prompt(&prompt, &|| cancel.is_cancelled())?;
        let mut stats = GenerationStats {
            prompt_tokens: prompt.len(),
            reused_tokens: prefill.reused,
            ..GenerationStats::default()
        };
        let finish = |reason, mut stats: GenerationStats| {
            stats.total = started.elapsed();
            Finished { reason, stats }
        };
        if !prefill.complete {
            return Ok(finish(FinishReason::Cancelled, stats));
        }
        let mut sampler = Sampler::new(req.sampling);
        let mut detok = Detokenizer::new(&prompt);
        loop {
            if cancel.is_cancelled() {
                return Ok(finish(FinishReason::Cancelled, stats));
            }
            if stats.generated_tokens >= req.max_tokens {
                let f = finish(FinishReason::Length, stats);
                emit(LlmEvent::Finished(f.clone()));
                return Ok(f);
            }
            let head = self.head.as_ref().ok_or_else(|| DialogError::BadRequest {
                reason: "no logits after prefill".into(),
            })?;
            let id = sampler.sample(&head.logits);
            if self.stop_ids.contains(&(id as u32)) {
                let f = finish(FinishReason::Stop, stats);
                emit(LlmEvent::Finished(f.clone()));
                return Ok(f);
            }
            let (logprob, entropy, margin) = features(&head.logits, id);
            let token = Token {
                text: detok.push(&self.tokenizer, id as u32)?,
                id: Some(id as u32),
                features: Some(TokenFeatures {
                    logprob,
                    entropy: Some(entropy),
                    margin: Some(margin),
                    hidden: req.want_hidden.then(|| head.hidden.clone()),
                }),
            };
            stats.generated_tokens += 1;
            if stats.generated_tokens == 1 {
                stats.time_to_first_token = started.elapsed();
            }
            if !emit(LlmEvent::Token(token)) {
                return Ok(finish(FinishReason::Cancelled, stats));
            }
            if stats.generated_tokens >= req.max_tokens || cancel.is_cancelled() {
                // The last token is not fed: nobody needs the logits after it.
                continue;
            }
            if self.cached.len() + 1 > self.capacity() {
                let f = finish(FinishReason::Length, stats);
                emit(LlmEvent::Finished(f.clone()));
                return Ok(f);
            }
            self.feed(&[id as u32])?;
        }
    }
}

/// Turns generated ids into text pieces. Decoding a token alone loses the spaces and multi-byte
/// characters that depend on its neighbours, so each step decodes a short window of preceding
/// ids with and without the new one and emits the difference, holding back an incomplete UTF-8
/// character until the token that completes it.
pub(crate) struct Detokenizer {
    ids: Vec<u32>,
    /// Index in `ids` where the window starts.
    start: usize,
    /// How many ids of the window have been emitted.
    emitted: usize,
}

const DETOK_CONTEXT: usize = 4;

impl Detokenizer {
    pub(crate) fn new(prompt: &[u32]) -> Self {
        let ctx = &prompt[prompt.len().saturating_sub(DETOK_CONTEXT)..];
        Self {
            ids: ctx.to_vec(),
            start: 0,
            emitted: ctx.len(),
        }
    }

    pub(crate) fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, DialogError> {
        self.ids.push(id);
        let dec = |ids: &[u32]| {
            tok.decode(ids, false)
                .map_err(|e| DialogError::Tokenizer(e.to_string()))
        };
        let before = dec(&self.ids[self.start..self.emitted])?;
        let after = dec(&self.ids[self.start..])?;
        if after.ends_with('\u{FFFD}') || !after.starts_with(&before) {
            return Ok(String::new());
        }
        let piece = after[before.len()..].to_string();
        self.emitted = self.ids.len();
        self.start = self.emitted.saturating_sub(DETOK_CONTEXT);
        Ok(piece)
    }
}

/// A [`LocalLlm`] on its own worker thread, usable from sync or async code.
pub struct LocalEngine {
    worker: Worker,
}

impl LocalEngine {
    pub fn new(llm: LocalLlm) -> Result<Self, DialogError> {
        Ok(Self {
            worker: Worker::spawn("llm-local", move |inbox| inbox.serve(Ok(llm)))?,
        })
    }

    /// Blocks until every job submitted before this call has finished (a speculative prefill
    /// included). For tests and benchmarks; the loop never needs to wait.
    pub fn wait_idle(&self) -> Result<(), DialogError> {
        self.worker.wait_idle()
    }
}

super::worker::model_session!(LocalLlm);

impl LlmEngine for LocalEngine {
    fn describe(&self) -> String {
        self.worker.label().to_string()
    }

    fn generate(&self, req: GenerateRequest) -> Result<Generation, DialogError> {
        self.worker.generate(req)
    }

    fn prepare(&self, messages: &[ChatMessage]) {
        self.worker.prepare(messages);
    }

    fn health(&self) -> Result<(), String> {
        self.worker.health()
    }
}
