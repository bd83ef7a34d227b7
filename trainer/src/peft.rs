//! PEFT's adapter directory (`adapter_config.json`, `adapter_model.safetensors`): written from a
//! training run, and read as untrusted input: every field that changes what merging
//! computes is read and checked (rank, alpha, rsLoRA, rank and alpha patterns), and the ones
//! instill does not implement (DoRA, `fan_in_fan_out`, LoRA biases, layer replication, other
//! PEFT methods) are refused by name rather than merged with a silently wrong result.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{Map, Value, json};

use crate::TrainError;
use crate::lora::{LoraConfig, MAX_RANK};

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
        "use_rslora": cfg.use_rslora,
        "rank_pattern": cfg.rank_pattern.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
        "alpha_pattern": cfg.alpha_pattern.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<Map<String, Value>>(),
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

/// Reads an adapter directory: its config (checked, see [`read_config`]) and tensors.
pub fn load_adapter(
    dir: &Path,
    device: &Device,
) -> Result<(LoraConfig, HashMap<String, Tensor>), TrainError> {
    let cfg = read_config(&dir.join("adapter_config.json"))?;
    let path = dir.join("adapter_model.safetensors");
    if !path.is_file() {
        return Err(TrainError::Config(format!("{}: missing", path.display())));
    }
    let tensors = candle_core::safetensors::load(&path, device).map_err(|e| {
        TrainError::Config(format!("{}: unreadable safetensors: {e}", path.display()))
    })?;
    Ok((cfg, tensors))
}

/// The adapter settings of `path` (an `adapter_config.json`).
pub fn read_config(path: &Path) -> Result<LoraConfig, TrainError> {
    let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
    let v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))?;
    let bad = |field: &str, message: String| {
        TrainError::Config(format!("{}: {field}: {message}", path.display()))
    };
    if !v.is_object() {
        return Err(TrainError::Config(format!(
            "{}: not a JSON object",
            path.display()
        )));
    }
    if let Some(kind) = v.get("peft_type").filter(|k| !k.is_null())
        && kind.as_str() != Some("LORA")
    {
        return Err(bad(
            "peft_type",
            format!("{kind} adapters are not supported (LORA only)"),
        ));
    }
    for (field, what) in [
        (
            "use_dora",
            "DoRA adapters (magnitude vectors) are not supported",
        ),
        (
            "fan_in_fan_out",
            "transposed (Conv1D) weights are not supported",
        ),
        (
            "lora_bias",
            "adapters with a bias on lora_B are not supported",
        ),
    ] {
        match v.get(field) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => {}
            Some(Value::Bool(true)) => return Err(bad(field, format!("true: {what}"))),
            Some(other) => return Err(bad(field, format!("{other} is not true or false"))),
        }
    }
    if v.get("layer_replication").is_some_and(|x| !x.is_null()) {
        return Err(bad("layer_replication", "is not supported".into()));
    }
    let rank = |field: &str, x: &Value| -> Result<usize, TrainError> {
        x.as_u64()
            .filter(|r| (1..=MAX_RANK as u64).contains(r))
            .map(|r| r as usize)
            .ok_or_else(|| {
                bad(
                    field,
                    format!("{x} is not a rank (an integer from 1 to {MAX_RANK})"),
                )
            })
    };
    let number = |field: &str, x: &Value| -> Result<f64, TrainError> {
        x.as_f64()
            .filter(|a| a.is_finite())
            .ok_or_else(|| bad(field, format!("{x} is not a number")))
    };
    let need = |field: &str| v.get(field).ok_or_else(|| bad(field, "is missing".into()));
    let use_rslora = match v.get("use_rslora") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(bad("use_rslora", format!("{other} is not true or false"))),
    };
    let dropout = match v.get("lora_dropout").filter(|x| !x.is_null()) {
        None => 0.0,
        Some(x) => Some(number("lora_dropout", x)?)
            .filter(|d| (0.0..1.0).contains(d))
            .ok_or_else(|| bad("lora_dropout", format!("{x} is not in [0, 1)")))?,
    };
    Ok(LoraConfig {
        r: rank("r", need("r")?)?,
        alpha: number("lora_alpha", need("lora_alpha")?)?,
        dropout,
        target_modules: strings(&v, "target_modules"),
        modules_to_save: strings(&v, "modules_to_save"),
        use_rslora,
        rank_pattern: pattern(&v, "rank_pattern", &bad, |k, x| {
            rank(&format!("rank_pattern: {k}"), x)
        })?,
        alpha_pattern: pattern(&v, "alpha_pattern", &bad, |k, x| {
            number(&format!("alpha_pattern: {k}"), x)
        })?,
    })
}

/// The strings of a JSON array field (nothing for anything else, such as PEFT's `null` or a
/// regular expression given as one string).
fn strings(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// A `{pattern: value}` object (absent or `null`: none), each value read by `read`.
fn pattern<T>(
    v: &Value,
    field: &str,
    bad: &dyn Fn(&str, String) -> TrainError,
    read: impl Fn(&str, &Value) -> Result<T, TrainError>,
) -> Result<Vec<(String, T)>, TrainError> {
    let empty = Map::new();
    let map = match v.get(field) {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(m)) => m,
        Some(other) => return Err(bad(field, format!("{other} is not an object"))),
    };
    map.iter()
        .map(|(k, x)| {
            regex::Regex::new(k).map_err(|e| bad(field, format!("pattern {k:?}: {e}")))?;
            Ok((k.clone(), read(k, x)?))
        })
        .collect()
}
