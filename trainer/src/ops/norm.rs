//! RMSNorm over the last dimension, `y = x / √(mean(x²) + ε) · w`, with its backward pass:
//! `dx = r·(g⊙w) − r³·x·Σ(g⊙w⊙x)/d` (r = 1/√(mean(x²) + ε)), and `dw = Σ_rows g⊙x·r` only
//! when `w` trains.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::{rows_cols, values};

struct RmsNorm {
    eps: f32,
}

/// `√(mean(x²) + ε)` of one row.
fn rms(x: &[f32], eps: f32) -> f32 {
    let sum: f32 = x.iter().map(|v| v * v).sum();
    (sum / x.len() as f32 + eps).sqrt()
}

fn check(x_l: &Layout, w_l: &Layout) -> Result<(usize, usize)> {
    let (rows, d) = rows_cols(x_l);
    if w_l.shape().elem_count() != d || d == 0 {
        bail!(
            "rms_norm: weight {:?} against input {:?}",
            w_l.dims(),
            x_l.dims()
        )
    }
    Ok((rows, d))
}

impl CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "instill-rms-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, d) = check(x_l, w_l)?;
        let (x, w) = (values(x, x_l, "rms_norm")?, values(w, w_l, "rms_norm")?);
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, x)| {
            let m = rms(x, self.eps);
            for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                *y = x / m * w;
            }
        });
        Ok((CpuStorage::F32(y), x_l.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let dx = rms_norm_backward(x, w, &grad, self.eps)?;
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&grad, &RmsNormWeightGrad { eps: self.eps })?)
        } else {
            None
        };
        Ok((Some(dx), dw))
    }
}

/// `dx` from `(x, w, g)`.
struct RmsNormBackward {
    eps: f32,
}

impl CustomOp3 for RmsNormBackward {
    fn name(&self) -> &'static str {
        "instill-rms-norm-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, d) = check(x_l, w_l)?;
        let x = values(x, x_l, "rms_norm backward")?;
        let w = values(w, w_l, "rms_norm backward")?;
        let g = values(g, g_l, "rms_norm backward")?;
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(d)
            .zip(x.par_chunks(d).zip(g.par_chunks(d)))
            .for_each(|(dx, (x, g))| {
                let r = 1.0 / rms(x, self.eps);
                let dot: f32 = x.iter().zip(g).zip(w).map(|((x, g), w)| g * w * x).sum();
                let k = r * r * r * dot / d as f32;
                for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                    *dx = r * g * w - k * x;
                }
            });
        Ok((CpuStorage::F32(dx), x_l.shape().clone()))
    }
}

/// `dw` from `(x, g)`: the sum over rows of `g ⊙ x / rms(x)`.
struct RmsNormWeightGrad {
    eps: f32,
}

impl CustomOp2 for RmsNormWeightGrad {
    fn name(&self) -> &'static str {
        "instill-rms-norm-weight-grad"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, d) = rows_cols(x_l);
        let x = values(x, x_l, "rms_norm weight grad")?;
        let g = values(g, g_l, "rms_norm weight grad")?;
        let mut dw = vec![0f32; d];
        for (x, g) in x.chunks(d).zip(g.chunks(d)) {
            let r = 1.0 / rms(x, self.eps);
            for ((dw, x), g) in dw.iter_mut().zip(x).zip(g) {
                *dw += g * x * r;
            }
        }
        Ok((CpuStorage::F32(dw), Shape::from(d)))
    }
}

/// RMSNorm of `x [.., d]` by `w [d]`; `x` must be contiguous.
pub(crate) fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    x.apply_op2(w, RmsNorm { eps })
}

/// `dx` of [`rms_norm`] from its input `x`, weight `w` and the output's gradient `g`.
pub(crate) fn rms_norm_backward(x: &Tensor, w: &Tensor, g: &Tensor, eps: f32) -> Result<Tensor> {
    x.apply_op3_no_bwd(w, &g.contiguous()?, &RmsNormBackward { eps })
}
