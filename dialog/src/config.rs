//! The `[dialog]` and `[llm]` config sections (documented key by key in `configs/default.toml`).

use crate::llm::llamacpp::{LlamaCppEngine, LlamaCppModel, LlamaCppOptions};
use crate::llm::local::{LocalEngine, LocalLlm, LocalOptions};
use crate::llm::openai::{OpenAiEngine, OpenAiOptions};
use crate::llm::{ChatMessage, LlmEngine, Sampling};
use crate::turn::{EndOfTurn, TurnConfig};
use crate::DialogError;
use serde::Deserialize;
use std::time::Duration;
use vr_core::{check_range, ConfigError, SampleRate};

/// `[dialog]`: turn taking, persona and memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DialogConfig {
    /// Who the assistant is; first part of the system message.
    pub persona: String,
    /// How it answers; second part of the system message.
    pub system_prompt: String,
    /// Conversation memory budget in tokens (system message included); oldest turns go first.
    pub max_memory_tokens: usize,
    /// Upper bound on one answer, in tokens.
    pub max_answer_tokens: usize,
    pub silence_timeout_ms: u64,
    pub grace_ms: u64,
    pub backchannel_min_ms: u64,
    pub half_duplex: bool,
    /// Prefill the LLM on partial transcripts before the turn ends (local engine).
    pub speculative_prefill: bool,
    /// How far ahead of playback the loop writes answer audio into the output.
    pub output_lead_ms: u64,
    /// How many steps below the process's own OS priority (nice) the conversation's LLM worker
    /// threads run, so the VAD, recogniser and loop threads get the cores first (0 to 19; 0
    /// keeps them level).
    #[serde(default = "default_llm_nice")]
    pub llm_nice: i32,
    /// `[dialog.turn]`: what ends a paused turn.
    #[serde(default)]
    pub turn: TurnSettings,
    /// `[dialog.dual]`: a fast model drafts the answer's first words.
    #[serde(default)]
    pub dual: DualSettings,
}

/// `[dialog.dual]`: the dual path. A fast drafting model (llama.cpp) speaks the first
/// `draft_words` words when the built-in verifier trusts them; `[llm]` (the slow model)
/// continues after them, or answers alone when the draft is dropped.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DualSettings {
    pub enabled: bool,
    /// Model-store entry of the drafter.
    pub drafter: String,
    /// Words in a draft.
    pub draft_words: usize,
    /// Most tokens the drafter may take for them.
    pub draft_max_tokens: usize,
    /// Keep a draft the verifier scores at least this (0 keeps every draft, 1 none).
    pub keep_threshold: f32,
    /// Draft while the user pauses, before the turn ends (`core::dual`, early drafts). Off by
    /// default: no reliable gain measured yet (README, "Early drafts").
    pub early_draft: bool,
}

impl Default for DualSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            drafter: "qwen2.5-0.5b".into(),
            draft_words: 5,
            draft_max_tokens: 16,
            keep_threshold: 0.5,
            early_draft: false,
        }
    }
}

impl DualSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.enabled && self.drafter.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "dialog.dual.drafter".into(),
                value: self.drafter.clone(),
                reason: "must name a model-store entry when the dual path is enabled".into(),
            });
        }
        check_range("dialog.dual.draft_words", self.draft_words, 1..=32)?;
        check_range(
            "dialog.dual.draft_max_tokens",
            self.draft_max_tokens,
            self.draft_words..=128,
        )?;
        if !(0.0..=1.0).contains(&self.keep_threshold) {
            return Err(ConfigError::Invalid {
                key: "dialog.dual.keep_threshold".into(),
                value: self.keep_threshold.to_string(),
                reason: "must be between 0 and 1".into(),
            });
        }
        Ok(())
    }
}

fn default_llm_nice() -> i32 {
    5
}

/// `dialog.turn.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnMode {
    /// `silence_timeout_ms` of silence after the VAD's speech end.
    Timer,
    /// Smart Turn v3.2 on the VAD's speech end, `fallback_timeout_ms` as the fallback.
    SmartTurn,
}

