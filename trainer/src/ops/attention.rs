//! A layer's causal self-attention in one op, from the fused q/k/v rows `[B·T, (h + 2k)·d]` and
//! the RoPE angles `[T, d]` to the heads' outputs side by side, `[B·T, h·d]`: RoPE, grouped-query
//! sharing (query head `j` reads key/value head `j / (h/k)`), `softmax(q kᵀ/√d)` over the seen
//! positions, times `v`. Each (batch row, head) runs on its own: the scores of one query row at
//! a time, never a `[T, T]` matrix, no repeated keys or values. The backward pass recomputes the
//! weights row by row: `dv += p g`, `ds = p ⊙ (g vᵀ − Σ p ⊙ g vᵀ)/√d`, `dq = ds k`, `dk += ds q`,
//! one task per key/value head so its query heads' gradients add up without sharing, then
//! rotates back into the q/k/v columns. It replaces the heads split, two batched matmuls, the
//! softmax, the transpose and the graph edges between them (about a fifth of a SmolLM2 step).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, bail};
use pulp::{Simd, WithSimd};
use rayon::prelude::*;

use super::heads::Heads;
use super::simd::{self, LANES};
use super::values;

/// The shape of one layer's attention.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attention {
    /// Batch rows.
    pub(crate) batch: usize,
    /// Positions per row.
    pub(crate) seq: usize,
    /// Query heads.
    pub(crate) heads: usize,
    /// Key/value heads (dividing `heads`).
    pub(crate) kv_heads: usize,
    /// Values per head (even).
    pub(crate) head_dim: usize,
}

impl Attention {
    fn total(&self) -> usize {
        (self.heads + 2 * self.kv_heads) * self.head_dim
    }

    fn group(&self, first_head: usize, n: usize, rotate: bool) -> Heads {
        Heads {
            batch: self.batch,
            seq: self.seq,
            total: self.total(),
            col: first_head * self.head_dim,
            n,
            head_dim: self.head_dim,
            rotate,
        }
    }

    fn queries(&self) -> Heads {
        self.group(0, self.heads, true)
    }

    fn keys(&self) -> Heads {
        self.group(self.heads, self.kv_heads, true)
    }

    fn values(&self) -> Heads {
        self.group(self.heads + self.kv_heads, self.kv_heads, false)
    }

    /// The outputs' rows `[B·T, h·d]` as a group of heads.
    fn outputs(&self) -> Heads {
        Heads {
            total: self.heads * self.head_dim,
            ..self.group(0, self.heads, false)
        }
    }

    fn scale(&self) -> f32 {
        (1.0 / (self.head_dim as f64).sqrt()) as f32
    }

    /// The q/k/v rows and the angles fit this shape.
    fn check(&self, qkv: &Layout, angles: &Layout) -> Result<()> {
        let (h, k, d) = (self.heads, self.kv_heads, self.head_dim);
        if k == 0 || !h.is_multiple_of(k) || d == 0 || !d.is_multiple_of(2) {
            bail!("attention: {h} heads over {k} key/value heads of {d} values")
        }
        if qkv.shape().dims2()? != (self.batch * self.seq, self.total()) {
            bail!("attention: q/k/v rows {:?} for {self:?}", qkv.dims())
        }
        if angles.shape().dims2()? != (self.seq, d) {
            bail!(
                "attention: angles {:?}, expected [{}, {d}]",
                angles.dims(),
                self.seq
            )
        }
        Ok(())
    }

    /// Rotated queries `[B, h, T, d]`, rotated keys and values `[B, k, T, d]`.
    fn split(&self, qkv: &[f32], angles: &[f32]) -> [Vec<f32>; 3] {
        [
            self.queries().split(qkv, angles),
            self.keys().split(qkv, angles),
            self.values().split(qkv, angles),
        ]
    }
}

/// Columns of the blocked products: four AVX-512 registers of f32 (eight AVX2 ones), so four
/// independent chains of fused multiply-adds keep the pipeline full.
const WIDE: usize = 64;

/// `n` rounded up to whole blocks of [`WIDE`].
fn padded(n: usize) -> usize {
    n.div_ceil(WIDE) * WIDE
}

/// `rows [n, d]` as columns `[d, stride]` (`stride` = [`padded`]`(n)`, zeros past `n`), so that a
/// query's products with every row are [`WIDE`] at a time without a horizontal sum.
fn transposed(rows: &[f32], d: usize) -> Vec<f32> {
    let n = rows.len() / d;
    let stride = padded(n);
    let mut t = vec![0f32; d * stride];
    for (j, row) in rows.chunks(d).enumerate() {
        for (c, v) in row.iter().enumerate() {
            t[c * stride + j] = *v;
        }
    }
    t
}

