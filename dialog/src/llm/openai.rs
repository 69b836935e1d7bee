//! OpenAI-compatible streaming chat client: `POST {base}/v1/chat/completions` with
//! `stream: true`, read as server-sent events (`data: {chunk}` … `data: [DONE]`). The subset used
//! here is what vLLM, llama.cpp's server, llama-cpp-python and Ollama all implement.
//!
//! Failure policy: a refused or timed-out *connection* is retried with exponential backoff (the
//! server may be starting); anything after the request reached the server is not retried, since
//! a generation is not idempotent. A 4xx/5xx answer becomes [`DialogError::HttpStatus`] with the
//! server's own message. A server that stops sending for `read_timeout` ends the stream with
//! [`DialogError::Timeout`]. Cancelling drops the connection, which makes the server stop.
//!
//! Features come from `logprobs` when the server returns them (requested with
//! `logprobs: true, top_logprobs: 2`): the chosen token's log-probability and the top-1/top-2
//! margin; entropy needs the full distribution and stays `None`.
//!
//! A forced assistant prefix is sent as a final assistant message with vLLM's
//! `continue_final_message` flag; servers without that extension may not continue it.

use super::{
    CancelToken, FinishReason, Finished, GenerateRequest, Generation, GenerationSender,
    GenerationStats, LlmEngine, LlmEvent, Token, TokenFeatures,
};
use crate::DialogError;
use serde::Deserialize;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub struct OpenAiOptions {
    /// Server root, e.g. `http://127.0.0.1:8080` (a trailing `/v1` is accepted).
    pub base_url: String,
    /// Model name sent in the request (servers serving one model ignore it).
    pub model: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// Longest silence allowed while waiting for the response headers or the next chunk.
    pub read_timeout: Duration,
    /// Extra attempts after a connection failure.
    pub connect_retries: u32,
    /// Wait before the first retry; doubles on each further one.
    pub retry_backoff: Duration,
    /// Ask for `logprobs`/`top_logprobs` (some servers reject it).
    pub request_logprobs: bool,
}

impl OpenAiOptions {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            model: "default".into(),
            api_key: None,
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(30),
            connect_retries: 2,
            retry_backoff: Duration::from_millis(100),
            request_logprobs: true,
        }
    }

    pub fn completions_url(&self) -> String {
        let base = self.base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        format!("{base}/v1/chat/completions")
    }
}

enum Rt {
    Borrowed(tokio::runtime::Handle),
    Owned(Option<tokio::runtime::Runtime>),
}

pub struct OpenAiEngine {
    client: reqwest::Client,
    opts: OpenAiOptions,
    rt: Rt,
}

impl OpenAiEngine {
    /// Uses the current tokio runtime if called inside one, else starts a one-thread runtime.
    pub fn new(opts: OpenAiOptions) -> Result<Self, DialogError> {
        let client = reqwest::Client::builder()
            .connect_timeout(opts.connect_timeout)
            .read_timeout(opts.read_timeout)
            .build()
            .map_err(|e| DialogError::Runtime(format!("HTTP client: {e}")))?;
        let rt = match tokio::runtime::Handle::try_current() {
            Ok(h) => Rt::Borrowed(h),
            Err(_) => Rt::Owned(Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("llm-http")
                    .enable_all()
                    .build()
                    .map_err(|e| DialogError::Runtime(e.to_string()))?,
            )),
        };
        Ok(Self { client, opts, rt })
    }

    fn handle(&self) -> Result<tokio::runtime::Handle, DialogError> {
        match &self.rt {
            Rt::Borrowed(h) => Ok(h.clone()),
            Rt::Owned(Some(rt)) => Ok(rt.handle().clone()),
            Rt::Owned(None) => Err(DialogError::EngineStopped),
        }
    }
}

impl Drop for OpenAiEngine {
    fn drop(&mut self) {
        if let Rt::Owned(rt) = &mut self.rt {
            // Dropping a runtime inside async code panics; background shutdown never blocks.
            if let Some(rt) = rt.take() {
                rt.shutdown_background();
            }
        }
    }
}

impl LlmEngine for OpenAiEngine {
    fn describe(&self) -> String {
        format!(
            "openai-compatible {} (model {})",
            self.opts.base_url, self.opts.model
        )
    }

