//! Language-model engines behind one streaming interface.
//!
//! A caller builds a [`GenerateRequest`] (chat messages, optionally a forced start of the
//! assistant's answer) and calls [`LlmEngine::generate`]; the returned [`Generation`] yields
//! [`LlmEvent::Token`]s as they are produced, each with its text piece and, where the backend can
//! tell, [`TokenFeatures`] (log-probability, entropy, top-1/top-2 margin, last hidden state) for the
//! dual-path verifier, then one [`LlmEvent::Finished`]. [`Generation::cancel`] (or any clone of its
//! [`CancelToken`]) stops it: the engine checks the token between tokens and the stream returns
//! nothing after a cancel, so a barge-in never lets a stale token through.
//!
//! Engines: [`local::LocalEngine`] (candle GGUF on this machine, with KV-cache reuse across turns
//! and speculative prefill via [`LlmEngine::prepare`]), [`llamacpp::LlamaCppEngine`] (the same
//! GGUF files and the same features run by llama.cpp in-process, several times faster on the CPU;
//! no hidden state) and [`openai::OpenAiEngine`] (any OpenAI-compatible streaming server: vLLM,
//! llama.cpp server, Ollama).
//!
//! ```ignore
//! let mut gen = engine.generate(GenerateRequest::new(messages))?;
//! while let Some(ev) = gen.next().await {          // or gen.blocking_next() off-runtime
//!     match ev? {
//!         LlmEvent::Token(t) => chunker.push(&t.text),
//!         LlmEvent::Finished(f) => tracing::info!(?f.reason, "answer done"),
//!     }
//! }
//! ```

pub mod llamacpp;
pub mod local;
pub mod openai;
pub mod sampling;
pub mod template;
pub(crate) mod worker;

use crate::DialogError;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: Role::System,
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: Role::User,
            content: content.into(),
        }
    }
    pub fn assistant(content: impl Into<String>) -> Self {
        Self {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// How the next token is chosen. `temperature == 0` is greedy (argmax), which ignores `top_p` and
/// `seed`; otherwise nucleus sampling from a generator seeded with `seed`, so a run is repeatable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
    };
}

impl Default for Sampling {
    fn default() -> Self {
        Self::GREEDY
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The conversation, oldest first. A system message, if any, comes first.
    pub messages: Vec<ChatMessage>,
    /// Text the assistant's answer is forced to start with (the slow path continuing a prefix the
    /// fast path already spoke). Generation continues after it; it is not emitted again.
    pub assistant_prefix: String,
    /// Upper bound on generated tokens.
    pub max_tokens: usize,
    pub sampling: Sampling,
    /// Also return the final hidden state per token (candle engine only; ~3.5 KB per token).
    pub want_hidden: bool,
}

impl GenerateRequest {
    pub fn new(messages: Vec<ChatMessage>) -> Self {
        Self {
            messages,
            assistant_prefix: String::new(),
            max_tokens: 256,
            sampling: Sampling::GREEDY,
            want_hidden: false,
        }
    }
}

/// What the model thought of one chosen token, from its full output distribution (the raw
/// logits at temperature 1, before any sampling transform).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenFeatures {
    /// ln p(chosen token); ≤ 0.
    pub logprob: f32,
    /// Entropy of the next-token distribution in nats; ≥ 0. `None` when the backend only reports
    /// the top few log-probabilities.
    pub entropy: Option<f32>,
    /// Top-1 minus top-2 logit (equal to the difference of their log-probabilities); ≥ 0.
    pub margin: Option<f32>,
    /// Final-norm hidden state of the position that predicted this token.
    pub hidden: Option<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The text this token adds to the answer. Can be empty when a character spans several
    /// tokens; the text then arrives with the token that completes it.
    pub text: String,
    /// Vocabulary id, when the backend exposes it (local engine).
    pub id: Option<u32>,
    pub features: Option<TokenFeatures>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model ended its turn.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The cancel token was set.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenerationStats {
    /// Tokens in the rendered prompt (including a forced assistant prefix).
    pub prompt_tokens: usize,
    /// Prompt tokens whose KV entries were already cached (not recomputed).
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// From the request to the first token's text being available.
    pub time_to_first_token: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub reason: FinishReason,
    pub stats: GenerationStats,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    Token(Token),
    Finished(Finished),
}

/// Shared cancellation flag; cheap to clone, checked by engines between tokens. Async waiters
/// ([`CancelToken::cancelled`]) wake at once, so an HTTP stream stalled on the network stops too.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<CancelInner>);

#[derive(Debug, Default)]
struct CancelInner {
    flag: AtomicBool,
    notify: tokio::sync::Notify,
}

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        self.0.notify.notify_waiters();
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }
    /// Resolves once [`CancelToken::cancel`] has been called.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cancel between the two is not missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}

/// Bound on tokens buffered between an engine and a slow consumer; the engine waits when full,
/// so an abandoned stream costs at most this many tokens of work.
pub(crate) const STREAM_BUFFER: usize = 64;

/// A running generation. Dropping it cancels the work.
#[derive(Debug)]
pub struct Generation {
    rx: tokio::sync::mpsc::Receiver<Result<LlmEvent, DialogError>>,
    cancel: CancelToken,
    done: bool,
}

