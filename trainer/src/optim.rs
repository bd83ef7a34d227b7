//! AdamW with decoupled weight decay, warmup + cosine schedule, global-norm clipping; its state
//! (moments and step) saved and restored for `--resume`.

use std::collections::HashMap;

use candle_core::{Tensor, Var};

use crate::TrainError;

/// Optimiser settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// β₁.
    pub beta1: f64,
    /// β₂.
    pub beta2: f64,
    /// ε.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// AdamW over named variables.
#[derive(Debug)]
pub struct AdamW {
    cfg: AdamWConfig,
    m: HashMap<String, Tensor>,
    v: HashMap<String, Tensor>,
    /// Updates applied so far.
    pub step: usize,
}

/// Learning rate at `step` (0-based): linear warmup to `peak`, then cosine to 10% of it.
pub fn schedule(step: usize, warmup: usize, total: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    let floor = 0.1 * peak;
    floor + (peak - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

impl AdamW {
    /// A fresh optimiser.
    pub fn new(cfg: AdamWConfig) -> AdamW {
        AdamW {
            cfg,
            m: HashMap::new(),
            v: HashMap::new(),
            step: 0,
        }
    }

    /// One update of `vars` with `grads` (by name) at learning rate `lr`.
    pub fn update(
        &mut self,
        vars: &[(String, Var)],
        grads: &HashMap<String, Tensor>,
        lr: f64,
    ) -> Result<(), TrainError> {
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for (name, var) in vars {
            let Some(g) = grads.get(name) else { continue };
            let m = match self.m.get(name) {
                Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
                None => (g * (1.0 - b1))?,
            };
            let v = match self.v.get(name) {
                Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
                None => (g.sqr()? * (1.0 - b2))?,
            };
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.cfg.eps)?)?;
            let decayed = (var.as_tensor() * (1.0 - lr * self.cfg.weight_decay))?;
            var.set(&(decayed - (update * lr)?)?)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }

    /// Moments as tensors named `m.NAME` / `v.NAME`, for a checkpoint.
    pub fn state(&self) -> HashMap<String, Tensor> {
        let mut out = HashMap::new();
        for (k, t) in &self.m {
            out.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            out.insert(format!("v.{k}"), t.clone());
        }
        out
    }

    /// Restores moments saved by [`AdamW::state`] and the step count.
    pub fn restore(&mut self, state: HashMap<String, Tensor>, step: usize) {
        for (k, t) in state {
            if let Some(name) = k.strip_prefix("m.") {
                self.m.insert(name.to_string(), t);
            } else if let Some(name) = k.strip_prefix("v.") {
                self.v.insert(name.to_string(), t);
            }
        }
        self.step = step;
    }
}

/// Scales `grads` so that their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip(grads: &mut HashMap<String, Tensor>, max_norm: f64) -> Result<f64, TrainError> {
    let mut sq = 0.0f64;
    for g in grads.values() {
        sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    let norm = sq.sqrt();
    if max_norm > 0.0 && norm > max_norm {
        let k = max_norm / (norm + 1e-6);
        for g in grads.values_mut() {
            *g = (&*g * k)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_a_tenth() {
        assert!((schedule(0, 10, 100, 1.0) - 0.1).abs() < 1e-12);
        assert!((schedule(9, 10, 100, 1.0) - 1.0).abs() < 1e-12);
        assert!((schedule(10, 10, 100, 1.0) - 1.0).abs() < 1e-12);
        assert!((schedule(100, 10, 100, 1.0) - 0.1).abs() < 1e-12);
        assert!(schedule(55, 10, 100, 1.0) < schedule(30, 10, 100, 1.0));
    }
}
