//! A Hugging Face model directory as training weights: `config.json` read and checked, the
//! safetensors files chosen and read once (see [`instill_models::files`]), every tensor's shape
//! checked against the config.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use instill_models::files;
use serde_json::Value;

use crate::TrainError;
use crate::model::Config;

/// The config (and its JSON, to write beside outputs) and the weights of the directory `dir`.
pub fn load(
    dir: &Path,
    device: &Device,
) -> Result<(Config, Value, HashMap<String, Tensor>), TrainError> {
    let config_path = dir.join("config.json");
    let bytes = std::fs::read(&config_path).map_err(|e| TrainError::io(&config_path, e))?;
    let config_json: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TrainError::Config(format!("{}: {e}", config_path.display())))?;
    let config = Config::from_json(&config_json, &config_path.display().to_string())?;
    let dims = instill_models::Dims::from_config(&config_json, &config_path)?;
    let weights = files::load_safetensors(dir, device)?;
    dims.check_tensors(
        weights
            .iter()
            .map(|(name, t)| (name.as_str(), name.clone(), t.dims())),
    )?;
    Ok((config, config_json, weights))
}