/// `out[j] = scale · x · rows[j]` for `j < out.len()`, from `columns` = [`transposed`]`(rows)`.
#[inline(always)]
fn products(out: &mut [f32], x: &[f32], columns: &[f32], scale: f32) {
    let stride = columns.len() / x.len();
    for jb in (0..out.len()).step_by(WIDE) {
        let mut acc = [0f32; WIDE];
        for (c, &xc) in x.iter().enumerate() {
            let col = &columns[c * stride + jb..][..WIDE];
            for l in 0..WIDE {
                acc[l] = xc.mul_add(col[l], acc[l]);
            }
        }
        let m = WIDE.min(out.len() - jb);
        for (o, a) in out[jb..jb + m].iter_mut().zip(&acc) {
            *o = a * scale;
        }
    }
}

/// Columns `cb .. cb + N` of `out (=|+=) Σ_j w[j] · rows[j]` (rows of `d`), in registers.
#[inline(always)]
fn weighted_block<const N: usize>(out: &mut [f32], w: &[f32], rows: &[f32], cb: usize, add: bool) {
    let d = out.len();
    let mut acc = [0f32; N];
    if add {
        acc.copy_from_slice(&out[cb..cb + N]);
    }
    for (j, &wj) in w.iter().enumerate() {
        let row = &rows[j * d + cb..][..N];
        for l in 0..N {
            acc[l] = wj.mul_add(row[l], acc[l]);
        }
    }
    out[cb..cb + N].copy_from_slice(&acc);
}

/// `out (=|+=) Σ_j w[j] · rows[j]` (rows of `out.len()`).
#[inline(always)]
fn weighted_rows(out: &mut [f32], w: &[f32], rows: &[f32], add: bool) {
    let d = out.len();
    let mut cb = 0;
    while cb + WIDE <= d {
        weighted_block::<WIDE>(out, w, rows, cb, add);
        cb += WIDE;
    }
    while cb + LANES <= d {
        weighted_block::<LANES>(out, w, rows, cb, add);
        cb += LANES;
    }
    for (c, o) in out.iter_mut().enumerate().skip(cb) {
        let sum = w
            .iter()
            .enumerate()
            .map(|(j, wj)| wj * rows[j * d + c])
            .sum();
        *o = if add { *o + sum } else { sum };
    }
}

/// `p` = the attention weights of query `q` over the first `p.len()` keys, from the keys'
/// [`transposed`] columns.
#[inline(always)]
fn weights(p: &mut [f32], q: &[f32], key_columns: &[f32], scale: f32) {
    products(p, q, key_columns, scale);
    let max = simd::max(p);
    for p in p.iter_mut() {
        *p = simd::exp(*p - max);
    }
    let sum = simd::sum(p);
    for p in p.iter_mut() {
        *p /= sum;
    }
}

/// One (batch row, query head): `y [T, d]` from its queries and its key/value head.
struct HeadForward<'a> {
    y: &'a mut [f32],
    q: &'a [f32],
    /// The key/value head's keys, [`transposed`].
    key_columns: &'a [f32],
    v: &'a [f32],
    d: usize,
    scale: f32,
}

impl WithSimd for HeadForward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let d = self.d;
        let mut p = vec![0f32; self.y.len() / d];
        for (i, y) in self.y.chunks_mut(d).enumerate() {
            let p = &mut p[..=i];
            weights(p, &self.q[i * d..][..d], self.key_columns, self.scale);
            weighted_rows(y, p, self.v, false);
        }
    }
}

struct Forward(Attention);

impl CustomOp2 for Forward {
    fn name(&self) -> &'static str {
        "instill-attention"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_l: &Layout,
        angles: &CpuStorage,
        angles_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = self.0;
        a.check(qkv_l, angles_l)?;
        let qkv = values(qkv, qkv_l, "attention")?;
        let angles = values(angles, angles_l, "attention")?;
        let [q, k, v] = a.split(qkv, angles);
        let (t, d) = (a.seq, a.head_dim);
        let rep = a.heads / a.kv_heads;
        // Once per key/value head, not once per query head reading it.
        let key_columns: Vec<Vec<f32>> = k.par_chunks(t * d).map(|k| transposed(k, d)).collect();
        let mut y = vec![0f32; q.len()];
        y.par_chunks_mut(t * d)
            .zip(q.par_chunks(t * d))
            .enumerate()
            .for_each(|(bj, (y, q))| {
                let (b, j) = (bj / a.heads, bj % a.heads);
                let kv = b * a.kv_heads + j / rep;
                simd::run(HeadForward {
                    y,
                    q,
                    key_columns: &key_columns[kv],
                    v: &v[kv * t * d..][..t * d],
                    d,
                    scale: a.scale(),
                })
            });
        let mut rows = vec![0f32; q.len()];
        a.outputs().merge_into(&y, angles, &mut rows);
        Ok((
            CpuStorage::F32(rows),
            Shape::from((a.batch * t, a.heads * d)),
        ))
    }

    fn bwd(
        &self,
        qkv: &Tensor,
        angles: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(attention_backward(qkv, angles, grad, self.0)?), None))
    }
}

