//! Direct preference optimisation (Rafailov et al. 2023) and IPO (Azar et al. 2023): the loss of a
//! batch of preference pairs from the policy's and the reference model's sequence
//! log-probabilities of each side's response, and the reward metrics trl logs.
//!
//! A pair's rows are batched as [`crate::data::make_pair_batch`] pads them (its chosen sides,
//! then its rejected sides), masked to their response tokens. The sequence log-probability is
//! the sum over the response's tokens, as trl's `DPOTrainer` sums them; IPO divides each side's
//! log-ratio by its response's tokens first, as trl does (its authors' normalisation). The
//! reference ([`Reference`]) is the base with the adapters switched off under LoRA (no second
//! copy of the weights), a frozen copy of the base weights in full fine-tuning.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use crate::TrainError;
use crate::data::{Batch, PairExample, make_pair_batch, pair_buckets};
use crate::model::Model;

/// Which preference loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DpoLoss {
    /// DPO's `−log σ(β · ((π_c − ref_c) − (π_r − ref_r)))`, log-probabilities summed over the
    /// response tokens (trl's `sigmoid`).
    Sigmoid,
    /// IPO's `((π_c − ref_c)/n_c − (π_r − ref_r)/n_r − 1/(2β))²`, each log-ratio averaged over
    /// its response's `n` tokens (trl's `ipo`).
    Ipo,
}

impl DpoLoss {
    /// trl's name for it (`sigmoid`, `ipo`), as recorded in checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            DpoLoss::Sigmoid => "sigmoid",
            DpoLoss::Ipo => "ipo",
        }
    }
}

/// How to learn from preference pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DpoConfig {
    /// β: how far the policy may move from the reference (DPO's KL weight; IPO's τ).
    pub beta: f64,
    /// The loss.
    pub loss: DpoLoss,
}

impl DpoConfig {
    /// Refuses a β that is not a positive finite number (IPO divides by it).
    pub fn check(&self) -> Result<(), TrainError> {
        if self.beta.is_finite() && self.beta > 0.0 {
            Ok(())
        } else {
            Err(TrainError::Config(format!(
                "DPO beta {} must be a positive number",
                self.beta
            )))
        }
    }
}

/// Means over pairs of what a DPO step learned, as trl logs them. A reward is
/// `β · (π − ref)` of one side's sequence log-probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DpoMetrics {
    /// Reward of the chosen sides.
    pub rewards_chosen: f64,
    /// Reward of the rejected sides.
    pub rewards_rejected: f64,
    /// Chosen reward − rejected reward.
    pub reward_margin: f64,
    /// The share of pairs whose chosen reward is above their rejected one.
    pub reward_accuracy: f64,
    /// The policy's sequence log-probability of the chosen sides.
    pub logps_chosen: f64,
    /// The policy's sequence log-probability of the rejected sides.
    pub logps_rejected: f64,
}

/// DPO's reference model.
#[derive(Debug)]
pub enum Reference {
    /// LoRA: the policy itself with its adapters switched off ([`Model::forward_base`]).
    Adapters,
    /// Full fine-tuning: a frozen copy of the base weights ([`Model::frozen`], its fast pass).
    Frozen(Box<Model>),
}

impl Reference {
    /// The reference for `model`, taken before it trains (or resumes: the checkpoint is loaded
    /// later): under LoRA, its base with the adapters off; in full fine-tuning, a frozen copy of
    /// the weights it holds now (copied: training updates its variables in place). LoRA that
    /// also trains whole modules (`modules_to_save`) is refused: with the adapters off those
    /// would still be the trained ones, not the base's.
    pub fn of(model: &Model) -> Result<Reference, TrainError> {
        if model.adapters_only() {
            return Ok(Reference::Adapters);
        }
        if model
            .trainable
            .iter()
            .any(|(n, _)| n.starts_with("base_model.model."))
        {
            return Err(TrainError::Config(
                "DPO with LoRA takes its reference from the base with the adapters switched off, \
                 but modules_to_save (embed_tokens, lm_head) train in full and would not be \
                 switched off: leave them out"
                    .into(),
            ));
        }
        let weights = model
            .base_weights()?
            .into_iter()
            .map(|(name, t)| Ok((name, t.copy()?)))
            .collect::<Result<HashMap<_, _>, TrainError>>()?;
        let frozen = Model::frozen(
            model.config.clone(),
            &weights,
            DType::F32,
            model.embed.device(),
        )?;
        Ok(Reference::Frozen(Box::new(frozen)))
    }

    /// Every row's sequence log-probability under the reference, without gradients (`[rows]`).
    pub fn logps(&self, policy: &Model, batch: &Batch) -> Result<Tensor, TrainError> {
        match self {
            Reference::Adapters => Ok(policy.row_logps(&batch.ids, &batch.weights, None, false)?),
            Reference::Frozen(model) => {
                let sums: Vec<f32> = model
                    .answer_logps(&batch.ids, &batch.weights)?
                    .into_iter()
                    .map(|s| s as f32)
                    .collect();
                let n = sums.len();
                Ok(Tensor::from_vec(sums, n, batch.ids.device())?)
            }
        }
    }
}

/// The sequence log-probabilities of a batch of pairs' rows (`[2B]`: chosen sides, then
/// rejected sides) and their response tokens.
#[derive(Debug)]
pub struct PairLogps {
    /// Under the policy, differentiable.
    pub policy: Tensor,
    /// Under the reference, without gradients.
    pub reference: Tensor,
    /// Response tokens per row.
    pub tokens: Tensor,
}

