//! The attention weights: `softmax(scale · s)` over each row of `[.., T, T]` scores with the
//! causal mask (row `r` sees columns `0..=r`; the rest are 0), and its backward pass
//! `ds = scale · y ⊙ (g − Σ g⊙y)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{rows_cols, values};

struct CausalSoftmax {
    scale: f32,
}

fn square(l: &Layout) -> Result<usize> {
    let dims = l.dims();
    match dims {
        [.., a, b] if a == b => Ok(*b),
        _ => bail!("causal softmax: scores {dims:?} are not [.., T, T]"),
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "instill-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let t = square(l)?;
        let s = values(s, l, "causal softmax")?;
        let mut y = vec![0f32; s.len()];
        y.par_chunks_mut(t)
            .zip(s.par_chunks(t))
            .enumerate()
            .for_each(|(i, (y, s))| {
                let seen = i % t + 1;
                let (y, s) = (&mut y[..seen], &s[..seen]);
                let mut max = f32::NEG_INFINITY;
                for (y, s) in y.iter_mut().zip(s) {
                    *y = s * self.scale;
                    max = max.max(*y);
                }
                let mut sum = 0f32;
                for y in y.iter_mut() {
                    *y = (*y - max).exp();
                    sum += *y;
                }
                for y in y.iter_mut() {
                    *y /= sum;
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _s: &Tensor, y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let back = CausalSoftmaxBackward { scale: self.scale };
        Ok(Some(y.apply_op2_no_bwd(&grad.contiguous()?, &back)?))
    }
}

/// `ds` from `(y, g)`.
struct CausalSoftmaxBackward {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxBackward {
    fn name(&self) -> &'static str {
        "instill-causal-softmax-backward"
    }

    fn cpu_fwd(
        &self,
        y: &CpuStorage,
        y_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, t) = rows_cols(y_l);
        let y = values(y, y_l, "causal softmax backward")?;
        let g = values(g, g_l, "causal softmax backward")?;
        let mut ds = vec![0f32; y.len()];
        ds.par_chunks_mut(t)
            .zip(y.par_chunks(t).zip(g.par_chunks(t)))
            .for_each(|(ds, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((ds, y), g) in ds.iter_mut().zip(y).zip(g) {
                    *ds = self.scale * y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(ds), y_l.shape().clone()))
    }
}

/// Causal `softmax(scale · scores)` of contiguous `[.., T, T]` scores.
pub(crate) fn causal_softmax(scores: &Tensor, scale: f32) -> Result<Tensor> {
    scores.apply_op1(CausalSoftmax { scale })
}
