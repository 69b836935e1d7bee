//! ReCapABR: cap the bitrate where the model's answers stop getting better.
//!
//! Why: the receiver of VoiceRelay's video is a model, not a person. Artic ("Chat with AI",
//! arXiv 2602.12641, github pku-netvideo/Artic) observed that a vision model's answer accuracy
//! saturates above some bitrate that depends on the content, so sending up to the congestion
//! estimate buys nothing and costs queueing delay. The spare bandwidth is headroom that absorbs
//! capacity drops without latency spikes. The rule (as in `shared/design/papers.md`, applied
//! after the GCC-style estimate of [`crate::estimator`]):
//!
//! 1. never exceed the congestion-control estimate: `cur = min(current, cc_estimate)`;
//! 2. if the confidence at `cur` is ≥ θ (0.8): hold (`cap = cur`);
//! 3. else take the lowest tier whose confidence reaches θ and interpolate linearly between it
//!    and the tier below to the minimum bitrate reaching θ (`cap` = that bitrate; when the
//!    lowest tier already reaches θ, `cap` = the lowest tier: nothing below it was measured);
//! 4. if no tier reaches θ, step up one tier (the smallest tier above `cur`, or the top tier);
//! 5. output `min(cc_estimate, cap)`.
//!
//! Confidence between tiers is linear; below the lowest tier it is assumed to fall linearly to
//! 0 at 0 kbit/s; above the top tier it stays at the top tier's value.
//!
//! The table is data the project measures (tiers 200/400/610/910/1710/3150 kbit/s, one row per
//! 5 s of video per content class, e.g. EfficientNet-Lite0 label agreement against the pristine
//! frame — a DeViBench-style proxy), so every row must say how it was measured (`measured_by`);
//! a row without it is rejected. An empty table disables the cap (output = CC estimate).
//!
//! ```toml
//! threshold = 0.8                              # optional, default 0.8
//! [[class]]
//! name = "desk"
//! tiers_kbps = [200, 400, 610, 910, 1710, 3150] # optional, default the Artic tiers
//! [[class.row]]
//! confidence = [0.55, 0.72, 0.81, 0.88, 0.93, 0.95]
//! measured_by = "EfficientNet-Lite0 top-1 agreement vs pristine, vp8enc, clips/desk.y4m 0-5 s"
//! ```

use crate::error::AbrError;
use crate::units::Bitrate;
use serde::Deserialize;

/// The table the project measured (`voicerelay eval recap`: 640×480 camera clips of real photos
/// through vp8enc at each tier, EfficientNet-Lite0 label overlap with the pristine picture).
/// `transport.video.recap_table = "builtin"` selects it.
pub const BUILTIN_TABLE_TOML: &str = include_str!("../tables/vp8-efficientnet-lite0.toml");

/// The config value that names [`BUILTIN_TABLE_TOML`].
pub const BUILTIN: &str = "builtin";

/// Artic's bitrate tiers (kbit/s).
pub const ARTIC_TIERS_KBPS: [u32; 6] = [200, 400, 610, 910, 1710, 3150];

/// Artic's default confidence threshold θ.
pub const DEFAULT_THRESHOLD: f64 = 0.8;

/// Confidence as a function of bitrate for one segment (or an aggregate of segments).
#[derive(Clone, Debug, PartialEq)]
pub struct ConfidenceCurve {
    tiers_kbps: Vec<u32>,
    confidence: Vec<f64>,
}

impl ConfidenceCurve {
    /// A curve from tiers (strictly increasing, > 0) and confidences (finite, `0..=1`).
    ///
    /// # Errors
    /// [`AbrError::InvalidTiers`], [`AbrError::TiersNotIncreasing`], [`AbrError::RowLength`]
    /// or [`AbrError::ConfidenceOutOfRange`] (class `""`, row 0).
    pub fn new(tiers_kbps: Vec<u32>, confidence: Vec<f64>) -> Result<ConfidenceCurve, AbrError> {
        check_tiers("", &tiers_kbps)?;
        check_row("", 0, tiers_kbps.len(), &confidence)?;
        Ok(ConfidenceCurve {
            tiers_kbps,
            confidence,
        })
    }

