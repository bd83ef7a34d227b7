//! Fused CPU kernels for the training pass, each with a hand-written backward pass (candle
//! 0.11's fused RMSNorm, RoPE and softmax have none, and its matmul backward also computes the
//! gradient of a frozen weight): a linear layer that computes a weight's gradient only when the
//! weight trains, RMSNorm, a layer's causal self-attention (RoPE, grouped-query heads,
//! softmax and the weighted values in one op), SwiGLU, the log-probability of each row's target token (cross-entropy whose
//! backward writes `softmax − one-hot` without a log-softmax graph), and the adapters' dropped
//! copies of one input side by side. Their exponentials and row sums run vectorised for the
//! CPU at hand ([`simd`]).
//!
//! f32 on the CPU only: [`crate::model::Model`] runs its composed (differentiable candle ops)
//! pass elsewhere; `ops/tests.rs` holds each kernel's values and gradients to the composed
//! forms within 1e-5.

mod attention;
mod copies;
mod heads;
mod linear;
mod norm;
mod simd;
mod swiglu;
#[cfg(test)]
mod tests;
mod xent;

pub(crate) use attention::{Attention, attention, attention_backward};
pub(crate) use copies::{Masks, dropout_copies, dropout_copies_backward, fill_mask};
pub(crate) use linear::linear;
pub(crate) use norm::{rms_norm, rms_norm_backward};
pub(crate) use swiglu::{swiglu, swiglu_backward};
pub(crate) use xent::target_logp;

use candle_core::{CpuStorage, Layout, Result, bail};

/// The f32 values of a contiguous CPU tensor, `what` naming it in the error otherwise.
fn values<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        bail!("{what}: the fused training kernels take f32 only")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what}: the fused training kernels take contiguous tensors only"),
    }
}

/// The last dimension of `layout` and the number of rows before it.
fn rows_cols(layout: &Layout) -> (usize, usize) {
    let cols = layout.dims().last().copied().unwrap_or(1);
    (layout.shape().elem_count() / cols.max(1), cols)
}