impl Generation {
    pub(crate) fn channel(cancel: CancelToken) -> (GenerationSender, Generation) {
        let (tx, rx) = tokio::sync::mpsc::channel(STREAM_BUFFER);
        (
            GenerationSender {
                tx,
                cancel: cancel.clone(),
            },
            Generation {
                rx,
                cancel,
                done: false,
            },
        )
    }

    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }

    /// Stops the generation; no further event is returned.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    fn accept(
        &mut self,
        ev: Option<Result<LlmEvent, DialogError>>,
    ) -> Option<Result<LlmEvent, DialogError>> {
        if self.done || self.cancel.is_cancelled() {
            self.done = true;
            return None;
        }
        match &ev {
            None | Some(Err(_)) | Some(Ok(LlmEvent::Finished(_))) => self.done = true,
            Some(Ok(LlmEvent::Token(_))) => {}
        }
        ev
    }

    /// The next event; `None` after `Finished`, an error, or a cancel.
    pub async fn next(&mut self) -> Option<Result<LlmEvent, DialogError>> {
        if self.done || self.cancel.is_cancelled() {
            self.done = true;
            return None;
        }
        let ev = self.rx.recv().await;
        self.accept(ev)
    }

    /// Blocking variant of [`Generation::next`] for threads outside an async runtime (panics
    /// inside one, like `tokio::sync::mpsc::Receiver::blocking_recv`).
    pub fn blocking_next(&mut self) -> Option<Result<LlmEvent, DialogError>> {
        if self.done || self.cancel.is_cancelled() {
            self.done = true;
            return None;
        }
        let ev = self.rx.blocking_recv();
        self.accept(ev)
    }

    /// Non-blocking variant of [`Generation::next`], for a loop that also feeds audio.
    pub fn try_next(&mut self) -> Polled {
        if self.done || self.cancel.is_cancelled() {
            self.done = true;
            return Polled::Done;
        }
        let ev = match self.rx.try_recv() {
            Ok(ev) => Some(ev),
            Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return Polled::Pending,
            Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
        };
        match self.accept(ev) {
            Some(ev) => Polled::Ready(ev),
            None => Polled::Done,
        }
    }

    /// Drains the stream into the answer text and the finish record (tests, evals, batch use).
    pub fn blocking_collect(
        mut self,
    ) -> Result<(String, Vec<Token>, Option<Finished>), DialogError> {
        let mut text = String::new();
        let mut tokens = Vec::new();
        let mut finished = None;
        while let Some(ev) = self.blocking_next() {
            match ev? {
                LlmEvent::Token(t) => {
                    text.push_str(&t.text);
                    tokens.push(t);
                }
                LlmEvent::Finished(f) => finished = Some(f),
            }
        }
        Ok((text, tokens, finished))
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The producing half, held by the engine's worker.
#[derive(Debug, Clone)]
pub(crate) struct GenerationSender {
    tx: tokio::sync::mpsc::Sender<Result<LlmEvent, DialogError>>,
    cancel: CancelToken,
}

impl GenerationSender {
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled() || self.tx.is_closed()
    }
    /// From a plain thread. False when the consumer is gone or cancelled: stop working.
    pub(crate) fn blocking_send(&self, ev: Result<LlmEvent, DialogError>) -> bool {
        !self.is_cancelled() && self.tx.blocking_send(ev).is_ok()
    }
    /// From an async task.
    pub(crate) async fn send(&self, ev: Result<LlmEvent, DialogError>) -> bool {
        !self.is_cancelled() && self.tx.send(ev).await.is_ok()
    }
}

/// The checks every backend makes before starting any work, so a bad request fails the same way
/// on all of them.
pub(crate) fn check_request(req: &GenerateRequest) -> Result<(), DialogError> {
    if req.messages.is_empty() {
        return Err(DialogError::BadRequest {
            reason: "no messages".into(),
        });
    }
    Ok(())
}

/// What [`Generation::try_next`] found.
#[derive(Debug)]
pub enum Polled {
    /// The next event.
    Ready(Result<LlmEvent, DialogError>),
    /// Nothing yet; the generation is still running.
    Pending,
    /// The stream is over (after `Finished`, an error, or a cancel).
    Done,
}

/// One language-model backend. Implementations are handles: `generate` returns at once and the
/// work runs on the engine's own thread or task.
pub trait LlmEngine: Send + Sync {
    /// Short description for logs ("local qwen2 (ChatML)", "openai http://127.0.0.1:8080").
    fn describe(&self) -> String;

    /// Starts answering `req`. Errors here are immediate (bad request, engine stopped); errors
    /// while generating (server unreachable, model failure) arrive as an `Err` event.
    fn generate(&self, req: GenerateRequest) -> Result<Generation, DialogError>;

    /// Hint that the next request will start with `messages`, whose last message is the user's
    /// turn still in progress (a partial transcript). An engine with a local KV cache prefills it
    /// now so the final request only computes what changed; a later `prepare` or `generate` with a
    /// different text rolls the cache back to the common prefix. Others ignore it.
    fn prepare(&self, messages: &[ChatMessage]) {
        let _ = messages;
    }

    /// Whether the engine can still answer: `Err` says why not (a local worker that died). A
    /// remote backend's reachability is only known per request, so it reports `Ok` here.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}
