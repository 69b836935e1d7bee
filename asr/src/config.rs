//! `[asr]` config section (documented key by key in `configs/default.toml`).

use serde::Deserialize;
use vr_core::{check_range, ConfigError};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsrConfig {
    /// "whisper" (embedded default) or "moonshine".
    pub engine: String,
    /// Whisper model: "tiny.en" or "base" (names in the model cache: `whisper-<model>`).
    pub model: String,
    /// A checkpoint directory to use instead of the model cache ("" = model cache).
    pub model_dir: String,
    /// How often the window is re-decoded while speech goes on.
    pub update_interval_ms: u32,
    /// Audio needed after speech onset before the first decode.
    pub first_update_ms: u32,
    /// Longest audio window decoded per update; committed segments are trimmed off beyond it.
    pub max_window_ms: u32,
    /// LocalAgreement-n: tokens are committed when this many consecutive hypotheses agree.
    pub agreement: u32,
    /// A hypothesis counts as silence when its no-speech probability is above this ...
    pub no_speech_threshold: f32,
    /// ... and its mean token log-probability is below this. A window whose mean log-probability
    /// is below this (and is not silence) is a failed decode: nothing of it is committed.
    pub logprob_threshold: f32,
    /// A window whose text's zlib compression ratio exceeds this is a failed (looping) decode:
    /// nothing of it is committed (OpenAI's `compression_ratio_threshold`).
    pub compression_ratio_threshold: f32,
    /// Drop utterances whose whole text is a known silence hallucination ("thank you", ...)
    /// unless the model was confident there was speech.
    pub suppress_hallucinations: bool,
    /// Decode only while the VAD hears speech (false: every sample is treated as speech).
    pub vad_gate: bool,
    /// Silence appended to every window before encoding: Whisper was trained on audio padded
    /// with silence to 30 s and loops ("and and and ...") on a short unpadded window.
    pub pad_ms: u32,
    /// The encoder input (audio plus `pad_ms`) is padded with silence up to at least this long
    /// (whisper.cpp's fixed `audio_ctx`); 0 encodes only the audio and `pad_ms`.
    pub min_encode_ms: u32,
    /// Silence after the VAD's speech end before the utterance is finalised; speech resuming
    /// sooner continues the same utterance (its text is committed at the pause already).
    pub final_silence_ms: u32,
    /// Audio kept before the VAD's speech start (its onset decision lags the real onset).
    pub pre_roll_ms: u32,
    /// Offer each update's decoder the previous hypothesis as a draft, verified in one batched
    /// pass (speculative decoding; the transcript is the greedy one either way).
    pub draft_decoding: bool,
    /// Single-token decoding steps run their linears and score the vocabulary on 8-bit copies
    /// of the weights (the embedding table is the step's largest read); false runs them in f32.
    /// The name predates the linears.
    pub quantized_logits: bool,
}

impl Default for AsrConfig {
    fn default() -> Self {
        Self {
            engine: "whisper".into(),
            model: "tiny.en".into(),
            model_dir: String::new(),
            update_interval_ms: 500,
            first_update_ms: 300,
            max_window_ms: 10_000,
            agreement: 2,
            no_speech_threshold: 0.6,
            logprob_threshold: -1.0,
            compression_ratio_threshold: crate::guards::COMPRESSION_RATIO_THRESHOLD,
            suppress_hallucinations: true,
            vad_gate: true,
            pre_roll_ms: 1000,
            pad_ms: 2000,
            min_encode_ms: 0,
            final_silence_ms: 500,
            draft_decoding: true,
            quantized_logits: true,
        }
    }
}

impl AsrConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !["whisper", "moonshine"].contains(&self.engine.as_str()) {
            return Err(ConfigError::Invalid {
                key: "asr.engine".into(),
                value: self.engine.clone(),
                reason: "must be \"whisper\" or \"moonshine\"".into(),
            });
        }
        if self.engine == "whisper" && !["tiny.en", "base"].contains(&self.model.as_str()) {
            return Err(ConfigError::Invalid {
                key: "asr.model".into(),
                value: self.model.clone(),
                reason: "whisper models: \"tiny.en\" or \"base\"".into(),
            });
        }
        check_range("asr.update_interval_ms", self.update_interval_ms, 50..=5000)?;
        check_range("asr.first_update_ms", self.first_update_ms, 50..=5000)?;
        check_range("asr.max_window_ms", self.max_window_ms, 2000..=28_000)?;
        check_range("asr.agreement", self.agreement, 1..=4)?;
        check_range(
            "asr.no_speech_threshold",
            self.no_speech_threshold,
            0.0..=1.0,
        )?;
        check_range("asr.logprob_threshold", self.logprob_threshold, -10.0..=0.0)?;
        check_range(
            "asr.compression_ratio_threshold",
            self.compression_ratio_threshold,
            1.0..=100.0,
        )?;
        check_range("asr.pre_roll_ms", self.pre_roll_ms, 0..=1000)?;
        check_range("asr.pad_ms", self.pad_ms, 0..=20_000)?;
        check_range("asr.min_encode_ms", self.min_encode_ms, 0..=30_000)?;
        check_range("asr.final_silence_ms", self.final_silence_ms, 0..=10_000)?;
        Ok(())
    }

    /// The model cache name of the configured Whisper model.
    pub fn whisper_cache_name(&self) -> String {
        format!("whisper-{}", self.model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_named() {
        AsrConfig::default().validate().unwrap();
        let c = AsrConfig {
            max_window_ms: 40_000,
            ..Default::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("asr.max_window_ms"));
        let c = AsrConfig {
            model: "large".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("asr.model"));
    }
}
