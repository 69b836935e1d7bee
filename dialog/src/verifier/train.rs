//! Training the verifier: a small MLP on labelled drafts (candle autograd, AdamW), the best
//! epoch by dev ROC AUC, and the labelled-input files the training data is shipped in.

use super::{Verifier, VerifierError};
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;
use std::path::Path;

/// One labelled draft.
#[derive(Debug, Clone)]
pub struct Example {
    pub input: Vec<f32>,
    pub keep: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct TrainOptions {
    pub units: usize,
    pub epochs: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    /// Seed of the weight initialisation.
    pub seed: u64,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            units: 32,
            epochs: 400,
            learning_rate: 3e-3,
            weight_decay: 0.05,
            seed: 7,
        }
    }
}

/// What training did.
#[derive(Debug, Clone)]
pub struct TrainReport {
    /// The epoch whose weights were kept (best ROC AUC on `dev`).
    pub best_epoch: usize,
    pub dev_auc: f64,
    pub train_auc: f64,
}

/// The input width both splits share; each must hold both classes.
fn checked_width(train: &[Example], dev: &[Example]) -> Result<usize, VerifierError> {
    let width = train
        .first()
        .map(|e| e.input.len())
        .ok_or(VerifierError::Data {
            reason: "no training examples".into(),
        })?;
    for (name, set) in [("train", train), ("dev", dev)] {
        if let Some(e) = set.iter().find(|e| e.input.len() != width) {
            return Err(VerifierError::Data {
                reason: format!(
                    "{name} has an input {} wide, expected {width}",
                    e.input.len()
                ),
            });
        }
        let kept = set.iter().filter(|e| e.keep).count();
        if kept == 0 || kept == set.len() {
            return Err(VerifierError::Data {
                reason: format!("{name} has only one class ({kept} of {} kept)", set.len()),
            });
        }
    }
    Ok(width)
}

/// Per-input mean and standard deviation, from the training split only.
fn standardisation(train: &[Example], width: usize) -> (Vec<f32>, Vec<f32>) {
    let n = train.len() as f32;
    let mut mean = vec![0f32; width];
    for e in train {
        for (m, v) in mean.iter_mut().zip(&e.input) {
            *m += v / n;
        }
    }
    let mut var = vec![0f32; width];
    for e in train {
        for ((s, v), m) in var.iter_mut().zip(&e.input).zip(&mean) {
            *s += (v - m) * (v - m) / n;
        }
    }
    let std: Vec<f32> = var.iter().map(|v| v.sqrt().max(1e-3)).collect();
    (mean, std)
}

/// Trains on `train`, keeping the epoch with the best ROC AUC on `dev` (early stopping).
///
/// # Errors
/// Empty or ragged data, a split with only one class, or a tensor failure.
pub fn train(
    train: &[Example],
    dev: &[Example],
    opts: TrainOptions,
) -> Result<(Verifier, TrainReport), VerifierError> {
    let width = checked_width(train, dev)?;
    let (mean, std) = standardisation(train, width);

    let dev_c = Device::Cpu;
    let standardise = |set: &[Example]| -> Result<(Tensor, Tensor), VerifierError> {
        let mut xs = Vec::with_capacity(set.len() * width);
        for e in set {
            xs.extend(
                e.input
                    .iter()
                    .zip(&mean)
                    .zip(&std)
                    .map(|((v, m), s)| (v - m) / s),
            );
        }
        let ys: Vec<f32> = set.iter().map(|e| f32::from(u8::from(e.keep))).collect();
        Ok((
            Tensor::from_vec(xs, (set.len(), width), &dev_c)?,
            Tensor::from_vec(ys, (set.len(), 1), &dev_c)?,
        ))
    };
    let (x, y) = standardise(train)?;

    let mut rng = SplitMix::new(opts.seed);
    let units = opts.units.max(1);
    // Glorot-uniform limits.
    let l1 = (6.0 / (width + units) as f32).sqrt();
    let l2 = (6.0 / (units + 1) as f32).sqrt();
    let init = |len: usize, limit: f32, rng: &mut SplitMix| -> Vec<f32> {
        (0..len).map(|_| rng.uniform(-limit, limit)).collect()
    };
    let w1 = Var::from_tensor(&Tensor::from_vec(
        init(units * width, l1, &mut rng),
        (units, width),
        &dev_c,
    )?)?;
    let b1 = Var::from_tensor(&Tensor::zeros(units, DType::F32, &dev_c)?)?;
    let w2 = Var::from_tensor(&Tensor::from_vec(
        init(units, l2, &mut rng),
        (1, units),
        &dev_c,
    )?)?;
    let b2 = Var::from_tensor(&Tensor::zeros(1, DType::F32, &dev_c)?)?;
    let mut opt = candle_nn::AdamW::new(
        vec![w1.clone(), b1.clone(), w2.clone(), b2.clone()],
        candle_nn::ParamsAdamW {
            lr: opts.learning_rate,
            weight_decay: opts.weight_decay,
            ..candle_nn::ParamsAdamW::default()
        },
    )?;
    use candle_nn::Optimizer;

    let snapshot = |w1: &Var, b1: &Var, w2: &Var, b2: &Var| -> Result<Verifier, VerifierError> {
        Ok(Verifier {
            input: width,
            units,
            mean: mean.clone(),
            std: std.clone(),
            w1: w1.as_tensor().flatten_all()?.to_vec1()?,
            b1: b1.as_tensor().to_vec1()?,
            w2: w2.as_tensor().flatten_all()?.to_vec1()?,
            b2: b2.as_tensor().to_vec1::<f32>()?[0],
        })
    };
    let auc_of = |v: &Verifier, set: &[Example]| -> Result<f64, VerifierError> {
        let scores = set
            .iter()
            .map(|e| v.score(&e.input))
            .collect::<Result<Vec<_>, _>>()?;
        let labels: Vec<bool> = set.iter().map(|e| e.keep).collect();
        Ok(roc_auc(&scores, &labels))
    };

    let mut best: Option<(f64, usize, Verifier)> = None;
    for epoch in 0..opts.epochs.max(1) {
        let hidden = x
            .matmul(&w1.as_tensor().t()?)?
            .broadcast_add(b1.as_tensor())?
            .tanh()?;
        let logits = hidden
            .matmul(&w2.as_tensor().t()?)?
            .broadcast_add(b2.as_tensor())?;
        let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &y)?;
        opt.backward_step(&loss)?;
        if epoch % 5 == 4 || epoch + 1 == opts.epochs {
            let v = snapshot(&w1, &b1, &w2, &b2)?;
            let auc = auc_of(&v, dev)?;
            if best.as_ref().is_none_or(|(b, _, _)| auc > *b) {
                best = Some((auc, epoch + 1, v));
            }
        }
    }
    let (dev_auc, best_epoch, verifier) = best.ok_or(VerifierError::Data {
        reason: "no epoch was evaluated".into(),
    })?;
    let train_auc = auc_of(&verifier, train)?;
    Ok((
        verifier,
        TrainReport {
            best_epoch,
            dev_auc,
            train_auc,
        },
    ))
}

