//! What a run learns: supervised fine-tuning's masked NLL on examples, or DPO's preference loss
//! on pairs. The training loop ([`crate::train`]) is one for both; this file holds what differs:
//! the data, a micro-batch's loss, validation, what a resume must match, and the loss log's
//! columns.

use candle_core::{Device, Tensor};
use xxhash_rust::xxh3::Xxh3;

use crate::TrainError;
use crate::data::{Example, PairExample, buckets, make_batch, make_pair_batch, pair_buckets};
use crate::dpo::{DpoConfig, DpoMetrics, Reference, evaluate_pairs, pair_logps, pair_loss};
use crate::model::Model;

/// What to train on and how to score it.
#[derive(Debug, Clone, Copy)]
pub enum Objective<'a> {
    /// Supervised fine-tuning: the masked NLL of the examples' responses.
    Sft {
        /// Training examples.
        train: &'a [Example],
        /// Validation examples (may be empty).
        val: &'a [Example],
    },
    /// Direct preference optimisation on pairs against a reference model.
    Dpo {
        /// Training pairs.
        train: &'a [PairExample],
        /// Validation pairs (may be empty).
        val: &'a [PairExample],
        /// β and the loss.
        config: DpoConfig,
        /// The reference ([`Reference::of`] the model, taken before training).
        reference: &'a Reference,
    },
}

/// One micro-batch's loss (differentiable), its real tokens and, for DPO, its pairs' metrics.
pub(crate) struct Micro {
    pub(crate) loss: Tensor,
    pub(crate) tokens: usize,
    pub(crate) dpo: Option<(DpoMetrics, usize)>,
}

/// A validation pass: the mean loss and, for DPO, the pairs' metrics.
pub(crate) type Validation = (f64, Option<DpoMetrics>);

impl Objective<'_> {
    /// Training examples (or pairs).
    pub fn len(&self) -> usize {
        match self {
            Objective::Sft { train, .. } => train.len(),
            Objective::Dpo { train, .. } => train.len(),
        }
    }

    /// Whether there is nothing to train on.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses settings the objective cannot train with.
    pub(crate) fn check(&self) -> Result<(), TrainError> {
        match self {
            Objective::Sft { .. } => Ok(()),
            Objective::Dpo { config, .. } => config.check(),
        }
    }

    /// The training data's length-bucketed micro-batches.
    pub(crate) fn buckets(&self, batch_size: usize) -> Vec<Vec<usize>> {
        match self {
            Objective::Sft { train, .. } => buckets(train, batch_size),
            Objective::Dpo { train, .. } => pair_buckets(train, batch_size),
        }
    }

    /// The loss of training micro-batch `members` (dropout drawn from `seed`).
    pub(crate) fn micro(
        &self,
        model: &Model,
        members: &[usize],
        seed: u64,
        device: &Device,
    ) -> Result<Micro, TrainError> {
        match self {
            Objective::Sft { train, .. } => {
                let batch = make_batch(train, members, device)?;
                Ok(Micro {
                    loss: model.nll(&batch.ids, &batch.weights, Some(seed))?,
                    tokens: batch.tokens,
                    dpo: None,
                })
            }
            Objective::Dpo {
                train,
                config,
                reference,
                ..
            } => {
                let batch = make_pair_batch(train, members, device)?;
                let logps = pair_logps(model, reference, &batch, Some(seed))?;
                let (loss, metrics) = pair_loss(config, &logps)?;
                Ok(Micro {
                    loss,
                    tokens: batch.tokens,
                    dpo: Some((metrics, members.len())),
                })
            }
        }
    }

    /// The validation loss (without dropout), `None` without validation data.
    pub(crate) fn validate(
        &self,
        model: &Model,
        batch_size: usize,
        device: &Device,
    ) -> Result<Option<Validation>, TrainError> {
        match self {
            Objective::Sft { val: [], .. } => Ok(None),
            Objective::Sft { val, .. } => Ok(Some((
                crate::train::evaluate(model, val, batch_size, device)?,
                None,
            ))),
            Objective::Dpo {
                val,
                config,
                reference,
                ..
            } => Ok(
                evaluate_pairs(model, reference, val, config, batch_size, device)?
                    .map(|(loss, m)| (loss, Some(m))),
            ),
        }
    }

    /// What a resume must match beyond the run's config: the objective's settings (none for
    /// supervised fine-tuning, so its checkpoints stay as they were) and the training data.
    pub(crate) fn settings(&self) -> Vec<(String, String)> {
        let mut data = Xxh3::new();
        let mut hash = |e: &Example| {
            data.update(&(e.response_start as u64).to_le_bytes());
            data.update(&(e.ids.len() as u64).to_le_bytes());
            for id in &e.ids {
                data.update(&id.to_le_bytes());
            }
        };
        match self {
            Objective::Sft { train, .. } => {
                train.iter().for_each(&mut hash);
                vec![(
                    "examples".into(),
                    format!("{} examples (content {:016x})", train.len(), data.digest()),
                )]
            }
            Objective::Dpo { train, config, .. } => {
                for p in *train {
                    hash(&p.chosen);
                    hash(&p.rejected);
                }
                vec![
                    ("objective".into(), "dpo".into()),
                    ("dpo_loss".into(), config.loss.name().into()),
                    ("dpo_beta".into(), config.beta.to_string()),
                    (
                        "examples".into(),
                        format!("{} pairs (content {:016x})", train.len(), data.digest()),
                    ),
                ]
            }
        }
    }

    /// The loss log's header line.
    pub(crate) fn log_header(&self) -> &'static str {
        match self {
            Objective::Sft { .. } => "step,loss,lr,grad_norm,tokens,seconds,val_loss",
            Objective::Dpo { .. } => {
                "step,loss,lr,grad_norm,tokens,seconds,val_loss,reward_margin,reward_accuracy,\
                 logps_chosen,logps_rejected,rewards_chosen,rewards_rejected"
            }
        }
    }
}

/// The loss log's DPO columns of a step (empty for supervised fine-tuning).
pub(crate) fn log_columns(dpo: Option<&DpoMetrics>) -> String {
    dpo.map(|m| {
        format!(
            ",{:.6},{:.4},{:.4},{:.4},{:.6},{:.6}",
            m.reward_margin,
            m.reward_accuracy,
            m.logps_chosen,
            m.logps_rejected,
            m.rewards_chosen,
            m.rewards_rejected
        )
    })
    .unwrap_or_default()
}
