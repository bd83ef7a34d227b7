//! The frozen model's fast pass, for scoring: the same decoder as [`Model::forward`] without
//! what only training needs. q, k and v are one matrix and gate and up another (one matmul each,
//! on `[B·T, hidden]` rows rather than a batch of `[T, hidden]` ones); RMSNorm, RoPE and the
//! attention softmax are candle's fused kernels (they have no backward pass, which scoring does
//! not need); and the LM head and log-softmax run only at the positions whose next token is
//! counted, instead of over every position × the whole vocabulary.
//!
//! The loss is the trainer's masked NLL ([`crate::masked_nll_rows`]) computed on fewer rows: the
//! same sum of the same log-probabilities, checked against transformers by
//! `tests/score_metric.rs`.

use candle_core::{D, DType, Tensor};

use crate::TrainError;
use crate::fused_pass::Counted;
use crate::model::{Layer, Linear, Model, masked_nll_rows, repeat_kv, sequence_logps};

/// A frozen layer's fused projections. The layer's own q/k/v and gate/up weights become views
/// into these (no copy is kept twice).
#[derive(Debug, Clone)]
pub(crate) struct Fused {
    /// `[q + k + v, hidden]`.
    pub(crate) qkv: Tensor,
    /// `[q + k + v]`, when the model has attention biases (Qwen2).
    qkv_bias: Option<Tensor>,
    /// `[2 · intermediate, hidden]`: gate's rows, then up's.
    pub(crate) gate_up: Tensor,
}

impl Fused {
    /// Fuses `layer`'s projections and points its linear modules at the fused weights.
    pub(crate) fn new(layer: &mut Layer) -> Result<Fused, TrainError> {
        let qkv = Tensor::cat(&[&layer.q.weight, &layer.k.weight, &layer.v.weight], 0)?;
        let biases = [&layer.q.bias, &layer.k.bias, &layer.v.bias];
        let qkv_bias = match biases {
            [Some(q), Some(k), Some(v)] => Some(Tensor::cat(&[q, k, v], 0)?),
            [None, None, None] => None,
            _ => {
                return Err(TrainError::Config(
                    "q, k and v must all have a bias or none".into(),
                ));
            }
        };
        let gate_up = Tensor::cat(&[&layer.gate.weight, &layer.up.weight], 0)?;
        let mut start = 0;
        for lin in [&mut layer.q, &mut layer.k, &mut layer.v] {
            let rows = lin.weight.dim(0)?;
            lin.weight = qkv.narrow(0, start, rows)?;
            if let Some(b) = &qkv_bias {
                lin.bias = Some(b.narrow(0, start, rows)?);
            }
            start += rows;
        }
        let inter = layer.gate.weight.dim(0)?;
        layer.gate.weight = gate_up.narrow(0, 0, inter)?;
        layer.up.weight = gate_up.narrow(0, inter, inter)?;
        Ok(Fused {
            qkv,
            qkv_bias,
            gate_up,
        })
    }
}

impl Model {
    /// Each row's mean NLL over its counted tokens (`[B]` values; 0 for a row that counts none):
    /// [`masked_nll_rows`] of [`Model::forward`]'s logits, computed by the fast pass when the
    /// model is [`Model::frozen`]. `ids [B, T]` right-padded, `weights [B, T]` as for
    /// [`crate::masked_nll`].
    pub fn answer_nll_rows(&self, ids: &Tensor, weights: &Tensor) -> Result<Vec<f32>, TrainError> {
        if !self.is_frozen() {
            let logits = self.forward(ids, None)?;
            return Ok(masked_nll_rows(&logits, ids, weights)?.to_vec1::<f32>()?);
        }
        let (sums, counts) = self.counted_logps(ids, weights)?;
        Ok(sums
            .iter()
            .zip(&counts)
            .map(|(s, c)| (-s / c.max(1.0)) as f32)
            .collect())
    }

    /// Each row's sequence log-probability (`[B]` values, the sum over its counted tokens; 0 for
    /// a row that counts none): [`sequence_logps`] of [`Model::forward`]'s logits, by the fast
    /// pass when the model is [`Model::frozen`] (DPO's reference in full fine-tuning).
    pub fn answer_logps(&self, ids: &Tensor, weights: &Tensor) -> Result<Vec<f64>, TrainError> {
        if !self.is_frozen() {
            let logits = self.forward(ids, None)?;
            let sums = sequence_logps(&logits, ids, weights)?.to_vec1::<f32>()?;
            return Ok(sums.into_iter().map(f64::from).collect());
        }
        Ok(self.counted_logps(ids, weights)?.0)
    }