/// `[dialog.turn]`: the end-of-turn decision (documented in `configs/default.toml`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnSettings {
    pub mode: TurnMode,
    /// Smart Turn: complete when its probability is above this.
    pub threshold: f32,
    /// Smart Turn: silence after the VAD's speech end that ends the turn whatever the model said.
    pub fallback_timeout_ms: u64,
    /// Smart Turn: ONNX Runtime intra-op threads.
    pub threads: usize,
}

impl Default for TurnSettings {
    fn default() -> Self {
        Self {
            mode: TurnMode::Timer,
            threshold: 0.5,
            fallback_timeout_ms: 1500,
            threads: 1,
        }
    }
}

impl TurnSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(ConfigError::Invalid {
                key: "dialog.turn.threshold".into(),
                value: self.threshold.to_string(),
                reason: "must be above 0 and below 1".into(),
            });
        }
        check_range(
            "dialog.turn.fallback_timeout_ms",
            self.fallback_timeout_ms,
            50..=10_000,
        )?;
        check_range("dialog.turn.threads", self.threads, 1..=16)?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LlmBackend {
    Local,
    Openai,
}

/// Which in-process engine runs a local GGUF model (`llm.engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LocalEngineKind {
    /// candle (`llm::local`): the only one that also returns hidden states.
    Candle,
    /// llama.cpp (`llm::llamacpp`): same features, several times faster on the CPU.
    Llamacpp,
}

/// `[llm]`: which engine answers and how.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmConfig {
    pub backend: LlmBackend,
    /// Local: which in-process engine runs the model.
    pub engine: LocalEngineKind,
    /// Local llama.cpp: compute threads (candle uses rayon's global pool, `RAYON_NUM_THREADS`).
    pub threads: usize,
    /// Local: model-store entry (`qwen2.5-0.5b`, `gemma3-270m`). OpenAI: the `model` sent.
    pub model: String,
    /// OpenAI-compatible server root.
    pub url: String,
    /// Name of the environment variable holding the API key ("" = none); never the key itself.
    pub api_key_env: String,
    pub connect_timeout_ms: u64,
    pub read_timeout_ms: u64,
    pub connect_retries: u32,
    pub retry_backoff_ms: u64,
    pub request_logprobs: bool,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    /// Local KV-cache capacity (prompt + answer) in tokens.
    pub max_context_tokens: usize,
    /// Local prefill tokens per forward pass.
    pub prefill_chunk: usize,
    /// Local: keep an f32 copy of the weights for prefill (see [`LocalOptions::dense_prefill`]).
    pub dense_prefill: bool,
}

impl DialogConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("dialog.persona length", self.persona.len(), 0..=4096)?;
        check_range(
            "dialog.system_prompt length",
            self.system_prompt.len(),
            0..=16384,
        )?;
        check_range(
            "dialog.max_memory_tokens",
            self.max_memory_tokens,
            64..=131072,
        )?;
        check_range("dialog.max_answer_tokens", self.max_answer_tokens, 1..=8192)?;
        check_range(
            "dialog.silence_timeout_ms",
            self.silence_timeout_ms,
            50..=10_000,
        )?;
        check_range("dialog.grace_ms", self.grace_ms, 0..=5_000)?;
        check_range(
            "dialog.backchannel_min_ms",
            self.backchannel_min_ms,
            0..=5_000,
        )?;
        check_range("dialog.output_lead_ms", self.output_lead_ms, 20..=5_000)?;
        check_range("dialog.llm_nice", self.llm_nice, 0..=19)?;
        self.dual.validate()?;
        self.turn.validate()
    }

    /// The system message: persona, a blank line, then the instructions.
    pub fn system_message(&self) -> ChatMessage {
        let text = [self.persona.trim(), self.system_prompt.trim()]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        ChatMessage::system(text)
    }

    pub fn turn_config(&self) -> TurnConfig {
        TurnConfig {
            sample_rate: SampleRate::PIPELINE,
            silence_timeout: Duration::from_millis(self.silence_timeout_ms),
            grace: Duration::from_millis(self.grace_ms),
            backchannel_min: Duration::from_millis(self.backchannel_min_ms),
            half_duplex: self.half_duplex,
            end_of_turn: match self.turn.mode {
                TurnMode::Timer => EndOfTurn::Timer,
                TurnMode::SmartTurn => EndOfTurn::Model {
                    threshold: self.turn.threshold,
                    fallback_timeout: Duration::from_millis(self.turn.fallback_timeout_ms),
                },
            },
        }
    }
}

