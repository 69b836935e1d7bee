//! The `[tts]` config section.

use serde::{Deserialize, Serialize};
use vr_core::{check_range, ConfigError};

use crate::VoiceKind;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsConfig {
    /// "piper", "flite" or "espeak".
    pub voice: String,
    /// Voice used when Piper (model files or ONNX Runtime) is unavailable: "flite" or "espeak".
    pub fallback: String,
    /// Speaking rate: 1.0 is the voice's own pace, 1.2 is 20% faster.
    pub speed: f32,
    /// Shortest clause (characters) cut at a comma/semicolon/colon; sentence ends always cut.
    pub min_chunk_chars: usize,
    /// Longest text chunk before a forced cut at a space.
    pub max_chunk_chars: usize,
    /// Audio chunk length handed to the consumer, in milliseconds.
    pub chunk_ms: u32,
    /// Silence after each sentence end, in milliseconds (Piper's default is 200).
    pub sentence_silence_ms: u32,
    /// ONNX Runtime intra-op threads for Piper.
    pub threads: usize,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            voice: "piper".into(),
            fallback: "flite".into(),
            speed: 1.0,
            min_chunk_chars: 12,
            max_chunk_chars: 180,
            chunk_ms: 100,
            sentence_silence_ms: 200,
            threads: 2,
        }
    }
}

impl TtsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let voice = |key: &str, v: &str, allowed: &[&str]| {
            if allowed.contains(&v) {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    key: key.into(),
                    value: v.into(),
                    reason: format!("must be one of {}", allowed.join(", ")),
                })
            }
        };
        voice("tts.voice", &self.voice, &["piper", "flite", "espeak"])?;
        voice("tts.fallback", &self.fallback, &["flite", "espeak"])?;
        check_range("tts.speed", self.speed, 0.5..=2.0)?;
        check_range("tts.min_chunk_chars", self.min_chunk_chars, 1..=200)?;
        check_range("tts.max_chunk_chars", self.max_chunk_chars, 20..=1000)?;
        if self.max_chunk_chars <= self.min_chunk_chars {
            return Err(ConfigError::Invalid {
                key: "tts.max_chunk_chars".into(),
                value: self.max_chunk_chars.to_string(),
                reason: format!("must exceed tts.min_chunk_chars ({})", self.min_chunk_chars),
            });
        }
        check_range("tts.chunk_ms", self.chunk_ms, 10..=1000)?;
        check_range(
            "tts.sentence_silence_ms",
            self.sentence_silence_ms,
            0..=2000,
        )?;
        check_range("tts.threads", self.threads, 1..=16)?;
        Ok(())
    }

    pub fn voice_kind(&self) -> VoiceKind {
        VoiceKind::parse(&self.voice).unwrap_or(VoiceKind::Piper)
    }

    pub fn fallback_kind(&self) -> VoiceKind {
        VoiceKind::parse(&self.fallback).unwrap_or(VoiceKind::Flite)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        TtsConfig::default().validate().unwrap();
        let c = TtsConfig {
            speed: 3.0,
            ..TtsConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("tts.speed") && e.contains('3'), "{e}");
        let c = TtsConfig {
            voice: "festival".into(),
            ..TtsConfig::default()
        };
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("tts.voice") && e.contains("festival") && e.contains("piper"),
            "{e}"
        );
        let c = TtsConfig {
            min_chunk_chars: 100,
            max_chunk_chars: 50,
            ..TtsConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max_chunk_chars"));
    }
}
