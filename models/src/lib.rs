//! instill-models: everything about a model except its forward pass. The inference decoder
//! (`instill-generator`) and the differentiable one (`instill-trainer`) are both built from
//! what this crate reads: the configuration, the weights, the tokenizer and chat template, the
//! device. Model files are untrusted input: every absurd value (0 or 10¹² layers, a context of
//! 2⁴⁰, an alignment of 0, a tensor that disagrees with the config or lies past the end of its
//! file) is refused here, with the file and the field named, before anything is sized from it.
//!
//! - [`arch`]: the architectures (llama, mistral, qwen2), decided once; RoPE's q/k layouts.
//! - [`dims`]: the configuration ([`Dims`]) from `config.json` or GGUF metadata, bounded and
//!   cross-checked; every tensor's shape checked against it.
//! - [`names`]: the one tensor-name table (Hugging Face ↔ GGUF ↔ short names).
//! - [`weights`]: a Hugging Face directory or a GGUF file as named weights; Llama's GGUF q/k
//!   permutation undone here and nowhere else.
//! - [`gguf`]: the GGUF header (metadata, tensor directory) read with every length and offset
//!   checked against the file's size.
//! - [`rope`]: RoPE scaling (llama3, linear, dynamic; any other type refused by name) and the
//!   frequency and `(cos, sin)` tables both decoders rotate with.
//! - [`limits`]: the bounds every number of a model file is checked against.
//! - [`files`]: which `*.safetensors` files of a directory hold the weights (the index, the HF
//!   shards rather than `consolidated*.safetensors`), each read once.
//! - [`codec`]: the tokenizer and chat template ([`chat_template`]: the template alone, read
//!   from `tokenizer_config.json` and rendered); [`device`]: device and dtype by name.
//! - [`save`]: a full model directory written out (weights, config, tokenizer files).
//! - [`hub`]: a model named by Hugging Face id (`ORG/NAME`, `ORG/NAME:FILE.gguf`) resolved to
//!   a local path through the Hugging Face cache, downloading into it what it lacks.

pub mod arch;
pub mod chat_template;
pub mod codec;
pub mod device;
pub mod dims;
pub mod files;
pub mod gguf;
pub mod hub;
pub mod limits;
pub mod names;
pub mod rope;
pub mod save;
pub mod weights;

use std::path::{Path, PathBuf};

pub use arch::{Architecture, QkLayout};
pub use chat_template::ChatTemplate;
pub use codec::{Codec, CodecError};
pub use device::{DeviceError, device, dtype, dtype_on};
pub use dims::Dims;
pub use rope::{Rope, RopeScaling};
pub use weights::Weights;

/// Why a model file cannot be used. Its `Display` is one line that names the file and, where
/// there is one, the field or tensor.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A field, metadata key or tensor holds a value instill cannot use.
    #[error("{}: {field}: {message}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The field (`num_hidden_layers`, `llama.block_count`, `tensor blk.0.attn_q.weight`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file or directory is not a model instill runs (what was found, what is supported).
    #[error("{}: unsupported model: {message}", path.display())]
    Unsupported {
        /// The file or directory.
        path: PathBuf,
        /// What was found and what is supported.
        message: String,
    },
    /// The file is not of the expected format at all.
    #[error("{}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What was expected.
        message: String,
    },
}

impl ModelFileError {
    /// A bad `field` of `path`.
    pub fn field(path: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ModelFileError::Field {
            path: path.to_path_buf(),
            field: field.into(),
            message: message.into(),
        }
    }

    /// `path` is not a model instill runs: `what` it is instead, and what is supported.
    pub fn unsupported(path: &Path, what: impl std::fmt::Display) -> Self {
        ModelFileError::Unsupported {
            path: path.to_path_buf(),
            message: format!("{what}; expected {}", arch::SUPPORTED),
        }
    }

    /// An IO error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
