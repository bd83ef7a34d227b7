//! The training loop, one for every [`Objective`]: micro-batches → the objective's loss (masked
//! NLL, or DPO's) → accumulated gradients → clipping → AdamW on the schedule; checkpoints
//! ([`crate::checkpoint`]) that `resume` continues from exactly, a loss log (a fresh run starts a
//! new one), validation loss.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use xxhash_rust::xxh3::Xxh3;

use crate::TrainError;
use crate::checkpoint;
use crate::data::{Example, buckets, epoch_order, make_batch};
use crate::dpo::{DpoMetrics, MetricsMean};
use crate::interrupt::Interrupt;
use crate::model::Model;
use crate::objective::{Objective, log_columns};
use crate::optim::{AdamW, AdamWConfig, clip, schedule};

/// The checkpoint directory in a run's directory.
pub const CHECKPOINT: &str = "checkpoint";
/// The loss log in a run's directory.
pub const LOSS_LOG: &str = "loss.csv";

/// Every file a run may write in its directory (checkpoints moved aside or half-written
/// included), relative and `/`-separated.
pub fn files() -> Vec<String> {
    let mut out = vec![LOSS_LOG.to_string()];
    for dir in checkpoint::dirs(Path::new(CHECKPOINT)) {
        for f in checkpoint::FILES {
            out.push(format!("{}/{f}", dir.display()));
        }
    }
    out
}

/// How to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Optimiser.
    pub optim: AdamWConfig,
    /// Passes over the data (ignored when `max_steps` is set).
    pub epochs: usize,
    /// Optimiser steps to run in all.
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Warmup steps.
    pub warmup_steps: usize,
    /// Global gradient-norm limit (0 = off).
    pub max_grad_norm: f64,
    /// Order and dropout seed.
    pub seed: u64,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_every: usize,
    /// Where checkpoints and the loss log go.
    pub dir: PathBuf,
    /// Continue from the checkpoint in `dir`.
    pub resume: bool,
    /// Stop (with a checkpoint) after this step, as an interruption would; the schedule still
    /// spans every step.
    pub stop_after: Option<usize>,
    /// Stop (with a checkpoint) after the step under way once this is set: how a caller
    /// passes on Ctrl-C or SIGTERM. Not a setting: a resume ignores it.
    pub interrupt: Interrupt,
    /// What the run depends on beyond this config (model, data source, prompt format, …) as
    /// `(name, value)`: stored in each checkpoint, with this config's own settings, the
    /// trainable variables and the examples, and compared on resume.
    pub settings: Vec<(String, String)>,
}

/// One optimiser step, as reported to the caller and logged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// 1-based step.
    pub step: usize,
    /// Steps in all.
    pub total: usize,
    /// Mean loss over the step's micro-batches.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens processed in this step.
    pub tokens: usize,
    /// Seconds since this process started training.
    pub seconds: f64,
    /// DPO's metrics over the step's pairs (DPO runs only).
    pub dpo: Option<DpoMetrics>,
}

/// What training did.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSummary {
    /// Steps run in all (resumed ones included).
    pub steps: usize,
    /// Loss of the first step this process ran.
    pub first_loss: Option<f64>,
    /// Loss of the last step.
    pub last_loss: Option<f64>,
    /// Validation loss before the first step (fresh runs with a validation set).
    pub initial_val_loss: Option<f64>,
    /// Validation loss at the end, when there is a validation set.
    pub val_loss: Option<f64>,
    /// Tokens per second over this process's steps.
    pub tokens_per_s: f64,
    /// DPO's metrics of the last step (DPO runs only).
    pub last_dpo: Option<DpoMetrics>,
    /// DPO's metrics on the validation pairs at the end (DPO runs with validation pairs).
    pub val_dpo: Option<DpoMetrics>,
    /// Whether the run stopped before its last step (`stop_after` or the interrupt), with a
    /// checkpoint at `steps`. The final validation is skipped then.
    pub stopped_early: bool,
}

/// Steps a run takes.
pub fn total_steps(cfg: &TrainConfig, examples: usize) -> usize {
    let batches = examples.div_ceil(cfg.batch_size.max(1));
    cfg.max_steps
        .unwrap_or_else(|| (cfg.epochs * batches).div_ceil(cfg.grad_accum.max(1)))
        .max(1)
}

