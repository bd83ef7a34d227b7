//! A model's weights under one naming (Hugging Face's, see [`crate::names`]), whether they come
//! from a Hugging Face directory (`config.json` and `*.safetensors`, with or without an index)
//! or a GGUF file. The configuration is read and every tensor checked against it when the
//! weights are opened. llama.cpp stores Llama's query/key rows permuted for its interleaved
//! RoPE: [`Weights::stored`] gives them as stored (the quantized inference path rotates
//! interleaved pairs), [`Weights::dense`] and [`Weights::dense_all`] un-permute them (the training path): this module is
//! the one place that knows the permutation.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::QTensor;
use candle_core::quantized::gguf_file::Content;
use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use crate::arch::QkLayout;
use crate::codec::{Codec, CodecError};
use crate::names::{Module, Part, gguf_name};
use crate::{Dims, ModelFileError, files, gguf};

/// A checkpoint's configuration and tensors, checked against each other.
#[derive(Debug)]
pub struct Weights {
    dims: Dims,
    config_json: Value,
    store: Store,
    device: Device,
}

#[derive(Debug)]
enum Store {
    /// A Hugging Face directory's tensors, all read (each file once).
    Dir {
        dir: PathBuf,
        tensors: HashMap<String, Tensor>,
    },
    /// A GGUF file's header; tensors are read from the file when asked for.
    Gguf { path: PathBuf, content: Content },
}

/// One tensor as the file stores it.
#[derive(Debug)]
pub enum Stored {
    /// A plain tensor (safetensors, in its own dtype).
    Dense(Tensor),
    /// A GGUF tensor, perhaps quantized.
    Quantized(QTensor),
}

impl Weights {
    /// Opens `path`, a Hugging Face model directory or a GGUF file, for tensors on `device`.
    pub fn open(path: &Path, device: &Device) -> Result<Weights, ModelFileError> {
        if path.is_dir() {
            Weights::open_dir(path, device)
        } else if path.is_file() {
            Weights::open_gguf(path, device)
        } else {
            Err(ModelFileError::unsupported(
                path,
                "no such file or directory",
            ))
        }
    }

    fn open_dir(dir: &Path, device: &Device) -> Result<Weights, ModelFileError> {
        let config_path = dir.join("config.json");
        let bytes = std::fs::read(&config_path).map_err(|e| ModelFileError::io(&config_path, e))?;
        let config_json: Value =
            serde_json::from_slice(&bytes).map_err(|e| ModelFileError::Format {
                path: config_path.clone(),
                message: e.to_string(),
            })?;
        let dims = Dims::from_config(&config_json, &config_path)?;
        let tensors = files::load_safetensors(dir, device)?;
        dims.check_tensors(
            tensors
                .iter()
                .map(|(name, t)| (name.as_str(), name.clone(), t.dims())),
        )?;
        Ok(Weights {
            dims,
            config_json,
            store: Store::Dir {
                dir: dir.to_path_buf(),
                tensors,
            },
            device: device.clone(),
        })
    }

    fn open_gguf(path: &Path, device: &Device) -> Result<Weights, ModelFileError> {
        let content = gguf::read(path)?;
        let dims = Dims::from_gguf(&content, path)?;
        gguf::check_tensors(&content, &dims)?;
        let config_json = gguf_config_json(&dims, &content);
        Ok(Weights {
            dims,
            config_json,
            store: Store::Gguf {
                path: path.to_path_buf(),
                content,
            },
            device: device.clone(),
        })
    }

    /// The configuration; its `qk_layout` is that of [`Weights::stored`]'s rows.
    pub fn dims(&self) -> &Dims {
        &self.dims
    }

    /// The `config.json` to write beside a model made from these weights: the directory's own,
    /// or its equivalent for a GGUF file (f32 weights, Hugging Face layout).
    pub fn config_json(&self) -> &Value {
        &self.config_json
    }