    /// The tiers (kbit/s).
    pub fn tiers_kbps(&self) -> &[u32] {
        &self.tiers_kbps
    }

    /// Piecewise-linear confidence at `rate`.
    pub fn confidence_at(&self, rate: Bitrate) -> f64 {
        let kbps = rate.kbps();
        let points = self.points();
        let mut prev = (0.0, 0.0);
        for (x, y) in points {
            if kbps <= x {
                return prev.1 + (y - prev.1) * (kbps - prev.0) / (x - prev.0);
            }
            prev = (x, y);
        }
        prev.1
    }

    fn points(&self) -> impl Iterator<Item = (f64, f64)> + '_ {
        self.tiers_kbps
            .iter()
            .zip(&self.confidence)
            .map(|(&t, &c)| (f64::from(t), c))
    }
}

/// Which branch of the rule produced the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecapBranch {
    /// No table for this content: output = CC estimate.
    Passthrough,
    /// Confidence at the current bitrate reaches θ: stay.
    Hold,
    /// Interpolated minimum bitrate reaching θ.
    Interpolated,
    /// No tier reaches θ: one tier up.
    TierUp,
}

/// The rule's output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RecapDecision {
    /// What to send as REMB: `min(cc_estimate, cap)`.
    pub target: Bitrate,
    /// The cap the rule chose (`None` on passthrough).
    pub cap: Option<Bitrate>,
    /// Which branch.
    pub branch: RecapBranch,
    /// Whether the CC estimate, not the cap, set the target.
    pub limited_by_cc: bool,
}

/// Apply the ReCapABR rule for one curve (see the module docs).
pub fn recap_rule(
    curve: &ConfidenceCurve,
    threshold: f64,
    current: Bitrate,
    cc_estimate: Bitrate,
) -> RecapDecision {
    let cur = current.min(cc_estimate);
    let (cap, branch) = if curve.confidence_at(cur) >= threshold {
        (cur, RecapBranch::Hold)
    } else if let Some(i) = curve.confidence.iter().position(|&c| c >= threshold) {
        let (x1, y1) = (f64::from(curve.tiers_kbps[i]), curve.confidence[i]);
        let kbps = if i == 0 {
            x1
        } else {
            let (x0, y0) = (f64::from(curve.tiers_kbps[i - 1]), curve.confidence[i - 1]);
            // y0 < threshold <= y1, so y1 > y0.
            x0 + (threshold - y0) / (y1 - y0) * (x1 - x0)
        };
        (
            Bitrate::from_bps_f64(kbps * 1000.0),
            RecapBranch::Interpolated,
        )
    } else {
        let next = curve
            .tiers_kbps
            .iter()
            .map(|&t| Bitrate::from_kbps(u64::from(t)))
            .find(|&t| t > cur)
            .or_else(|| {
                curve
                    .tiers_kbps
                    .last()
                    .map(|&t| Bitrate::from_kbps(u64::from(t)))
            })
            .unwrap_or(cur);
        (next, RecapBranch::TierUp)
    };
    RecapDecision {
        target: cc_estimate.min(cap),
        cap: Some(cap),
        branch,
        limited_by_cc: cc_estimate < cap,
    }
}

/// One measured row (one 5 s segment).
#[derive(Clone, Debug, PartialEq)]
pub struct RecapRow {
    /// Confidence per tier.
    pub confidence: Vec<f64>,
    /// How it was measured (model, metric, encoder, clip).
    pub measured_by: String,
}

