//! The dual path's verifier data, labels, training and report (`voicerelay eval verifier`).
//!
//! **Turns**: the written turns in `evals/data/turns.txt` (questions, requests, chit-chat) plus
//! every corpus transcript. Each goes to a split by a hash of its text (60 % train, 20 % dev,
//! 20 % test), so the split of a turn never changes when others are added.
//!
//! **Per turn** ([`Record`]): the fast model (Qwen2.5-0.5B, llama.cpp, greedy as in the
//! conversation) drafts the answer's first `words` words and reports each draft token's
//! log-probability, entropy, margin and hidden state; the verifier's input is made from them
//! ([`vr_dialog::verifier::draft_input`]). The slow model (Qwen2.5-Coder-1.5B) then scores the
//! same draft tokens after the same prompt: their log-probabilities under the model that would
//! continue the answer. On the dev and test splits the slow model also makes its own opening,
//! greedily as in the conversation (and once sampled at temperature 1, reported only).
//!
//! **Label** ([`threshold_from_own_openings`]): a draft is *kept* when its mean per-token
//! log-probability under the slow model is at least τ, the 10th percentile of the slow model's
//! own greedy openings' mean log-probability on dev: a draft is acceptable when the slow model
//! finds it as likely as nine in ten of the openings it actually gives. τ is chosen on dev only.
//! (A first run took τ from the temperature-1 samples: τ = −3.15 kept 97–99 % of the drafts,
//! too lenient to teach anything; the greedy openings are what the slow path would say.)
//!
//! **Training**: [`vr_dialog::verifier::train`] on train, early stopping on dev, for two
//! candidates — the MLP with the drafter's hidden state and the same MLP on the scalar features
//! alone; the one with the better dev ROC AUC ships. ROC AUC and keep rate are reported on test
//! for both, beside the drafter's own mean log-probability as a baseline, with a threshold sweep.

use crate::EvalError;
use serde::{Deserialize, Serialize};
use vr_dialog::verifier::{self, Example, TrainOptions, Verifier};

/// Share of the slow model's own openings a kept draft must be as likely as (see the module docs).
pub const OWN_OPENING_PERCENTILE: f64 = 0.10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataSplit {
    Train,
    Dev,
    Test,
}

/// The split of a turn, from an FNV-1a hash of its text.
pub fn split_of(text: &str) -> DataSplit {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.trim().to_lowercase().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    match h % 100 {
        0..=59 => DataSplit::Train,
        60..=79 => DataSplit::Dev,
        _ => DataSplit::Test,
    }
}

/// One user turn to draft an answer for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Turn {
    pub text: String,
    /// `written` or `corpus:<utterance id>`.
    pub source: String,
}

/// The written turns (`#` comments and blank lines skipped).
pub fn written_turns(text: &str) -> Vec<Turn> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Turn {
            text: l.to_string(),
            source: "written".into(),
        })
        .collect()
}

/// What both models made of one turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub turn: Turn,
    pub split: DataSplit,
    pub draft: String,
    pub draft_tokens: Vec<u32>,
    /// The verifier's input (scalars, then the drafter's mean hidden state).
    pub input: Vec<f32>,
    /// Each draft token's log-probability under the fast model.
    pub fast_logprobs: Vec<f32>,
    /// Each draft token's log-probability under the slow model.
    pub slow_logprobs: Vec<f32>,
    /// The slow model's own sampled opening, temperature 1 (dev and test only).
    pub own_opening: Option<Opening>,
    /// The slow model's own greedy opening (dev and test only): what it says at the
    /// conversation's temperature 0; the label threshold comes from these.
    #[serde(default)]
    pub own_greedy: Option<Opening>,
    pub fast_ms: f64,
    pub slow_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opening {
    pub text: String,
    pub mean_logprob: f32,
}

pub fn mean(xs: &[f32]) -> f32 {
    if xs.is_empty() {
        f32::NEG_INFINITY
    } else {
        xs.iter().sum::<f32>() / xs.len() as f32
    }
}

impl Record {
    pub fn slow_mean(&self) -> f32 {
        mean(&self.slow_logprobs)
    }
}

/// τ: the [`OWN_OPENING_PERCENTILE`] quantile of the slow model's own greedy openings' mean
/// log-probability over `records` (the dev split). `None` when none was made.
pub fn threshold_from_own_openings(records: &[&Record]) -> Option<f32> {
    let mut own: Vec<f32> = records
        .iter()
        .filter_map(|r| r.own_greedy.as_ref())
        .map(|o| o.mean_logprob)
        .filter(|v| v.is_finite())
        .collect();
    if own.is_empty() {
        return None;
    }
    own.sort_by(f32::total_cmp);
    let pos = OWN_OPENING_PERCENTILE * (own.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = (pos - lo as f64) as f32;
    Some(own[lo] + (own[hi] - own[lo]) * frac)
}

/// One row of the threshold sweep on the test split.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    pub threshold: f32,
    /// Share of drafts played.
    pub keep_rate: f64,
    /// Share of played drafts the slow model accepts (label kept).
    pub precision: f64,
    /// Share of acceptable drafts that were played.
    pub recall: f64,
}

