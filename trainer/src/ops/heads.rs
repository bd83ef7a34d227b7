//! Attention heads in and out of the fused projection rows, with RoPE: `[B·T, total]` columns
//! `col .. col + n·head_dim` become `[B, n, T, head_dim]` and, for queries and keys, are rotated
//! by RoPE in Hugging Face's half-split layout (`y₁ = x₁ cos − x₂ sin`, `y₂ = x₂ cos + x₁ sin`);
//! the way back rotates by `−sin` and adds into the group's columns. One pass instead of
//! narrow, reshape, transpose, copy and the composed RoPE.

use rayon::prelude::*;

/// Where a group of heads sits in the fused rows, and what is done to it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    /// Batch rows.
    pub(super) batch: usize,
    /// Positions per row.
    pub(super) seq: usize,
    /// Columns per row.
    pub(super) total: usize,
    /// The first column of the group.
    pub(super) col: usize,
    /// Heads in the group.
    pub(super) n: usize,
    /// Values per head.
    pub(super) head_dim: usize,
    /// RoPE (queries, keys) or not (values, outputs).
    pub(super) rotate: bool,
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
    /// The angles of position `p` out of `angles [T, head_dim]` (each row the cosines, then the
    /// sines, of half a head), when rotating.
    fn angles<'a>(&self, angles: &'a [f32], p: usize) -> Option<(&'a [f32], &'a [f32])> {
        let hd = self.head_dim;
        self.rotate
            .then(|| angles[p * hd..(p + 1) * hd].split_at(hd / 2))
    }

    /// The group's heads `[B, n, T, head_dim]` out of `rows [B·T, total]` (the caller checked
    /// the sizes; `angles` as [`Heads::angles`] reads them, unused when not rotating).
    pub(super) fn split(&self, rows: &[f32], angles: &[f32]) -> Vec<f32> {
        let (hd, seq) = (self.head_dim, self.seq);
        let mut out = vec![0f32; self.batch * self.n * seq * hd];
        out.par_chunks_mut(seq * hd)
            .enumerate()
            .for_each(|(bj, dst)| {
                let (b, j) = (bj / self.n, bj % self.n);
                let col = self.col + j * hd;
                for (p, dst) in dst.chunks_mut(hd).enumerate() {
                    let src = &rows[(b * seq + p) * self.total + col..][..hd];
                    rotate(dst, src, self.angles(angles, p), 1.0, false);
                }
            });
        out
    }

    /// Adds `heads [B, n, T, head_dim]`, rotated back, into the group's columns of `rows [B·T,
    /// total]`.
    pub(super) fn merge_into(&self, heads: &[f32], angles: &[f32], rows: &mut [f32]) {
        let (hd, seq) = (self.head_dim, self.seq);
        rows.par_chunks_mut(self.total)
            .enumerate()
            .for_each(|(bp, row)| {
                let (b, p) = (bp / seq, bp % seq);
                for j in 0..self.n {
                    let src = &heads[((b * self.n + j) * seq + p) * hd..][..hd];
                    let dst = &mut row[self.col + j * hd..][..hd];
                    rotate(dst, src, self.angles(angles, p), -1.0, true);
                }
            });
    }
}
