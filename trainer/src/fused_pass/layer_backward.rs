//! A decoder layer under LoRA (frozen base, adapters training) as one differentiable op whose
//! backward is written by hand: the forward is [`Pass::layer`] on plain values, the backward
//! runs the chain rule through the layer's kernels' own backward functions and forms the
//! adapters' gradients from the values the forward kept. candle's backprop adds a zeroed
//! buffer per graph edge (two passes over a `[B·T, hidden]` tensor for every use of one); here
//! a layer is one edge for its input and one for its adapters' weights, packed in one vector.
//! The gradients are the composed pass's (`trainer/tests/fused.rs`).

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};

use super::{LayerTrace, Pass, Projection};
use crate::TrainError;
use crate::model::{Layer, Linear};
use crate::ops::{self, Attention};

/// Whether layer `l` runs as one op: some of its modules have adapters, and nothing else in it
/// trains (no base weight, bias or norm is a variable).
pub(super) fn fits(l: &Layer) -> bool {
    let linears = linears(l);
    let frozen = |t: &Tensor| !t.track_op();
    linears.iter().any(|p| p.lora.is_some())
        && linears
            .iter()
            .all(|p| frozen(&p.weight) && p.bias.as_ref().is_none_or(frozen))
        && frozen(&l.attn_norm)
        && frozen(&l.ffn_norm)
}

/// The layer's modules in the order their adapters' weights are packed: q, k, v, o, gate, up,
/// down (the order of [`LayerTrace`]'s groups), each adapter's `A` then `B`.
fn linears(l: &Layer) -> [&Linear; 7] {
    [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
}

/// Layer `li` on `x` ([`Pass::layer`]), differentiable in `x` and in the layer's adapters.
pub(super) fn layer(pass: &Pass, l: &Layer, li: usize, x: &Tensor) -> Result<Tensor, TrainError> {
    let (y, trace) = pass.layer(l, li, &x.detach(), true)?;
    let mut packed = Vec::new();
    for lora in linears(l).iter().filter_map(|p| p.lora.as_ref()) {
        packed.push(lora.a.as_tensor().flatten_all()?);
        packed.push(lora.b.as_tensor().flatten_all()?);
    }
    let op = LayerOp {
        y,
        trace,
        attn_norm: l.attn_norm.clone(),
        ffn_norm: l.ffn_norm.clone(),
        eps: pass.model.config.rms_norm_eps as f32,
        angles: pass.angles.clone(),
        shape: pass.shape(),
    };
    Ok(x.apply_op2(&Tensor::cat(&packed, 0)?, op)?)
}

/// The op: its output computed already, and what the backward reads.
struct LayerOp {
    y: Tensor,
    trace: LayerTrace,
    attn_norm: Tensor,
    ffn_norm: Tensor,
    eps: f32,
    angles: Tensor,
    shape: Attention,
}

impl CustomOp2 for LayerOp {
    fn name(&self) -> &'static str {
        "instill-adapted-layer"
    }

    fn cpu_fwd(
        &self,
        _x: &CpuStorage,
        _x_l: &Layout,
        _packed: &CpuStorage,
        _packed_l: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = self.y.flatten_all()?.to_vec1::<f32>()?;
        Ok((CpuStorage::F32(y), self.y.shape().clone()))
    }

    /// `g` back through down, SwiGLU, gate/up, the second norm (plus the residual), o, the
    /// attention, q/k/v and the first norm (plus the residual); `dx` only when `x` needs it.
    fn bwd(
        &self,
        x: &Tensor,
        _packed: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let t = &self.trace;
        let g = g.contiguous()?;
        let (dz, down) = adapters_backward(&t.down_proj, &g)?;
        let d_act = input_backward(&t.down_proj, &t.act, &g, dz.as_ref())?;
        let d_gate_up = ops::swiglu_backward(&t.gate_up, &d_act)?;
        let (dz, gate_up) = adapters_backward(&t.gate_up_proj, &d_gate_up)?;
        let d_h2 = input_backward(&t.gate_up_proj, &t.h2, &d_gate_up, dz.as_ref())?;
        let dx1 = (&g + ops::rms_norm_backward(&t.x1, &self.ffn_norm, &d_h2, self.eps)?)?;
        let (dz, o) = adapters_backward(&t.o_proj, &dx1)?;
        let d_att = input_backward(&t.o_proj, &t.att, &dx1, dz.as_ref())?;
        let d_qkv = ops::attention_backward(&t.qkv, &self.angles, &d_att, self.shape)?;
        let (dz, qkv) = adapters_backward(&t.qkv_proj, &d_qkv)?;
        let dx = if x.track_op() {
            let d_h1 = input_backward(&t.qkv_proj, &t.h1, &d_qkv, dz.as_ref())?;
            Some((&dx1 + ops::rms_norm_backward(x, &self.attn_norm, &d_h1, self.eps)?)?)
        } else {
            None
        };
        let grads: Vec<Tensor> = [qkv, o, gate_up, down].concat();
        Ok((dx, Some(Tensor::cat(&grads, 0)?)))
    }
}

/// Back through a projection group's adapters (`y_ad = z bᵀ`, `z = input' aᵀ`, input' the
/// dropped copies where drawn) from `g = dy`: `dz = g b`, and each adapter's `dA`, `dB`
/// flattened in module order: `dB_i = s_i g_iᵀ z_i` (a diagonal block of `gᵀ z`, `b`'s blocks
/// holding `s_i B_i`), `dA_i` a block of `dzᵀ input'`. `None` and no gradients without adapters.
fn adapters_backward(
    p: &Projection,
    g: &Tensor,
) -> candle_core::Result<(Option<Tensor>, Vec<Tensor>)> {
    let Some(ad) = &p.adapters else {
        return Ok((None, Vec::new()));
    };
    let dz = g.matmul(&ad.b)?;
    let d_b_all = g.t()?.matmul(&ad.hidden)?;
    let d_a_all = dz.t()?.matmul(&ad.input)?;
    let copies = ad.masks.as_ref().map_or(1, |m| m.len());
    let width = ad.input.dim(1)? / copies;
    let mut grads = Vec::with_capacity(2 * ad.parts.len());
    for (i, part) in ad.parts.iter().enumerate() {
        let rank = part.rank.len();
        let mut d_a = d_a_all.narrow(0, part.rank.start, rank)?;
        if ad.masks.is_some() {
            d_a = d_a.narrow(1, i * width, width)?;
        }
        let d_b =
            d_b_all
                .narrow(0, part.out.start, part.out.len())?
                .narrow(1, part.rank.start, rank)?;
        grads.push(d_a.flatten_all()?);
        grads.push((d_b.flatten_all()? * part.scale)?);
    }
    Ok((Some(dz), grads))
}

/// The gradient of a projection group's `input` from `g = dy`: `g W`, plus `dz a` (summed over
/// the copies under their masks) where adapters read it.
fn input_backward(
    p: &Projection,
    input: &Tensor,
    g: &Tensor,
    dz: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let base = g.matmul(&p.weight)?;
    let (Some(ad), Some(dz)) = (&p.adapters, dz) else {
        return Ok(base);
    };
    let through = dz.matmul(&ad.a)?;
    let through = match &ad.masks {
        Some(masks) => ops::dropout_copies_backward(input, &through, masks)?,
        None => through,
    };
    base + through
}