    fn generate(&self, req: GenerateRequest) -> Result<Generation, DialogError> {
        super::check_request(&req)?;
        let cancel = CancelToken::new();
        let (tx, generation) = Generation::channel(cancel.clone());
        let client = self.client.clone();
        let opts = self.opts.clone();
        self.handle()?.spawn(async move {
            let started = Instant::now();
            let result = tokio::select! {
                r = stream(&client, &opts, &req, &tx, started) => r,
                _ = cancel.cancelled() => Ok(()),
            };
            if let Err(e) = result {
                tx.send(Err(e)).await;
            }
        });
        Ok(generation)
    }
}

pub(crate) fn request_body(opts: &OpenAiOptions, req: &GenerateRequest) -> serde_json::Value {
    let mut messages: Vec<serde_json::Value> = req
        .messages
        .iter()
        .map(|m| serde_json::json!({ "role": m.role.as_str(), "content": m.content }))
        .collect();
    let mut body = serde_json::json!({
        "model": opts.model,
        "stream": true,
        "max_tokens": req.max_tokens,
        "temperature": req.sampling.temperature,
        "top_p": req.sampling.top_p,
        "seed": req.sampling.seed,
    });
    if !req.assistant_prefix.is_empty() {
        messages.push(serde_json::json!({ "role": "assistant", "content": req.assistant_prefix }));
        body["continue_final_message"] = true.into();
        body["add_generation_prompt"] = false.into();
    }
    if opts.request_logprobs {
        body["logprobs"] = true.into();
        body["top_logprobs"] = 2.into();
    }
    body["messages"] = messages.into();
    body
}

