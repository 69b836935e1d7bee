//! Config validation shared by every stage: each crate owns its config struct, deserialises it
//! with `#[serde(deny_unknown_fields)]` and checks ranges with [`check_range`], so a bad value
//! fails at start with the key, the value and what is allowed.

use std::fmt::Display;
use std::ops::RangeInclusive;

#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config key `{key}` = {value} is out of range (allowed: {allowed})")]
    OutOfRange {
        key: String,
        value: String,
        allowed: String,
    },
    #[error("config key `{key}` = {value:?} is invalid: {reason}")]
    Invalid {
        key: String,
        value: String,
        reason: String,
    },
}

/// Fails with [`ConfigError::OutOfRange`] naming `key` unless `value` lies in `allowed`.
pub fn check_range<T: PartialOrd + Display>(
    key: &str,
    value: T,
    allowed: RangeInclusive<T>,
) -> Result<(), ConfigError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange {
            key: key.to_string(),
            value: value.to_string(),
            allowed: format!("{} ..= {}", allowed.start(), allowed.end()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_error_names_key_value_and_range() {
        assert!(check_range("asr.beam", 3u32, 1..=8).is_ok());
        let e = check_range("vad.threshold", 1.5f32, 0.0..=1.0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key `vad.threshold` = 1.5 is out of range (allowed: 0 ..= 1)"
        );
    }
}
