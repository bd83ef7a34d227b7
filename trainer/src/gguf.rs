//! A GGUF model as training weights: dequantized to f32 under Hugging Face names, Llama's q/k
//! rows un-permuted (llama.cpp stores them interleaved for its RoPE), the config from metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use instill_models::{Dims, ModelFileError, gguf};
use serde_json::{Value, json};

use crate::TrainError;
use crate::model::Config;

/// The weights (Hugging Face names) and an equivalent `config.json` of a GGUF file; its header,
/// shape and tensor directory are checked (see [`instill_models::gguf`]) before any tensor is read.
pub fn load(
    path: &Path,
    device: &Device,
) -> Result<(Config, Value, HashMap<String, Tensor>), TrainError> {
    let content = gguf::read(path)?;
    let meta = &content.metadata;
    let arch = meta
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if !matches!(arch.as_str(), "llama" | "qwen2") {
        return Err(TrainError::Config(format!(
            "{}: GGUF architecture {arch:?}; instill trains llama and qwen2 models",
            path.display()
        )));
    }
    let dims = Dims::from_gguf(&content, &arch, path)?;
    gguf::check_tensors(&content, &dims)?;
    let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut tensor = |name: &str| -> Result<Tensor, TrainError> {
        let read = content
            .tensor(&mut file, name, device)
            .and_then(|q| q.dequantize(device));
        read.map_err(|e| {
            ModelFileError::field(path, format!("tensor {name}"), e.to_string()).into()
        })
    };
    let embed = tensor("token_embd.weight")?;
    let intermediate = match dims.intermediate_size {
        Some(i) => i,
        None => content
            .tensor_infos
            .get("blk.0.ffn_gate.weight")
            .and_then(|t| t.shape.dims().first().copied())
            .unwrap_or(0),
    };
    let (heads, kv_heads) = (dims.num_heads, dims.num_kv_heads);
    let mut config_json = json!({
        "architectures": [if arch == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
        "model_type": arch,
        "vocab_size": dims.vocab_size,
        "hidden_size": dims.hidden_size,
        "intermediate_size": intermediate,
        "num_hidden_layers": dims.num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": dims.head_dim,
        "rms_norm_eps": dims.rms_norm_eps,
        "rope_theta": dims.rope_theta,
        "max_position_embeddings": dims.max_position,
        "tie_word_embeddings": dims.tie_word_embeddings,
        "torch_dtype": "float32",
    });
    // The scaling travels into the config written beside the outputs (llama.cpp's per-frequency
    // factors have no config.json form: refused, naming the tensor).
    if let Some(scaling) = &dims.rope_scaling {
        config_json["rope_scaling"] = scaling.to_config(path)?;
    }
    let config = Config::from_dims(&dims, arch.clone());
    let unpermute = |w: Tensor, n_head: usize| -> Result<Tensor, TrainError> {
        if arch != "llama" {
            return Ok(w);
        }
        let (out, inp) = w.dims2()?;
        Ok(w.reshape((n_head, out / n_head / 2, 2, inp))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((out, inp))?)
    };
    let mut weights = HashMap::new();
    for i in 0..dims.num_layers {
        for (g, hf) in gguf::LAYER_MODULES {
            let (g, h) = (format!("blk.{i}.{g}"), format!("model.layers.{i}.{hf}"));
            let w = tensor(&format!("{g}.weight"))?;
            let w = match hf {
                "self_attn.q_proj" => unpermute(w, heads)?,
                "self_attn.k_proj" => unpermute(w, kv_heads)?,
                _ => w,
            };
            weights.insert(format!("{h}.weight"), w);
            let bias = format!("{g}.bias");
            if content.tensor_infos.contains_key(&bias) {
                weights.insert(format!("{h}.bias"), tensor(&bias)?);
            }
        }
    }
    weights.insert("model.norm.weight".into(), tensor("output_norm.weight")?);
    if !dims.tie_word_embeddings {
        weights.insert("lm_head.weight".into(), tensor("output.weight")?);
    }
    weights.insert("model.embed_tokens.weight".into(), embed);
    Ok((config, config_json, weights))
}