    /// The Hugging Face directory the weights come from (None for GGUF).
    pub fn dir(&self) -> Option<&Path> {
        match &self.store {
            Store::Dir { dir, .. } => Some(dir),
            Store::Gguf { .. } => None,
        }
    }

    /// The tokenizer and chat template that go with the weights (`tokenizer_file` instead of
    /// the model's own tokenizer when given).
    pub fn codec(&self, tokenizer_file: Option<&Path>) -> Result<Codec, CodecError> {
        match &self.store {
            Store::Dir { dir, .. } => Codec::from_hf_dir(dir, tokenizer_file),
            Store::Gguf { path, content } => Codec::from_gguf(path, content, tokenizer_file),
        }
    }

    /// Whether the checkpoint has the tensor of Hugging Face name `name`.
    pub fn has(&self, name: &str) -> bool {
        match &self.store {
            Store::Dir { tensors, .. } => tensors.contains_key(name),
            Store::Gguf { content, .. } => {
                gguf_name(name).is_some_and(|g| content.tensor_infos.contains_key(&g))
            }
        }
    }

    /// The tensor of Hugging Face name `name` as the file stores it (GGUF Llama's q/k rows
    /// permuted: see [`Dims::qk_layout`]).
    pub fn stored(&self, name: &str) -> Result<Stored, ModelFileError> {
        match &self.store {
            Store::Dir { dir, tensors } => tensors
                .get(name)
                .cloned()
                .map(Stored::Dense)
                .ok_or_else(|| ModelFileError::Format {
                    path: dir.clone(),
                    message: format!("tensor {name} is missing from the safetensors files"),
                }),
            Store::Gguf { path, content } => {
                let gguf = gguf_name(name).unwrap_or_else(|| name.to_string());
                let mut file =
                    std::fs::File::open(path).map_err(|e| ModelFileError::io(path, e))?;
                content
                    .tensor(&mut file, &gguf, &self.device)
                    .map(Stored::Quantized)
                    .map_err(|e| {
                        ModelFileError::field(path, format!("tensor {gguf}"), e.to_string())
                    })
            }
        }
    }

    /// The tensor of Hugging Face name `name`, dequantized (f32) when quantized, its rows in
    /// Hugging Face's order ([`QkLayout::Halves`]) whatever the file's.
    pub fn dense(&self, name: &str) -> Result<Tensor, ModelFileError> {
        let t = match self.stored(name)? {
            Stored::Dense(t) => return Ok(t),
            Stored::Quantized(q) => q.dequantize(&self.device),
        };
        let t = t.and_then(|t| match (self.dims.qk_layout, Part::from_hf(name)) {
            (QkLayout::Interleaved, Some((Part::Layer(_, Module::Q), _))) => {
                to_halves(t, self.dims.num_heads)
            }
            (QkLayout::Interleaved, Some((Part::Layer(_, Module::K), _))) => {
                to_halves(t, self.dims.num_kv_heads)
            }
            _ => Ok(t),
        });
        t.map_err(|e| self.tensor_error(name, e))
    }

    /// Every tensor the decoders use, by Hugging Face name, as [`Weights::dense`] gives them,
    /// and the configuration that goes with them (q/k in Hugging Face's layout): what the
    /// training decoder is built from.
    pub fn dense_all(&self) -> Result<(Dims, HashMap<String, Tensor>), ModelFileError> {
        let mut dims = self.dims.clone();
        dims.qk_layout = QkLayout::Halves;
        if let Store::Dir { tensors, .. } = &self.store {
            return Ok((dims, tensors.clone()));
        }
        let mut out = HashMap::new();
        for part in crate::names::parts(self.dims.num_layers) {
            for name in [part.weight(), part.bias()] {
                if self.has(&name) {
                    let t = self.dense(&name)?;
                    out.insert(name, t);
                }
            }
        }
        Ok((dims, out))
    }

    fn tensor_error(&self, name: &str, e: candle_core::Error) -> ModelFileError {
        let (path, shown) = match &self.store {
            Store::Dir { dir, .. } => (dir.as_path(), name.to_string()),
            Store::Gguf { path, .. } => (
                path.as_path(),
                gguf_name(name).unwrap_or_else(|| name.to_string()),
            ),
        };
        ModelFileError::field(path, format!("tensor {shown}"), e.to_string())
    }
}

