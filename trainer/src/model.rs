//! The trainable Llama-family model (Llama, Mistral, Qwen2): every linear layer can carry a LoRA
//! adapter; weights are plain tensors (frozen) or variables (trained). Differentiable ops only.

use std::collections::HashMap;

use candle_core::{D, DType, Device, Tensor, Var};
use instill_models::names::{LINEAR_MODULES, LINEAR_NAMES, Module, Part, WHOLE_NAMES};
use instill_models::{Dims, QkLayout, Rope};

use crate::TrainError;
use crate::frozen::Fused;
use crate::lora::{Lora, LoraConfig};

/// A linear layer `y = x Wᵀ (+ b) (+ scale · dropout(x) Aᵀ Bᵀ)`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`.
    pub weight: Tensor,
    /// `[out]`.
    pub bias: Option<Tensor>,
    /// The adapter, when this module is a LoRA target.
    pub lora: Option<Lora>,
}

impl Linear {
    /// `adapters: false` leaves the adapter out: the base layer alone.
    fn forward(
        &self,
        x: &Tensor,
        dropout_seed: Option<u64>,
        adapters: bool,
    ) -> Result<Tensor, TrainError> {
        // A trained f32 weight (modules_to_save) may meet bf16 activations: compute in its type.
        let mut y = x
            .to_dtype(self.weight.dtype())?
            .broadcast_matmul(&self.weight.t()?)?
            .to_dtype(x.dtype())?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.to_dtype(y.dtype())?)?;
        }
        if let Some(lora) = self.lora.as_ref().filter(|_| adapters) {
            y = (y + lora.forward(x, dropout_seed)?)?;
        }
        Ok(y)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Layer {
    pub(crate) q: Linear,
    pub(crate) k: Linear,
    pub(crate) v: Linear,
    pub(crate) o: Linear,
    pub(crate) gate: Linear,
    pub(crate) up: Linear,
    pub(crate) down: Linear,
    pub(crate) attn_norm: Tensor,
    pub(crate) ffn_norm: Tensor,
    /// A frozen model's fused projections (q, k and v share one matrix; gate and up another).
    pub(crate) fused: Option<Fused>,
}

/// The model plus the variables an optimizer updates.
#[derive(Debug)]
pub struct Model {
    /// Its configuration.
    pub config: Dims,
    pub(crate) embed: Tensor,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Tensor,
    pub(crate) lm_head: Linear,
    /// RoPE with the config's scaling; angles computed for the positions a forward pass needs.
    rope: Rope,
    pub(crate) dtype: DType,
    /// What training updates, by the name it is saved under (Hugging Face names for full
    /// fine-tuning, PEFT names for LoRA).
    pub trainable: Vec<(String, Var)>,
}

/// The linear modules of a layer by their short names (`q_proj`, …): what LoRA can target.
pub const MODULES: [&str; 7] = LINEAR_NAMES;

/// Modules LoRA may train in full beside the adapters (PEFT's `modules_to_save`).
pub const WHOLE_MODULES: [&str; 2] = WHOLE_NAMES;

/// Refuses a LoRA configuration that would adapt nothing it names: a rank of 0, or a target
/// module or module to save that no layer of the model has (naming it and the ones there are).
pub fn check_lora(cfg: &LoraConfig) -> Result<(), TrainError> {
    if cfg.r == 0 {
        return Err(TrainError::Config(
            "LoRA rank 0: it must be at least 1".into(),
        ));
    }
    let unknown = |names: &[String], known: &[&str], what: &str| match names
        .iter()
        .find(|m| !known.contains(&m.as_str()))
    {
        Some(m) => Err(TrainError::Config(format!(
            "LoRA {what} `{m}` matches no layer of the model; it has {}",
            known.join(", ")
        ))),
        None => Ok(()),
    };
    unknown(&cfg.target_modules, &MODULES, "target module")?;
    unknown(&cfg.modules_to_save, &WHOLE_MODULES, "module to save")
}

impl Model {
    /// RoPE as this model rotates (the config's base and scaling).
    pub fn rope(&self) -> &Rope {
        &self.rope
    }

    /// Builds the model from Hugging Face-named weights in f32. `lora: None` trains every
    /// weight; `Some` freezes them and adds adapters (initialised from `seed`) to its target
    /// modules.
    pub fn new(
        config: Dims,
        weights: &HashMap<String, Tensor>,
        lora: Option<&LoraConfig>,
        seed: u64,
        device: &Device,
    ) -> Result<Model, TrainError> {
        Model::with_dtype(config, weights, lora, seed, DType::F32, device)
    }

