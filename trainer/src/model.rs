//! The trainable Llama-family model (Llama, Mistral, Qwen2): every linear layer can carry a LoRA
//! adapter; weights are plain tensors (frozen) or variables (trained). Differentiable ops only.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use instill_models::{Dims, Rope};
use serde_json::Value;

use crate::TrainError;
use crate::lora::{Lora, LoraConfig};

/// The network's shape, from a Hugging Face `config.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `llama`, `mistral` or `qwen2`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Size of one head.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE: base, scaling, frequencies (from `instill-models`).
    pub rope: Rope,
    /// Whether the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
}

impl Config {
    /// Reads the fields of a `config.json`, checked (see [`instill_models::Dims`]); `what`
    /// names the file in errors.
    pub fn from_json(v: &Value, what: &str) -> Result<Config, TrainError> {
        let model_type = v
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !matches!(model_type.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(TrainError::Config(format!(
                "{what}: model_type {model_type:?}; instill trains llama, mistral and qwen2 models"
            )));
        }
        let dims = Dims::from_config(v, Path::new(what))?;
        Ok(Config::from_dims(&dims, model_type))
    }

    /// The configuration of a checked shape.
    pub fn from_dims(dims: &Dims, model_type: String) -> Config {
        Config {
            model_type,
            vocab_size: dims.vocab_size,
            hidden_size: dims.hidden_size,
            num_layers: dims.num_layers,
            num_heads: dims.num_heads,
            num_kv_heads: dims.num_kv_heads,
            head_dim: dims.head_dim,
            rms_norm_eps: dims.rms_norm_eps,
            rope: Rope::from_dims(dims),
            tie_word_embeddings: dims.tie_word_embeddings,
        }
    }
}

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
    fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor, TrainError> {
        // A trained f32 weight (modules_to_save) may meet bf16 activations: compute in its type.
        let mut y = x
            .to_dtype(self.weight.dtype())?
            .broadcast_matmul(&self.weight.t()?)?
            .to_dtype(x.dtype())?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(&b.to_dtype(y.dtype())?)?;
        }
        if let Some(lora) = &self.lora {
            y = (y + lora.forward(x, dropout_seed)?)?;
        }
        Ok(y)
    }
}

#[derive(Debug, Clone)]
struct Layer {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    gate: Linear,
    up: Linear,
    down: Linear,
    attn_norm: Tensor,
    ffn_norm: Tensor,
}

/// The model plus the variables an optimizer updates.
#[derive(Debug)]
pub struct Model {
    /// Its shape.
    pub config: Config,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    dtype: DType,
    /// What training updates, by the name it is saved under (Hugging Face names for full
    /// fine-tuning, PEFT names for LoRA).
    pub trainable: Vec<(String, Var)>,
}

/// The linear modules of a layer, with their Hugging Face names.
pub const MODULES: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Modules LoRA may train in full beside the adapters (PEFT's `modules_to_save`).
pub const WHOLE_MODULES: [&str; 2] = ["embed_tokens", "lm_head"];

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

fn module_path(module: &str) -> &'static str {
    if module.ends_with("_proj") && matches!(module, "gate_proj" | "up_proj" | "down_proj") {
        "mlp"
    } else {
        "self_attn"
    }
}