impl Stored {
    /// The tensor as a plain one (dequantized to f32 when quantized; rows as stored).
    pub fn dequantize(&self, device: &Device) -> candle_core::Result<Tensor> {
        match self {
            Stored::Dense(t) => Ok(t.clone()),
            Stored::Quantized(q) => q.dequantize(device),
        }
    }
}

/// llama.cpp's Llama query/key rows (each head's pairs `(2i, 2i+1)` adjacent) back in Hugging
/// Face's order (each head's first halves, then second halves): `[out, ...]` with `heads` heads.
fn to_halves(w: Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let out = dims.first().copied().unwrap_or(0);
    let rest: usize = dims.iter().skip(1).product();
    w.reshape((heads, out / heads / 2, 2, rest))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

/// A `config.json` equivalent to a GGUF file's metadata (f32 weights, Hugging Face layout).
fn gguf_config_json(dims: &Dims, content: &Content) -> Value {
    let intermediate = match dims.intermediate_size {
        Some(i) => i,
        None => content
            .tensor_infos
            .get(&format!("{}.weight", Part::Layer(0, Module::Gate).gguf()))
            .and_then(|t| t.shape.dims().first().copied())
            .unwrap_or(0),
    };
    let arch = dims.architecture;
    let mut config = json!({
        "architectures": [arch.hf_class()],
        "model_type": arch.name(),
        "vocab_size": dims.vocab_size,
        "hidden_size": dims.hidden_size,
        "intermediate_size": intermediate,
        "num_hidden_layers": dims.num_layers,
        "num_attention_heads": dims.num_heads,
        "num_key_value_heads": dims.num_kv_heads,
        "head_dim": dims.head_dim,
        "rms_norm_eps": dims.rms_norm_eps,
        "rope_theta": dims.rope_theta,
        "max_position_embeddings": dims.max_position,
        "tie_word_embeddings": dims.tie_word_embeddings,
        "torch_dtype": "float32",
    });
    // The scaling travels into the config written beside outputs. llama.cpp's per-frequency
    // factors have no config.json form: left out here; the trainer refuses them (see
    // `RopeScaling::to_config`).
    if let Some(Ok(scaling)) = dims.rope_scaling.as_ref().map(|s| s.to_config(&dims.path)) {
        config["rope_scaling"] = scaling;
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Architecture;

    #[test]
    fn a_directory_opens_with_its_config_and_codec() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/local/tiny-llama");
        let w = Weights::open(&dir, &Device::Cpu).expect("open");
        assert_eq!(w.dims().architecture, Architecture::Llama);
        assert_eq!(w.dims().qk_layout, QkLayout::Halves);
        assert!(w.has(&Part::LmHead.weight()) && !w.has(&Part::Layer(0, Module::Q).bias()));
        let (dims, all) = w.dense_all().expect("dense");
        assert_eq!(all.len(), 3 + 9 * dims.num_layers);
        assert!(w.codec(None).is_ok());
        let e = Weights::open(&dir.join("missing"), &Device::Cpu)
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("no such file or directory; expected a Hugging Face"),
            "{e}"
        );
    }

    #[test]
    fn llama_cpp_rows_go_back_to_halves() {
        // One head of 4 dims: HF rows [a0, a1, b0, b1] pair (a_i, b_i); llama.cpp stores
        // [a0, b0, a1, b1]. Two input columns.
        let stored =
            Tensor::new(&[[0f32, 0.], [2., 2.], [1., 1.], [3., 3.]], &Device::Cpu).expect("tensor");
        let back = to_halves(stored, 1).expect("permute");
        let rows: Vec<Vec<f32>> = back.to_vec2().expect("rows");
        assert_eq!(rows, [[0., 0.], [1., 1.], [2., 2.], [3., 3.]]);
    }
}