/// One (batch row, key/value head): the gradients of its `rep` query heads' `q` and of its `k`
/// and `v`, from the outputs' gradients `g` of those query heads.
struct GroupBackward<'a> {
    dq: &'a mut [f32],
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    g: &'a [f32],
    d: usize,
    scale: f32,
}

impl WithSimd for GroupBackward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let d = self.d;
        let t = self.dk.len() / d;
        let (key_columns, value_columns) = (transposed(self.k, d), transposed(self.v, d));
        // Column j of the weights and of the scores' gradients (rows i ≥ j written), so that
        // `dk_j` and `dv_j` are weighted sums of rows like `dq_i`.
        let (mut p_cols, mut ds_cols) = (vec![0f32; t * t], vec![0f32; t * t]);
        let (mut p_row, mut ds_row) = (vec![0f32; t], vec![0f32; t]);
        let heads = self.dq.chunks_mut(t * d).zip(self.q.chunks(t * d));
        for (r, (dq, q)) in heads.enumerate() {
            let g = &self.g[r * t * d..][..t * d];
            for i in 0..t {
                let (p, ds) = (&mut p_row[..=i], &mut ds_row[..=i]);
                let (qi, gi) = (&q[i * d..][..d], &g[i * d..][..d]);
                weights(p, qi, &key_columns, self.scale);
                products(ds, gi, &value_columns, 1.0);
                let mean = simd::dot(p, ds);
                for (ds, &p) in ds.iter_mut().zip(p.iter()) {
                    *ds = p * (*ds - mean) * self.scale;
                }
                weighted_rows(&mut dq[i * d..][..d], ds, self.k, false);
                for j in 0..=i {
                    p_cols[j * t + i] = p[j];
                    ds_cols[j * t + i] = ds[j];
                }
            }
            for j in 0..t {
                let dk = &mut self.dk[j * d..][..d];
                weighted_rows(dk, &ds_cols[j * t + j..(j + 1) * t], &q[j * d..], true);
                let dv = &mut self.dv[j * d..][..d];
                weighted_rows(dv, &p_cols[j * t + j..(j + 1) * t], &g[j * d..], true);
            }
        }
    }
}

/// `d qkv [B·T, (h + 2k)·d]` from `(qkv, g [B·T, h·d], angles)`.
struct Backward(Attention);

impl CustomOp3 for Backward {
    fn name(&self) -> &'static str {
        "instill-attention-backward"
    }

    fn cpu_fwd(
        &self,
        qkv: &CpuStorage,
        qkv_l: &Layout,
        g: &CpuStorage,
        g_l: &Layout,
        angles: &CpuStorage,
        angles_l: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = self.0;
        a.check(qkv_l, angles_l)?;
        if g_l.dims() != [a.batch * a.seq, a.heads * a.head_dim] {
            bail!("attention backward: gradient {:?}", g_l.dims())
        }
        let qkv = values(qkv, qkv_l, "attention backward")?;
        let angles = values(angles, angles_l, "attention backward")?;
        let g = a
            .outputs()
            .split(values(g, g_l, "attention backward")?, angles);
        let [q, k, v] = a.split(qkv, angles);
        let (t, d) = (a.seq, a.head_dim);
        let group = a.heads / a.kv_heads * t * d;
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; k.len()],
            vec![0f32; v.len()],
        );
        dq.par_chunks_mut(group)
            .zip(dk.par_chunks_mut(t * d).zip(dv.par_chunks_mut(t * d)))
            .enumerate()
            .for_each(|(bg, (dq, (dk, dv)))| {
                let at = bg * t * d;
                simd::run(GroupBackward {
                    dq,
                    dk,
                    dv,
                    q: &q[bg * group..][..group],
                    k: &k[at..][..t * d],
                    v: &v[at..][..t * d],
                    g: &g[bg * group..][..group],
                    d,
                    scale: a.scale(),
                })
            });
        let mut rows = vec![0f32; qkv.len()];
        a.queries().merge_into(&dq, angles, &mut rows);
        a.keys().merge_into(&dk, angles, &mut rows);
        a.values().merge_into(&dv, angles, &mut rows);
        Ok((CpuStorage::F32(rows), qkv_l.shape().clone()))
    }
}

/// Causal self-attention of contiguous `qkv [B·T, (h + 2k)·d]` rows with RoPE `angles [T, d]`
/// (each row the cosines, then the sines) → `[B·T, h·d]`.
pub(crate) fn attention(qkv: &Tensor, angles: &Tensor, shape: Attention) -> Result<Tensor> {
    qkv.apply_op2(angles, Forward(shape))
}

/// The gradient of [`attention`]'s `qkv` from its output's gradient `g [B·T, h·d]`.
pub(crate) fn attention_backward(
    qkv: &Tensor,
    angles: &Tensor,
    g: &Tensor,
    shape: Attention,
) -> Result<Tensor> {
    qkv.apply_op3_no_bwd(&g.contiguous()?, angles, &Backward(shape))
}