pub fn sweep(scores: &[f32], labels: &[bool]) -> Vec<SweepRow> {
    let total_pos = labels.iter().filter(|l| **l).count().max(1) as f64;
    (0..=20)
        .map(|i| {
            let threshold = i as f32 / 20.0;
            let kept: Vec<bool> = scores
                .iter()
                .zip(labels)
                .filter(|(s, _)| **s >= threshold)
                .map(|(_, l)| *l)
                .collect();
            let tp = kept.iter().filter(|l| **l).count() as f64;
            SweepRow {
                threshold,
                keep_rate: kept.len() as f64 / scores.len().max(1) as f64,
                precision: if kept.is_empty() {
                    1.0
                } else {
                    tp / kept.len() as f64
                },
                recall: tp / total_pos,
            }
        })
        .collect()
}

/// Everything the report says about one trained verifier and its baselines.
#[derive(Debug, Clone, Serialize)]
pub struct Analysis {
    pub threshold_logprob: f32,
    pub percentile: f64,
    pub turns: usize,
    pub train: usize,
    pub dev: usize,
    pub test: usize,
    /// Share of drafts labelled kept, per split.
    pub kept_share_train: f64,
    pub kept_share_dev: f64,
    pub kept_share_test: f64,
    /// Share of the slow model's own greedy test openings that τ accepts (≈ 0.9 when τ
    /// generalises).
    pub own_openings_accepted_test: Option<f64>,
    /// The same for its temperature-1 samples.
    pub sampled_openings_accepted_test: Option<f64>,
    pub test_auc: f64,
    pub dev_auc: f64,
    pub train_auc: f64,
    pub best_epoch: usize,
    pub parameters: usize,
    pub hidden_width: usize,
    /// Baseline: the drafter's own mean log-probability as the score.
    pub test_auc_fast_logprob: f64,
    /// Which candidate ships (the better dev AUC).
    pub chosen: &'static str,
    /// The MLP with the hidden state.
    pub test_auc_with_hidden: f64,
    pub dev_auc_with_hidden: f64,
    /// The same MLP without the hidden state.
    pub test_auc_scalars_only: f64,
    pub dev_auc_scalars_only: f64,
    /// Keep rate on test at the 0.5 decision threshold.
    pub keep_rate_at_half: f64,
    pub precision_at_half: f64,
    pub sweep: Vec<SweepRow>,
}

fn examples(records: &[&Record], tau: f32, width: Option<usize>) -> Vec<Example> {
    records
        .iter()
        .map(|r| Example {
            input: match width {
                Some(w) => r.input[..w].to_vec(),
                None => r.input.clone(),
            },
            keep: r.slow_mean() >= tau,
        })
        .collect()
}

