//! LoRA adapters: A (Kaiming-uniform) and B (zeros) per target module, scale alpha/r, seeded
//! dropout; PEFT's `adapter_config.json` and tensor names; merging into base weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde_json::{Value, json};

use crate::TrainError;
use crate::rng::SplitMix;

/// An adapter's settings, with PEFT's field names where it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator: the update is `alpha / r · B A`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Module names (`q_proj`, …) that get adapters.
    pub target_modules: Vec<String>,
    /// Modules trained in full beside the adapters (`embed_tokens`, `lm_head`).
    pub modules_to_save: Vec<String>,
}

/// One module's adapter.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
    /// `alpha / r`.
    pub scale: f64,
    /// Dropout probability.
    pub dropout: f64,
}

impl Lora {
    /// A fresh adapter: A ~ Kaiming-uniform (bound 1/√in, PEFT's default), B = 0.
    pub fn new(
        cfg: &LoraConfig,
        in_dim: usize,
        out_dim: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Lora, TrainError> {
        let bound = 1.0 / (in_dim as f64).sqrt();
        let mut rng = SplitMix::new(seed);
        let a: Vec<f32> = (0..cfg.r * in_dim)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        Ok(Lora {
            a: Var::from_tensor(&Tensor::from_vec(a, (cfg.r, in_dim), device)?)?,
            b: Var::from_tensor(&Tensor::zeros((out_dim, cfg.r), DType::F32, device)?)?,
            scale: cfg.alpha / cfg.r as f64,
            dropout: cfg.dropout,
        })
    }

    /// `scale · dropout(x) Aᵀ Bᵀ`; dropout only with a seed (training), its mask drawn from it.
    pub fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor, TrainError> {
        // Adapters compute in f32 whatever the base's type.
        let input = x.to_dtype(DType::F32)?;
        let input = match dropout_seed {
            Some(seed) if self.dropout > 0.0 => {
                let mut rng = SplitMix::new(seed);
                let keep = 1.0 - self.dropout;
                let mask: Vec<f32> = (0..input.elem_count())
                    .map(|_| {
                        if rng.unit() < keep {
                            (1.0 / keep) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                (input.clone() * Tensor::from_vec(mask, input.shape(), input.device())?)?
            }
            _ => input,
        };
        let y = input
            .broadcast_matmul(&self.a.as_tensor().t()?)?
            .broadcast_matmul(&self.b.as_tensor().t()?)?;
        Ok((y * self.scale)?.to_dtype(x.dtype())?)
    }

    /// `scale · B A`, the update merged into the base weight.
    pub fn delta(&self) -> Result<Tensor, TrainError> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }
}

/// The files of an adapter directory: PEFT's config and tensors.
pub const ADAPTER_FILES: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

/// Writes `adapter_config.json` (PEFT's fields) and `adapter_model.safetensors` (PEFT's names).
pub fn save_adapter(
    dir: &Path,
    cfg: &LoraConfig,
    base_model: &str,
    tensors: &HashMap<String, Tensor>,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir).map_err(|e| TrainError::io(dir, e))?;
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": cfg.r,
        "lora_alpha": cfg.alpha,
        "lora_dropout": cfg.dropout,
        "target_modules": cfg.target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": if cfg.modules_to_save.is_empty() { Value::Null } else { json!(cfg.modules_to_save) },
        "use_rslora": false,
        "use_dora": false,
    });
    let path = dir.join("adapter_config.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&config).unwrap_or_default(),
    )
    .map_err(|e| TrainError::io(&path, e))?;
    let path = dir.join("adapter_model.safetensors");
    candle_core::safetensors::save(tensors, &path)?;
    Ok(())
}

