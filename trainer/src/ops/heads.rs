//! Attention heads out of the fused projection rows, with RoPE: `[B·T, q+k+v]` columns
//! `col .. col + n·head_dim` become `[B, n·rep, T, head_dim]`, each of the `n` heads repeated
//! `rep` times (grouped-query attention) and, for queries and keys, rotated by RoPE in
//! Hugging Face's half-split layout (`y₁ = x₁ cos − x₂ sin`, `y₂ = x₂ cos + x₁ sin`). One pass
//! instead of narrow, reshape, transpose, copy, the composed RoPE and the repeat; the backward
//! pass rotates back (`sin → −sin`), sums the repeats and writes into the heads' columns.

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

use super::values;

/// Where a group of heads sits in the fused rows, and what is done to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Heads {
    /// Batch rows.
    pub(crate) batch: usize,
    /// Positions per row.
    pub(crate) seq: usize,
    /// The first column of the group.
    pub(crate) col: usize,
    /// Heads in the group.
    pub(crate) n: usize,
    /// Times each head is repeated.
    pub(crate) rep: usize,
    /// Values per head.
    pub(crate) head_dim: usize,
    /// RoPE (queries, keys) or not (values).
    pub(crate) rotate: bool,
}

/// `dst (=|+=) rotate(src)` by angles `cos`, `sin` (half a head each), `sin` times `sign`.
fn rotate(dst: &mut [f32], src: &[f32], cs: Option<(&[f32], &[f32])>, sign: f32, add: bool) {
    let half = src.len() / 2;
    let put = |d: &mut f32, v: f32| {
        if add { *d += v } else { *d = v }
    };
    let Some((cos, sin)) = cs else {
        for (d, s) in dst.iter_mut().zip(src) {
            put(d, *s);
        }
        return;
    };
    let (d1, d2) = dst.split_at_mut(half);
    let (s1, s2) = src.split_at(half);
    for i in 0..half {
        let (c, s) = (cos[i], sin[i] * sign);
        put(&mut d1[i], s1[i] * c - s2[i] * s);
        put(&mut d2[i], s2[i] * c + s1[i] * s);
    }
}

impl Heads {
    fn check(&self, rows_l: &Layout, cos_l: &Layout, sin_l: &Layout, total: usize) -> Result<()> {
        let hd = self.head_dim;
        let cs = (self.seq, hd / 2);
        if self.col + self.n * hd > total || !hd.is_multiple_of(2) || self.rep == 0 {
            bail!("heads: {self:?} do not fit rows {:?}", rows_l.dims())
        }
        if self.rotate && (cos_l.shape().dims2()? != cs || sin_l.shape().dims2()? != cs) {
            bail!(
                "heads: cos {:?} / sin {:?}, expected {cs:?}",
                cos_l.dims(),
                sin_l.dims()
            )
        }
        Ok(())
    }

    /// The angles of position `p`, when rotating.
    fn angles<'a>(
        &self,
        cos: &'a [f32],
        sin: &'a [f32],
        p: usize,
    ) -> Option<(&'a [f32], &'a [f32])> {
        let half = self.head_dim / 2;
        self.rotate.then(|| {
            (
                &cos[p * half..(p + 1) * half],
                &sin[p * half..(p + 1) * half],
            )
        })
    }
}

struct Split(Heads);

impl CustomOp3 for Split {
    fn name(&self) -> &'static str {
        "instill-heads"
    }

    fn cpu_fwd(
        &self,
        rows: &CpuStorage,
        rows_l: &Layout,
        cos: &CpuStorage,
        cos_l: &Layout,
        sin: &CpuStorage,
        sin_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = self.0;
        let (n_rows, total) = rows_l.shape().dims2()?;
        if n_rows != h.batch * h.seq {
            bail!(
                "heads: {n_rows} rows for a batch of {} × {}",
                h.batch,
                h.seq
            )
        }
        h.check(rows_l, cos_l, sin_l, total)?;
        let rows = values(rows, rows_l, "heads")?;
        let (cos, sin) = (values(cos, cos_l, "heads")?, values(sin, sin_l, "heads")?);
        let (hd, out_heads) = (h.head_dim, h.n * h.rep);
        let mut out = vec![0f32; h.batch * out_heads * h.seq * hd];
        out.par_chunks_mut(h.seq * hd)
            .enumerate()
            .for_each(|(bj, dst)| {
                let (b, j) = (bj / out_heads, bj % out_heads);
                let col = h.col + (j / h.rep) * hd;
                for (p, dst) in dst.chunks_mut(hd).enumerate() {
                    let src = &rows[(b * h.seq + p) * total + col..][..hd];
                    rotate(dst, src, h.angles(cos, sin, p), 1.0, false);
                }
            });
        Ok((
            CpuStorage::F32(out),
            Shape::from((h.batch, out_heads, h.seq, hd)),
        ))
    }

    fn bwd(
        &self,
        rows: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _out: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let total = rows.dim(1)?;
        let back = Merge {
            heads: self.0,
            total,
        };
        let d = grad.contiguous()?.apply_op3_no_bwd(cos, sin, &back)?;
        Ok((Some(d), None, None))
    }
}

/// The backward pass: `[B, n·rep, T, hd]` gradients into `[B·T, total]` rows (zero outside the
/// group's columns), rotated back and the repeats summed.
struct Merge {
    heads: Heads,
    total: usize,
}

impl CustomOp3 for Merge {
    fn name(&self) -> &'static str {
        "instill-heads-backward"
    }

    fn cpu_fwd(
        &self,
        grad: &CpuStorage,
        grad_l: &Layout,
        cos: &CpuStorage,
        cos_l: &Layout,
        sin: &CpuStorage,
        sin_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (h, total) = (self.heads, self.total);
        let (hd, out_heads) = (h.head_dim, h.n * h.rep);
        if grad_l.dims() != [h.batch, out_heads, h.seq, hd] {
            bail!("heads backward: gradient {:?}", grad_l.dims())
        }
        h.check(grad_l, cos_l, sin_l, total)?;
        let grad = values(grad, grad_l, "heads backward")?;
        let (cos, sin) = (values(cos, cos_l, "heads")?, values(sin, sin_l, "heads")?);
        let mut out = vec![0f32; h.batch * h.seq * total];
        out.par_chunks_mut(total).enumerate().for_each(|(bp, row)| {
            let (b, p) = (bp / h.seq, bp % h.seq);
            for j in 0..out_heads {
                let src = &grad[((b * out_heads + j) * h.seq + p) * hd..][..hd];
                let dst = &mut row[h.col + (j / h.rep) * hd..][..hd];
                rotate(dst, src, h.angles(cos, sin, p), -1.0, true);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((h.batch * h.seq, total))))
    }
}

/// The heads `spec` describes, out of `rows [B·T, total]` (contiguous), RoPE'd by `cos`, `sin`
/// (`[T, head_dim/2]`, unused when not rotating).
pub(crate) fn heads(rows: &Tensor, cos: &Tensor, sin: &Tensor, spec: Heads) -> Result<Tensor> {
    rows.apply_op3(cos, sin, Split(spec))
}
