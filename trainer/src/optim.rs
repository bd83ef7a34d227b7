//! AdamW with decoupled weight decay, warmup + cosine schedule, global-norm clipping; its state
//! (moments and step) saved and restored for `--resume`.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};

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
        let k = Coefficients {
            b1,
            b2,
            c1,
            c2,
            eps: self.cfg.eps,
            lr,
            decay: 1.0 - lr * self.cfg.weight_decay,
        };
        for (name, var) in vars {
            let Some(g) = grads.get(name) else { continue };
            let (m, v) = (self.m.get(name), self.v.get(name));
            let fused = var.device().is_cpu() && var.dtype() == DType::F32;
            let (m, v) = if fused {
                k.update_values(var, g, m, v)?
            } else {
                k.update_tensors(var, g, m, v)?
            };
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

/// One update's numbers.
struct Coefficients {
    b1: f64,
    b2: f64,
    /// Bias corrections `1 − βᵗ`.
    c1: f64,
    c2: f64,
    eps: f64,
    lr: f64,
    /// `1 − lr · weight_decay`.
    decay: f64,
}

impl Coefficients {
    /// The update in tensor ops (any device and dtype): the new moments, the variable set.
    fn update_tensors(
        &self,
        var: &Var,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let (b1, b2) = (self.b1, self.b2);
        let m = match m {
            Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
            None => (g * (1.0 - b1))?,
        };
        let v = match v {
            Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
            None => (g.sqr()? * (1.0 - b2))?,
        };
        let update = ((&m / self.c1)? / ((&v / self.c2)?.sqrt()? + self.eps)?)?;
        let decayed = (var.as_tensor() * self.decay)?;
        var.set(&(decayed - (update * self.lr)?)?)?;
        Ok((m, v))
    }

    /// [`Coefficients::update_tensors`] in one loop over f32 values on the CPU, with the same
    /// f32 operations in the same order (so the same bits): a few hundred small tensors' updates
    /// without a dozen tensor ops each.
    fn update_values(
        &self,
        var: &Var,
        g: &Tensor,
        m: Option<&Tensor>,
        v: Option<&Tensor>,
    ) -> Result<(Tensor, Tensor), TrainError> {
        let values = |t: &Tensor| t.flatten_all()?.to_vec1::<f32>();
        let mut w = values(var.as_tensor())?;
        let g = values(g)?;
        let (mut m, mut v) = match (m, v) {
            (Some(m), Some(v)) => (values(m)?, values(v)?),
            _ => (vec![0f32; w.len()], vec![0f32; w.len()]),
        };
        if g.len() != w.len() || m.len() != w.len() || v.len() != w.len() {
            return Err(TrainError::Shape(format!(
                "AdamW: {} values, {} gradients, moments of {} and {}",
                w.len(),
                g.len(),
                m.len(),
                v.len()
            )));
        }
        // candle's `t * x` and `t / x` with an f64 `x` are `t · (x as f32)`, `t · (1/x as f32)`.
        let f = |x: f64| x as f32;
        let (b1, nb1, b2, nb2) = (f(self.b1), f(1.0 - self.b1), f(self.b2), f(1.0 - self.b2));
        let (ic1, ic2, eps, lr, decay) = (
            f(1.0 / self.c1),
            f(1.0 / self.c2),
            f(self.eps),
            f(self.lr),
            f(self.decay),
        );
        for i in 0..w.len() {
            let g = g[i];
            // A first step's moments are zeros: `0 · β + x` is `x`, as the tensor form's `x`.
            m[i] = m[i] * b1 + g * nb1;
            v[i] = v[i] * b2 + g * g * nb2;
            let update = (m[i] * ic1) / ((v[i] * ic2).sqrt() + eps);
            w[i] = w[i] * decay - update * lr;
        }
        let shape = var.as_tensor().shape().clone();
        let device = var.device().clone();
        var.set(&Tensor::from_vec(w, shape.clone(), &device)?)?;
        Ok((
            Tensor::from_vec(m, shape.clone(), &device)?,
            Tensor::from_vec(v, shape, &device)?,
        ))
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