impl Model {
    /// Builds the model from Hugging Face-named weights in f32. `lora: None` trains every
    /// weight; `Some` freezes them and adds adapters (initialised from `seed`) to its target
    /// modules.
    pub fn new(
        config: Config,
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
        config: Config,
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
            return Err(TrainError::Config(
                "full fine-tuning keeps f32 weights (the optimizer's updates vanish in bf16): use --lora with --dtype bf16, or --dtype f32".into(),
            ));
        }
        let mut trainable = Vec::new();
        let mut take = |name: &str| -> Result<Tensor, TrainError> {
            let t = weights
                .get(name)
                .ok_or_else(|| {
                    TrainError::Config(format!("tensor {name} is missing from the model"))
                })?
                .to_dtype(dtype)?;
            if lora.is_none() {
                let var = Var::from_tensor(&t)?;
                let tensor = var.as_tensor().clone();
                trainable.push((name.to_string(), var));
                Ok(tensor)
            } else {
                Ok(t.detach())
            }
        };
        // LoRA's modules_to_save: trained in full, saved under PEFT's names.
        let saved_whole =
            |module: &str| lora.is_some_and(|l| l.modules_to_save.iter().any(|m| m == module));
        let mut whole = Vec::new();
        let mut take_whole = |name: &str, peft: &str| -> Result<Tensor, TrainError> {
            let t = weights
                .get(name)
                .ok_or_else(|| {
                    TrainError::Config(format!("tensor {name} is missing from the model"))
                })?
                .to_dtype(DType::F32)?;
            let var = Var::from_tensor(&t)?;
            let tensor = var.as_tensor().clone();
            whole.push((peft.to_string(), var));
            Ok(tensor)
        };
        if saved_whole("lm_head")
            && (config.tie_word_embeddings || !weights.contains_key("lm_head.weight"))
        {
            return Err(TrainError::Config(
                "this model's lm_head is its embedding matrix (tied): list embed_tokens in --modules-to-save, not lm_head".into(),
            ));
        }
        let embed = if saved_whole("embed_tokens") {
            take_whole(
                "model.embed_tokens.weight",
                "base_model.model.model.embed_tokens.weight",
            )?
        } else {
            take("model.embed_tokens.weight")?
        };
        let lm_head_whole = if saved_whole("lm_head") {
            Some(take_whole(
                "lm_head.weight",
                "base_model.model.lm_head.weight",
            )?)
        } else {
            None
        };
        let mut layers = Vec::with_capacity(config.num_layers);
        let mut adapters = Vec::new();
        for i in 0..config.num_layers {
            let p = format!("model.layers.{i}");
            let mut linear = |module: &str| -> Result<Linear, TrainError> {
                let name = format!("{p}.{}.{module}", module_path(module));
                let weight = take(&format!("{name}.weight"))?;
                let bias_name = format!("{name}.bias");
                let bias = if weights.contains_key(&bias_name) {
                    Some(take(&bias_name)?)
                } else {
                    None
                };
                let lora = match lora {
                    Some(cfg) if cfg.target_modules.iter().any(|m| m == module) => {
                        let (out_dim, in_dim) = weight.dims2()?;
                        let adapter =
                            Lora::new(cfg, &name, in_dim, out_dim, seed ^ xxhash(&name), device)?;
                        adapters.push((name.clone(), adapter.clone()));
                        Some(adapter)
                    }
                    _ => None,
                };
                Ok(Linear { weight, bias, lora })
            };
            let (q, k, v, o) = (
                linear("q_proj")?,
                linear("k_proj")?,
                linear("v_proj")?,
                linear("o_proj")?,
            );
            let (gate, up, down) = (
                linear("gate_proj")?,
                linear("up_proj")?,
                linear("down_proj")?,
            );
            layers.push(Layer {
                q,
                k,
                v,
                o,
                gate,
                up,
                down,
                attn_norm: take(&format!("{p}.input_layernorm.weight"))?,
                ffn_norm: take(&format!("{p}.post_attention_layernorm.weight"))?,
            });
        }
        let norm = take("model.norm.weight")?;
        let lm_head = if let Some(weight) = lm_head_whole {
            Linear {
                weight,
                bias: None,
                lora: None,
            }
        } else if !config.tie_word_embeddings && weights.contains_key("lm_head.weight") {
            Linear {
                weight: take("lm_head.weight")?,
                bias: None,
                lora: None,
            }
        } else {
            Linear {
                weight: embed.clone(),
                bias: None,
                lora: None,
            }
        };
        trainable.extend(whole);
        for (name, adapter) in adapters {
            trainable.push((
                format!("base_model.model.{name}.lora_A.weight"),
                adapter.a.clone(),
            ));
            trainable.push((
                format!("base_model.model.{name}.lora_B.weight"),
                adapter.b.clone(),
            ));
        }
        Ok(Model {
            dtype,
            config,
            embed,
            layers,
            norm,
            lm_head,
            trainable,
        })
    }

    /// Logits `[B, T, vocab]` of right-padded token ids `[B, T]` (padding comes after every real
    /// token, so the causal mask alone keeps it out of their attention). `dropout_seed` turns
    /// adapter dropout on (training).
    pub fn forward(&self, ids: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor, TrainError> {
        let (b, t) = ids.dims2()?;
        let c = &self.config;
        let eps = c.rms_norm_eps as f32;
        let mut x =
            self.embed
                .index_select(&ids.flatten_all()?, 0)?
                .reshape((b, t, c.hidden_size))?;
        // RoPE for positions 0..t, scaled as the config says; made per pass (t × head_dim/2
        // angles), so no fixed limit on the sequence length and no table sized by the config.
        let (cos, sin) = c.rope.cos_sin(0, t, ids.device(), self.dtype)?;
        let mask: Vec<f32> = (0..t)
            .flat_map(|r| (0..t).map(move |col| if col > r { f32::NEG_INFINITY } else { 0.0 }))
            .collect();
        let mask = Tensor::from_vec(mask, (t, t), ids.device())?;
        let seed =
            |layer: usize, module: u64| dropout_seed.map(|s| s ^ ((layer as u64) << 8 | module));
        for (li, l) in self.layers.iter().enumerate() {
            let h = norm(&x, &l.attn_norm, eps)?;
            let heads = |y: Tensor, n: usize| -> Result<Tensor, TrainError> {
                Ok(y.reshape((b, t, n, c.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = heads(l.q.forward(&h, seed(li, 1))?, c.num_heads)?;
            let k = heads(l.k.forward(&h, seed(li, 2))?, c.num_kv_heads)?;
            let v = heads(l.v.forward(&h, seed(li, 3))?, c.num_kv_heads)?;
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
            x = (x + l.o.forward(&y, seed(li, 4))?)?;
            let h = norm(&x, &l.ffn_norm, eps)?;
            let gate = candle_nn::ops::silu(&l.gate.forward(&h, seed(li, 5))?)?;
            let up = l.up.forward(&h, seed(li, 6))?;
            x = (x + l.down.forward(&(gate * up)?, seed(li, 7))?)?;
        }
        let x = norm(&x, &self.norm, eps)?;
        Ok(self.lm_head.forward(&x, None)?.to_dtype(DType::F32)?)
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
        out.insert("model.embed_tokens.weight".to_string(), self.embed.detach());
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            for (module, lin) in MODULES
                .iter()
                .zip([&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down])
            {
                let name = format!("{p}.{}.{module}", module_path(module));
                let w = match &lin.lora {
                    Some(lora) if with_adapters => {
                        (lin.weight.detach().to_dtype(DType::F32)? + lora.delta()?)?
                    }
                    _ => lin.weight.detach(),
                };
                out.insert(format!("{name}.weight"), w);
                if let Some(b) = &lin.bias {
                    out.insert(format!("{name}.bias"), b.detach());
                }
            }
            out.insert(format!("{p}.input_layernorm.weight"), l.attn_norm.detach());
            out.insert(
                format!("{p}.post_attention_layernorm.weight"),
                l.ffn_norm.detach(),
            );
        }
        out.insert("model.norm.weight".to_string(), self.norm.detach());
        if !self.config.tie_word_embeddings {
            out.insert("lm_head.weight".to_string(), self.lm_head.weight.detach());
        }
        Ok(out)
    }
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

fn repeat_kv(x: &Tensor, n: usize) -> Result<Tensor, TrainError> {
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

/// Masked next-token NLL: `logits [B, T, V]`, `ids [B, T]`, `weights [B, T]` (1 where the token
/// at t+1 is a response token to learn, 0 elsewhere). Returns the mean over counted tokens.
pub fn masked_nll(logits: &Tensor, ids: &Tensor, weights: &Tensor) -> Result<Tensor, TrainError> {
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
    let count = w.sum_all()?.to_scalar::<f32>()?.max(1.0);
    Ok(((picked * w)?.sum_all()? * (-1.0 / f64::from(count)))?)
}