/// Mean loss over `examples` without dropout.
pub fn evaluate(
    model: &Model,
    examples: &[Example],
    batch_size: usize,
    device: &Device,
) -> Result<f64, TrainError> {
    let mut sum = 0.0;
    let mut n = 0usize;
    for members in buckets(examples, batch_size) {
        let batch = make_batch(examples, &members, device)?;
        sum += f64::from(
            model
                .nll(&batch.ids, &batch.weights, None)?
                .to_scalar::<f32>()?,
        ) * members.len() as f64;
        n += members.len();
    }
    Ok(if n > 0 { sum / n as f64 } else { f64::NAN })
}

/// Trains `model` on `train` (and reports loss on `val`) by supervised fine-tuning: [`fit`]
/// with [`Objective::Sft`]. `on_step` sees every step.
pub fn train(
    model: &Model,
    train: &[Example],
    val: &[Example],
    cfg: &TrainConfig,
    device: &Device,
    on_step: impl FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    fit(model, &Objective::Sft { train, val }, cfg, device, on_step)
}

/// Trains `model` on `objective`'s data (and reports its loss on the validation data);
/// `on_step` sees every step.
pub fn fit(
    model: &Model,
    objective: &Objective,
    cfg: &TrainConfig,
    device: &Device,
    mut on_step: impl FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    if objective.is_empty() {
        return Err(TrainError::Data("no training examples".into()));
    }
    objective.check()?;
    std::fs::create_dir_all(&cfg.dir).map_err(|e| TrainError::io(&cfg.dir, e))?;
    let batches = objective.buckets(cfg.batch_size);
    let total = total_steps(cfg, objective.len());
    let accum = cfg.grad_accum.max(1);
    let mut optim = AdamW::new(cfg.optim);
    let checkpoint_dir = cfg.dir.join(CHECKPOINT);
    let settings = settings(cfg, model, objective);
    if cfg.resume {
        let step = checkpoint::load(&checkpoint_dir, model, &mut optim, &settings, device)?;
        optim.step = step;
    }
    let log_path = cfg.dir.join(LOSS_LOG);
    let mut log = open_log(&log_path, objective.log_header(), optim.step)?;
    let initial_val = if optim.step == 0 {
        objective.validate(model, cfg.batch_size, device)?
    } else {
        None
    };
    let started = Instant::now();
    let (mut first, mut last, mut last_dpo, mut tokens_done) = (None, None, None, 0usize);
    let mut orders: HashMap<usize, Vec<usize>> = HashMap::new();
    while optim.step < total {
        let step = optim.step;
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        let (mut loss_sum, mut tokens, mut metrics) = (0.0, 0usize, MetricsMean::default());
        for micro in 0..accum {
            let k = step * accum + micro;
            let (epoch, pos) = (k / batches.len(), k % batches.len());
            let order = orders
                .entry(epoch)
                .or_insert_with(|| epoch_order(batches.len(), cfg.seed, epoch));
            let seed = cfg.seed ^ (k as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
            let m = objective.micro(model, &batches[order[pos]], seed, device)?;
            loss_sum += f64::from(m.loss.to_scalar::<f32>()?);
            tokens += m.tokens;
            if let Some((dpo, pairs)) = &m.dpo {
                metrics.add(dpo, *pairs);
            }
            accumulate(&mut grads, model, &(m.loss / accum as f64)?)?;
        }
        orders.retain(|&e, _| e + 1 >= (step * accum) / batches.len());
        let grad_norm = clip(&mut grads, cfg.max_grad_norm)?;
        let lr = schedule(step, cfg.warmup_steps, total, cfg.optim.lr);
        optim.update(&model.trainable, &grads, lr)?;
        let loss = loss_sum / accum as f64;
        first.get_or_insert(loss);
        last = Some(loss);
        last_dpo = metrics.mean();
        tokens_done += tokens;
        let report = StepReport {
            step: optim.step,
            total,
            loss,
            lr,
            grad_norm,
            tokens,
            seconds: started.elapsed().as_secs_f64(),
            dpo: last_dpo,
        };
        let at_checkpoint =
            cfg.checkpoint_every > 0 && optim.step.is_multiple_of(cfg.checkpoint_every);
        let val = if at_checkpoint || optim.step == total {
            objective.validate(model, cfg.batch_size, device)?
        } else {
            None
        };
        writeln!(
            log,
            "{},{loss:.6},{lr:.3e},{grad_norm:.4},{tokens},{:.2},{}{}",
            report.step,
            report.seconds,
            val.map(|(v, _)| format!("{v:.6}")).unwrap_or_default(),
            log_columns(last_dpo.as_ref())
        )
        .map_err(|e| TrainError::io(&log_path, e))?;
        // After the caller's look at the step, so that a stop it asks for there holds here.
        on_step(&report);
        let stopping =
            optim.step < total && (cfg.stop_after == Some(optim.step) || cfg.interrupt.is_set());
        if at_checkpoint || optim.step == total || stopping {
            checkpoint::save(&checkpoint_dir, model, &optim, &settings)?;
        }
        if stopping {
            break;
        }
    }
    let stopped_early = optim.step < total;
    let val = if stopped_early {
        None
    } else {
        objective.validate(model, cfg.batch_size, device)?
    };
    Ok(TrainSummary {
        steps: optim.step,
        first_loss: first,
        last_loss: last,
        initial_val_loss: initial_val.map(|(v, _)| v),
        val_loss: val.map(|(v, _)| v),
        tokens_per_s: tokens_done as f64 / started.elapsed().as_secs_f64().max(1e-9),
        last_dpo,
        val_dpo: val.and_then(|(_, m)| m),
        stopped_early,
    })
}

/// Adds the gradients of `loss` with respect to the model's trainable variables to `grads`.
fn accumulate(
    grads: &mut HashMap<String, Tensor>,
    model: &Model,
    loss: &Tensor,
) -> Result<(), TrainError> {
    let store = loss.backward()?;
    for (name, var) in &model.trainable {
        if let Some(g) = store.get(var.as_tensor()) {
            let sum = match grads.remove(name) {
                Some(prev) => (prev + g)?,
                None => g.clone(),
            };
            grads.insert(name.clone(), sum);
        }
    }
    Ok(())
}

/// Checks, before anything is written, that the checkpoint in `cfg.dir` was written with the
/// settings this run would train with: the same check [`train`] makes when it resumes.
pub fn check_resume(model: &Model, train: &[Example], cfg: &TrainConfig) -> Result<(), TrainError> {
    check_fit_resume(model, &Objective::Sft { train, val: &[] }, cfg)
}

/// [`check_resume`] for any objective: the check [`fit`] makes when it resumes.
pub fn check_fit_resume(
    model: &Model,
    objective: &Objective,
    cfg: &TrainConfig,
) -> Result<(), TrainError> {
    let checkpoint_dir = cfg.dir.join(CHECKPOINT);
    checkpoint::check(&checkpoint_dir, &settings(cfg, model, objective)).map(|_| ())
}

/// The loss log: a header, then on resume the rows of the steps up to `resumed_at` (rows a crash
/// left after the checkpoint are run again and logged again).
fn open_log(path: &Path, header: &str, resumed_at: usize) -> Result<File, TrainError> {
    let mut text = format!("{header}\n");
    if resumed_at > 0 {
        let old = std::fs::read_to_string(path).unwrap_or_default();
        for line in old.lines() {
            let step = line.split(',').next().and_then(|s| s.parse::<usize>().ok());
            if step.is_some_and(|s| s <= resumed_at) {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    std::fs::write(path, text).map_err(|e| TrainError::io(path, e))?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| TrainError::io(path, e))
}

/// What a resume must match: the caller's settings, this config's, the trainable variables
/// (their names and shapes), the objective's settings and the training data.
fn settings(cfg: &TrainConfig, model: &Model, objective: &Objective) -> Vec<(String, String)> {
    let mut out = cfg.settings.clone();
    let o = &cfg.optim;
    let max_steps = cfg.max_steps.map_or("none".into(), |n| n.to_string());
    for (name, value) in [
        ("lr", o.lr.to_string()),
        ("beta1", o.beta1.to_string()),
        ("beta2", o.beta2.to_string()),
        ("eps", o.eps.to_string()),
        ("weight_decay", o.weight_decay.to_string()),
        ("epochs", cfg.epochs.to_string()),
        ("max_steps", max_steps),
        ("batch_size", cfg.batch_size.to_string()),
        ("grad_accum", cfg.grad_accum.to_string()),
        ("warmup_steps", cfg.warmup_steps.to_string()),
        ("max_grad_norm", cfg.max_grad_norm.to_string()),
        ("seed", cfg.seed.to_string()),
    ] {
        out.push((name.into(), value));
    }
    let mut layout = Xxh3::new();
    let mut values = 0usize;
    for (name, var) in &model.trainable {
        layout.update(name.as_bytes());
        for &d in var.as_tensor().dims() {
            layout.update(&(d as u64).to_le_bytes());
        }
        values += var.as_tensor().elem_count();
    }
    out.push((
        "trainable".into(),
        format!(
            "{} tensors of {values} values (layout {:016x})",
            model.trainable.len(),
            layout.digest()
        ),
    ));
    out.extend(objective.settings());
    out
}