/// Labels, trains, evaluates. Returns the verifier and its analysis.
///
/// # Errors
/// No own openings on dev, a split with one class, or a training failure.
pub fn analyse(
    records: &[Record],
    opts: TrainOptions,
) -> Result<(Verifier, Analysis, Vec<Example>), EvalError> {
    let of = |s: DataSplit| -> Vec<&Record> { records.iter().filter(|r| r.split == s).collect() };
    let (train_r, dev_r, test_r) = (
        of(DataSplit::Train),
        of(DataSplit::Dev),
        of(DataSplit::Test),
    );
    let tau = threshold_from_own_openings(&dev_r).ok_or_else(|| {
        EvalError::Dialog("no slow-model openings on the dev split to set the threshold".into())
    })?;
    let err = |e: verifier::VerifierError| EvalError::Dialog(format!("verifier: {e}"));
    let (train_x, dev_x, test_x) = (
        examples(&train_r, tau, None),
        examples(&dev_r, tau, None),
        examples(&test_r, tau, None),
    );
    let labels: Vec<bool> = test_x.iter().map(|e| e.keep).collect();
    let score_all = |v: &Verifier, xs: &[Example]| -> Result<Vec<f32>, EvalError> {
        xs.iter()
            .map(|e| v.score(&e.input))
            .collect::<Result<_, _>>()
            .map_err(err)
    };
    // Two candidates, the one with the better dev AUC ships: with the hidden state, and without.
    let (full, full_report) = verifier::train(&train_x, &dev_x, opts).map_err(err)?;
    let scalars = verifier::SCALARS;
    let test_s = examples(&test_r, tau, Some(scalars));
    let (small, small_report) = verifier::train(
        &examples(&train_r, tau, Some(scalars)),
        &examples(&dev_r, tau, Some(scalars)),
        opts,
    )
    .map_err(err)?;
    let full_scores = score_all(&full, &test_x)?;
    let small_scores = score_all(&small, &test_s)?;
    let with_hidden = full_report.dev_auc >= small_report.dev_auc;
    let (v, report, scores, test_x) = if with_hidden {
        (full, full_report.clone(), full_scores.clone(), test_x)
    } else {
        (small, small_report.clone(), small_scores.clone(), test_s)
    };
    let fast_scores: Vec<f32> = test_r.iter().map(|r| mean(&r.fast_logprobs)).collect();
    let share =
        |xs: &[Example]| xs.iter().filter(|e| e.keep).count() as f64 / xs.len().max(1) as f64;
    let own_test: Vec<f32> = test_r
        .iter()
        .filter_map(|r| r.own_greedy.as_ref().map(|o| o.mean_logprob))
        .collect();
    let sampled_test: Vec<f32> = test_r
        .iter()
        .filter_map(|r| r.own_opening.as_ref().map(|o| o.mean_logprob))
        .collect();
    let rows = sweep(&scores, &labels);
    let half = rows
        .iter()
        .find(|r| (r.threshold - 0.5).abs() < 1e-6)
        .cloned()
        .unwrap_or(SweepRow {
            threshold: 0.5,
            keep_rate: 0.0,
            precision: 0.0,
            recall: 0.0,
        });
    let analysis = Analysis {
        threshold_logprob: tau,
        percentile: OWN_OPENING_PERCENTILE,
        turns: records.len(),
        train: train_x.len(),
        dev: dev_x.len(),
        test: test_x.len(),
        kept_share_train: share(&train_x),
        kept_share_dev: share(&dev_x),
        kept_share_test: share(&test_x),
        own_openings_accepted_test: (!own_test.is_empty())
            .then(|| own_test.iter().filter(|v| **v >= tau).count() as f64 / own_test.len() as f64),
        sampled_openings_accepted_test: (!sampled_test.is_empty()).then(|| {
            sampled_test.iter().filter(|v| **v >= tau).count() as f64 / sampled_test.len() as f64
        }),
        test_auc: verifier::roc_auc(&scores, &labels),
        dev_auc: report.dev_auc,
        train_auc: report.train_auc,
        best_epoch: report.best_epoch,
        parameters: v.parameters(),
        hidden_width: v.hidden_width(),
        chosen: if with_hidden {
            "scalars + hidden state"
        } else {
            "scalars only"
        },
        test_auc_fast_logprob: verifier::roc_auc(&fast_scores, &labels),
        test_auc_with_hidden: verifier::roc_auc(&full_scores, &labels),
        dev_auc_with_hidden: full_report.dev_auc,
        test_auc_scalars_only: verifier::roc_auc(&small_scores, &labels),
        dev_auc_scalars_only: small_report.dev_auc,
        keep_rate_at_half: half.keep_rate,
        precision_at_half: half.precision,
        sweep: rows,
    };
    Ok((v, analysis, test_x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_are_stable_and_roughly_proportioned() {
        assert_eq!(
            split_of("How do I boil an egg?"),
            split_of(" how do i boil an egg? ")
        );
        let turns = written_turns(include_str!("../data/turns.txt"));
        assert!(turns.len() >= 400, "{} written turns", turns.len());
        let test = turns
            .iter()
            .filter(|t| split_of(&t.text) == DataSplit::Test)
            .count();
        let share = test as f64 / turns.len() as f64;
        assert!((0.12..0.28).contains(&share), "test share {share}");
    }

    #[test]
    fn threshold_is_the_tenth_percentile_of_own_openings() {
        let rec = |lp: f32| Record {
            turn: Turn {
                text: String::new(),
                source: "written".into(),
            },
            split: DataSplit::Dev,
            draft: String::new(),
            draft_tokens: vec![],
            input: vec![],
            fast_logprobs: vec![],
            slow_logprobs: vec![],
            own_opening: None,
            own_greedy: Some(Opening {
                text: String::new(),
                mean_logprob: lp,
            }),
            fast_ms: 0.0,
            slow_ms: 0.0,
        };
        let recs: Vec<Record> = (0..11).map(|i| rec(-(i as f32))).collect();
        let refs: Vec<&Record> = recs.iter().collect();
        // Sorted: -10, -9, ..., 0; the 10th percentile of 11 values is the second smallest.
        assert_eq!(threshold_from_own_openings(&refs), Some(-9.0));
        assert_eq!(threshold_from_own_openings(&[]), None);
    }

    #[test]
    fn sweep_ends_keep_everything_and_nothing() {
        let rows = sweep(&[0.2, 0.6, 0.9, 1.0], &[false, true, true, false]);
        assert_eq!(rows[0].keep_rate, 1.0);
        assert_eq!(rows[0].precision, 0.5);
        let at_half = &rows[10];
        assert_eq!(at_half.keep_rate, 0.75);
        assert!((at_half.precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(rows[20].keep_rate, 0.25);
    }
}