impl LlmConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.model.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "llm.model".into(),
                value: self.model.clone(),
                reason: "must not be empty".into(),
            });
        }
        if self.backend == LlmBackend::Openai
            && !(self.url.starts_with("http://") || self.url.starts_with("https://"))
        {
            return Err(ConfigError::Invalid {
                key: "llm.url".into(),
                value: self.url.clone(),
                reason: "must start with http:// or https://".into(),
            });
        }
        check_range(
            "llm.connect_timeout_ms",
            self.connect_timeout_ms,
            10..=60_000,
        )?;
        check_range("llm.read_timeout_ms", self.read_timeout_ms, 100..=600_000)?;
        check_range("llm.connect_retries", self.connect_retries, 0..=10)?;
        check_range("llm.retry_backoff_ms", self.retry_backoff_ms, 1..=10_000)?;
        check_range("llm.temperature", self.temperature, 0.0..=2.0)?;
        check_range("llm.top_p", self.top_p, 0.01..=1.0)?;
        check_range(
            "llm.max_context_tokens",
            self.max_context_tokens,
            256..=131072,
        )?;
        check_range("llm.prefill_chunk", self.prefill_chunk, 1..=2048)?;
        check_range("llm.threads", self.threads, 1..=64)?;
        Ok(())
    }

    pub fn sampling(&self) -> Sampling {
        Sampling {
            temperature: self.temperature,
            top_p: self.top_p,
            seed: self.seed,
        }
    }

    pub fn local_options(&self) -> LocalOptions {
        LocalOptions {
            max_context: self.max_context_tokens,
            prefill_chunk: self.prefill_chunk,
            dense_prefill: self.dense_prefill,
        }
    }

    pub fn llamacpp_options(&self) -> LlamaCppOptions {
        LlamaCppOptions {
            max_context: self.max_context_tokens,
            prefill_chunk: self.prefill_chunk,
            threads: self.threads,
            hidden_states: false,
        }
    }

    pub fn openai_options(&self) -> OpenAiOptions {
        OpenAiOptions {
            base_url: self.url.clone(),
            model: self.model.clone(),
            api_key: (!self.api_key_env.is_empty())
                .then(|| std::env::var(&self.api_key_env).ok())
                .flatten(),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            read_timeout: Duration::from_millis(self.read_timeout_ms),
            connect_retries: self.connect_retries,
            retry_backoff: Duration::from_millis(self.retry_backoff_ms),
            request_logprobs: self.request_logprobs,
        }
    }

    /// The configured engine and a token counter for the conversation memory: the model's own
    /// tokenizer for the local backend, a bytes-per-token estimate for a remote one.
    pub fn build_engine_and_counter(
        &self,
        store: &vr_core::ModelStore,
    ) -> Result<(Box<dyn LlmEngine>, crate::events::SharedCounter), DialogError> {
        self.build_engine_and_counter_at(store, 0)
    }

    /// Like [`LlmConfig::build_engine_and_counter`], with a llama.cpp engine's threads `nice`
    /// steps below the process's OS priority (`dialog.llm_nice`; candle computes on rayon's
    /// shared pool and a remote server elsewhere, so neither is affected).
    pub fn build_engine_and_counter_at(
        &self,
        store: &vr_core::ModelStore,
        nice: i32,
    ) -> Result<(Box<dyn LlmEngine>, crate::events::SharedCounter), DialogError> {
        Ok(match (self.backend, self.engine) {
            (LlmBackend::Local, LocalEngineKind::Candle) => {
                let llm = LocalLlm::from_store(store, &self.model, &self.local_options())?;
                let counter: crate::events::SharedCounter =
                    std::sync::Arc::new(llm.tokenizer().clone());
                (Box::new(LocalEngine::new(llm)?), counter)
            }
            (LlmBackend::Local, LocalEngineKind::Llamacpp) => {
                let model = LlamaCppModel::from_store(store, &self.model)?;
                let counter: crate::events::SharedCounter =
                    std::sync::Arc::new(model.tokenizer().clone());
                (
                    Box::new(LlamaCppEngine::with_priority(
                        model,
                        self.llamacpp_options(),
                        nice,
                    )?),
                    counter,
                )
            }
            (LlmBackend::Openai, _) => (
                Box::new(OpenAiEngine::new(self.openai_options())?),
                std::sync::Arc::new(crate::memory::ByteEstimate),
            ),
        })
    }

    /// Builds the configured engine (loading the local model from `store`).
    pub fn build_engine(
        &self,
        store: &vr_core::ModelStore,
    ) -> Result<Box<dyn LlmEngine>, DialogError> {
        Ok(self.build_engine_and_counter(store)?.0)
    }
}