/// The table of one content class.
#[derive(Clone, Debug, PartialEq)]
pub struct ContentClass {
    /// Class name.
    pub name: String,
    /// Tiers (kbit/s).
    pub tiers_kbps: Vec<u32>,
    /// Rows, one per segment.
    pub rows: Vec<RecapRow>,
}

impl ContentClass {
    /// The curve of segment `index` (wrapping around the rows).
    pub fn segment_curve(&self, index: usize) -> Option<ConfidenceCurve> {
        let row = self.rows.get(index.checked_rem(self.rows.len())?)?;
        Some(ConfidenceCurve {
            tiers_kbps: self.tiers_kbps.clone(),
            confidence: row.confidence.clone(),
        })
    }

    /// The per-tier minimum over all rows: θ reached there is reached on every measured segment.
    pub fn conservative_curve(&self) -> Option<ConfidenceCurve> {
        if self.rows.is_empty() {
            return None;
        }
        let confidence = (0..self.tiers_kbps.len())
            .map(|i| {
                self.rows
                    .iter()
                    .filter_map(|r| r.confidence.get(i).copied())
                    .fold(1.0, f64::min)
            })
            .collect();
        Some(ConfidenceCurve {
            tiers_kbps: self.tiers_kbps.clone(),
            confidence,
        })
    }
}

/// All content classes and the threshold θ.
#[derive(Clone, Debug, PartialEq)]
pub struct RecapTable {
    threshold: f64,
    classes: Vec<ContentClass>,
}

