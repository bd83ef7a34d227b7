//! A GGUF model as training weights: dequantized to f32 under Hugging Face names, Llama's q/k
//! rows un-permuted (llama.cpp stores them interleaved for its RoPE), the config from metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use crate::TrainError;
use crate::model::Config;

/// The weights (Hugging Face names) and an equivalent `config.json` of a GGUF file.
pub fn load(
    path: &Path,
    device: &Device,
) -> Result<(Config, Value, HashMap<String, Tensor>), TrainError> {
    let mut file = std::fs::File::open(path).map_err(|e| TrainError::io(path, e))?;
    let content = gguf_file::Content::read(&mut file)
        .map_err(|e| TrainError::Config(format!("{}: not a GGUF file ({e})", path.display())))?;
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
    let num = |key: &str| -> Option<f64> {
        let v = meta.get(&format!("{arch}.{key}"))?;
        v.to_u32()
            .map(f64::from)
            .or_else(|_| v.to_f32().map(f64::from))
            .or_else(|_| v.to_u64().map(|n| n as f64))
            .ok()
    };
    let need = |key: &str| {
        num(key).ok_or_else(|| {
            TrainError::Config(format!(
                "{}: metadata {arch}.{key} is missing",
                path.display()
            ))
        })
    };
    let mut tensor = |name: &str| -> Result<Tensor, TrainError> {
        Ok(content
            .tensor(&mut file, name, device)?
            .dequantize(device)?)
    };
    let heads = need("attention.head_count")? as usize;
    let kv_heads = num("attention.head_count_kv").map_or(heads, |v| v as usize);
    let layers = need("block_count")? as usize;
    let embed = tensor("token_embd.weight")?;
    let (vocab, hidden) = embed.dims2()?;
    let tied = !content.tensor_infos.contains_key("output.weight");
    let config_json = json!({
        "architectures": [if arch == "llama" { "LlamaForCausalLM" } else { "Qwen2ForCausalLM" }],
        "model_type": arch,
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": num("feed_forward_length").unwrap_or(0.0) as usize,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden / heads.max(1),
        "rms_norm_eps": num("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
        "rope_theta": num("rope.freq_base").unwrap_or(10_000.0),
        "max_position_embeddings": num("context_length").unwrap_or(4096.0) as usize,
        "tie_word_embeddings": tied,
        "torch_dtype": "float32",
    });
    let config = Config::from_json(&config_json, &path.display().to_string())?;
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
    for i in 0..layers {
        let (g, h) = (format!("blk.{i}"), format!("model.layers.{i}"));
        for (gguf, hf, heads_of) in [
            ("attn_q", "self_attn.q_proj", Some(heads)),
            ("attn_k", "self_attn.k_proj", Some(kv_heads)),
            ("attn_v", "self_attn.v_proj", None),
            ("attn_output", "self_attn.o_proj", None),
            ("ffn_gate", "mlp.gate_proj", None),
            ("ffn_up", "mlp.up_proj", None),
            ("ffn_down", "mlp.down_proj", None),
        ] {
            let w = tensor(&format!("{g}.{gguf}.weight"))?;
            let w = match heads_of {
                Some(n) => unpermute(w, n)?,
                None => w,
            };
            weights.insert(format!("{h}.{hf}.weight"), w);
            let bias = format!("{g}.{gguf}.bias");
            if content.tensor_infos.contains_key(&bias) {
                weights.insert(format!("{h}.{hf}.bias"), tensor(&bias)?);
            }
        }
        weights.insert(
            format!("{h}.input_layernorm.weight"),
            tensor(&format!("{g}.attn_norm.weight"))?,
        );
        weights.insert(
            format!("{h}.post_attention_layernorm.weight"),
            tensor(&format!("{g}.ffn_norm.weight"))?,
        );
    }
    weights.insert("model.norm.weight".into(), tensor("output_norm.weight")?);
    if !tied {
        weights.insert("lm_head.weight".into(), tensor("output.weight")?);
    }
    weights.insert("model.embed_tokens.weight".into(), embed);
    Ok((config, config_json, weights))
}
