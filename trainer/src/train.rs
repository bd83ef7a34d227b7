//! The training loop: micro-batches → masked NLL → accumulated gradients → clipping → AdamW on
//! the schedule; checkpoints (variables, optimiser moments, step) that `resume` continues from
//! exactly, a loss log, validation loss.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};

use crate::TrainError;
use crate::data::{Example, buckets, epoch_order, make_batch};
use crate::model::{Model, masked_nll};
use crate::optim::{AdamW, AdamWConfig, clip, schedule};

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
        let logits = model.forward(&batch.ids, None)?;
        sum += f64::from(masked_nll(&logits, &batch.ids, &batch.weights)?.to_scalar::<f32>()?)
            * members.len() as f64;
        n += members.len();
    }
    Ok(if n > 0 { sum / n as f64 } else { f64::NAN })
}

/// Trains `model` on `train` (and reports loss on `val`); `on_step` sees every step.
pub fn train(
    model: &Model,
    train: &[Example],
    val: &[Example],
    cfg: &TrainConfig,
    device: &Device,
    mut on_step: impl FnMut(&StepReport),
) -> Result<TrainSummary, TrainError> {
    if train.is_empty() {
        return Err(TrainError::Data("no training examples".into()));
    }
    std::fs::create_dir_all(&cfg.dir).map_err(|e| TrainError::io(&cfg.dir, e))?;
    let batches = buckets(train, cfg.batch_size);
    let total = total_steps(cfg, train.len());
    let accum = cfg.grad_accum.max(1);
    let mut optim = AdamW::new(cfg.optim);
    let checkpoint = cfg.dir.join("checkpoint");
    if cfg.resume {
        let step = load_checkpoint(&checkpoint, model, &mut optim, device)?;
        optim.step = step;
    }
    let log_path = cfg.dir.join("loss.csv");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| TrainError::io(&log_path, e))?;
    if optim.step == 0 {
        writeln!(log, "step,loss,lr,grad_norm,tokens,seconds,val_loss")
            .map_err(|e| TrainError::io(&log_path, e))?;
    }
    let initial_val_loss = if optim.step == 0 && !val.is_empty() {
        Some(evaluate(model, val, cfg.batch_size, device)?)
    } else {
        None
    };
    let started = Instant::now();
    let (mut first, mut last, mut tokens_done) = (None, None, 0usize);
    let mut orders: HashMap<usize, Vec<usize>> = HashMap::new();
    while optim.step < total {
        let step = optim.step;
        let mut grads: HashMap<String, Tensor> = HashMap::new();
        let (mut loss_sum, mut tokens) = (0.0, 0usize);
        for micro in 0..accum {
            let k = step * accum + micro;
            let (epoch, pos) = (k / batches.len(), k % batches.len());
            let order = orders
                .entry(epoch)
                .or_insert_with(|| epoch_order(batches.len(), cfg.seed, epoch));
            let batch = make_batch(train, &batches[order[pos]], device)?;
            let logits = model.forward(
                &batch.ids,
                Some(cfg.seed ^ (k as u64).wrapping_mul(0x2545_F491_4F6C_DD1D)),
            )?;
            let loss = masked_nll(&logits, &batch.ids, &batch.weights)?;
            loss_sum += f64::from(loss.to_scalar::<f32>()?);
            tokens += batch.tokens;
            let store = (loss / accum as f64)?.backward()?;
            for (name, var) in &model.trainable {
                if let Some(g) = store.get(var.as_tensor()) {
                    let sum = match grads.remove(name) {
                        Some(prev) => (prev + g)?,
                        None => g.clone(),
                    };
                    grads.insert(name.clone(), sum);
                }
            }
        }
        orders.retain(|&e, _| e + 1 >= (step * accum) / batches.len());
        let grad_norm = clip(&mut grads, cfg.max_grad_norm)?;
        let lr = schedule(step, cfg.warmup_steps, total, cfg.optim.lr);
        optim.update(&model.trainable, &grads, lr)?;
        let loss = loss_sum / accum as f64;
        first.get_or_insert(loss);
        last = Some(loss);
        tokens_done += tokens;
        let report = StepReport {
            step: optim.step,
            total,
            loss,
            lr,
            grad_norm,
            tokens,
            seconds: started.elapsed().as_secs_f64(),
        };
        let at_checkpoint =
            cfg.checkpoint_every > 0 && optim.step.is_multiple_of(cfg.checkpoint_every);
        let val_loss = if (at_checkpoint || optim.step == total) && !val.is_empty() {
            Some(evaluate(model, val, cfg.batch_size, device)?)
        } else {
            None
        };
        writeln!(
            log,
            "{},{loss:.6},{lr:.3e},{grad_norm:.4},{tokens},{:.2},{}",
            report.step,
            report.seconds,
            val_loss.map(|v| format!("{v:.6}")).unwrap_or_default()
        )
        .map_err(|e| TrainError::io(&log_path, e))?;
        let stopping = cfg.stop_after == Some(optim.step);
        if at_checkpoint || optim.step == total || stopping {
            save_checkpoint(&checkpoint, model, &optim)?;
        }
        on_step(&report);
        if stopping {
            break;
        }
    }
    let val_loss = if val.is_empty() {
        None
    } else {
        Some(evaluate(model, val, cfg.batch_size, device)?)
    };
    Ok(TrainSummary {
        steps: optim.step,
        first_loss: first,
        last_loss: last,
        initial_val_loss,
        val_loss,
        tokens_per_s: tokens_done as f64 / started.elapsed().as_secs_f64().max(1e-9),
    })
}

fn save_checkpoint(dir: &Path, model: &Model, optim: &AdamW) -> Result<(), TrainError> {
    // Written beside, then renamed over: a crash mid-save leaves the previous checkpoint whole.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
    let vars: HashMap<String, Tensor> = model
        .trainable
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
        .collect();
    candle_core::safetensors::save(&vars, tmp.join("trainable.safetensors"))?;
    candle_core::safetensors::save(&optim.state(), tmp.join("optimizer.safetensors"))?;
    let state = serde_json::json!({ "step": optim.step });
    std::fs::write(tmp.join("state.json"), state.to_string())
        .map_err(|e| TrainError::io(&tmp, e))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
    Ok(())
}

fn load_checkpoint(
    dir: &Path,
    model: &Model,
    optim: &mut AdamW,
    device: &Device,
) -> Result<usize, TrainError> {
    let state_path = dir.join("state.json");
    let bytes = std::fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", state_path.display())))?;
    let step = state["step"].as_u64().unwrap_or(0) as usize;
    let vars = candle_core::safetensors::load(dir.join("trainable.safetensors"), device)?;
    for (name, var) in &model.trainable {
        let saved = vars.get(name).ok_or_else(|| {
            TrainError::Config(format!(
                "{}: checkpoint has no {name}: not this model's",
                dir.display()
            ))
        })?;
        var.set(saved)?;
    }
    optim.restore(
        candle_core::safetensors::load(dir.join("optimizer.safetensors"), device)?,
        step,
    );
    Ok(step)
}