impl Default for RecapTable {
    fn default() -> Self {
        RecapTable::empty()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    threshold: Option<f64>,
    #[serde(default)]
    class: Vec<RawClass>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClass {
    name: String,
    tiers_kbps: Option<Vec<u32>>,
    #[serde(default)]
    row: Vec<RawRow>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    confidence: Vec<f64>,
    measured_by: Option<String>,
}

impl RecapTable {
    /// No classes: the cap is disabled.
    pub fn empty() -> RecapTable {
        RecapTable {
            threshold: DEFAULT_THRESHOLD,
            classes: Vec::new(),
        }
    }

    /// Parse and validate a table (format in the module docs).
    ///
    /// # Errors
    /// [`AbrError::RecapToml`] for syntax or schema errors; [`AbrError::RowNotMeasured`] for a
    /// row without `measured_by`; [`AbrError::TiersNotIncreasing`], [`AbrError::InvalidTiers`],
    /// [`AbrError::RowLength`], [`AbrError::ConfidenceOutOfRange`],
    /// [`AbrError::InvalidClassName`], [`AbrError::InvalidConfig`] (threshold) otherwise.
    pub fn from_toml_str(text: &str) -> Result<RecapTable, AbrError> {
        let raw: RawTable = toml::from_str(text).map_err(|e| AbrError::RecapToml {
            message: e.to_string(),
        })?;
        let threshold = raw.threshold.unwrap_or(DEFAULT_THRESHOLD);
        if !(threshold.is_finite() && threshold > 0.0 && threshold <= 1.0) {
            return Err(AbrError::InvalidConfig {
                field: "recap.threshold",
                value: threshold.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        let mut classes: Vec<ContentClass> = Vec::with_capacity(raw.class.len());
        for c in raw.class {
            if c.name.trim().is_empty() {
                return Err(AbrError::InvalidClassName {
                    class: c.name,
                    reason: "empty",
                });
            }
            if classes.iter().any(|k| k.name == c.name) {
                return Err(AbrError::InvalidClassName {
                    class: c.name,
                    reason: "defined twice",
                });
            }
            let tiers = c.tiers_kbps.unwrap_or_else(|| ARTIC_TIERS_KBPS.to_vec());
            check_tiers(&c.name, &tiers)?;
            if c.row.is_empty() {
                return Err(AbrError::InvalidTiers {
                    class: c.name,
                    reason: "no rows (remove the class or measure it)",
                });
            }
            let mut rows = Vec::with_capacity(c.row.len());
            for (i, r) in c.row.into_iter().enumerate() {
                let measured_by = match r.measured_by {
                    Some(m) if !m.trim().is_empty() => m,
                    _ => {
                        return Err(AbrError::RowNotMeasured {
                            class: c.name,
                            row: i,
                        })
                    }
                };
                check_row(&c.name, i, tiers.len(), &r.confidence)?;
                rows.push(RecapRow {
                    confidence: r.confidence,
                    measured_by,
                });
            }
            classes.push(ContentClass {
                name: c.name,
                tiers_kbps: tiers,
                rows,
            });
        }
        Ok(RecapTable { threshold, classes })
    }

    /// θ.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Whether the cap is disabled.
    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// A class by name.
    pub fn class(&self, name: &str) -> Option<&ContentClass> {
        self.classes.iter().find(|c| c.name == name)
    }

    /// The classes.
    pub fn classes(&self) -> &[ContentClass] {
        &self.classes
    }

    /// The target for content `class` (segment `segment`, or the conservative curve over all
    /// segments when `None`). Unknown class or empty table: passthrough (`target = cc_estimate`).
    pub fn decide(
        &self,
        class: &str,
        segment: Option<usize>,
        current: Bitrate,
        cc_estimate: Bitrate,
    ) -> RecapDecision {
        let curve = self.class(class).and_then(|c| match segment {
            Some(i) => c.segment_curve(i),
            None => c.conservative_curve(),
        });
        match curve {
            Some(curve) => recap_rule(&curve, self.threshold, current, cc_estimate),
            None => RecapDecision {
                target: cc_estimate,
                cap: None,
                branch: RecapBranch::Passthrough,
                limited_by_cc: true,
            },
        }
    }
}

fn check_tiers(class: &str, tiers: &[u32]) -> Result<(), AbrError> {
    match tiers.first() {
        None => {
            return Err(AbrError::InvalidTiers {
                class: class.to_owned(),
                reason: "no tiers",
            })
        }
        Some(0) => {
            return Err(AbrError::InvalidTiers {
                class: class.to_owned(),
                reason: "a tier of 0 kbit/s",
            })
        }
        Some(_) => {}
    }
    for (i, w) in tiers.windows(2).enumerate() {
        if w[1] <= w[0] {
            return Err(AbrError::TiersNotIncreasing {
                class: class.to_owned(),
                index: i + 1,
                previous: w[0],
                value: w[1],
            });
        }
    }
    Ok(())
}

fn check_row(class: &str, row: usize, tiers: usize, confidence: &[f64]) -> Result<(), AbrError> {
    if confidence.len() != tiers {
        return Err(AbrError::RowLength {
            class: class.to_owned(),
            row,
            expected: tiers,
            actual: confidence.len(),
        });
    }
    if let Some((index, &value)) = confidence
        .iter()
        .enumerate()
        .find(|(_, c)| !(c.is_finite() && (0.0..=1.0).contains(*c)))
    {
        return Err(AbrError::ConfidenceOutOfRange {
            class: class.to_owned(),
            row,
            index,
            value,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confidence_is_piecewise_linear() {
        let c =
            ConfidenceCurve::new(vec![200, 400], vec![0.5, 0.9]).unwrap_or_else(|e| panic!("{e}"));
        assert!((c.confidence_at(Bitrate::from_kbps(300)) - 0.7).abs() < 1e-12);
        assert!((c.confidence_at(Bitrate::from_kbps(100)) - 0.25).abs() < 1e-12);
        assert!((c.confidence_at(Bitrate::from_kbps(5000)) - 0.9).abs() < 1e-12);
        assert_eq!(c.confidence_at(Bitrate::ZERO), 0.0);
    }

    #[test]
    fn curve_rejects_nan() {
        assert!(matches!(
            ConfidenceCurve::new(vec![200], vec![f64::NAN]),
            Err(AbrError::ConfidenceOutOfRange { index: 0, .. })
        ));
    }
}