/// The policy's (a training pass when `dropout_seed` is set) and the reference's sequence
/// log-probabilities of `batch`'s rows.
pub fn pair_logps(
    model: &Model,
    reference: &Reference,
    batch: &Batch,
    dropout_seed: Option<u64>,
) -> Result<PairLogps, TrainError> {
    let reference_logps = reference.logps(model, batch)?;
    let (_, t) = batch.ids.dims2()?;
    Ok(PairLogps {
        policy: model.row_logps(&batch.ids, &batch.weights, dropout_seed, true)?,
        reference: reference_logps,
        tokens: batch.weights.narrow(1, 0, t.saturating_sub(1))?.sum(1)?,
    })
}

/// The mean loss over the pairs (a scalar, differentiable through the policy) and their
/// metrics.
pub fn pair_loss(cfg: &DpoConfig, logps: &PairLogps) -> Result<(Tensor, DpoMetrics), TrainError> {
    let n = logps.policy.dim(0)? / 2;
    if n == 0 {
        return Err(TrainError::Data("a batch of no preference pairs".into()));
    }
    let side = |t: &Tensor, i: usize| t.narrow(0, i * n, n);
    let ratio = |i| -> Result<Tensor, TrainError> {
        Ok((side(&logps.policy, i)? - side(&logps.reference, i)?)?)
    };
    let (chosen, rejected) = (ratio(0)?, ratio(1)?);
    let per_pair = match cfg.loss {
        DpoLoss::Sigmoid => {
            // −log σ(z) = log(1 + e^(−z)), computed as max(−z, 0) + log(1 + e^(−|z|)).
            let z = ((&chosen - &rejected)? * cfg.beta)?;
            (z.neg()?.relu()? + ((z.abs()?.neg()?.exp()? + 1.0)?.log()?))?
        }
        DpoLoss::Ipo => {
            let count = |i| -> Result<Tensor, TrainError> {
                Ok(side(&logps.tokens, i)?.clamp(1f32, f32::MAX)?)
            };
            let delta = ((chosen.clone() / count(0)?)? - (rejected.clone() / count(1)?)?)?;
            (delta - 1.0 / (2.0 * cfg.beta))?.sqr()?
        }
    };
    let loss = per_pair.mean_all()?;
    let values = |t: &Tensor| -> Result<Vec<f64>, TrainError> {
        Ok(t.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    };
    let (chosen, rejected) = (values(&chosen)?, values(&rejected)?);
    let (policy_chosen, policy_rejected) = (
        values(&side(&logps.policy, 0)?)?,
        values(&side(&logps.policy, 1)?)?,
    );
    let mean = |v: &[f64]| v.iter().sum::<f64>() / n as f64;
    let wins = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count();
    let rewards_chosen = cfg.beta * mean(&chosen);
    let rewards_rejected = cfg.beta * mean(&rejected);
    Ok((
        loss,
        DpoMetrics {
            rewards_chosen,
            rewards_rejected,
            reward_margin: rewards_chosen - rewards_rejected,
            reward_accuracy: wins as f64 / n as f64,
            logps_chosen: mean(&policy_chosen),
            logps_rejected: mean(&policy_rejected),
        },
    ))
}

/// Means of [`DpoMetrics`] over batches of different numbers of pairs.
#[derive(Debug, Default)]
pub(crate) struct MetricsMean {
    sums: DpoMetrics,
    pairs: usize,
}

impl MetricsMean {
    /// Adds a batch of `pairs` pairs whose means are `m`.
    pub(crate) fn add(&mut self, m: &DpoMetrics, pairs: usize) {
        let w = pairs as f64;
        let s = &mut self.sums;
        s.rewards_chosen += m.rewards_chosen * w;
        s.rewards_rejected += m.rewards_rejected * w;
        s.reward_margin += m.reward_margin * w;
        s.reward_accuracy += m.reward_accuracy * w;
        s.logps_chosen += m.logps_chosen * w;
        s.logps_rejected += m.logps_rejected * w;
        self.pairs += pairs;
    }

    /// The means, when a pair was added.
    pub(crate) fn mean(&self) -> Option<DpoMetrics> {
        let n = self.pairs as f64;
        let s = &self.sums;
        (self.pairs > 0).then(|| DpoMetrics {
            rewards_chosen: s.rewards_chosen / n,
            rewards_rejected: s.rewards_rejected / n,
            reward_margin: s.reward_margin / n,
            reward_accuracy: s.reward_accuracy / n,
            logps_chosen: s.logps_chosen / n,
            logps_rejected: s.logps_rejected / n,
        })
    }
}

/// The mean loss over `pairs` (without dropout) and its metrics; `None` for no pairs.
pub fn evaluate_pairs(
    model: &Model,
    reference: &Reference,
    pairs: &[PairExample],
    cfg: &DpoConfig,
    batch_size: usize,
    device: &Device,
) -> Result<Option<(f64, DpoMetrics)>, TrainError> {
    let (mut sum, mut metrics) = (0.0, MetricsMean::default());
    for members in pair_buckets(pairs, batch_size) {
        let batch = make_pair_batch(pairs, &members, device)?;
        let logps = pair_logps(model, reference, &batch, None)?;
        let (loss, m) = pair_loss(cfg, &logps)?;
        sum += f64::from(loss.to_scalar::<f32>()?) * members.len() as f64;
        metrics.add(&m, members.len());
    }
    Ok(metrics.mean().map(|m| (sum / pairs.len() as f64, m)))
}
