//! SwiGLU on the fused gate/up rows: `[rows, 2I]` (gate's columns, then up's) → `silu(gate) ⊙
//! up`, `[rows, I]`; backward `d gate = g ⊙ up ⊙ σ(gate)(1 + gate(1 − σ(gate)))`,
//! `d up = g ⊙ silu(gate)`.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{rows_cols, simd, values};

struct SwiGlu;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + simd::exp(-x))
}

/// One row forward: `y = silu(gate) ⊙ up` from `x = [gate, up]`.
struct Row<'a> {
    y: &'a mut [f32],
    x: &'a [f32],
}

impl WithSimd for Row<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let (gate, up) = self.x.split_at(self.y.len());
        for ((y, g), u) in self.y.iter_mut().zip(gate).zip(up) {
            // candle's silu: x / (1 + e^(−x)).
            *y = g / (1.0 + simd::exp(-g)) * u;
        }
    }
}

/// One row backward: `d = [d gate, d up]` from `x = [gate, up]` and the output's `g`.
struct RowGrad<'a> {
    d: &'a mut [f32],
    x: &'a [f32],
    g: &'a [f32],
}

impl WithSimd for RowGrad<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let inter = self.g.len();
        let (d_gate, d_up) = self.d.split_at_mut(inter);
        let (gate, up) = self.x.split_at(inter);
        let rows = d_gate.iter_mut().zip(d_up).zip(gate.iter().zip(up));
        for (((dg, du), (gate, up)), g) in rows.zip(self.g) {
            let s = sigmoid(*gate);
            *dg = g * up * s * (1.0 + gate * (1.0 - s));
            *du = g * gate * s;
        }
    }
}

fn halves(l: &Layout) -> Result<(usize, usize)> {
    let (rows, cols) = rows_cols(l);
    if !cols.is_multiple_of(2) {
        bail!("swiglu: {cols} columns do not split into gate and up")
    }
    Ok((rows, cols / 2))
}

impl CustomOp1 for SwiGlu {
    fn name(&self) -> &'static str {
        "instill-swiglu"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, inter) = halves(l)?;
        let x = values(x, l, "swiglu")?;
        let mut y = vec![0f32; rows * inter];
        y.par_chunks_mut(inter)
            .zip(x.par_chunks(2 * inter))
            .for_each(|(y, x)| simd::run(Row { y, x }));
        Ok((CpuStorage::F32(y), Shape::from((rows, inter))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(swiglu_backward(x, grad)?))
    }
}

/// `d [rows, 2I]` from `(x [rows, 2I], g [rows, I])`.
struct SwiGluBackward;

impl CustomOp2 for SwiGluBackward {
    fn name(&self) -> &'static str {
        "instill-swiglu-backward"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (_, inter) = halves(x_l)?;
        let x = values(x, x_l, "swiglu backward")?;
        let g = values(g, g_l, "swiglu backward")?;
        let mut d = vec![0f32; x.len()];
        d.par_chunks_mut(2 * inter)
            .zip(x.par_chunks(2 * inter).zip(g.par_chunks(inter)))
            .for_each(|(d, (x, g))| simd::run(RowGrad { d, x, g }));
        Ok((CpuStorage::F32(d), x_l.shape().clone()))
    }
}

/// `silu(gate) ⊙ up` of contiguous `[rows, 2I]` rows.
pub(crate) fn swiglu(gate_up: &Tensor) -> Result<Tensor> {
    gate_up.apply_op1(SwiGlu)
}

/// The gradient `[rows, 2I]` of [`swiglu`]'s input `x` from its output's gradient `g`.
pub(crate) fn swiglu_backward(x: &Tensor, g: &Tensor) -> Result<Tensor> {
    x.apply_op2_no_bwd(&g.contiguous()?, &SwiGluBackward)
}
