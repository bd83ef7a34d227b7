//! The training pass on the CPU in f32: the decoder of [`Model::forward`] through the fused
//! kernels of [`crate::ops`] (each with its hand-written backward pass), on `[B·T, hidden]` rows,
//! with q/k/v and gate/up each one matmul (fused once for a frozen base, concatenated per pass
//! when the weights train), and the LM head and the log-softmax only at the positions whose next
//! token is counted. A layer under LoRA (frozen base) runs as one op whose backward is written
//! by hand ([`layer_backward`]); a layer whose weights train goes through candle's backprop over
//! the kernels. The same values as the composed pass (`trainer/tests/fused.rs` holds the
//! losses and gradients of both within 1e-5); anything else (bf16, CUDA) takes the composed
//! pass.

use candle_core::{DType, Device, Tensor};

use crate::TrainError;
use crate::model::{Layer, Linear, Model, layer_seed, sequence_logps};
use crate::ops::{self, Attention};

mod layer_backward;

/// The next-token predictions a batch counts: where (row-major in `[B·T]`), the token each
/// predicts, its weight and its batch row. One reading of `weights` for every fast pass.
pub(crate) struct Counted {
    pub(crate) at: Vec<u32>,
    pub(crate) targets: Vec<u32>,
    pub(crate) weights: Vec<f32>,
    pub(crate) rows: Vec<usize>,
}

impl Counted {
    /// The positions of `ids [B, T]` with a non-zero weight in `weights [B, T]` (the token at
    /// t+1 counts at t).
    pub(crate) fn of(ids: &Tensor, weights: &Tensor) -> Result<Counted, TrainError> {
        let (_, t) = ids.dims2()?;
        if t < 2 {
            return Err(TrainError::Data(
                "sequences need at least two tokens".into(),
            ));
        }
        let (id_rows, weight_rows) = (ids.to_vec2::<u32>()?, weights.to_vec2::<f32>()?);
        let mut out = Counted {
            at: Vec::new(),
            targets: Vec::new(),
            weights: Vec::new(),
            rows: Vec::new(),
        };
        for (r, (ids, ws)) in id_rows.iter().zip(&weight_rows).enumerate() {
            for p in 0..t - 1 {
                if ws[p] != 0.0 {
                    let at = u32::try_from(r * t + p)
                        .map_err(|_| TrainError::Data("a batch of more than 2³² tokens".into()))?;
                    out.at.push(at);
                    out.targets.push(ids[p + 1]);
                    out.weights.push(ws[p]);
                    out.rows.push(r);
                }
            }
        }
        Ok(out)
    }

    /// `[B, n]`: row r holds the weights of row r's counted positions (zero elsewhere), so
    /// that it times the `[n]` log-probabilities is each row's weighted sum.
    fn row_matrix(&self, b: usize, device: &Device) -> Result<Tensor, TrainError> {
        let n = self.at.len();
        let mut m = vec![0f32; b * n];
        for (i, (&r, &w)) in self.rows.iter().zip(&self.weights).enumerate() {
            m[r * n + i] = w;
        }
        Ok(Tensor::from_vec(m, (b, n), device)?)
    }
}

/// What every layer of one pass shares.
struct Pass<'a> {
    batch: usize,
    seq: usize,
    /// RoPE's angles `[T, head_dim]`: each row the cosines, then the sines.
    angles: Tensor,
    dropout_seed: Option<u64>,
    adapters: bool,
    model: &'a Model,
}

/// A layer's forward values that its backward written by hand ([`layer_backward`]) reads.
struct LayerTrace {
    /// The attention's normed input, its q/k/v rows and its output rows.
    h1: Tensor,
    qkv: Tensor,
    att: Tensor,
    /// The residual after attention, its norm, gate/up rows and SwiGLU.
    x1: Tensor,
    h2: Tensor,
    gate_up: Tensor,
    act: Tensor,
    /// The four projection groups: q/k/v, o, gate/up, down.
    qkv_proj: Projection,
    o_proj: Projection,
    gate_up_proj: Projection,
    down_proj: Projection,
}