async fn connect(
    client: &reqwest::Client,
    opts: &OpenAiOptions,
    url: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response, DialogError> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut rb = client
            .post(url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.clone());
        if let Some(key) = &opts.api_key {
            rb = rb.header("authorization", format!("Bearer {key}"));
        }
        // Headers come after the server has prefilled the prompt: bounded by the read timeout.
        let sent = tokio::time::timeout(opts.connect_timeout + opts.read_timeout, rb.send()).await;
        match sent {
            Ok(Ok(resp)) => return Ok(resp),
            Ok(Err(e)) if e.is_connect() => {
                if attempt > opts.connect_retries {
                    return Err(DialogError::Connect {
                        url: url.to_string(),
                        attempts: attempt,
                        reason: error_chain(&e),
                    });
                }
                let wait = opts.retry_backoff * 2u32.saturating_pow(attempt - 1);
                tracing::debug!(url, attempt, ?wait, error = %e, "LLM server connect failed; retrying");
                tokio::time::sleep(wait).await;
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(DialogError::Timeout {
                    url: url.to_string(),
                    phase: "response",
                    after: opts.read_timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(DialogError::Connect {
                    url: url.to_string(),
                    attempts: attempt,
                    reason: error_chain(&e),
                })
            }
            Err(_) => {
                return Err(DialogError::Timeout {
                    url: url.to_string(),
                    phase: "response",
                    after: opts.connect_timeout + opts.read_timeout,
                })
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// The human part of an error body: `{"error": {"message": …}}`, `{"error": "…"}`,
/// `{"detail": …}` (FastAPI), else the text itself, shortened.
pub(crate) fn server_message(body: &str) -> String {
    let from_json = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let pick = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Null => None,
                other => other
                    .get("message")
                    .and_then(|m| m.as_str())
                    .map(str::to_string)
                    .or_else(|| Some(other.to_string())),
            };
            v.get("error")
                .and_then(pick)
                .or_else(|| v.get("detail").and_then(pick))
        });
    let msg = from_json.unwrap_or_else(|| body.trim().to_string());
    let mut short: String = msg.chars().take(500).collect();
    if short.len() < msg.len() {
        short.push('…');
    }
    if short.is_empty() {
        "(empty body)".into()
    } else {
        short
    }
}

async fn stream(
    client: &reqwest::Client,
    opts: &OpenAiOptions,
    req: &GenerateRequest,
    tx: &GenerationSender,
    started: Instant,
) -> Result<(), DialogError> {
    let url = opts.completions_url();
    let body =
        serde_json::to_vec(&request_body(opts, req)).map_err(|e| DialogError::BadRequest {
            reason: e.to_string(),
        })?;
    let mut resp = connect(client, opts, &url, body).await?;
    let status = resp.status();
    if !status.is_success() {
        let text = tokio::time::timeout(opts.read_timeout, resp.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        return Err(DialogError::HttpStatus {
            url,
            status: status.as_u16(),
            message: server_message(&text),
        });
    }
    let mut parser = SseParser::default();
    let mut stats = GenerationStats::default();
    let mut finish: Option<FinishReason> = None;
    loop {
        let chunk = match tokio::time::timeout(opts.read_timeout, resp.chunk()).await {
            Err(_) => {
                return Err(DialogError::Timeout {
                    url,
                    phase: "stream chunk",
                    after: opts.read_timeout,
                })
            }
            Ok(Err(e)) if e.is_timeout() => {
                return Err(DialogError::Timeout {
                    url,
                    phase: "stream chunk",
                    after: opts.read_timeout,
                })
            }
            Ok(Err(e)) => {
                return Err(DialogError::Protocol {
                    url,
                    reason: error_chain(&e),
                })
            }
            Ok(Ok(c)) => c,
        };
        let Some(bytes) = chunk else {
            // Connection closed. Some servers omit [DONE] after a finish_reason; that is a
            // complete answer. Without either, the answer was cut off.
            return match finish {
                Some(reason) => {
                    stats.total = started.elapsed();
                    tx.send(Ok(LlmEvent::Finished(Finished { reason, stats })))
                        .await;
                    Ok(())
                }
                None => Err(DialogError::Protocol {
                    url,
                    reason: "stream ended before [DONE]".into(),
                }),
            };
        };
        for data in parser.push(&bytes) {
            if data.trim() == "[DONE]" {
                stats.total = started.elapsed();
                let reason = finish.unwrap_or(FinishReason::Stop);
                tx.send(Ok(LlmEvent::Finished(Finished { reason, stats })))
                    .await;
                return Ok(());
            }
            let chunk: StreamChunk =
                serde_json::from_str(&data).map_err(|e| DialogError::Protocol {
                    url: url.clone(),
                    reason: format!("bad chunk {data:?}: {e}"),
                })?;
            if let Some(err) = chunk.error {
                return Err(DialogError::HttpStatus {
                    url,
                    status: status.as_u16(),
                    message: server_message(&format!("{{\"error\": {err}}}")),
                });
            }
            if let Some(usage) = &chunk.usage {
                stats.prompt_tokens = usage.prompt_tokens.unwrap_or(stats.prompt_tokens);
            }
            for choice in chunk.choices {
                if let Some(r) = choice.finish_reason.as_deref() {
                    finish = Some(if r == "length" {
                        FinishReason::Length
                    } else {
                        FinishReason::Stop
                    });
                }
                for token in tokens_of(choice.delta.content.unwrap_or_default(), choice.logprobs) {
                    stats.generated_tokens += 1;
                    if stats.generated_tokens == 1 {
                        stats.time_to_first_token = started.elapsed();
                    }
                    if !tx.send(Ok(LlmEvent::Token(token))).await {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// One delta becomes one token per logprob entry (servers send one token per chunk, but may
/// batch); without logprobs, one token per non-empty delta.
fn tokens_of(content: String, logprobs: Option<ChoiceLogprobs>) -> Vec<Token> {
    let entries = logprobs.and_then(|l| l.content).unwrap_or_default();
    if entries.is_empty() {
        if content.is_empty() {
            return Vec::new();
        }
        return vec![Token {
            text: content,
            id: None,
            features: None,
        }];
    }
    let joined: String = entries.iter().map(|e| e.token.as_str()).collect();
    let split_texts = joined == content;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let mut tops: Vec<f32> = e.top_logprobs.iter().map(|t| t.logprob).collect();
            tops.sort_by(|a, b| b.total_cmp(a));
            let margin = (tops.len() >= 2).then(|| (tops[0] - tops[1]).max(0.0));
            let text = if split_texts {
                e.token
            } else if i == 0 {
                content.clone()
            } else {
                String::new()
            };
            Token {
                text,
                id: None,
                features: Some(TokenFeatures {
                    logprob: e.logprob.min(0.0),
                    entropy: None,
                    margin,
                    hidden: None,
                }),
            }
        })
        .collect()
}

#[derive(Debug, Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    prompt_tokens: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    #[serde(default)]
    logprobs: Option<ChoiceLogprobs>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChoiceLogprobs {
    #[serde(default)]
    content: Option<Vec<LogprobEntry>>,
}

#[derive(Debug, Deserialize)]
struct LogprobEntry {
    token: String,
    logprob: f32,
    #[serde(default)]
    top_logprobs: Vec<TopLogprob>,
}

#[derive(Debug, Deserialize)]
struct TopLogprob {
    logprob: f32,
}

/// Incremental server-sent-events decoder: bytes in (split anywhere, even inside a UTF-8
/// character or a CRLF), the `data` payload of each complete event out.
#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    data: Option<String>,
}

impl SseParser {
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                continue;
            }
            if self.line.last() == Some(&b'\r') {
                self.line.pop();
            }
            let line = String::from_utf8_lossy(&self.line).into_owned();
            self.line.clear();
            if line.is_empty() {
                if let Some(d) = self.data.take() {
                    out.push(d);
                }
            } else if let Some(rest) = line.strip_prefix("data:") {
                let rest = rest.strip_prefix(' ').unwrap_or(rest);
                match &mut self.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(rest);
                    }
                    None => self.data = Some(rest.to_string()),
                }
            }
            // Comments (":"), `event:`, `id:` and `retry:` lines carry nothing we use.
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        ": keep-alive\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\r\n\r\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"Pa\"},\"logprobs\":{\"content\":[{\"token\":\"Pa\",\"logprob\":-0.25,\"top_logprobs\":[{\"token\":\"Pa\",\"logprob\":-0.25},{\"token\":\"Lo\",\"logprob\":-2.0}]}]}}]}\n\n",
        "data: {\"choices\":[{\"delta\":{\"content\":\"ris é\"},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn sse_parse_is_independent_of_chunking() {
        let whole = SseParser::default().push(STREAM.as_bytes());
        // The comment block carries no data and yields no event.
        assert_eq!(whole.len(), 4);
        assert_eq!(whole[3], "[DONE]");
        for size in [1, 2, 3, 7, 64] {
            let mut p = SseParser::default();
            let got: Vec<String> = STREAM
                .as_bytes()
                .chunks(size)
                .flat_map(|c| p.push(c))
                .collect();
            assert_eq!(got, whole, "chunk size {size}");
        }
    }

    #[test]
    fn chunk_tokens_and_features() {
        let events = SseParser::default().push(STREAM.as_bytes());
        let c: StreamChunk = serde_json::from_str(&events[1]).unwrap();
        let ch = c.choices.into_iter().next().unwrap();
        let toks = tokens_of(ch.delta.content.unwrap(), ch.logprobs);
        assert_eq!(toks.len(), 1);
        let f = toks[0].features.as_ref().unwrap();
        assert_eq!(toks[0].text, "Pa");
        assert_eq!(f.logprob, -0.25);
        assert_eq!(f.margin, Some(1.75));
        assert_eq!(f.entropy, None);
        let c: StreamChunk = serde_json::from_str(&events[2]).unwrap();
        let ch = c.choices.into_iter().next().unwrap();
        assert_eq!(ch.finish_reason.as_deref(), Some("stop"));
        let toks = tokens_of(ch.delta.content.unwrap(), ch.logprobs);
        assert_eq!(
            (
                toks.len(),
                toks[0].text.as_str(),
                toks[0].features.is_none()
            ),
            (1, "ris é", true)
        );
    }

    #[test]
    fn server_messages_are_extracted() {
        assert_eq!(
            server_message(r#"{"error":{"message":"model not found","type":"x"}}"#),
            "model not found"
        );
        assert_eq!(server_message(r#"{"detail":"Not Found"}"#), "Not Found");
        assert_eq!(server_message("  plain text\n"), "plain text");
        assert_eq!(server_message(""), "(empty body)");
    }

    #[test]
    fn request_asks_for_streaming_and_logprobs() {
        let mut req = GenerateRequest::new(vec![crate::ChatMessage::user("hi")]);
        req.assistant_prefix = "Well,".into();
        let b = request_body(&OpenAiOptions::new("http://h:1/v1/"), &req);
        assert_eq!(b["stream"], true);
        assert_eq!(b["top_logprobs"], 2);
        assert_eq!(b["messages"][1]["content"], "Well,");
        assert_eq!(b["continue_final_message"], true);
        assert_eq!(
            OpenAiOptions::new("http://h:1/v1/").completions_url(),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            OpenAiOptions::new("http://h:1").completions_url(),
            "http://h:1/v1/chat/completions"
        );
    }
}
