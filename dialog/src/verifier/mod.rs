//! The dual path's verifier: keep or discard the fast model's draft (RelayS2S, see
//! `../shared/design/papers.md`).
//!
//! The fast model drafts the first words of the answer and they start playing at once; the slow
//! model then continues from that prefix. A draft the slow model would not have started with
//! (a wrong fact, an odd opening) must be dropped before it is heard. The verifier decides from
//! what the drafter already computed while drafting, so it costs nothing but a tiny MLP:
//! per draft token the log-probability, entropy and top-1/top-2 margin of the drafter's
//! distribution, and its final-norm hidden state ([`TokenFeatures`]).
//!
//! Input ([`draft_input`]): [`SCALARS`] summary statistics over the draft tokens, then the mean
//! hidden state. Model: standardise → linear (`hidden` units) → tanh → linear → sigmoid; about
//! 29K parameters for a 896-wide drafter at 32 units (the budget is 200K). Inference is
//! plain Rust over the weights (microseconds); training ([`train`]) uses candle's autograd with
//! AdamW and a deterministic initialisation (candle's CPU generator cannot be seeded), so the
//! same data gives the same weights.
//!
//! The labels come from the slow model (see `evals/src/verifier_data.rs`): a draft is "kept"
//! when its mean per-token log-probability under the slow model reaches a threshold taken from
//! the slow model's own openings. The trained weights ship in the binary ([`Verifier::builtin`]).

use crate::llm::TokenFeatures;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::Path;

/// Summary statistics ahead of the hidden state in the verifier's input.
pub const SCALARS: usize = 8;

/// The weights `voicerelay eval verifier --weights-out` trained on this project's data (the
/// report of that run is in the README).
const BUILTIN: &[u8] = include_bytes!("../../models/verifier.safetensors");

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifierError {
    #[error("a draft needs at least one token")]
    EmptyDraft,
    #[error("draft token {index} has no {what} (the drafter must report entropy, margin and, when the verifier uses it, the hidden state)")]
    MissingFeature { index: usize, what: &'static str },
    #[error("draft token {index}: hidden state is {got} wide, the verifier expects {expected}")]
    HiddenWidth {
        index: usize,
        expected: usize,
        got: usize,
    },
    #[error("verifier input is {got} wide, the model expects {expected}")]
    InputWidth { expected: usize, got: usize },
    #[error("verifier weights: tensor `{name}` {problem}")]
    Weights { name: String, problem: String },
    #[error("training data: {reason}")]
    Data { reason: String },
    #[error("verifier weights file {path}: {source}")]
    Io {
        path: String,
        source: candle_core::Error,
    },
    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),
}

/// The verifier's input for one draft: [`SCALARS`] statistics, then the mean hidden state
/// (`hidden_width` values; 0 to leave the hidden state out).
///
/// # Errors
/// An empty draft, a token without entropy/margin, or a hidden state of the wrong width.
pub fn draft_input(
    tokens: &[TokenFeatures],
    hidden_width: usize,
) -> Result<Vec<f32>, VerifierError> {
    if tokens.is_empty() {
        return Err(VerifierError::EmptyDraft);
    }
    let n = tokens.len() as f32;
    let mut sum_lp = 0f32;
    let mut min_lp = f32::INFINITY;
    let mut sum_ent = 0f32;
    let mut max_ent = 0f32;
    let mut sum_margin = 0f32;
    let mut min_margin = f32::INFINITY;
    let mut hidden = vec![0f32; hidden_width];
    for (index, t) in tokens.iter().enumerate() {
        // A -inf log-probability (a token the model gave no mass) would poison the sums.
        let lp = t.logprob.max(-30.0);
        let ent = t.entropy.ok_or(VerifierError::MissingFeature {
            index,
            what: "entropy",
        })?;
        let margin = t.margin.ok_or(VerifierError::MissingFeature {
            index,
            what: "margin",
        })?;
        sum_lp += lp;
        min_lp = min_lp.min(lp);
        sum_ent += ent;
        max_ent = max_ent.max(ent);
        sum_margin += margin;
        min_margin = min_margin.min(margin);
        if hidden_width > 0 {
            let h = t.hidden.as_ref().ok_or(VerifierError::MissingFeature {
                index,
                what: "hidden state",
            })?;
            if h.len() != hidden_width {
                return Err(VerifierError::HiddenWidth {
                    index,
                    expected: hidden_width,
                    got: h.len(),
                });
            }
            for (acc, v) in hidden.iter_mut().zip(h) {
                *acc += v / n;
            }
        }
    }
    let first_lp = tokens[0].logprob.max(-30.0);
    let mut input = Vec::with_capacity(SCALARS + hidden_width);
    input.extend_from_slice(&[
        sum_lp / n,
        min_lp,
        first_lp,
        sum_ent / n,
        max_ent,
        sum_margin / n,
        min_margin,
        n / 10.0,
    ]);
    input.extend(hidden);
    Ok(input)
}