    /// As [`Model::new`], with the frozen base weights and the activations in `dtype` (bf16
    /// halves the memory of a LoRA run). What trains — adapters, modules_to_save, or every weight
    /// of a full fine-tune — stays f32, and so do norms, softmax and the loss.
    pub fn with_dtype(
        config: Dims,
        weights: &HashMap<String, Tensor>,
        lora: Option<&LoraConfig>,
        seed: u64,
        dtype: DType,
        device: &Device,
    ) -> Result<Model, TrainError> {
        if let Some(cfg) = lora {
            check_lora(cfg)?;
        }
        if lora.is_none() && dtype != DType::F32 {
            return Err(TrainError::FullInLowPrecision);
        }
        // A scaling the outputs' config.json cannot carry (llama.cpp's per-frequency factors)
        // would train a model that reloads with other RoPE: refused, naming the tensor.
        if let Some(scaling) = &config.rope_scaling {
            scaling.to_config(&config.path)?;
        }
        let b = Builder {
            weights,
            lora,
            frozen: false,
            seed,
            dtype,
            device,
            trainable: Vec::new(),
            whole: Vec::new(),
            adapters: Vec::new(),
        };
        b.build(config)
    }

    /// The model for inference only (scoring): every weight a plain tensor in `dtype`, nothing
    /// trainable, so no gradient graph is kept and each layer's activations are freed as the
    /// next one runs; q/k/v and gate/up are fused for [`Model::answer_nll_rows`]'s fast pass.
    /// Any RoPE scaling the decoders implement is accepted (nothing is saved).
    pub fn frozen(
        config: Dims,
        weights: &HashMap<String, Tensor>,
        dtype: DType,
        device: &Device,
    ) -> Result<Model, TrainError> {
        let b = Builder {
            weights,
            lora: None,
            frozen: true,
            seed: 0,
            dtype,
            device,
            trainable: Vec::new(),
            whole: Vec::new(),
            adapters: Vec::new(),
        };
        b.build(config)
    }
}

impl Builder<'_> {
    /// Takes every weight `config` names into a model.
    fn build(mut self, config: Dims) -> Result<Model, TrainError> {
        if config.qk_layout != QkLayout::Halves {
            return Err(TrainError::Config(
                "the query/key rows are in llama.cpp's order: load the weights with Weights::dense_all".into(),
            ));
        }
        let (weights, lora, dtype) = (self.weights, self.lora, self.dtype);
        // LoRA's modules_to_save: trained in full, saved under PEFT's names.
        let saved_whole =
            |part: Part| lora.is_some_and(|l| l.modules_to_save.iter().any(|m| m == part.short()));
        if saved_whole(Part::LmHead)
            && (config.tie_word_embeddings || !weights.contains_key(&Part::LmHead.weight()))
        {
            return Err(TrainError::TiedLmHead);
        }
        let embed = if saved_whole(Part::Embed) {
            self.take_whole(Part::Embed)?
        } else {
            self.take(&Part::Embed.weight())?
        };
        let lm_head_whole = if saved_whole(Part::LmHead) {
            Some(self.take_whole(Part::LmHead)?)
        } else {
            None
        };
        let layers = (0..config.num_layers)
            .map(|i| self.layer(i))
            .collect::<Result<Vec<_>, _>>()?;
        let norm = self.take(&Part::Norm.weight())?;
        let head = |weight| Linear {
            weight,
            bias: None,
            lora: None,
        };
        let lm_head = if let Some(weight) = lm_head_whole {
            head(weight)
        } else if !config.tie_word_embeddings && weights.contains_key(&Part::LmHead.weight()) {
            head(self.take(&Part::LmHead.weight())?)
        } else {
            head(embed.clone())
        };
        let trainable = self.trainable_vars();
        Ok(Model {
            rope: config.rope(),
            dtype,
            config,
            embed,
            layers,
            norm,
            lm_head,
            trainable,
        })
    }
}

