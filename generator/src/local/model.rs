//! A Llama-family decoder (Llama, Mistral, Qwen2, SmolLM) for batched generation: one KV cache
//! per sequence, so prompts of any length share a decode step; weights from safetensors (dense)
//! or GGUF (quantized matmuls), its configuration `instill_models::Dims`.

use candle_core::quantized::QMatMul;
use candle_core::{D, DType, Device, Module, Tensor};
use instill_models::{Dims, QkLayout, Rope};

use super::LocalError;

/// A linear layer: quantized or dense weight, optional bias.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    /// A layer from its weight (`[out, in]`) and bias.
    pub fn new(weight: QMatMul, bias: Option<Tensor>) -> Linear {
        Linear { weight, bias }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = self.weight.forward(x)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// One decoder layer's weights.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Attention projections.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Output projection.
    pub o: Linear,
    /// MLP gate projection.
    pub gate: Linear,
    /// MLP up projection.
    pub up: Linear,
    /// MLP down projection.
    pub down: Linear,
    /// RMSNorm before attention.
    pub attn_norm: Tensor,
    /// RMSNorm before the MLP.
    pub ffn_norm: Tensor,
}

/// The model: embeddings, layers, final norm, LM head, RoPE tables.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: Dims,
    /// RoPE with the config's scaling; angles computed for the positions a step needs.
    rope: Rope,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    dtype: DType,
}

/// One sequence's keys and values, per layer, and how many positions they hold.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl KvCache {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Model {
    /// Assembles a model; `dtype` is the activations' type (the embedding's).
    pub fn new(
        cfg: Dims,
        embed: Tensor,
        layers: Vec<Layer>,
        norm: Tensor,
        lm_head: Linear,
    ) -> Result<Model, LocalError> {
        let dtype = embed.dtype();
        Ok(Model {
            rope: cfg.rope(),
            cfg,
            embed,
            layers,
            norm,
            lm_head,
            dtype,
        })
    }

    /// The network's configuration.
    pub fn config(&self) -> &Dims {
        &self.cfg
    }

    /// An empty cache for one sequence.
    pub fn new_cache(&self) -> KvCache {
        KvCache {
            layers: vec![None; self.layers.len()],
            len: 0,
        }
    }

    /// Appends `tokens[b]` to sequence `b` (whose cache is `caches[b]`) and returns each
    /// sequence's next-token logits, `[B, vocab]` in f32. Every sequence gets the same number of
    /// new tokens: one prompt at a time for prefill, one token each for a batched decode step.
    pub fn forward(
        &self,
        tokens: &[&[u32]],
        caches: &mut [&mut KvCache],
    ) -> Result<Tensor, LocalError> {
        let b = tokens.len();
        let t = tokens.first().map_or(0, |s| s.len());
        if b == 0 || t == 0 || caches.len() != b || tokens.iter().any(|s| s.len() != t) {
            return Err(LocalError::Internal(
                "forward needs one cache per sequence and equal token counts".into(),
            ));
        }
        // Mistral attends over a sliding window; within it that is full attention, so the
        // context is capped at the window rather than approximated beyond it.
        let limit = self.cfg.context();
        if let Some(c) = caches.iter().find(|c| c.len + t > limit) {
            return Err(LocalError::ContextLength {
                needed: c.len + t,
                limit,
            });
        }
        let device = self.embed.device();
        let ids: Vec<u32> = tokens.iter().flat_map(|s| s.iter().copied()).collect();
        let ids = Tensor::from_vec(ids, (b * t,), device)?;
        let hidden = self.cfg.hidden_size;
        let mut x = self.embed.index_select(&ids, 0)?.reshape((b, t, hidden))?;
        let eps = self.cfg.rms_norm_eps as f32;
        // RoPE's (cos, sin) for each sequence's new positions only, never a table as long as
        // the (untrusted) context length.
        let angles = caches
            .iter()
            .map(|c| self.rope.cos_sin(c.len, t, device, self.dtype))
            .collect::<candle_core::Result<Vec<_>>>()?;
        for (li, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let y = self.attention(li, layer, &h, caches, &angles)?;
            x = (x + layer.o.forward(&y)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&layer.gate.forward(&h)?)?;
            x = (x + layer.down.forward(&(gate * layer.up.forward(&h)?)?)?)?;
        }
        for c in caches.iter_mut() {
            c.len += t;
        }
        let x = candle_nn::ops::rms_norm(&x.narrow(1, t - 1, 1)?.contiguous()?, &self.norm, eps)?;
        Ok(self.lm_head.forward(&x)?.squeeze(1)?.to_dtype(DType::F32)?)
    }

    /// Self-attention of layer `li` for every sequence, each against its own cache.
    fn attention(
        &self,
        li: usize,
        layer: &Layer,
        h: &Tensor,
        caches: &mut [&mut KvCache],
        angles: &[(Tensor, Tensor)],
    ) -> Result<Tensor, LocalError> {
        let (b, t, _) = h.dims3()?;
        let (nh, nkv, hd) = (self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim);
        let heads = |x: Tensor, n: usize| x.reshape((b, t, n, hd))?.transpose(1, 2);
        let q = heads(layer.q.forward(h)?, nh)?;
        let k = heads(layer.k.forward(h)?, nkv)?;
        let v = heads(layer.v.forward(h)?, nkv)?;
        let scale = 1.0 / (hd as f64).sqrt();
        let mut outs = Vec::with_capacity(b);
        for (i, cache) in caches.iter_mut().enumerate() {
            let pos = cache.len;
            let (cos, sin) = &angles[i];
            let qi = self.rope(&q.narrow(0, i, 1)?.contiguous()?, cos, sin)?;
            let ki = self.rope(&k.narrow(0, i, 1)?.contiguous()?, cos, sin)?;
            let vi = v.narrow(0, i, 1)?.contiguous()?;
            let (ki, vi) = match cache.layers[li].take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &ki], 2)?, Tensor::cat(&[&pv, &vi], 2)?),
                None => (ki, vi),
            };
            cache.layers[li] = Some((ki.clone(), vi.clone()));
            let ki = candle_transformers::utils::repeat_kv(ki, nh / nkv)?;
            let vi = candle_transformers::utils::repeat_kv(vi, nh / nkv)?.contiguous()?;
            let mut att = (qi.matmul(&ki.t()?)? * scale)?.to_dtype(DType::F32)?;
            if t > 1 {
                att = att.broadcast_add(&causal_mask(t, pos, att.device())?)?;
            }
            let att = candle_nn::ops::softmax_last_dim(&att)?.to_dtype(self.dtype)?;
            outs.push(att.matmul(&vi)?);
        }
        let y = Tensor::cat(&outs, 0)?;
        Ok(y.transpose(1, 2)?.reshape((b, t, nh * hd))?)
    }

    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        if self.cfg.qk_layout == QkLayout::Interleaved {
            candle_nn::rotary_emb::rope_i(x, cos, sin)
        } else {
            candle_nn::rotary_emb::rope(x, cos, sin)
        }
    }
}

/// `[t, pos + t]`: 0 where row `r` may attend (columns up to `pos + r`), −∞ elsewhere.
fn causal_mask(t: usize, pos: usize, device: &Device) -> candle_core::Result<Tensor> {
    let width = pos + t;
    let mask: Vec<f32> = (0..t)
        .flat_map(|r| (0..width).map(move |c| if c > pos + r { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (t, width), device)
}

/// Index of the largest logit of a `[vocab]` row.
pub fn argmax(logits: &Tensor) -> Result<u32, LocalError> {
    Ok(logits.argmax(D::Minus1)?.to_scalar::<u32>()?)
}
