//! The log-probability of each row's target: `logits [n, V]` and `n` target ids → `[n]`,
//! `z_t − max − ln Σ e^(z − max)` as candle's log-softmax computes it; the backward pass writes
//! `g · (one-hot − softmax)` row by row, so no log-softmax graph (and none of its `[n, V]`
//! intermediates) is kept.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{rows_cols, simd, values};

struct TargetLogp {
    targets: Vec<u32>,
}

/// A row's maximum and `Σ e^(z − max)`.
struct MaxSum<'a>(&'a [f32]);

impl WithSimd for MaxSum<'_> {
    type Output = (f32, f32);

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) -> (f32, f32) {
        let max = simd::max(self.0);
        (max, simd::sum_exp(self.0, max))
    }
}

/// One row's gradient: `d = k · e^(z − max)`, then `g` added at the target.
struct RowGrad<'a> {
    d: &'a mut [f32],
    z: &'a [f32],
    g: f32,
    target: usize,
}

impl WithSimd for RowGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let max = simd::max(self.z);
        let k = -self.g / simd::sum_exp(self.z, max);
        for (d, z) in self.d.iter_mut().zip(self.z) {
            *d = k * simd::exp(z - max);
        }
        self.d[self.target] += self.g;
    }
}

impl TargetLogp {
    fn check(&self, l: &Layout) -> Result<(usize, usize)> {
        let (n, v) = rows_cols(l);
        if l.dims().len() != 2 || n != self.targets.len() {
            bail!(
                "target log-prob: logits {:?} for {} targets",
                l.dims(),
                self.targets.len()
            )
        }
        if let Some(t) = self.targets.iter().find(|&&t| t as usize >= v) {
            bail!("target log-prob: token {t} is outside a vocabulary of {v}")
        }
        Ok((n, v))
    }
}

impl CustomOp1 for TargetLogp {
    fn name(&self) -> &'static str {
        "instill-target-logp"
    }

    fn cpu_fwd(&self, z: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = self.check(l)?;
        let z = values(z, l, "target log-prob")?;
        let out: Vec<f32> = z
            .par_chunks(v)
            .zip(self.targets.par_iter())
            .map(|(z, &t)| {
                let (max, sum) = simd::run(MaxSum(z));
                (z[t as usize] - max) - sum.ln()
            })
            .collect();
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, z: &Tensor, _out: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let back = TargetLogpBackward {
            targets: self.targets.clone(),
        };
        Ok(Some(z.apply_op2_no_bwd(&grad.contiguous()?, &back)?))
    }
}

/// `dz [n, V]` from `(z, g [n])`.
struct TargetLogpBackward {
    targets: Vec<u32>,
}

impl CustomOp2 for TargetLogpBackward {
    fn name(&self) -> &'static str {
        "instill-target-logp-backward"
    }

    fn cpu_fwd(
        &self,
        z: &CpuStorage,
        z_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, v) = rows_cols(z_l);
        let z = values(z, z_l, "target log-prob backward")?;
        let g = values(g, g_l, "target log-prob backward")?;
        if g.len() != self.targets.len() || z.len() != g.len() * v {
            bail!(
                "target log-prob backward: {} gradients for logits {:?}",
                g.len(),
                z_l.dims()
            )
        }
        let mut d = vec![0f32; z.len()];
        d.par_chunks_mut(v)
            .zip(z.par_chunks(v))
            .zip(g.par_iter().zip(self.targets.par_iter()))
            .for_each(|((d, z), (&g, &t))| {
                simd::run(RowGrad {
                    d,
                    z,
                    g,
                    target: t as usize,
                })
            });
        Ok((CpuStorage::F32(d), z_l.shape().clone()))
    }
}

/// `log softmax(logits)[i, targets[i]]` for each row of contiguous `logits [n, V]`.
pub(crate) fn target_logp(logits: &Tensor, targets: Vec<u32>) -> Result<Tensor> {
    logits.apply_op1(TargetLogp { targets })
}
