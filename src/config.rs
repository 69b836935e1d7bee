//! The whole service config: `configs/default.toml` is the base (compiled in, every field
//! documented there), a `--config FILE` is merged over it table by table, then
//! `VOICERELAY__SECTION__KEY=value` environment variables override single keys. The merged tree is
//! deserialised into typed structs that reject unknown keys, then every section validates its
//! ranges, so a bad config fails at start with the key, the value and what is allowed.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::Path;
use toml::{Table, Value};
use vr_core::{check_range, ConfigError};

pub const DEFAULT_TOML: &str = include_str!("../configs/default.toml");
pub const ENV_PREFIX: &str = "VOICERELAY__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub log: LogConfig,
    pub models: ModelsConfig,
    pub tts: vr_tts::TtsConfig,
    pub dialog: vr_dialog::DialogConfig,
    pub llm: vr_dialog::LlmConfig,
    pub vad: vr_asr::vad::VadConfig,
    pub capture: vr_capture::CaptureConfig,
    pub asr: vr_asr::config::AsrConfig,
    pub transport: vr_transport::TransportConfig,
    pub aec: vr_aec::AecConfig,
    pub vision: vr_pipeline::VisionConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter; `RUST_LOG` itself wins when set.
    pub filter: String,
    /// "text" or "json".
    pub format: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Model cache directory; empty means `$VOICERELAY_MODELS` or the XDG cache default.
    pub dir: String,
}

impl Config {
    /// Default config, merged with `file` if given, then with the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::load_with_env(file, &env)
    }

    pub fn load_with_env(file: Option<&Path>, env: &[(String, String)]) -> Result<Config> {
        let mut base: Table = DEFAULT_TOML
            .parse()
            .context("built-in configs/default.toml does not parse")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let user: Table = text
                .parse()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            merge(&mut base, user);
        }
        for (k, v) in env {
            if let Some(rest) = k.strip_prefix(ENV_PREFIX) {
                apply_env(&mut base, rest, v)
                    .with_context(|| format!("environment variable {k}"))?;
            }
        }
        let cfg: Config = serde_path_to_error::deserialize(Value::Table(base)).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!("config key `{path}`: {}", e.into_inner())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        const FORMATS: [&str; 2] = ["text", "json"];
        if !FORMATS.contains(&self.log.format.as_str()) {
            return Err(ConfigError::Invalid {
                key: "log.format".into(),
                value: self.log.format.clone(),
                reason: "must be \"text\" or \"json\"".into(),
            });
        }
        check_range("log.filter length", self.log.filter.len(), 1..=4096)?;
        self.tts.validate()?;
        vr_dialog::config::validate_together(&self.dialog, &self.llm)?;
        self.vad.validate()?;
        self.capture.validate()?;
        self.asr.validate()?;
        self.transport.validate()?;
        self.aec.validate()?;
        self.vision.validate()?;
        Ok(())
    }
}

/// Tables merge key by key; any other value replaces the base's.
fn merge(base: &mut Table, over: Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(Value::Table(b)), Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// `SECTION__KEY` (any depth) = `value`; the value is read as a TOML literal (number, bool,
/// array) when it parses as one, else as a string, so `VOICERELAY__LOG__FILTER=debug` works
/// without quotes.
fn apply_env(base: &mut Table, path: &str, raw: &str) -> Result<()> {
    let keys: Vec<String> = path.split("__").map(|s| s.to_ascii_lowercase()).collect();
    if keys.iter().any(|k| k.is_empty()) {
        bail!("malformed key path {path:?}");
    }
    let value = format!("v = {raw}")
        .parse::<Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| Value::String(raw.to_string()));
    let (last, parents) = keys.split_last().context("empty key path")?;
    let mut table = base;
    for k in parents {
        let entry = table
            .entry(k.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(t) => t,
            _ => bail!("`{k}` is not a section"),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text)?;
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        Config::load_with_env(Some(&p), &env)
    }

    #[test]
    fn default_config_loads_and_validates() {
        let c = Config::load_with_env(None, &[]).unwrap();
        assert_eq!(c.log.format, "text");
        // The documented file and the code's defaults must not drift apart.
        assert_eq!(c.vad, vr_asr::vad::VadConfig::default());
        assert_eq!(c.transport, vr_transport::TransportConfig::default());
        assert_eq!(c.vision, vr_pipeline::VisionConfig::default());
    }

    #[test]
    fn vision_section_is_validated() {
        let e = load_str("[vision]\ninterval_ms = 10\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("vision.interval_ms"), "{e:#}");
        let c = load_str("", &[("VOICERELAY__VISION__ENABLED", "false")]).unwrap();
        assert!(!c.vision.enabled);
    }

    #[test]
    fn vad_section_is_validated() {
        let e = load_str("[vad]\nend_threshold = 0.8\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("vad.end_threshold"), "{e:#}");
        let e = load_str("[vad]\nhangover_ms = 100\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("hangover_ms"), "{e:#}");
        let c = load_str("", &[("VOICERELAY__VAD__MIN_SILENCE_MS", "450")]).unwrap();
        assert_eq!(c.vad.min_silence_ms, 450);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str("[log]\nfilterr = \"debug\"\n", &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("log.filterr") || msg.contains("`filterr`"),
            "{msg}"
        );
        let e = load_str("[nosuchsection]\nx = 1\n", &[]).unwrap_err();
        assert!(format!("{e:#}").contains("nosuchsection"), "{e:#}");
    }

    #[test]
    fn invalid_value_is_named_with_what_is_allowed() {
        let e = load_str("[log]\nformat = \"xml\"\n", &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("log.format") && msg.contains("xml") && msg.contains("json"),
            "{msg}"
        );
    }

    #[test]
    fn env_overrides_file_which_overrides_default() {
        let c = load_str("[log]\nfilter = \"warn\"\n", &[]).unwrap();
        assert_eq!(c.log.filter, "warn");
        let c = load_str(
            "[log]\nfilter = \"warn\"\n",
            &[("VOICERELAY__LOG__FILTER", "debug"), ("UNRELATED", "x")],
        )
        .unwrap();
        assert_eq!(c.log.filter, "debug");
        let e = load_str("", &[("VOICERELAY__LOG__BOGUS", "1")]).unwrap_err();
        assert!(format!("{e:#}").contains("bogus"), "{e:#}");
    }
}