/// Writes labelled inputs (the held-out split shipped beside the weights) as safetensors:
/// `inputs` `[n, width]` in f16 (half the size; scores of the rounded inputs are what the test of
/// the shipped weights checks) and `labels` `[n]` u8.
///
/// # Errors
/// Ragged inputs or a write failure.
pub fn save_examples(path: &Path, examples: &[Example]) -> Result<(), VerifierError> {
    let width = examples.first().map_or(0, |e| e.input.len());
    if examples.iter().any(|e| e.input.len() != width) {
        return Err(VerifierError::Data {
            reason: "inputs of different widths".into(),
        });
    }
    let xs: Vec<f32> = examples
        .iter()
        .flat_map(|e| e.input.iter().copied())
        .collect();
    let ys: Vec<u8> = examples.iter().map(|e| u8::from(e.keep)).collect();
    let mut t = HashMap::new();
    t.insert(
        "inputs".to_string(),
        Tensor::from_vec(xs, (examples.len(), width), &Device::Cpu)?.to_dtype(DType::F16)?,
    );
    t.insert(
        "labels".to_string(),
        Tensor::from_vec(ys, examples.len(), &Device::Cpu)?,
    );
    candle_core::safetensors::save(&t, path).map_err(|source| VerifierError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads what [`save_examples`] wrote.
///
/// # Errors
/// The file is unreadable or its tensors do not match.
pub fn load_examples(path: &Path) -> Result<Vec<Example>, VerifierError> {
    let t =
        candle_core::safetensors::load(path, &Device::Cpu).map_err(|source| VerifierError::Io {
            path: path.display().to_string(),
            source,
        })?;
    let missing = |name: &str| VerifierError::Weights {
        name: name.into(),
        problem: "is missing".into(),
    };
    let inputs = t.get("inputs").ok_or_else(|| missing("inputs"))?;
    let labels = t.get("labels").ok_or_else(|| missing("labels"))?;
    let (n, _) = inputs.dims2()?;
    let rows = inputs.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let labels = labels.to_vec1::<u8>()?;
    if labels.len() != n {
        return Err(VerifierError::Data {
            reason: format!("{n} inputs but {} labels", labels.len()),
        });
    }
    Ok(rows
        .into_iter()
        .zip(labels)
        .map(|(input, l)| Example {
            input,
            keep: l != 0,
        })
        .collect())
}

/// Area under the ROC curve: the probability that a random kept draft scores above a random
/// discarded one (ties count half). 0.5 when either class is absent.
pub fn roc_auc(scores: &[f32], labels: &[bool]) -> f64 {
    let mut pairs: Vec<(f32, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let pos = pairs.iter().filter(|p| p.1).count() as f64;
    let neg = pairs.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return 0.5;
    }
    // Mann–Whitney U with average ranks for ties.
    let mut rank_sum = 0f64;
    let mut i = 0;
    while i < pairs.len() {
        let mut j = i;
        while j + 1 < pairs.len() && pairs[j + 1].0 == pairs[i].0 {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += avg_rank * pairs[i..=j].iter().filter(|p| p.1).count() as f64;
        i = j + 1;
    }
    (rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg)
}

/// The deterministic generator of the weight initialisation.
pub(super) struct SplitMix(vr_core::rng::SplitMix64);

impl SplitMix {
    pub(super) fn new(seed: u64) -> Self {
        Self(vr_core::rng::SplitMix64::new(seed))
    }
    /// Uniform in `[lo, hi)` from the top 24 bits (an f32's mantissa): the trained verifier's
    /// figures depend on these exact values.
    pub(super) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
}
