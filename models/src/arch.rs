//! Which Llama-family architectures instill runs and trains, decided once: from a
//! `config.json`'s `model_type` or a GGUF file's `general.architecture`; and how a checkpoint's
//! query/key rows pair up for RoPE.

use std::path::Path;

use crate::ModelFileError;

/// What instill loads, for messages that refuse something else.
pub const SUPPORTED: &str = "a Hugging Face directory of a llama, mistral or qwen2 model (config.json, *.safetensors, tokenizer.json) or a GGUF file of a llama or qwen2 model";

/// A decoder family instill's two decoders implement (the same network up to these details).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama (and SmolLM): no attention biases.
    Llama,
    /// Mistral: Llama with a sliding attention window.
    Mistral,
    /// Qwen2: Llama with biases on the q, k and v projections.
    Qwen2,
}

impl Architecture {
    /// The architecture of a `config.json`'s `model_type` at `path`; anything else is refused,
    /// naming it.
    pub fn from_model_type(model_type: Option<&str>, path: &Path) -> Result<Self, ModelFileError> {
        match model_type {
            Some("llama") => Ok(Architecture::Llama),
            Some("mistral") => Ok(Architecture::Mistral),
            Some("qwen2") => Ok(Architecture::Qwen2),
            other => Err(ModelFileError::unsupported(
                path,
                format!("model_type {:?}", other.unwrap_or("(none)")),
            )),
        }
    }

    /// The architecture of a GGUF file's `general.architecture` (llama.cpp writes Mistral
    /// models as `llama`); anything else is refused, naming it.
    pub fn from_gguf(arch: Option<&str>, path: &Path) -> Result<Self, ModelFileError> {
        match arch {
            Some("llama") => Ok(Architecture::Llama),
            Some("qwen2") => Ok(Architecture::Qwen2),
            other => Err(ModelFileError::unsupported(
                path,
                format!("GGUF architecture {:?}", other.unwrap_or("")),
            )),
        }
    }

    /// `model_type` in `config.json` (and the GGUF architecture where there is one).
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
        }
    }

    /// transformers' class (`architectures` in `config.json`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
        }
    }

    /// How a GGUF file of this architecture stores the query and key rows: llama.cpp permutes
    /// Llama's for its interleaved RoPE; Qwen2's stay as in Hugging Face (NEOX-style RoPE).
    pub fn gguf_qk_layout(self) -> QkLayout {
        match self {
            Architecture::Llama | Architecture::Mistral => QkLayout::Interleaved,
            Architecture::Qwen2 => QkLayout::Halves,
        }
    }
}

/// Which dimensions of a head RoPE rotates together, as the query/key weight rows are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QkLayout {
    /// `(i, i + d/2)`: Hugging Face checkpoints (and GGUF Qwen2).
    Halves,
    /// `(2i, 2i + 1)`: llama.cpp's Llama rows.
    Interleaved,
}
