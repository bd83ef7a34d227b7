//! Loading a local model: a Hugging Face directory (`config.json`, `*.safetensors`, tokenizer
//! files) or a GGUF file (quantized weights, tokenizer rebuilt from its metadata).

use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use instill_models::{Dims, ModelFileError, Rope, files, gguf};
use serde_json::Value;

use super::LocalError;
use super::codec::Codec;
use super::model::{Layer, Linear, Model, ModelConfig};

const SUPPORTED: &str = "a Hugging Face directory of a llama, mistral or qwen2 model (config.json, *.safetensors, tokenizer.json) or a GGUF file of a llama or qwen2 model";

/// A model and its codec.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The network.
    pub model: Model,
    /// Its tokenizer and chat template.
    pub codec: Codec,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions<'a> {
    /// Type of dense (safetensors) weights and activations; GGUF models compute in f32.
    pub dtype: DType,
    /// A `tokenizer.json` to use instead of the model's own.
    pub tokenizer: Option<&'a Path>,
    /// Expand quantized GGUF weights to f32 at load: several times the memory, but a batched
    /// decode step then costs about what one sequence does (candle's quantized CPU kernels
    /// work one row at a time).
    pub dequantize: bool,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            dtype: DType::F32,
            tokenizer: None,
            dequantize: false,
        }
    }
}

/// Loads `path` (a directory or a `.gguf` file) onto `device`.
pub fn load(path: &Path, device: &Device, options: &LoadOptions) -> Result<Loaded, LocalError> {
    if path.is_dir() {
        load_hf_dir(path, device, options.dtype, options.tokenizer)
    } else if path.is_file() {
        load_gguf(path, device, options.tokenizer, options.dequantize)
    } else {
        Err(LocalError::Unsupported {
            path: path.to_path_buf(),
            message: format!("no such file or directory; expected {SUPPORTED}"),
        })
    }
}

