//! The llama.cpp engine: the same GGUF files as the candle engine, run by llama.cpp (crate
//! `llama-cpp-2`; `llama-cpp-sys-2` builds llama.cpp from the source it bundles, CPU only, nothing
//! downloaded at build or run time).
//!
//! It mirrors [`super::local`] step for step, so the two are interchangeable behind [`LlmEngine`]
//! and comparable token for token: prompts are rendered by the same [`ChatTemplate`] and tokenized
//! by the same `tokenizer.json` from the model store (both engines feed identical ids; the GGUF
//! vocabulary is checked to agree on the control tokens at load), tokens are chosen by the same
//! [`Sampler`] from the full logits, and the per-token features come from the same [`features`].
//! llama.cpp only replaces the forward pass — its quantized CPU kernels are several times faster
//! than candle's on this model (README, "LLM engines").
//!
//! [`LlamaCppModel`] holds the weights (read-only, memory-mapped). [`LlamaCppLlm`] is one llama.cpp
//! context (KV cache) borrowing it: the synchronous core, which tracks the ids in its KV cache,
//! computes only the suffix after the longest common prefix with a new prompt and removes the
//! positions past that prefix from the cache first (cross-turn reuse and speculative-prefill
//! rollback are the same operation). [`LlamaCppEngine`] runs one on its own worker thread with the
//! same job queue as [`super::local::LocalEngine`]: a speculative prefill yields between chunks as
//! soon as newer work arrives, a generation checks its cancel token before every forward pass.
//!
//! The final hidden state ([`TokenFeatures::hidden`], the dual path's verifier reads it) comes
//! only from a session opened with [`LlamaCppOptions::hidden_states`]: llama.cpp then runs its
//! context with `embeddings` on, which makes every position of every batch an output (logits and
//! hidden state for each prefill token: about a third more prefill work on Qwen-0.5B, whose
//! vocabulary projection is large), and `llama-cpp-2` has no per-batch switch. Only the drafter
//! pays it.

use super::local::{Detokenizer, PrefillStats};
use super::sampling::{features, Sampler};
use super::template::{ChatTemplate, PromptEnd};
use super::worker::Worker;
use super::{
    CancelToken, ChatMessage, FinishReason, Finished, GenerateRequest, Generation, GenerationStats,
    LlmEngine, LlmEvent, Token, TokenFeatures,
};
use crate::DialogError;
use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use std::num::NonZeroU32;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;
use tokenizers::Tokenizer;

/// Options fixed when a context is created.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaCppOptions {
    /// KV-cache capacity in positions (prompt + answer).
    pub max_context: usize,
    /// Prompt tokens per `llama_decode` during prefill (also llama.cpp's batch size). Larger is
    /// faster per token; smaller lets a speculative prefill yield sooner.
    pub prefill_chunk: usize,
    /// Threads llama.cpp computes with, for decoding and for prefill.
    pub threads: usize,
    /// Report the final-norm hidden state with each generated token (when the request asks for
    /// it). Costs every prefill position an output; see the module docs.
    pub hidden_states: bool,
}

impl Default for LlamaCppOptions {
    fn default() -> Self {
        Self {
            max_context: 4096,
            prefill_chunk: 64,
            threads: 1,
            hidden_states: false,
        }
    }
}

/// llama.cpp's process-wide initialisation (`llama_backend_init` may run once per process; the
/// backend is never freed, models and contexts of any engine share it).
fn backend() -> Result<&'static LlamaBackend, DialogError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            route_logs_to_tracing();
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| DialogError::LlamaCpp(format!("backend initialisation: {e}")))
}

/// llama.cpp and ggml print to stderr unless given a log callback. Theirs is chattier than ours
/// (every metadata key and tensor buffer at load), so their INFO becomes our DEBUG; warnings and
/// errors keep their level. Target `llama_cpp`, e.g. `RUST_LOG=info,llama_cpp=debug`.
#[allow(unsafe_code)]
fn route_logs_to_tracing() {
    // SAFETY: registers a plain function with no user data; llama.cpp stores the pointer and
    // calls it from whichever thread logs, which `log_to_tracing` allows (it only reads its
    // arguments and calls `tracing`).
    unsafe { llama_cpp_sys_2::llama_log_set(Some(log_to_tracing), std::ptr::null_mut()) };
}

