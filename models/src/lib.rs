//! instill-models: model files as untrusted input. Both loaders (generation in
//! `instill-generator`, training in `instill-trainer`) read a model's shape, its GGUF header and
//! its safetensors files through this crate, so every absurd value (0 or 10¹² layers, a context
//! of 2⁴⁰, an alignment of 0, a tensor that disagrees with the config or lies past the end of its
//! file) is refused here, with the file and the field named, before anything is sized from it.
//!
//! - [`dims`]: the network's shape from `config.json` or GGUF metadata, bounded and
//!   cross-checked; every tensor's shape checked against it.
//! - [`gguf`]: the GGUF header (metadata, tensor directory) read with every length and offset
//!   checked against the file's size; GGUF ↔ Hugging Face tensor names.
//! - [`rope`]: RoPE scaling (llama3, linear, dynamic; any other type refused by name) and the
//!   frequency and `(cos, sin)` tables both decoders rotate with.
//! - [`files`]: which `*.safetensors` files of a directory hold the weights (the index, the HF
//!   shards rather than `consolidated*.safetensors`), each read once.

pub mod dims;
pub mod files;
pub mod gguf;
pub mod rope;

use std::path::{Path, PathBuf};

pub use dims::Dims;
pub use rope::{Rope, RopeScaling};

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

    /// An IO error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        ModelFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