fn load_gguf(
    path: &Path,
    device: &Device,
    tokenizer: Option<&Path>,
    dequantize: bool,
) -> Result<Loaded, LocalError> {
    let content = gguf::read(path).map_err(|e| match e {
        ModelFileError::Format { message, .. } => LocalError::Unsupported {
            path: path.to_path_buf(),
            message: format!("{message}; expected {SUPPORTED}"),
        },
        other => other.into(),
    })?;
    let meta = &content.metadata;
    let arch = meta
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        return Err(LocalError::Unsupported {
            path: path.to_path_buf(),
            message: format!("GGUF architecture {arch:?}; expected {SUPPORTED}"),
        });
    }
    let dims = Dims::from_gguf(&content, &arch, path)?;
    gguf::check_tensors(&content, &dims)?;
    let tensor = |name: &str| {
        content
            .tensor(&mut file_ref(path)?, name, device)
            .map_err(|e| tensor_error(path, name, e))
    };
    let embed_q = tensor("token_embd.weight")?;
    let cfg = ModelConfig {
        // llama.cpp stores Llama's q/k rows permuted for interleaved RoPE; Qwen2 is NEOX-style.
        rope_interleaved: arch == "llama",
        ..model_config(&dims)
    };
    let dense =
        |name: &str| -> Result<Tensor, LocalError> { Ok(tensor(name)?.dequantize(device)?) };
    let linear = |name: &str| -> Result<Linear, LocalError> {
        let q = tensor(&format!("{name}.weight"))?;
        let weight = if dequantize {
            QMatMul::Tensor(q.dequantize(device)?)
        } else {
            QMatMul::from_qtensor(q)?
        };
        let bias_name = format!("{name}.bias");
        let bias = if content.tensor_infos.contains_key(&bias_name) {
            Some(dense(&bias_name)?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("blk.{i}");
        layers.push(Layer {
            q: linear(&format!("{p}.attn_q"))?,
            k: linear(&format!("{p}.attn_k"))?,
            v: linear(&format!("{p}.attn_v"))?,
            o: linear(&format!("{p}.attn_output"))?,
            gate: linear(&format!("{p}.ffn_gate"))?,
            up: linear(&format!("{p}.ffn_up"))?,
            down: linear(&format!("{p}.ffn_down"))?,
            attn_norm: dense(&format!("{p}.attn_norm.weight"))?,
            ffn_norm: dense(&format!("{p}.ffn_norm.weight"))?,
        });
    }
    let embed = embed_q.dequantize(device)?;
    let lm_head = if content.tensor_infos.contains_key("output.weight") {
        linear("output")?
    } else {
        Linear::new(
            if dequantize {
                QMatMul::Tensor(embed.clone())
            } else {
                QMatMul::from_qtensor(embed_q)?
            },
            None,
        )
    };
    let norm = dense("output_norm.weight")?;
    let model = Model::new(cfg, embed, layers, norm, lm_head)?;
    let codec = Codec::from_gguf(path, &content, tokenizer)?;
    Ok(Loaded { model, codec })
}

fn file_ref(path: &Path) -> Result<std::fs::File, LocalError> {
    std::fs::File::open(path).map_err(|source| LocalError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn load_hf_dir(
    dir: &Path,
    device: &Device,
    dtype: DType,
    tokenizer: Option<&Path>,
) -> Result<Loaded, LocalError> {
    let config_path = dir.join("config.json");
    let bytes = std::fs::read(&config_path).map_err(|source| LocalError::Io {
        path: config_path.clone(),
        source,
    })?;
    let config: Value = serde_json::from_slice(&bytes).map_err(|e| LocalError::Config {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    let model_type = config
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("(none)")
        .to_string();
    if !matches!(model_type.as_str(), "llama" | "mistral" | "qwen2") {
        return Err(LocalError::Unsupported {
            path: config_path,
            message: format!("model_type {model_type:?}; expected {SUPPORTED}"),
        });
    }
    let dims = Dims::from_config(&config, &config_path)?;
    let cfg = model_config(&dims);
    let tied = dims.tie_word_embeddings;
    let tensors = files::load_safetensors(dir, device)?;
    dims.check_tensors(
        tensors
            .iter()
            .map(|(name, t)| (name.as_str(), name.clone(), t.dims())),
    )?;
    let get = |name: &str| -> Result<Tensor, LocalError> {
        tensors
            .get(name)
            .ok_or_else(|| LocalError::Config {
                path: dir.to_path_buf(),
                message: format!("tensor {name} is missing from the safetensors files"),
            })?
            .to_dtype(dtype)
            .map_err(LocalError::from)
    };
    let linear = |name: &str| -> Result<Linear, LocalError> {
        let bias = format!("{name}.bias");
        let bias = if tensors.contains_key(&bias) {
            Some(get(&bias)?)
        } else {
            None
        };
        Ok(Linear::new(
            QMatMul::Tensor(get(&format!("{name}.weight"))?),
            bias,
        ))
    };
    let mut layers = Vec::with_capacity(cfg.num_layers);
    for i in 0..cfg.num_layers {
        let p = format!("model.layers.{i}");
        layers.push(Layer {
            q: linear(&format!("{p}.self_attn.q_proj"))?,
            k: linear(&format!("{p}.self_attn.k_proj"))?,
            v: linear(&format!("{p}.self_attn.v_proj"))?,
            o: linear(&format!("{p}.self_attn.o_proj"))?,
            gate: linear(&format!("{p}.mlp.gate_proj"))?,
            up: linear(&format!("{p}.mlp.up_proj"))?,
            down: linear(&format!("{p}.mlp.down_proj"))?,
            attn_norm: get(&format!("{p}.input_layernorm.weight"))?,
            ffn_norm: get(&format!("{p}.post_attention_layernorm.weight"))?,
        });
    }
    let embed = get("model.embed_tokens.weight")?;
    let lm_head = if !tied && tensors.contains_key("lm_head.weight") {
        linear("lm_head")?
    } else {
        Linear::new(QMatMul::Tensor(embed.clone()), None)
    };
    let norm = get("model.norm.weight")?;
    let model = Model::new(cfg, embed, layers, norm, lm_head)?;
    let codec = Codec::from_hf_dir(dir, tokenizer)?;
    Ok(Loaded { model, codec })
}

/// The decoder's configuration from a checked shape (Hugging Face RoPE layout).
fn model_config(dims: &Dims) -> ModelConfig {
    ModelConfig {
        vocab_size: dims.vocab_size,
        hidden_size: dims.hidden_size,
        num_layers: dims.num_layers,
        num_heads: dims.num_heads,
        num_kv_heads: dims.num_kv_heads,
        head_dim: dims.head_dim,
        rms_norm_eps: dims.rms_norm_eps,
        // With the scaling (`rope_scaling`, `rope_parameters` or GGUF's rope_freqs.weight).
        rope: Rope::from_dims(dims),
        rope_interleaved: false,
        // Mistral attends over a sliding window; within it that is full attention, so the
        // context is capped at the window rather than approximated beyond it.
        max_position: dims.context(),
    }
}

/// A tensor that candle could not read, named with its file.
fn tensor_error(path: &Path, name: &str, e: candle_core::Error) -> LocalError {
    ModelFileError::field(path, format!("tensor {name}"), e.to_string()).into()
}