/// One group of projections reading the same input: the frozen weight it multiplied by
/// (`[Σout, in]`) and what its adapters computed.
struct Projection {
    weight: Tensor,
    adapters: Option<AdapterTrace>,
}

/// A group's adapters' forward ([`Pass::adapters`]).
struct AdapterTrace {
    /// What the `A`s read: the group's input, or its dropped copies side by side.
    input: Tensor,
    /// The copies' dropout masks, when copies were taken.
    masks: Option<ops::Masks>,
    /// The `A`s stacked (`[R, in]`), or down a diagonal (`[R, k·in]`) for copies.
    a: Tensor,
    /// `diag(s₁B₁, s₂B₂, …)`, `[Σout, R]`.
    b: Tensor,
    /// `input · aᵀ`, `[rows, R]`.
    hidden: Tensor,
    /// Each adapter's place, in module order.
    parts: Vec<AdapterPart>,
}

/// Where one adapter sits in its group: its output's columns, its rank's columns of `hidden`
/// (and rows of `a`), its scale.
struct AdapterPart {
    out: std::ops::Range<usize>,
    rank: std::ops::Range<usize>,
    scale: f64,
}

impl Model {
    /// Whether training runs the fused kernels: f32 weights on the CPU.
    pub(crate) fn fused_training(&self) -> bool {
        self.dtype == DType::F32 && self.embed.device().is_cpu()
    }

    /// Each row's sequence log-probability (`[B]`: the weighted sum of the log-probabilities of
    /// its counted next tokens; 0 for a row that counts none), differentiable:
    /// [`sequence_logps`] of [`Model::forward`]'s logits (of [`Model::forward_base`]'s, detached,
    /// with `adapters: false`), through the fused pass where it runs.
    pub fn row_logps(
        &self,
        ids: &Tensor,
        weights: &Tensor,
        dropout_seed: Option<u64>,
        adapters: bool,
    ) -> Result<Tensor, TrainError> {
        let counted = Counted::of(ids, weights)?;
        if !self.fused_training() || counted.at.is_empty() {
            let logits = if adapters {
                self.forward(ids, dropout_seed)?
            } else {
                self.forward_base(ids)?
            };
            return sequence_logps(&logits, ids, weights);
        }
        let (b, _) = ids.dims2()?;
        let device = ids.device();
        let hidden = self.fused_hidden(ids, dropout_seed, adapters)?;
        let n = counted.at.len();
        let rows = hidden.index_select(&Tensor::from_vec(counted.at.clone(), n, device)?, 0)?;
        let logits = ops::linear(&rows, &self.lm_head.weight)?;
        let logp = ops::target_logp(&logits, counted.targets.clone())?;
        let sums = counted
            .row_matrix(b, device)?
            .matmul(&logp.unsqueeze(1)?)?
            .squeeze(1)?;
        Ok(if adapters { sums } else { sums.detach() })
    }

