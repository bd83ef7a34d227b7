//! `y = x Wᵀ` whose backward computes `dW` only when `W` trains. candle's matmul backward
//! computes both operands' gradients, so a frozen base weight under LoRA cost a second matmul
//! (and a broadcast copy of `W` summed back over the batch) on every layer.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor, bail};

struct Linear;

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "instill-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        w: &CpuStorage,
        w_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, inner) = x_l.shape().dims2()?;
        let (out, w_inner) = w_l.shape().dims2()?;
        if inner != w_inner {
            bail!("linear: input [{rows}, {inner}] against weight [{out}, {w_inner}]")
        }
        let y = x.matmul(w, (1, rows, out, inner), x_l, &w_l.transpose(0, 1)?)?;
        Ok((y, Shape::from((rows, out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dx = if x.track_op() {
            Some(grad.matmul(w)?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(grad.t()?.matmul(x)?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// `x [rows, in] · w [out, in]ᵀ` → `[rows, out]`.
pub(crate) fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    x.apply_op2(w, Linear)
}