/// Reads an adapter directory: its config and tensors.
pub fn load_adapter(
    dir: &Path,
    device: &Device,
) -> Result<(LoraConfig, HashMap<String, Tensor>), TrainError> {
    let path = dir.join("adapter_config.json");
    let bytes = std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let field = |k: &str| {
        v.get(k)
            .ok_or_else(|| TrainError::Config(format!("{}: field {k} is missing", path.display())))
    };
    let cfg = LoraConfig {
        r: field("r")?.as_u64().unwrap_or(0) as usize,
        alpha: field("lora_alpha")?.as_f64().unwrap_or(0.0),
        dropout: v.get("lora_dropout").and_then(Value::as_f64).unwrap_or(0.0),
        target_modules: strings(field("target_modules")?),
        modules_to_save: v.get("modules_to_save").map(strings).unwrap_or_default(),
    };
    if cfg.r == 0 {
        return Err(TrainError::Config(format!(
            "{}: r must be a positive integer",
            path.display()
        )));
    }
    let path = dir.join("adapter_model.safetensors");
    if !path.is_file() {
        return Err(TrainError::Config(format!("{}: missing", path.display())));
    }
    let tensors = candle_core::safetensors::load(&path, device)?;
    Ok((cfg, tensors))
}

/// The strings of a JSON array (nothing for anything else, such as PEFT's `null`).
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// `W' = W + alpha/r · B A` for every adapted module of `base` (Hugging Face names); checks
/// every shape and the vocabulary of saved embeddings/heads, naming both sizes when they differ.
pub fn merge(
    base: &mut HashMap<String, Tensor>,
    cfg: &LoraConfig,
    adapter: &HashMap<String, Tensor>,
) -> Result<usize, TrainError> {
    let scale = cfg.alpha / cfg.r as f64;
    let mut merged = 0;
    let mut names: Vec<&String> = adapter.keys().collect();
    names.sort();
    for name in names {
        let tensor = &adapter[name];
        let Some(module) = name.strip_prefix("base_model.model.") else {
            return Err(TrainError::Config(format!(
                "adapter tensor {name}: not a PEFT name (base_model.model.…)"
            )));
        };
        if let Some(module) = module.strip_suffix(".lora_A.weight") {
            let b_name = format!("base_model.model.{module}.lora_B.weight");
            let b = adapter.get(&b_name).ok_or_else(|| {
                TrainError::Config(format!("adapter has {name} but not {b_name}"))
            })?;
            let w_name = format!("{module}.weight");
            let w = base.get(&w_name).ok_or_else(|| {
                TrainError::Config(format!(
                    "adapter targets {w_name}, which the base model does not have"
                ))
            })?;
            let (out_dim, in_dim) = w.dims2()?;
            let (ra, ia) = tensor.dims2()?;
            let (ob, rb) = b.dims2()?;
            if ia != in_dim || ob != out_dim || ra != rb {
                return Err(TrainError::Shape(format!(
                    "{module}: base weight is [{out_dim}, {in_dim}] but the adapter's B·A is [{ob}, {rb}]·[{ra}, {ia}]"
                )));
            }
            let delta = (b
                .to_dtype(DType::F32)?
                .matmul(&tensor.to_dtype(DType::F32)?)?
                * scale)?;
            let updated = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
            base.insert(w_name, updated);
            merged += 1;
        } else if module.ends_with(".lora_B.weight") {
            continue;
        } else {
            // modules_to_save: a full replacement, e.g. an embedding for a larger vocabulary.
            let key = module
                .replace(".modules_to_save.default", "")
                .replace(".original_module", "");
            let Some(w) = base.get(&key) else {
                return Err(TrainError::Config(format!(
                    "adapter tensor {name}: the base model has no {key}"
                )));
            };
            if w.dims() != tensor.dims() {
                return Err(TrainError::Shape(format!(
                    "{key}: the base model's vocabulary is {} tokens ({:?}) but the adapter's is {} ({:?}); merge onto the base model the adapter was trained from",
                    w.dims()[0],
                    w.dims(),
                    tensor.dims()[0],
                    tensor.dims()
                )));
            }
            base.insert(key, tensor.clone());
        }
    }
    Ok(merged)
}