/// How many leading tokens (given as their decoded text pieces, in order) make up the first
/// `words` words of a draft: it ends before the token that would start word `words + 1`, so the
/// last word is known to be complete. All of them when the text has no more words.
pub fn draft_token_count<S: AsRef<str>>(pieces: &[S], words: usize) -> usize {
    let mut text = String::new();
    for (i, p) in pieces.iter().enumerate() {
        text.push_str(p.as_ref());
        if text.split_whitespace().count() > words {
            return i;
        }
    }
    pieces.len()
}

/// A trained verifier: `score` is the probability that the slow model accepts the draft.
#[derive(Debug, Clone)]
pub struct Verifier {
    input: usize,
    units: usize,
    mean: Vec<f32>,
    std: Vec<f32>,
    /// `units × input`, row-major.
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: f32,
}

impl Verifier {
    /// The shipped weights (`dialog/models/verifier.safetensors`, compiled in).
    ///
    /// # Errors
    /// Only if the committed file is malformed (tested).
    pub fn builtin() -> Result<Self, VerifierError> {
        let tensors = candle_core::safetensors::load_buffer(BUILTIN, &Device::Cpu)?;
        Self::from_tensors(&tensors)
    }

    /// # Errors
    /// The file cannot be read or lacks a tensor of the right shape.
    pub fn load(path: &Path) -> Result<Self, VerifierError> {
        let tensors = candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| {
            VerifierError::Io {
                path: path.display().to_string(),
                source,
            }
        })?;
        Self::from_tensors(&tensors)
    }

    /// A verifier with the given weights (`w1`: `units × input`, row-major), for the core's
    /// tests.
    #[cfg(test)]
    pub(crate) fn from_parts(
        mean: Vec<f32>,
        std: Vec<f32>,
        w1: Vec<f32>,
        b1: Vec<f32>,
        w2: Vec<f32>,
        b2: f32,
    ) -> Self {
        Self {
            input: mean.len(),
            units: b1.len(),
            mean,
            std,
            w1,
            b1,
            w2,
            b2,
        }
    }

    /// Width of the input vector (`SCALARS` + the hidden state's width).
    pub fn input_width(&self) -> usize {
        self.input
    }

    /// Width of the drafter hidden state this verifier reads (0: scalars only).
    pub fn hidden_width(&self) -> usize {
        self.input - SCALARS
    }

    /// Trainable parameters (standardisation statistics not counted).
    pub fn parameters(&self) -> usize {
        self.w1.len() + self.b1.len() + self.w2.len() + 1
    }

    fn from_tensors(t: &HashMap<String, Tensor>) -> Result<Self, VerifierError> {
        let get = |name: &str| -> Result<Vec<f32>, VerifierError> {
            let tensor = t.get(name).ok_or_else(|| VerifierError::Weights {
                name: name.into(),
                problem: "is missing".into(),
            })?;
            Ok(tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?)
        };
        let mean = get("norm.mean")?;
        let std = get("norm.std")?;
        let w1 = get("l1.weight")?;
        let b1 = get("l1.bias")?;
        let w2 = get("l2.weight")?;
        let b2 = get("l2.bias")?;
        let input = mean.len();
        let units = b1.len();
        let shape_err = |name: &str, want: usize, got: usize| VerifierError::Weights {
            name: name.into(),
            problem: format!("has {got} values, expected {want}"),
        };
        if input < SCALARS {
            return Err(shape_err("norm.mean", SCALARS, input));
        }
        if std.len() != input {
            return Err(shape_err("norm.std", input, std.len()));
        }
        if w1.len() != units * input {
            return Err(shape_err("l1.weight", units * input, w1.len()));
        }
        if w2.len() != units {
            return Err(shape_err("l2.weight", units, w2.len()));
        }
        if b2.len() != 1 {
            return Err(shape_err("l2.bias", 1, b2.len()));
        }
        if let Some(bad) = std.iter().find(|s| s.is_nan() || **s <= 0.0) {
            return Err(VerifierError::Weights {
                name: "norm.std".into(),
                problem: format!("holds {bad}, every value must be positive"),
            });
        }
        Ok(Self {
            input,
            units,
            mean,
            std,
            w1,
            b1,
            w2,
            b2: b2[0],
        })
    }

    /// Probability (0..1) that the slow model accepts the draft whose input is `x`.
    ///
    /// # Errors
    /// `x` is not [`Self::input_width`] wide.
    pub fn score(&self, x: &[f32]) -> Result<f32, VerifierError> {
        if x.len() != self.input {
            return Err(VerifierError::InputWidth {
                expected: self.input,
                got: x.len(),
            });
        }
        let z: Vec<f32> = x
            .iter()
            .zip(&self.mean)
            .zip(&self.std)
            .map(|((v, m), s)| (v - m) / s)
            .collect();
        let mut logit = self.b2;
        for u in 0..self.units {
            let row = &self.w1[u * self.input..(u + 1) * self.input];
            let a: f32 = row.iter().zip(&z).map(|(w, v)| w * v).sum::<f32>() + self.b1[u];
            logit += self.w2[u] * a.tanh();
        }
        Ok(sigmoid(logit))
    }

    /// Scores a draft straight from its tokens' features.
    ///
    /// # Errors
    /// See [`draft_input`] and [`Self::score`].
    pub fn score_draft(&self, tokens: &[TokenFeatures]) -> Result<f32, VerifierError> {
        self.score(&draft_input(tokens, self.hidden_width())?)
    }

    fn tensors(&self) -> Result<HashMap<String, Tensor>, VerifierError> {
        let dev = Device::Cpu;
        let mut t = HashMap::new();
        t.insert(
            "norm.mean".into(),
            Tensor::from_slice(&self.mean, self.input, &dev)?,
        );
        t.insert(
            "norm.std".into(),
            Tensor::from_slice(&self.std, self.input, &dev)?,
        );
        t.insert(
            "l1.weight".into(),
            Tensor::from_slice(&self.w1, (self.units, self.input), &dev)?,
        );
        t.insert(
            "l1.bias".into(),
            Tensor::from_slice(&self.b1, self.units, &dev)?,
        );
        t.insert(
            "l2.weight".into(),
            Tensor::from_slice(&self.w2, (1, self.units), &dev)?,
        );
        t.insert("l2.bias".into(), Tensor::from_slice(&[self.b2], 1, &dev)?);
        Ok(t)
    }

    /// # Errors
    /// The file cannot be written.
    pub fn save(&self, path: &Path) -> Result<(), VerifierError> {
        candle_core::safetensors::save(&self.tensors()?, path).map_err(|source| VerifierError::Io {
            path: path.display().to_string(),
            source,
        })
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

mod train;
pub use train::{load_examples, roc_auc, save_examples, train, Example, TrainOptions, TrainReport};

#[cfg(test)]
mod tests {
    use super::train::SplitMix;
    use super::*;

    fn tok(logprob: f32, entropy: f32, margin: f32, hidden: Vec<f32>) -> TokenFeatures {
        TokenFeatures {
            logprob,
            entropy: Some(entropy),
            margin: Some(margin),
            hidden: Some(hidden),
        }
    }

    #[test]
    fn a_draft_ends_before_the_token_that_starts_the_next_word() {
        let pieces = [
            "The", " capital", " of", " France", " is", " Paris", ".", " It",
        ];
        assert_eq!(draft_token_count(&pieces, 5), 5);
        assert_eq!(draft_token_count(&pieces, 6), 7);
        assert_eq!(draft_token_count(&pieces, 20), pieces.len());
        // A word split over several tokens stays whole.
        let split = ["Eve", "rest", " is", " tall"];
        assert_eq!(draft_token_count(&split, 1), 2);
        assert_eq!(draft_token_count::<&str>(&[], 5), 0);
    }

    #[test]
    fn auc_of_perfect_reversed_and_tied_rankings() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels), 1.0);
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels), 0.0);
        assert_eq!(roc_auc(&[0.5, 0.5, 0.5, 0.5], &labels), 0.5);
        // One discarded draft above one kept: 3 of 4 pairs ordered.
        assert_eq!(roc_auc(&[0.1, 0.85, 0.8, 0.9], &labels), 0.75);
    }

    #[test]
    fn input_summarises_tokens_and_averages_hidden_states() {
        let x = draft_input(
            &[
                tok(-1.0, 2.0, 0.5, vec![1.0, 3.0]),
                tok(-3.0, 1.0, 1.5, vec![3.0, 5.0]),
            ],
            2,
        )
        .expect("valid draft");
        assert_eq!(x, vec![-2.0, -3.0, -1.0, 1.5, 2.0, 1.0, 0.5, 0.2, 2.0, 4.0]);
        let scalars_only = draft_input(&[tok(-1.0, 2.0, 0.5, vec![])], 0).expect("no hidden");
        assert_eq!(scalars_only.len(), SCALARS);
    }

    #[test]
    fn bad_drafts_are_errors_not_panics() {
        assert!(matches!(
            draft_input(&[], 0),
            Err(VerifierError::EmptyDraft)
        ));
        let no_entropy = TokenFeatures {
            logprob: -1.0,
            entropy: None,
            margin: Some(1.0),
            hidden: None,
        };
        assert!(matches!(
            draft_input(&[no_entropy], 0),
            Err(VerifierError::MissingFeature {
                what: "entropy",
                ..
            })
        ));
        assert!(matches!(
            draft_input(&[tok(-1.0, 1.0, 1.0, vec![0.0; 3])], 4),
            Err(VerifierError::HiddenWidth {
                expected: 4,
                got: 3,
                ..
            })
        ));
    }

    /// Kept drafts have a higher mean log-probability and a hidden direction of their own; the
    /// trained model must rank held-out drafts by it, and survive a save/load byte for byte.
    #[test]
    fn learns_a_separable_rule_and_round_trips_through_safetensors() {
        let mut rng = SplitMix::new(1);
        let mut make = |n: usize| -> Vec<Example> {
            (0..n)
                .map(|i| {
                    let keep = i % 2 == 0;
                    let shift = if keep { 0.8 } else { -0.8 };
                    let toks: Vec<TokenFeatures> = (0..5)
                        .map(|_| {
                            let h: Vec<f32> = (0..16)
                                .map(|d| rng.uniform(-1.0, 1.0) + if d == 3 { shift } else { 0.0 })
                                .collect();
                            tok(
                                rng.uniform(-2.0, 0.0) + shift,
                                rng.uniform(0.0, 3.0),
                                1.0,
                                h,
                            )
                        })
                        .collect();
                    Example {
                        input: draft_input(&toks, 16).expect("valid"),
                        keep,
                    }
                })
                .collect()
        };
        let (train_set, dev_set, test_set) = (make(200), make(60), make(60));
        let (v, report) = train(&train_set, &dev_set, TrainOptions::default()).expect("trains");
        assert!(report.dev_auc > 0.9, "dev AUC {}", report.dev_auc);
        let scores: Vec<f32> = test_set
            .iter()
            .map(|e| v.score(&e.input).expect("width"))
            .collect();
        let labels: Vec<bool> = test_set.iter().map(|e| e.keep).collect();
        assert!(roc_auc(&scores, &labels) > 0.9);
        assert_eq!(v.hidden_width(), 16);
        assert!(v.parameters() <= 200_000);

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("v.safetensors");
        v.save(&path).expect("save");
        let back = Verifier::load(&path).expect("load");
        for e in &test_set {
            assert_eq!(
                v.score(&e.input).expect("w").to_bits(),
                back.score(&e.input).expect("w").to_bits()
            );
        }
        assert!(matches!(
            v.score(&[0.0; 3]),
            Err(VerifierError::InputWidth { .. })
        ));
    }

    #[test]
    fn one_class_data_is_refused() {
        let e = |keep| Example {
            input: vec![0.0; SCALARS],
            keep,
        };
        let r = train(
            &[e(true), e(true)],
            &[e(true), e(false)],
            TrainOptions::default(),
        );
        assert!(matches!(r, Err(VerifierError::Data { .. })));
    }
}