    /// Masked next-token NLL, the mean over counted tokens: [`crate::masked_nll`] of
    /// [`Model::forward`]'s logits, through the fused pass where it runs.
    pub fn nll(
        &self,
        ids: &Tensor,
        weights: &Tensor,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor, TrainError> {
        let (_, t) = ids.dims2()?;
        let sums = self.row_logps(ids, weights, dropout_seed, true)?;
        let count = weights
            .narrow(1, 0, t.saturating_sub(1))?
            .sum_all()?
            .to_scalar::<f32>()?
            .max(1.0);
        Ok((sums.sum_all()? * (-1.0 / f64::from(count)))?)
    }

    /// The final hidden states `[B·T, hidden]` (after the last norm) of right-padded `ids`.
    fn fused_hidden(
        &self,
        ids: &Tensor,
        dropout_seed: Option<u64>,
        adapters: bool,
    ) -> Result<Tensor, TrainError> {
        let (batch, seq) = ids.dims2()?;
        let (cos, sin) = self.rope().cos_sin(0, seq, ids.device(), DType::F32)?;
        let pass = Pass {
            batch,
            seq,
            angles: Tensor::cat(&[cos, sin], 1)?,
            dropout_seed,
            adapters,
            model: self,
        };
        let eps = self.config.rms_norm_eps as f32;
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?;
        for (li, l) in self.layers.iter().enumerate() {
            x = if pass.adapters && layer_backward::fits(l) {
                layer_backward::layer(&pass, l, li, &x)?
            } else {
                pass.layer(l, li, &x, false)?.0
            };
        }
        Ok(ops::rms_norm(&x, &self.norm, eps)?)
    }
}

impl Pass<'_> {
    /// Layer `li` on `x [B·T, hidden]`: `x + attention(norm(x))`, then `+ mlp(norm(·))`, with
    /// the values a backward written by hand reads. `detach`: the adapters' weights enter as
    /// plain values (that backward computes their gradients), not as graph variables.
    fn layer(
        &self,
        l: &Layer,
        li: usize,
        x: &Tensor,
        detach: bool,
    ) -> Result<(Tensor, LayerTrace), TrainError> {
        let c = &self.model.config;
        let eps = c.rms_norm_eps as f32;
        let h1 = ops::rms_norm(x, &l.attn_norm, eps)?;
        let fused_qkv = l.fused.as_ref().map(|f| &f.qkv);
        let (qkv, qkv_proj) = self.project(&h1, &[&l.q, &l.k, &l.v], li, 1, fused_qkv, detach)?;
        let att = ops::attention(&qkv, &self.angles, self.shape())?;
        let (o, o_proj) = self.project(&att, &[&l.o], li, 4, None, detach)?;
        let x1 = (x + o)?;
        let h2 = ops::rms_norm(&x1, &l.ffn_norm, eps)?;
        let fused = l.fused.as_ref().map(|f| &f.gate_up);
        let parts = [&l.gate, &l.up];
        let (gate_up, gate_up_proj) = self.project(&h2, &parts, li, 5, fused, detach)?;
        let act = ops::swiglu(&gate_up)?;
        let (down, down_proj) = self.project(&act, &[&l.down], li, 7, None, detach)?;
        let y = (&x1 + down)?;
        let trace = LayerTrace {
            h1,
            qkv,
            att,
            x1,
            h2,
            gate_up,
            act,
            qkv_proj,
            o_proj,
            gate_up_proj,
            down_proj,
        };
        Ok((y, trace))
    }

    fn shape(&self) -> Attention {
        let c = &self.model.config;
        Attention {
            batch: self.batch,
            seq: self.seq,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
        }
    }

    /// Modules reading the same `x` as one matmul, their outputs side by side: by `fused`
    /// when the frozen weights were joined once, else joined here (trained weights); biases
    /// and adapters (modules numbered from `first`) added.
    fn project(
        &self,
        x: &Tensor,
        parts: &[&Linear],
        li: usize,
        first: u64,
        fused: Option<&Tensor>,
        detach: bool,
    ) -> Result<(Tensor, Projection), TrainError> {
        let weight = match fused {
            Some(w) => w.clone(),
            None => Tensor::cat(&parts.iter().map(|p| &p.weight).collect::<Vec<_>>(), 0)?,
        };
        let mut y = ops::linear(x, &weight)?;
        let biases: Vec<&Tensor> = parts.iter().filter_map(|p| p.bias.as_ref()).collect();
        if biases.len() == parts.len() {
            y = y.broadcast_add(&Tensor::cat(&biases, 0)?)?;
        } else if !biases.is_empty() {
            return Err(TrainError::Config(
                "fused projections must all have a bias or none".into(),
            ));
        }
        if !self.adapters || parts.iter().all(|p| p.lora.is_none()) {
            let adapters = None;
            return Ok((y, Projection { weight, adapters }));
        }
        let (out, trace) = self.adapters(x, parts, li, first, detach)?;
        let adapters = Some(trace);
        Ok(((y + out)?, Projection { weight, adapters }))
    }