    /// Whether this is a [`Model::frozen`] model: nothing trains, every layer's projections
    /// fused (a LoRA model's base is fused too, but its adapters train).
    pub(crate) fn is_frozen(&self) -> bool {
        self.trainable.is_empty() && self.layers.iter().all(|l| l.fused.is_some())
    }

    /// The fast pass: per row, the weighted sum of its counted tokens' log-probabilities and the
    /// sum of their weights.
    fn counted_logps(
        &self,
        ids: &Tensor,
        weights: &Tensor,
    ) -> Result<(Vec<f64>, Vec<f64>), TrainError> {
        let (b, _) = ids.dims2()?;
        let Counted {
            at,
            targets,
            weights: counted_weights,
            rows: counted_rows,
        } = Counted::of(ids, weights)?;
        let mut sums = vec![0f64; b];
        let mut counts = vec![0f64; b];
        if !at.is_empty() {
            let hidden = self.hidden(ids)?;
            let n = at.len();
            let rows = hidden.index_select(&Tensor::from_vec(at, n, ids.device())?, 0)?;
            let logits = rows
                .matmul(&self.lm_head.weight.t()?)?
                .to_dtype(DType::F32)?;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            let targets = Tensor::from_vec(targets, (n, 1), ids.device())?;
            let picked = logp.gather(&targets, 1)?.squeeze(1)?.to_vec1::<f32>()?;
            for ((r, w), lp) in counted_rows.into_iter().zip(counted_weights).zip(picked) {
                sums[r] += f64::from(w) * f64::from(lp);
                counts[r] += f64::from(w);
            }
        }
        Ok((sums, counts))
    }

    /// The final hidden states `[B·T, hidden]` (after the last norm) of right-padded `ids`.
    fn hidden(&self, ids: &Tensor) -> Result<Tensor, TrainError> {
        let (b, t) = ids.dims2()?;
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let (nh, nkv, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?;
        let (cos, sin) = self.rope().cos_sin(0, t, ids.device(), self.dtype)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|r| (0..t).map(move |col| if col > r { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), ids.device())?;
        let heads = |y: Tensor, n: usize| -> Result<Tensor, TrainError> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let scale = 1.0 / (hd as f64).sqrt();
        for l in &self.layers {
            let Some(f) = &l.fused else {
                return Err(TrainError::Config("the model is not frozen".into()));
            };
            let h = rms_norm(&x, &l.attn_norm, eps)?;
            let mut qkv = h.matmul(&f.qkv.t()?)?;
            if let Some(bias) = &f.qkv_bias {
                qkv = qkv.broadcast_add(bias)?;
            }
            let q = heads(qkv.narrow(1, 0, nh * hd)?, nh)?;
            let k = heads(qkv.narrow(1, nh * hd, nkv * hd)?, nkv)?;
            let v = heads(qkv.narrow(1, (nh + nkv) * hd, nkv * hd)?, nkv)?;
            let q = candle_nn::rotary_emb::rope(&q, &cos, &sin)?;
            let k = repeat_kv(&candle_nn::rotary_emb::rope(&k, &cos, &sin)?, nh / nkv)?;
            let v = repeat_kv(&v, nh / nkv)?;
            let att = (q.matmul(&k.t()?)? * scale)?
                .to_dtype(DType::F32)?
                .broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?.to_dtype(self.dtype)?;
            let y = att.matmul(&v)?.transpose(1, 2)?.reshape((b * t, nh * hd))?;
            x = (x + linear(&y, &l.o)?)?;
            let h = rms_norm(&x, &l.ffn_norm, eps)?;
            let gate_up = h.matmul(&f.gate_up.t()?)?;
            let inter = gate_up.dim(1)? / 2;
            let act = (candle_nn::ops::silu(&gate_up.narrow(1, 0, inter)?)?
                * gate_up.narrow(1, inter, inter)?)?;
            x = (x + linear(&act, &l.down)?)?;
        }
        rms_norm(&x, &self.norm, eps)
    }
}

/// `x Wᵀ (+ b)` on `[rows, in]` activations (a frozen module: no adapter).
fn linear(x: &Tensor, lin: &Linear) -> Result<Tensor, TrainError> {
    let y = x.matmul(&lin.weight.t()?)?;
    Ok(match &lin.bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// candle's fused RMSNorm, computed in f32 whatever the activations' type (as training's).
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor, TrainError> {
    let y = candle_nn::ops::rms_norm(
        &x.to_dtype(DType::F32)?.contiguous()?,
        &weight.to_dtype(DType::F32)?,
        eps,
    )?;
    Ok(y.to_dtype(x.dtype())?)
}
