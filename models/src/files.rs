//! The weights of a Hugging Face model directory: which `*.safetensors` files hold them, each
//! read once. `model.safetensors.index.json` decides when it is there; otherwise every
//! `*.safetensors` file, except `consolidated*.safetensors` (Mistral's own format, the same
//! weights again under other names) when Hugging Face files sit beside it.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use serde_json::Value;

use crate::ModelFileError;

/// The index of a sharded checkpoint.
pub const INDEX: &str = "model.safetensors.index.json";

/// The safetensors files that hold the directory's weights, in name order.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelFileError> {
    let index = dir.join(INDEX);
    if index.is_file() {
        return indexed_files(dir, &index);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| ModelFileError::io(dir, e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    let consolidated = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("consolidated"))
    };
    if files.iter().any(|p| !consolidated(p)) {
        files.retain(|p| !consolidated(p));
    }
    files.sort();
    if files.is_empty() {
        return Err(ModelFileError::Format {
            path: dir.to_path_buf(),
            message: "the directory has no *.safetensors files".into(),
        });
    }
    Ok(files)
}

/// The files `weight_map` of the index names: plain names of files in the directory.
fn indexed_files(dir: &Path, index: &Path) -> Result<Vec<PathBuf>, ModelFileError> {
    let names = index_shards(index)?;
    for file in &names {
        if !dir.join(file).is_file() {
            return Err(ModelFileError::field(
                index,
                "weight_map",
                format!("{file:?} is not a file of the directory"),
            ));
        }
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The file names `weight_map` of the index at `index` lists, each a plain file name (no
/// directory part): what a sharded checkpoint's directory must hold beside the index.
pub fn index_shards(index: &Path) -> Result<BTreeSet<String>, ModelFileError> {
    let bytes = std::fs::read(index).map_err(|e| ModelFileError::io(index, e))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| ModelFileError::Format {
        path: index.to_path_buf(),
        message: format!("not JSON: {e}"),
    })?;
    let bad = |message: String| ModelFileError::field(index, "weight_map", message);
    let map = v
        .get("weight_map")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("is missing or not an object".into()))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file
            .as_str()
            .ok_or_else(|| bad(format!("{tensor}: {file} is not a file name")))?;
        let plain = Path::new(file)
            .file_name()
            .is_some_and(|n| n == std::ffi::OsStr::new(file));
        if !plain {
            return Err(bad(format!(
                "{tensor}: {file:?} is not a file of the directory"
            )));
        }
        names.insert(file.to_string());
    }
    if names.is_empty() {
        return Err(bad("is empty".into()));
    }
    Ok(names)
}

/// Every tensor of the directory's weight files; a tensor found in two files is an error.
pub fn load_safetensors(
    dir: &Path,
    device: &Device,
) -> Result<HashMap<String, Tensor>, ModelFileError> {
    let mut tensors = HashMap::new();
    let mut origin: HashMap<String, PathBuf> = HashMap::new();
    for file in weight_files(dir)? {
        let loaded =
            candle_core::safetensors::load(&file, device).map_err(|e| ModelFileError::Format {
                path: file.clone(),
                message: format!("unreadable safetensors: {e}"),
            })?;
        for (name, t) in loaded {
            if let Some(first) = origin.get(&name) {
                return Err(ModelFileError::field(
                    &file,
                    format!("tensor {name}"),
                    format!("is also in {}", first.display()),
                ));
            }
            origin.insert(name.clone(), file.clone());
            tensors.insert(name, t);
        }
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[PathBuf]) -> Vec<String> {
        files
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect()
    }

    #[test]
    fn hf_shards_win_over_consolidated_and_the_index_over_both() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in [
            "consolidated.safetensors",
            "model-00001-of-00002.safetensors",
            "model-00002-of-00002.safetensors",
            "model.safetensors",
        ] {
            std::fs::write(d.path().join(f), b"x").expect("write");
        }
        assert_eq!(
            names(&weight_files(d.path()).expect("files")),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors",
                "model.safetensors"
            ]
        );
        std::fs::write(
            d.path().join(INDEX),
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors", "c": "model-00001-of-00002.safetensors"}}"#,
        )
        .expect("write");
        assert_eq!(
            names(&weight_files(d.path()).expect("files")),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
        std::fs::write(
            d.path().join(INDEX),
            r#"{"weight_map": {"a": "../model.safetensors"}}"#,
        )
        .expect("write");
        let e = weight_files(d.path()).expect_err("outside").to_string();
        assert!(e.contains("weight_map: a:"), "{e}");
    }

    #[test]
    fn consolidated_alone_is_read() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("consolidated.safetensors"), b"x").expect("write");
        assert_eq!(
            names(&weight_files(d.path()).expect("files")),
            ["consolidated.safetensors"]
        );
    }
}