    /// The adapters of `parts` (modules numbered from `first`, reading the same `x [rows,
    /// in]`), their outputs side by side, zero for a module without one: the adapters' inputs
    /// times the stacked `A`s (one thin matmul: `x [A₁; A₂; …]ᵀ` when no dropout is drawn,
    /// else [`ops::dropout_copies`] times `diag(A₁, A₂, …)ᵀ`), times the
    /// block-diagonal `diag(s₁B₁, s₂B₂, …)ᵀ` (one more). The values of each module's
    /// [`crate::lora::Lora::forward`], two matmuls for the group instead of three ops per module.
    fn adapters(
        &self,
        x: &Tensor,
        parts: &[&Linear],
        li: usize,
        first: u64,
        detach: bool,
    ) -> Result<(Tensor, AdapterTrace), TrainError> {
        let weight = |v: &candle_core::Var| match detach {
            true => v.as_tensor().detach(),
            false => v.as_tensor().clone(),
        };
        let mut masks = Vec::with_capacity(parts.len());
        let (mut a_blocks, mut b_blocks) = (Vec::new(), Vec::new());
        let mut places = Vec::with_capacity(parts.len());
        let (mut out_at, mut rank_at) = (0, 0);
        for (i, p) in parts.iter().enumerate() {
            let out = p.weight.dim(0)?;
            out_at += out;
            let Some(lora) = &p.lora else {
                b_blocks.push(Block::Zeros(out));
                continue;
            };
            let rank = lora.a.dim(0)?;
            let (out, rank) = (out_at - out..out_at, rank_at..rank_at + rank);
            rank_at = rank.end;
            places.push(AdapterPart {
                out,
                rank,
                scale: lora.scale,
            });
            let seed = layer_seed(self.dropout_seed, li, first + i as u64);
            masks.push(lora.mask(x.elem_count(), seed));
            a_blocks.push(Block::Of(weight(&lora.a)));
            b_blocks.push(Block::Of((weight(&lora.b) * lora.scale)?));
        }
        let (input, masks, a) = if masks.iter().any(Option::is_some) {
            let masks = std::sync::Arc::new(masks);
            let copies = ops::dropout_copies(x, masks.clone())?;
            (copies, Some(masks), block_diagonal(&a_blocks, x.device())?)
        } else {
            let stacked: Vec<Tensor> = a_blocks.into_iter().filter_map(Block::tensor).collect();
            (x.clone(), None, Tensor::cat(&stacked, 0)?)
        };
        let hidden = ops::linear(&input, &a)?;
        let b = block_diagonal(&b_blocks, x.device())?;
        let out = ops::linear(&hidden, &b)?;
        let parts = places;
        Ok((
            out,
            AdapterTrace {
                input,
                masks,
                a,
                b,
                hidden,
                parts,
            },
        ))
    }
}

/// One block on a block-diagonal matrix's diagonal.
enum Block {
    /// A `[rows, cols]` block.
    Of(Tensor),
    /// `rows` zero rows that take no columns.
    Zeros(usize),
}

impl Block {
    fn tensor(self) -> Option<Tensor> {
        match self {
            Block::Of(t) => Some(t),
            Block::Zeros(_) => None,
        }
    }
}

/// `blocks` down the diagonal of one f32 matrix, zeros elsewhere (differentiable in the
/// blocks).
fn block_diagonal(blocks: &[Block], device: &Device) -> Result<Tensor, TrainError> {
    let width = |b: &Block| match b {
        Block::Of(t) => t.dim(1),
        Block::Zeros(_) => Ok(0),
    };
    let widths: Vec<usize> = blocks.iter().map(width).collect::<Result<_, _>>()?;
    let total: usize = widths.iter().sum();
    let mut rows = Vec::with_capacity(blocks.len());
    let mut before = 0;
    for (block, w) in blocks.iter().zip(widths) {
        let zeros = |r, c| Tensor::zeros((r, c), DType::F32, device);
        let row = match block {
            Block::Zeros(r) => zeros(*r, total)?,
            Block::Of(t) => {
                let r = t.dim(0)?;
                let mut pieces = Vec::with_capacity(3);
                if before > 0 {
                    pieces.push(zeros(r, before)?);
                }
                pieces.push(t.clone());
                if total > before + w {
                    pieces.push(zeros(r, total - before - w)?);
                }
                Tensor::cat(&pieces, 1)?
            }
        };
        rows.push(row);
        before += w;
    }
    Ok(Tensor::cat(&rows, 0)?)
}