/// Checks that span both sections: the memory and the answer must fit in the local context.
pub fn validate_together(dialog: &DialogConfig, llm: &LlmConfig) -> Result<(), ConfigError> {
    dialog.validate()?;
    llm.validate()?;
    if llm.backend == LlmBackend::Local
        && dialog.max_memory_tokens + dialog.max_answer_tokens > llm.max_context_tokens
    {
        return Err(ConfigError::Invalid {
            key: "dialog.max_memory_tokens".into(),
            value: dialog.max_memory_tokens.to_string(),
            reason: format!(
                "plus dialog.max_answer_tokens ({}) exceeds llm.max_context_tokens ({})",
                dialog.max_answer_tokens, llm.max_context_tokens
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sections exactly as shipped in configs/default.toml.
    fn defaults() -> (DialogConfig, LlmConfig) {
        let t: toml::Table = include_str!("../../configs/default.toml").parse().unwrap();
        let d: DialogConfig = t["dialog"].clone().try_into().unwrap();
        let l: LlmConfig = t["llm"].clone().try_into().unwrap();
        (d, l)
    }

    #[test]
    fn shipped_defaults_validate() {
        let (d, l) = defaults();
        validate_together(&d, &l).unwrap();
        assert_eq!(l.backend, LlmBackend::Local);
        assert_eq!(l.model, "qwen2.5-0.5b");
        // Chosen by `cargo bench --workspace --bench llm_engines` (README, "LLM engines").
        assert_eq!(l.engine, LocalEngineKind::Llamacpp);
        assert_eq!(l.llamacpp_options().threads, 1);
        let sys = d.system_message();
        assert!(
            sys.content.contains(d.persona.trim()) && sys.content.contains(d.system_prompt.trim())
        );
        assert_eq!(
            d.turn_config().silence_timeout,
            Duration::from_millis(d.silence_timeout_ms)
        );
    }

    #[test]
    fn bad_values_are_named() {
        let (d, l) = defaults();
        let e = DialogConfig {
            grace_ms: 99_999,
            ..d.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("dialog.grace_ms"), "{e}");
        for (turn, key) in [
            (
                TurnSettings {
                    threshold: 1.0,
                    ..d.turn.clone()
                },
                "dialog.turn.threshold",
            ),
            (
                TurnSettings {
                    fallback_timeout_ms: 10,
                    ..d.turn.clone()
                },
                "dialog.turn.fallback_timeout_ms",
            ),
            (
                TurnSettings {
                    threads: 0,
                    ..d.turn.clone()
                },
                "dialog.turn.threads",
            ),
        ] {
            let e = DialogConfig { turn, ..d.clone() }.validate().unwrap_err();
            assert!(e.to_string().contains(key), "{e}");
        }
        let smart: DialogConfig = {
            let mut t: toml::Table = include_str!("../../configs/default.toml").parse().unwrap();
            t["dialog"]["turn"]
                .as_table_mut()
                .unwrap()
                .insert("mode".into(), "smart_turn".into());
            t["dialog"].clone().try_into().unwrap()
        };
        assert_eq!(
            smart.turn_config().end_of_turn,
            EndOfTurn::Model {
                threshold: smart.turn.threshold,
                fallback_timeout: Duration::from_millis(smart.turn.fallback_timeout_ms)
            }
        );
        let e = LlmConfig {
            backend: LlmBackend::Openai,
            url: "localhost:8080".into(),
            ..l.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("llm.url"), "{e}");
        let e = LlmConfig {
            temperature: 3.0,
            ..l.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("llm.temperature"), "{e}");
        let e = LlmConfig {
            threads: 0,
            ..l.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("llm.threads"), "{e}");
        let mut t: toml::Table = include_str!("../../configs/default.toml").parse().unwrap();
        t["llm"]["engine"] = toml::Value::String("onnx".into());
        let e = t["llm"].clone().try_into::<LlmConfig>().unwrap_err();
        assert!(
            e.to_string().contains("candle") && e.to_string().contains("llamacpp"),
            "{e}"
        );
        let e = validate_together(
            &DialogConfig {
                max_memory_tokens: 4000,
                ..d
            },
            &LlmConfig {
                max_context_tokens: 4096,
                ..l
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("max_context_tokens"), "{e}");
        let bad: Result<DialogConfig, _> = toml::from_str("persona = \"x\"\nunknown_key = 1\n");
        assert!(bad.unwrap_err().to_string().contains("unknown_key"));
    }

    #[test]
    fn the_dual_section_defaults_off_and_names_the_key_it_rejects() {
        let (d, _) = defaults();
        assert_eq!(d.dual, DualSettings::default());
        assert!(!d.dual.enabled);
        assert_eq!(
            (d.dual.drafter.as_str(), d.dual.draft_words),
            ("qwen2.5-0.5b", 5)
        );
        assert_eq!(d.llm_nice, 5);
        let bad = |dual: DualSettings| {
            DialogConfig { dual, ..d.clone() }
                .validate()
                .unwrap_err()
                .to_string()
        };
        let on = DualSettings {
            enabled: true,
            ..DualSettings::default()
        };
        for (dual, key) in [
            (
                DualSettings {
                    drafter: " ".into(),
                    ..on.clone()
                },
                "dialog.dual.drafter",
            ),
            (
                DualSettings {
                    draft_words: 0,
                    ..on.clone()
                },
                "dialog.dual.draft_words",
            ),
            (
                DualSettings {
                    draft_max_tokens: 4,
                    ..on.clone()
                },
                "dialog.dual.draft_max_tokens",
            ),
            (
                DualSettings {
                    keep_threshold: 1.5,
                    ..on.clone()
                },
                "dialog.dual.keep_threshold",
            ),
        ] {
            let e = bad(dual);
            assert!(e.contains(key), "{key}: {e}");
        }
        let e = DialogConfig {
            llm_nice: 20,
            ..d.clone()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("dialog.llm_nice"), "{e}");
        let parsed: DialogConfig = toml::from_str(
            "persona = \"\"\nsystem_prompt = \"\"\nmax_memory_tokens = 512\nmax_answer_tokens = 64\n\
             silence_timeout_ms = 600\ngrace_ms = 0\nbackchannel_min_ms = 0\nhalf_duplex = false\n\
             speculative_prefill = false\noutput_lead_ms = 300\n[dual]\nenabled = true\nkeep_threshold = 0.0\n",
        )
        .unwrap();
        assert!(parsed.dual.enabled && parsed.dual.keep_threshold == 0.0);
        assert_eq!(parsed.dual.draft_words, 5);
        parsed.validate().unwrap();
        let typo: Result<DialogConfig, _> = toml::from_str(
            "persona = \"\"\nsystem_prompt = \"\"\nmax_memory_tokens = 512\nmax_answer_tokens = 64\n\
             silence_timeout_ms = 600\ngrace_ms = 0\nbackchannel_min_ms = 0\nhalf_duplex = false\n\
             speculative_prefill = false\noutput_lead_ms = 300\n[dual]\ndraft_word = 3\n",
        );
        assert!(typo.unwrap_err().to_string().contains("draft_word"));
    }
}