impl Model {
    /// Logits `[B, T, vocab]` of right-padded token ids `[B, T]` (padding comes after every real
    /// token, so the causal mask alone keeps it out of their attention). `dropout_seed` turns
    /// adapter dropout on (training).
    pub fn forward(&self, ids: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor, TrainError> {
        self.pass(ids, dropout_seed, true)
    }

    /// [`Model::forward`] with every adapter switched off: the base model's logits, from the
    /// same weights (no copy), no gradient recorded through the frozen base. This is DPO's
    /// reference model under LoRA. Modules trained in full (`modules_to_save`) are not adapters
    /// and keep their trained values, so [`Model::adapters_only`] says whether this is the base.
    pub fn forward_base(&self, ids: &Tensor) -> Result<Tensor, TrainError> {
        Ok(self.pass(ids, None, false)?.detach())
    }

    /// Whether what trains is LoRA adapters and nothing else, so that [`Model::forward_base`]
    /// computes the base model exactly.
    pub fn adapters_only(&self) -> bool {
        !self.trainable.is_empty()
            && self
                .trainable
                .iter()
                .all(|(n, _)| n.ends_with(".lora_A.weight") || n.ends_with(".lora_B.weight"))
    }

    fn pass(
        &self,
        ids: &Tensor,
        dropout_seed: Option<u64>,
        adapters: bool,
    ) -> Result<Tensor, TrainError> {
        let (b, t) = ids.dims2()?;
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, c.hidden_size))?;
        // RoPE for positions 0..t, scaled as the config says; made per pass (t × head_dim/2
        // angles), so no fixed limit on the sequence length and no table sized by the config.
        let (cos, sin) = self.rope.cos_sin(0, t, ids.device(), self.dtype)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|r| (0..t).map(move |col| if col > r { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), ids.device())?;
        let seed = |layer: usize, module: u64| layer_seed(dropout_seed, layer, module);
        for (li, l) in self.layers.iter().enumerate() {
            let h = norm(&x, &l.attn_norm, eps)?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor, TrainError> {
                Ok(y.reshape((b, t, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = heads(l.q.forward(&h, seed(li, 1), adapters)?, c.num_heads)?;
            let k = heads(l.k.forward(&h, seed(li, 2), adapters)?, c.num_kv_heads)?;
            let v = heads(l.v.forward(&h, seed(li, 3), adapters)?, c.num_kv_heads)?;
            let q = candle_nn::rotary_emb::rope_slow(&q, &cos, &sin)?;
            let k = candle_nn::rotary_emb::rope_slow(&k, &cos, &sin)?;
            let rep = c.num_heads / c.num_kv_heads;
            let k = repeat_kv(&k, rep)?;
            let v = repeat_kv(&v, rep)?;
            let att = (q.matmul(&k.t()?)? / (c.head_dim as f64).sqrt())?
                .to_dtype(DType::F32)?
                .broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax(&att, D::Minus1)?.to_dtype(self.dtype)?;
            let y = att
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, t, c.num_heads * c.head_dim))?;
            x = (x + l.o.forward(&y, seed(li, 4), adapters)?)?;
            let h = norm(&x, &l.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&l.gate.forward(&h, seed(li, 5), adapters)?)?;
            let up = l.up.forward(&h, seed(li, 6), adapters)?;
            x = (x + l.down.forward(&(gate * up)?, seed(li, 7), adapters)?)?;
        }
        let x = norm(&x, &self.norm, eps)?;
        Ok(self
            .lm_head
            .forward(&x, None, adapters)?
            .to_dtype(DType::F32)?)
    }

    /// The current value of every weight under its Hugging Face name, adapters merged in
    /// (`W + scale·B·A`): the full model to save after training.
    pub fn merged_weights(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        self.weights(true)
    }

    /// The base weights, adapters left out (after LoRA training: exactly what was loaded).
    pub fn base_weights(&self) -> Result<HashMap<String, Tensor>, TrainError> {
        self.weights(false)
    }

    fn weights(&self, with_adapters: bool) -> Result<HashMap<String, Tensor>, TrainError> {
        let mut out = HashMap::new();
        out.insert(Part::Embed.weight(), self.embed.detach());
        for (i, l) in self.layers.iter().enumerate() {
            for (module, lin) in LINEAR_MODULES
                .iter()
                .zip([&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            {
                let part = Part::Layer(i, *module);
                let w = match &lin.lora {
                    Some(lora) if with_adapters => {
                        (lin.weight.detach().to_dtype(DType::F32)? + lora.delta()?)?
                    }
                    _ => lin.weight.detach(),
                };
                out.insert(part.weight(), w);
                if let Some(b) = &lin.bias {
                    out.insert(part.bias(), b.detach());
                }
            }
            out.insert(
                Part::Layer(i, Module::AttnNorm).weight(),
                l.attn_norm.detach(),
            );
            out.insert(
                Part::Layer(i, Module::FfnNorm).weight(),
                l.ffn_norm.detach(),
            );
        }
        out.insert(Part::Norm.weight(), self.norm.detach());
        if !self.config.tie_word_embeddings {
            out.insert(Part::LmHead.weight(), self.lm_head.weight.detach());
        }
        Ok(out)
    }
}

/// What [`Model::with_dtype`] gathers while it takes the weights: the trainable variables in
/// the order they are saved.
struct Builder<'a> {
    weights: &'a HashMap<String, Tensor>,
    lora: Option<&'a LoraConfig>,
    /// Inference only: no weight becomes a variable.
    frozen: bool,
    seed: u64,
    dtype: DType,
    device: &'a Device,
    /// Base weights trained in full (no LoRA), by Hugging Face name.
    trainable: Vec<(String, Var)>,
    /// LoRA's modules_to_save, by PEFT name.
    whole: Vec<(String, Var)>,
    /// Adapters, by the Hugging Face name of their module.
    adapters: Vec<(String, Lora)>,
}

impl Builder<'_> {
    fn get(&self, name: &str) -> Result<&Tensor, TrainError> {
        self.weights
            .get(name)
            .ok_or_else(|| TrainError::Config(format!("tensor {name} is missing from the model")))
    }

    /// A base weight in the model's dtype: a variable for full fine-tuning, frozen under LoRA.
    fn take(&mut self, name: &str) -> Result<Tensor, TrainError> {
        let t = self.get(name)?.to_dtype(self.dtype)?;
        if self.lora.is_some() || self.frozen {
            return Ok(t.detach());
        }
        let var = Var::from_tensor(&t)?;
        let tensor = var.as_tensor().clone();
        self.trainable.push((name.to_string(), var));
        Ok(tensor)
    }

    /// A module LoRA trains in full (f32), saved under PEFT's name.
    fn take_whole(&mut self, part: Part) -> Result<Tensor, TrainError> {
        let t = self.get(&part.weight())?.to_dtype(DType::F32)?;
        let var = Var::from_tensor(&t)?;
        let tensor = var.as_tensor().clone();
        self.whole
            .push((format!("base_model.model.{}", part.weight()), var));
        Ok(tensor)
    }

    /// A linear module of layer `i`, with an adapter when LoRA targets it.
    fn linear(&mut self, i: usize, module: Module) -> Result<Linear, TrainError> {
        let part = Part::Layer(i, module);
        let name = part.hf();
        let weight = self.take(&part.weight())?;
        let bias = if self.weights.contains_key(&part.bias()) {
            Some(self.take(&part.bias())?)
        } else {
            None
        };
        let lora = match self.lora {
            Some(cfg) if cfg.target_modules.iter().any(|m| m == module.short()) => {
                let (out_dim, in_dim) = weight.dims2()?;
                let seed = self.seed ^ xxhash(&name);
                let adapter = Lora::new(cfg, &name, in_dim, out_dim, seed, self.device)?;
                self.adapters.push((name, adapter.clone()));
                Some(adapter)
            }
            _ => None,
        };
        Ok(Linear { weight, bias, lora })
    }

    fn layer(&mut self, i: usize) -> Result<Layer, TrainError> {
        let mut layer = Layer {
            q: self.linear(i, Module::Q)?,
            k: self.linear(i, Module::K)?,
            v: self.linear(i, Module::V)?,
            o: self.linear(i, Module::O)?,
            gate: self.linear(i, Module::Gate)?,
            up: self.linear(i, Module::Up)?,
            down: self.linear(i, Module::Down)?,
            attn_norm: self.take(&Part::Layer(i, Module::AttnNorm).weight())?,
            ffn_norm: self.take(&Part::Layer(i, Module::FfnNorm).weight())?,
            fused: None,
        };
        // A frozen base (scoring, or LoRA's in f32 on the CPU: the fused training pass) joins
        // q/k/v and gate/up once.
        let lora_fused = self.lora.is_some() && self.dtype == DType::F32 && self.device.is_cpu();
        if self.frozen || lora_fused {
            layer.fused = Some(Fused::new(&mut layer)?);
        }
        Ok(layer)
    }

    /// Every trainable variable in save order: base weights, modules_to_save, adapters.
    fn trainable_vars(self) -> Vec<(String, Var)> {
        let mut out = self.trainable;
        out.extend(self.whole);
        for (name, adapter) in self.adapters {
            out.push((format!("base_model.model.{name}.lora_A.weight"), adapter.a));
            out.push((format!("base_model.model.{name}.lora_B.weight"), adapter.b));
        }
        out
    }
}

/// The dropout seed of module `module` (1 q … 7 down) of layer `layer`: every pass draws a
/// module's mask from it.
pub(crate) fn layer_seed(seed: Option<u64>, layer: usize, module: u64) -> Option<u64> {
    seed.map(|s| s ^ ((layer as u64) << 8 | module))
}

/// RMSNorm computed in f32 whatever the activations' type.
fn norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor, TrainError> {
    let y = candle_nn::ops::rms_norm_slow(
        &x.to_dtype(DType::F32)?,
        &weight.to_dtype(DType::F32)?,
        eps,
    )?;
    Ok(y.to_dtype(x.dtype())?)
}

/// Repeats each key/value head `n` times (grouped-query attention): `[B, kv, T, D]` →
/// `[B, kv·n, T, D]`.
pub(crate) fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor, TrainError> {
    if n == 1 {
        return Ok(x.clone());
    }
    let (b, kv, t, d) = x.dims4()?;
    Ok(x.unsqueeze(2)?
        .broadcast_as((b, kv, n, t, d))?
        .reshape((b, kv * n, t, d))?)
}

fn xxhash(s: &str) -> u64 {
    // FNV-1a: a stable per-module seed, no dependency needed.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The log-probability each position gives the token after it, and the weight that counts it:
/// `logits [B, T, V]`, `ids [B, T]`, `weights [B, T]` (1 where the token at t+1 is a response
/// token, 0 elsewhere) in, both `[B·(T−1)]` out. The one next-token alignment both losses use.
fn next_token_logp(
    logits: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
) -> Result<(Tensor, Tensor), TrainError> {
    let (b, t, v) = logits.dims3()?;
    if t < 2 {
        return Err(TrainError::Data(
            "sequences need at least two tokens".into(),
        ));
    }
    let logp = candle_nn::ops::log_softmax(
        &logits.narrow(1, 0, t - 1)?.reshape((b * (t - 1), v))?,
        D::Minus1,
    )?;
    let targets = ids.narrow(1, 1, t - 1)?.reshape((b * (t - 1), 1))?;
    let picked = logp.gather(&targets.contiguous()?, 1)?.squeeze(1)?;
    let w = weights.narrow(1, 0, t - 1)?.reshape(b * (t - 1))?;
    Ok((picked, w))
}

/// Masked next-token NLL: `logits [B, T, V]`, `ids [B, T]`, `weights [B, T]` (1 where the token
/// at t+1 is a response token to learn, 0 elsewhere). Returns the mean over counted tokens.
pub fn masked_nll(logits: &Tensor, ids: &Tensor, weights: &Tensor) -> Result<Tensor, TrainError> {
    let (picked, w) = next_token_logp(logits, ids, weights)?;
    let count = w.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok(((picked * w)?.sum_all()? * (-1.0 / f64::from(count)))?)
}

/// Each row's sequence log-probability: the sum of the log-probabilities of its counted tokens
/// (`[B]`; 0 for a row that counts none), with `logits`, `ids` and `weights` as for
/// [`masked_nll`]. DPO's `log π(response | prompt)`; differentiable.
pub fn sequence_logps(
    logits: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
) -> Result<Tensor, TrainError> {
    let (b, _) = ids.dims2()?;
    let (picked, w) = next_token_logp(logits, ids, weights)?;
    Ok((picked * w)?.reshape((b, ()))?.sum(1)?)
}

/// [`masked_nll`] of each row on its own: `[B]`, row `i` the mean NLL over its counted tokens
/// (0 for a row that counts none). The per-sample loss that scoring (perplexity, IFD) reads.
pub fn masked_nll_rows(
    logits: &Tensor,
    ids: &Tensor,
    weights: &Tensor,
) -> Result<Tensor, TrainError> {
    let (_, t) = ids.dims2()?;
    let sums = sequence_logps(logits, ids, weights)?;
    let counts = weights
        .narrow(1, 0, t.saturating_sub(1))?
        .sum(1)?
        .clamp(1f32, f32::MAX)?;
    Ok((sums.neg()? / counts)?)
}
