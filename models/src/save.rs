//! A full model directory written out (after training or merging): `model.safetensors`,
//! `config.json` and the tokenizer files, copied from the base directory or, for a GGUF base,
//! rebuilt from its codec.

use std::collections::HashMap;
use std::path::Path;

use candle_core::Tensor;
use serde_json::{Value, json};

use crate::{Codec, ModelFileError};

/// Files of a full model directory besides its weights and config, copied from the base.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
];

/// The weights file of a model directory this module writes.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Writes a model directory `out`: `weights`, `config_json`, and the tokenizer files of
/// `base_dir` (a Hugging Face directory) or, without one, `tokenizer.json` and
/// `tokenizer_config.json` made from `codec`.
pub fn write_model_dir(
    out: &Path,
    weights: &HashMap<String, Tensor>,
    config_json: &Value,
    codec: &Codec,
    base_dir: Option<&Path>,
) -> Result<(), ModelFileError> {
    std::fs::create_dir_all(out).map_err(|e| ModelFileError::io(out, e))?;
    let path = out.join(WEIGHTS_FILE);
    candle_core::safetensors::save(weights, &path).map_err(|e| ModelFileError::Format {
        path: path.clone(),
        message: format!("cannot write: {e}"),
    })?;
    write_json(&out.join("config.json"), config_json)?;
    match base_dir {
        Some(dir) => {
            for f in TOKENIZER_FILES {
                if dir.join(f).is_file() {
                    std::fs::copy(dir.join(f), out.join(f))
                        .map_err(|e| ModelFileError::io(&dir.join(f), e))?;
                }
            }
        }
        None => {
            let path = out.join("tokenizer.json");
            codec
                .tokenizer
                .save(&path, false)
                .map_err(|e| ModelFileError::Format {
                    path: path.clone(),
                    message: format!("cannot write: {e}"),
                })?;
            let cfg = json!({
                "bos_token": codec.bos, "eos_token": codec.eos,
                "add_bos_token": codec.add_bos, "chat_template": codec.chat_template,
            });
            write_json(&out.join("tokenizer_config.json"), &cfg)?;
        }
    }
    Ok(())
}

fn write_json(path: &Path, value: &Value) -> Result<(), ModelFileError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| ModelFileError::Format {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, bytes).map_err(|e| ModelFileError::io(path, e))
}