#[allow(unsafe_code)]
unsafe extern "C" fn log_to_tracing(
    level: llama_cpp_sys_2::ggml_log_level,
    text: *const std::os::raw::c_char,
    _user_data: *mut std::os::raw::c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a NUL-terminated string that stays valid for the call.
    let text = unsafe { std::ffi::CStr::from_ptr(text) }.to_string_lossy();
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    match level {
        llama_cpp_sys_2::GGML_LOG_LEVEL_ERROR => tracing::error!(target: "llama_cpp", "{text}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_WARN => tracing::warn!(target: "llama_cpp", "{text}"),
        llama_cpp_sys_2::GGML_LOG_LEVEL_INFO => tracing::debug!(target: "llama_cpp", "{text}"),
        // DEBUG and CONT (the rest of an unfinished line, e.g. progress dots).
        _ => tracing::trace!(target: "llama_cpp", "{text}"),
    }
}

/// llama.cpp's summary of the CPU features it was compiled for ("AVX2 = 1 | … | REPACK = 1 |"),
/// which shows whether the build is optimised for this machine.
#[allow(unsafe_code)]
pub fn system_info() -> Result<String, DialogError> {
    backend()?;
    // SAFETY: returns a pointer to a NUL-terminated string in a static buffer inside llama.cpp,
    // valid until the next call; it is copied before anything else can call it again from here.
    let info = unsafe { llama_cpp_sys_2::llama_print_system_info() };
    if info.is_null() {
        return Ok(String::new());
    }
    // SAFETY: non-null and NUL-terminated, as above.
    Ok(unsafe { std::ffi::CStr::from_ptr(info) }
        .to_string_lossy()
        .into_owned())
}

/// One GGUF model loaded by llama.cpp, with the tokenizer and chat template the engine uses.
pub struct LlamaCppModel {
    model: LlamaModel,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    stop_ids: Vec<u32>,
    n_ctx_train: usize,
    label: String,
}

impl LlamaCppModel {
    /// Loads `model` (a directory with `model.gguf` and `tokenizer.json`) from the verified store.
    pub fn from_store(store: &vr_core::ModelStore, model: &str) -> Result<Self, DialogError> {
        let dir = store.dir(model)?;
        Self::from_files(&dir.join("model.gguf"), &dir.join("tokenizer.json"))
    }

    pub fn from_files(gguf: &Path, tokenizer: &Path) -> Result<Self, DialogError> {
        let gguf_err = |reason: String| DialogError::Gguf {
            path: gguf.display().to_string(),
            reason,
        };
        // llama.cpp only says "failed to load" (and llama-cpp-2 asserts in debug builds), so a
        // missing file is named here.
        if !gguf.is_file() {
            return Err(gguf_err("no such file".into()));
        }
        let tokenizer = vr_core::catch_parser_panic(|| Tokenizer::from_file(tokenizer))
            .map_err(|e| e.into())
            .and_then(|r| r)
            .map_err(|e| DialogError::Tokenizer(format!("{}: {e}", tokenizer.display())))?;
        let model = LlamaModel::load_from_file(backend()?, gguf, &LlamaModelParams::default())
            .map_err(|e| gguf_err(format!("llama.cpp cannot load it: {e}")))?;
        let meta = |k: &str| model.meta_val_str(k).ok();
        let template = ChatTemplate::detect(meta("tokenizer.chat_template").as_deref(), |t| {
            tokenizer.token_to_id(t).is_some()
        })?;
        let vocab = model.vocab();
        // The prompt is tokenized by tokenizer.json and fed to llama.cpp as ids, so both must be
        // the same vocabulary: the ids must be in range, and the control tokens the template
        // emits must map to the same ids in both.
        let hf_size = tokenizer.get_vocab_size(true);
        let n_vocab = usize::try_from(vocab.n_tokens()).unwrap_or(0);
        if hf_size > n_vocab {
            return Err(DialogError::Tokenizer(format!(
                "tokenizer.json has {hf_size} tokens but the GGUF vocabulary only {n_vocab}: they belong to different models"
            )));
        }
        let markers: &[&str] = match template.family {
            super::template::TemplateFamily::ChatMl { .. } => &["<|im_start|>", "<|im_end|>"],
            super::template::TemplateFamily::Gemma => &["<start_of_turn>", "<end_of_turn>"],
        };
        for &marker in markers.iter().chain(template.stop_tokens()) {
            let Some(hf) = tokenizer.token_to_id(marker) else {
                continue;
            };
            let ll: Vec<i32> = vocab
                .tokenize(marker.as_bytes(), false, true)
                .into_iter()
                .map(|t| t.0)
                .collect();
            if ll.len() != 1 || i64::from(ll[0]) != i64::from(hf) {
                return Err(DialogError::Tokenizer(format!(
                    "tokenizer.json maps {marker} to {hf}, the GGUF vocabulary to {ll:?}: they belong to different models"
                )));
            }
        }
        let mut stop_ids: Vec<u32> = template
            .stop_tokens()
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        if let Ok(eos) = u32::try_from(vocab.eos().0) {
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
        let arch = meta("general.architecture").unwrap_or_else(|| "unknown".into());
        let name = meta("general.name").unwrap_or_else(|| arch.clone());
        let label = format!(
            "llama.cpp {name} ({arch}, {} template from {})",
            template.name(),
            template.source
        );
        tracing::info!(model = %label, "loaded llama.cpp LLM");
        tracing::debug!(system_info = %system_info()?, "llama.cpp build");
        Ok(Self {
            n_ctx_train: usize::try_from(model.n_ctx_train()).unwrap_or(usize::MAX),
            model,
            tokenizer,
            template,
            stop_ids,
            label,
        })
    }

    pub fn describe(&self) -> &str {
        &self.label
    }

    /// The tokenizer prompts are encoded with (clone it for a memory counter).
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// A new context (empty KV cache) on these weights.
    pub fn session(&self, opts: &LlamaCppOptions) -> Result<LlamaCppLlm<'_>, DialogError> {
        let capacity = opts.max_context.clamp(16, self.n_ctx_train.max(16));
        let chunk = opts.prefill_chunk.clamp(1, capacity);
        let to_u32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let threads = i32::try_from(opts.threads.max(1)).unwrap_or(i32::MAX);
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(to_u32(capacity)))
            .with_n_batch(to_u32(chunk))
            .with_n_ubatch(to_u32(chunk))
            .with_n_seq_max(1)
            .with_n_threads(threads)
            .with_n_threads_batch(threads)
            .with_embeddings(opts.hidden_states);
        // Per-token (unpooled) hidden states: the model's own pooling type would average them.
        let params = if opts.hidden_states {
            params.with_pooling_type(LlamaPoolingType::None)
        } else {
            params
        };
        let ctx = self
            .model
            .new_context(backend()?, params)
            .map_err(|e| DialogError::LlamaCpp(format!("cannot create a context: {e}")))?;
        Ok(LlamaCppLlm {
            model: self,
            ctx,
            batch: LlamaBatch::new(chunk, 1),
            cached: Vec::new(),
            head: Vec::new(),
            head_hidden: Vec::new(),
            hidden_states: opts.hidden_states,
            head_valid: false,
            prefill_chunk: chunk,
            capacity,
            label: format!(
                "{}, {} thread{}",
                self.label,
                opts.threads.max(1),
                if opts.threads > 1 { "s" } else { "" }
            ),
        })
    }
}

