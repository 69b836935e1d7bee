//! The crate's error type: one `#[non_exhaustive]` enum with structured fields, so callers (the
//! transport's config loader, the evals) can match on what was wrong instead of parsing text.
//!
//! Bad *runtime* input (NaN, zero-size packets, time going backwards, reordering) is never an
//! error: the estimators ignore it and count it (see `EstimatorStats`). Errors are for
//! configuration and tables, checked once up front.

/// Everything that can be rejected by this crate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AbrError {
    /// A configuration value is out of its valid range.
    #[error("invalid config `{field}` = {value}: {reason}")]
    InvalidConfig {
        /// The key, e.g. `aimd.decrease_factor`.
        field: &'static str,
        /// The offending value, formatted.
        value: String,
        /// What the valid range is.
        reason: &'static str,
    },
    /// The ReCap table is not valid TOML or does not match the schema.
    #[error("recap table: {message}")]
    RecapToml {
        /// The TOML parser's message (with line and column).
        message: String,
    },
    /// A ReCap row does not say how its confidences were measured.
    #[error(
        "recap class `{class}` row {row}: missing or empty `measured_by` (every row must state \
         how its confidences were measured, e.g. \"EfficientNet-Lite0 label agreement, vp8enc\")"
    )]
    RowNotMeasured {
        /// Content class name.
        class: String,
        /// Row index (0-based) within the class.
        row: usize,
    },
    /// A ReCap class has no tiers or a tier of zero kbit/s.
    #[error("recap class `{class}`: {reason}")]
    InvalidTiers {
        /// Content class name.
        class: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A ReCap class's tiers are not strictly increasing.
    #[error(
        "recap class `{class}`: tiers must strictly increase, tier {index} is {value} kbit/s \
         after {previous} kbit/s"
    )]
    TiersNotIncreasing {
        /// Content class name.
        class: String,
        /// Index of the offending tier.
        index: usize,
        /// The tier before it (kbit/s).
        previous: u32,
        /// The offending tier (kbit/s).
        value: u32,
    },
    /// A ReCap row has a different number of confidences than the class has tiers.
    #[error("recap class `{class}` row {row}: {actual} confidences for {expected} tiers")]
    RowLength {
        /// Content class name.
        class: String,
        /// Row index.
        row: usize,
        /// Number of tiers.
        expected: usize,
        /// Number of confidences given.
        actual: usize,
    },
    /// A confidence is not a finite number in `0..=1`.
    #[error("recap class `{class}` row {row} tier {index}: confidence {value} is not in 0..=1")]
    ConfidenceOutOfRange {
        /// Content class name.
        class: String,
        /// Row index.
        row: usize,
        /// Tier index.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// Two classes share a name, or a name is empty.
    #[error("recap class name `{class}`: {reason}")]
    InvalidClassName {
        /// The offending name.
        class: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A simulator bandwidth trace is unusable.
    #[error("bandwidth trace segment {index}: {reason}")]
    InvalidTrace {
        /// Segment index.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A line of a bandwidth trace file does not parse (format in [`crate::sim::BandwidthTrace::parse`]).
    #[error("bandwidth trace line {line}: {reason}")]
    TraceLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong, quoting the line's text.
        reason: String,
    },
}

/// Check that a float config value is finite and within `[min, max]`.
pub(crate) fn check_f64(
    field: &'static str,
    value: f64,
    min: f64,
    max: f64,
) -> Result<(), AbrError> {
    if value.is_finite() && value >= min && value <= max {
        Ok(())
    } else {
        Err(AbrError::InvalidConfig {
            field,
            value: value.to_string(),
            reason: "not finite or outside its valid range (see the field's docs)",
        })
    }
}

/// Check that `value > 0`.
pub(crate) fn check_positive(field: &'static str, value: u64) -> Result<(), AbrError> {
    if value > 0 {
        Ok(())
    } else {
        Err(AbrError::InvalidConfig {
            field,
            value: value.to_string(),
            reason: "must be greater than zero",
        })
    }
}
