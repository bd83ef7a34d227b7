//! Each adapter's input side by side: `x [rows, in]` → `[rows, m·in]`, copy `j` being `x ⊙
//! mask_j` (its adapter's dropout) or `x` itself; backward `dx = Σ_j g_j ⊙ mask_j`. One pass
//! each way instead of a product per copy, a concatenation, and the gradients of the copies
//! summed one addition at a time.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor, bail};
use instill_core::SplitMix;
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::{rows_cols, values};

/// Per copy, its dropout mask (`rows · in` values) or `None` for the input as it is; shared by
/// the forward and a backward written by hand.
pub(crate) type Masks = Arc<Vec<Option<Vec<f32>>>>;

/// Fills `out` with dropout draws `first..` of `seed`'s [`SplitMix`] sequence: `kept` where the
/// draw's uniform `unit()` is below `keep`, else 0. `unit() < keep` is compared on integers,
/// `(bits >> 11) < ⌈keep · 2⁵³⌉` (the same test: `unit()` is `(bits >> 11) / 2⁵³`, exact), and
/// each draw is [`SplitMix::draw_at`], so the loop carries no state and vectorises (AVX-512
/// multiplies 64-bit lanes); the mask is the one drawn one value at a time.
pub(crate) fn fill_mask(out: &mut [f32], seed: u64, first: u64, keep: f64, kept: f32) {
    let below = (keep.clamp(0.0, 1.0) * (1u64 << 53) as f64).ceil() as u64;
    super::simd::run(Fill {
        out,
        seed,
        first,
        below,
        kept,
    });
}

struct Fill<'a> {
    out: &'a mut [f32],
    seed: u64,
    first: u64,
    below: u64,
    kept: f32,
}

impl WithSimd for Fill<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        for (i, m) in (self.first..).zip(self.out.iter_mut()) {
            let keep = (SplitMix::draw_at(self.seed, i) >> 11) < self.below;
            *m = if keep { self.kept } else { 0.0 };
        }
    }
}

struct Copies {
    masks: Masks,
}

impl Copies {
    fn check(&self, l: &Layout) -> Result<(usize, usize)> {
        let (rows, cols) = rows_cols(l);
        let wrong = self.masks.iter().flatten().find(|m| m.len() != rows * cols);
        if l.dims().len() != 2 || self.masks.is_empty() || wrong.is_some() {
            bail!(
                "dropout copies: {} masks ({:?} values) for input {:?}",
                self.masks.len(),
                wrong.map(Vec::len),
                l.dims()
            )
        }
        Ok((rows, cols))
    }

    /// `x` (or `g`'s slice) times mask `j`'s row `r`, written or added into `dst`.
    fn apply(&self, j: usize, r: usize, src: &[f32], dst: &mut [f32], add: bool) {
        let d = src.len();
        match &self.masks[j] {
            Some(mask) => {
                let mask = &mask[r * d..(r + 1) * d];
                for ((o, s), m) in dst.iter_mut().zip(src).zip(mask) {
                    *o = if add { *o + s * m } else { s * m };
                }
            }
            None if add => dst.iter_mut().zip(src).for_each(|(o, s)| *o += s),
            None => dst.copy_from_slice(src),
        }
    }
}

impl CustomOp1 for Copies {
    fn name(&self) -> &'static str {
        "instill-dropout-copies"
    }

    fn cpu_fwd(&self, x: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = self.check(l)?;
        let x = values(x, l, "dropout copies")?;
        let m = self.masks.len();
        let mut y = vec![0f32; rows * m * d];
        y.par_chunks_mut(m * d)
            .zip(x.par_chunks(d))
            .enumerate()
            .for_each(|(r, (y, x))| {
                for (j, y) in y.chunks_mut(d).enumerate() {
                    self.apply(j, r, x, y, false);
                }
            });
        Ok((CpuStorage::F32(y), Shape::from((rows, m * d))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(dropout_copies_backward(x, grad, &self.masks)?))
    }
}

/// `dx [rows, in]` from `(x, g [rows, m·in])`.
struct CopiesBackward(Copies);

impl CustomOp2 for CopiesBackward {
    fn name(&self) -> &'static str {
        "instill-dropout-copies-backward"
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        x_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d) = self.0.check(x_l)?;
        let g = values(g, g_l, "dropout copies backward")?;
        let m = self.0.masks.len();
        if g.len() != rows * m * d {
            bail!(
                "dropout copies backward: gradient {:?} for input {:?}",
                g_l.dims(),
                x_l.dims()
            )
        }
        let mut dx = vec![0f32; rows * d];
        dx.par_chunks_mut(d)
            .zip(g.par_chunks(m * d))
            .enumerate()
            .for_each(|(r, (dx, g))| {
                for (j, g) in g.chunks(d).enumerate() {
                    self.0.apply(j, r, g, dx, j > 0);
                }
            });
        Ok((CpuStorage::F32(dx), x_l.shape().clone()))
    }
}

/// The copies of contiguous `x [rows, in]` under `masks` (each `rows · in` values, or `None`
/// for `x` as it is), side by side: `[rows, masks.len() · in]`.
pub(crate) fn dropout_copies(x: &Tensor, masks: Masks) -> Result<Tensor> {
    x.apply_op1(Copies { masks })
}

/// The gradient of [`dropout_copies`]'s input `x` from the copies' gradient `g`.
pub(crate) fn dropout_copies_backward(x: &Tensor, g: &Tensor, masks: &Masks) -> Result<Tensor> {
    let back = CopiesBackward(Copies {
        masks: masks.clone(),
    });
    x.apply_op2_no_bwd(&g.contiguous()?, &back)
}