/// One llama.cpp context on a [`LlamaCppModel`]: the KV cache and the ids in it.
pub struct LlamaCppLlm<'m> {
    model: &'m LlamaCppModel,
    ctx: LlamaContext<'m>,
    /// Reused for every `llama_decode`; holds up to `prefill_chunk` tokens.
    batch: LlamaBatch<'static>,
    /// Ids whose keys/values are in the cache, in order (positions 0..len).
    cached: Vec<u32>,
    /// Logits at the last cached position (copied out: llama.cpp's buffer is overwritten by the
    /// next decode and its accessor panics on a stale index).
    head: Vec<f32>,
    /// Final-norm hidden state at the last cached position, when `hidden_states` is on.
    head_hidden: Vec<f32>,
    hidden_states: bool,
    /// False after a rollback or reset: `head` no longer belongs to the last cached position.
    head_valid: bool,
    prefill_chunk: usize,
    capacity: usize,
    label: String,
}

impl LlamaCppLlm<'_> {
    pub fn describe(&self) -> &str {
        &self.label
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.model.tokenizer
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Token ids currently in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        &self.cached
    }

    /// Forgets the cache (a new conversation).
    pub fn reset(&mut self) {
        self.ctx.clear_kv_cache();
        self.cached.clear();
        self.head_valid = false;
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, DialogError> {
        let enc = self
            .model
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
        self.tokenize(&self.model.template.render(messages, end)?)
    }

    /// Removes every cached position from `keep` on. llama.cpp refuses partial removal only for
    /// recurrent models; then the whole cache goes and the prompt is recomputed.
    fn truncate(&mut self, keep: usize) {
        let removed = u32::try_from(keep)
            .ok()
            .and_then(|p0| self.ctx.clear_kv_cache_seq(Some(0), Some(p0), None).ok())
            .unwrap_or(false);
        if removed {
            self.cached.truncate(keep);
            self.head_valid = false;
        } else {
            tracing::debug!(
                keep,
                "llama.cpp cannot remove part of the cache; clearing it"
            );
            self.reset();
        }
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
        if tokens.len() > self.capacity {
            return Err(DialogError::ContextOverflow {
                needed: tokens.len(),
                capacity: self.capacity,
            });
        }
        let common = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        if common == tokens.len() && self.cached.len() == tokens.len() && self.head_valid {
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
            self.truncate(keep);
        }
        let start = self.cached.len();
        let mut stats = PrefillStats {
            prompt_tokens: tokens.len(),
            reused: start,
            computed: 0,
            complete: false,
        };
        for chunk in tokens[start..].chunks(self.prefill_chunk) {
            if interrupt() {
                return Ok(stats);
            }
            self.feed(chunk)?;
            stats.computed += chunk.len();
        }
        stats.complete = true;
        Ok(stats)
    }

    /// One `llama_decode` of `chunk` (at most `prefill_chunk` ids) after the cached positions;
    /// only the last position's logits are requested.
    fn feed(&mut self, chunk: &[u32]) -> Result<(), DialogError> {
        let pos = self.cached.len();
        if pos + chunk.len() > self.capacity {
            return Err(DialogError::ContextOverflow {
                needed: pos + chunk.len(),
                capacity: self.capacity,
            });
        }
        self.batch.clear();
        for (i, &id) in chunk.iter().enumerate() {
            let token = i32::try_from(id).map_err(|_| DialogError::BadRequest {
                reason: format!("token id {id} out of range"),
            })?;
            let p = i32::try_from(pos + i).map_err(|_| DialogError::ContextOverflow {
                needed: pos + i,
                capacity: self.capacity,
            })?;
            // With embeddings on llama.cpp outputs every position anyway (and warns when one is
            // not marked).
            let output = self.hidden_states || i + 1 == chunk.len();
            self.batch
                .add(LlamaToken(token), p, &[0], output)
                .map_err(|e| DialogError::LlamaCpp(format!("batch: {e}")))?;
        }
        if let Err(e) = self.ctx.decode(&mut self.batch) {
            // A failed decode may have left part of the batch in the cache: start clean.
            self.reset();
            return Err(DialogError::LlamaCpp(format!("decode: {e}")));
        }
        self.cached.extend_from_slice(chunk);
        // The batch's last entry is the only one with logits requested.
        let last = self.batch.n_tokens() - 1;
        self.head.clear();
        self.head.extend_from_slice(self.ctx.get_logits_ith(last));
        if self.hidden_states {
            let hidden = self
                .ctx
                .embeddings_ith(last)
                .map_err(|e| DialogError::LlamaCpp(format!("hidden state: {e}")))?;
            self.head_hidden.clear();
            self.head_hidden.extend_from_slice(hidden);
        }
        self.head_valid = true;
        Ok(())
    }

    /// Logits at the last cached position (after a complete `sync_prompt` or a generated token).
    pub fn last_logits(&self) -> Option<&[f32]> {
        self.head_valid.then_some(self.head.as_slice())
    }

    /// Log-probability of each token of `continuation` following `prompt`, one forward pass per
    /// continuation token after the prompt's prefill (which reuses the cache like
    /// [`Self::sync_prompt`]). This is how the dual path's data scores a draft under the slow
    /// model.
    ///
    /// # Errors
    /// An empty prompt, a context overflow or a llama.cpp failure.
    pub fn score_continuation(
        &mut self,
        prompt: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<f32>, DialogError> {
        if prompt.len() + continuation.len() > self.capacity {
            return Err(DialogError::ContextOverflow {
                needed: prompt.len() + continuation.len(),
                capacity: self.capacity,
            });
        }
        self.sync_prompt(prompt, &|| false)?;
        let mut out = Vec::with_capacity(continuation.len());
        for (i, &id) in continuation.iter().enumerate() {
            let logits = self.last_logits().ok_or_else(|| DialogError::BadRequest {
                reason: "no logits after prefill".into(),
            })?;
            let index = usize::try_from(id).unwrap_or(usize::MAX);
            if index >= logits.len() {
                return Err(DialogError::BadRequest {
                    reason: format!("token {id} is outside the vocabulary ({})", logits.len()),
                });
            }
            out.push(features(logits, index).0);
            if i + 1 < continuation.len() {
                self.feed(&[id])?;
            }
        }
        Ok(out)
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

    /// The language model's own end-of-turn probability: after the user's unfinished turn
    /// (`messages` ends with the partial user message), how likely its next token ends the
    /// message (the template's end-of-turn tokens, summed). It is read from the logits the
    /// speculative prefill of the same prompt computes anyway ([`Self::prefill_open_turn`]), so
    /// in the live loop it costs no extra forward pass: no second model, unlike Smart Turn.
    ///
    /// # Errors
    /// As [`Self::prefill_open_turn`].
    pub fn end_of_turn_probability(
        &mut self,
        messages: &[ChatMessage],
    ) -> Result<f32, DialogError> {
        self.prefill_open_turn(messages, &|| false)?;
        let logits = self.last_logits().ok_or_else(|| DialogError::BadRequest {
            reason: "no logits after prefill".into(),
        })?;
        let p: f64 = self
            .model
            .stop_ids
            .iter()
            .filter_map(|&id| usize::try_from(id).ok().filter(|&i| i < logits.len()))
            .map(|i| f64::from(features(logits, i).0).exp())
            .sum();
        Ok(p.min(1.0) as f32)
    }

    /// Runs one generation, handing each event to `emit` (which returns false to stop, e.g. when
    /// the consumer has gone). Returns how it finished. Same contract as
    /// [`super::local::LocalLlm::generate`].
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
            let logits = self.last_logits().ok_or_else(|| DialogError::BadRequest {
                reason: "no logits after prefill".into(),
            })?;
            let id = sampler.sample(logits);
            let id32 = u32::try_from(id).map_err(|_| DialogError::BadRequest {
                reason: format!("sampled id {id} out of range"),
            })?;
            if self.model.stop_ids.contains(&id32) {
                let f = finish(FinishReason::Stop, stats);
                emit(LlmEvent::Finished(f.clone()));
                return Ok(f);
            }
            let (logprob, entropy, margin) = features(logits, id);
            let token = Token {
                text: detok.push(&self.model.tokenizer, id32)?,
                id: Some(id32),
                features: Some(TokenFeatures {
                    logprob,
                    entropy: Some(entropy),
                    margin: Some(margin),
                    hidden: (req.want_hidden && self.hidden_states)
                        .then(|| self.head_hidden.clone()),
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
            if self.cached.len() + 1 > self.capacity {
                let f = finish(FinishReason::Length, stats);
                emit(LlmEvent::Finished(f.clone()));
                return Ok(f);
            }
            self.feed(&[id32])?;
        }
    }
}

/// A [`LlamaCppLlm`] on its own worker thread, usable from sync or async code. The worker owns
/// the model and creates the context on it (the context borrows the model, so both live in the
/// worker's frame).
pub struct LlamaCppEngine {
    worker: Worker,
}

impl LlamaCppEngine {
    /// Starts the worker; returns once its context exists (or with the error creating it).
    pub fn new(model: LlamaCppModel, opts: LlamaCppOptions) -> Result<Self, DialogError> {
        Self::with_priority(model, opts, 0)
    }

    /// Like [`LlamaCppEngine::new`], with the worker (and the compute threads llama.cpp starts
    /// from it, which inherit its priority) `nice` steps below the process's OS priority.
    pub fn with_priority(
        model: LlamaCppModel,
        opts: LlamaCppOptions,
        nice: i32,
    ) -> Result<Self, DialogError> {
        let worker = Worker::spawn("llm-llamacpp", move |inbox| {
            crate::priority::lower_this_thread(nice, "llama.cpp");
            inbox.serve(model.session(&opts));
        })?;
        Ok(Self { worker })
    }

    /// Blocks until every job submitted before this call has finished (a speculative prefill
    /// included). For tests and benchmarks; the loop never needs to wait.
    pub fn wait_idle(&self) -> Result<(), DialogError> {
        self.worker.wait_idle()
    }
}

super::worker::model_session!(LlamaCppLlm<'_>);

impl LlmEngine for LlamaCppEngine {
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
