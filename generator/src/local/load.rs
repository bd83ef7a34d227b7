//! Loading a local model: the weights and configuration of a Hugging Face directory or a GGUF
//! file (read and checked by `instill_models::Weights`) built into the inference decoder, with
//! the model's codec.

use std::path::Path;

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use instill_models::names::{Module, Part};
use instill_models::weights::Stored;
use instill_models::{Codec, Weights};

use super::LocalError;
use super::model::{Layer, Linear, Model};

/// A model and its codec.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The network.
    pub model: Model,
    /// Its tokenizer and chat template.
    pub codec: Codec,
}

/// How to load a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadOptions<'a> {
    /// Type of dense (safetensors) weights and activations; GGUF models compute in f32.
    pub dtype: DType,
    /// A `tokenizer.json` to use instead of the model's own.
    pub tokenizer: Option<&'a Path>,
    /// Expand quantized GGUF weights to f32 at load: several times the memory, but a batched
    /// decode step then costs about what one sequence does (candle's quantized CPU kernels
    /// work one row at a time).
    pub dequantize: bool,
}

impl Default for LoadOptions<'_> {
    fn default() -> Self {
        LoadOptions {
            dtype: DType::F32,
            tokenizer: None,
            dequantize: false,
        }
    }
}

/// Loads `path` (a directory or a `.gguf` file) onto `device`. GGUF weights stay as stored
/// (quantized, Llama's q/k rows in llama.cpp's order, so RoPE rotates interleaved pairs).
pub fn load(path: &Path, device: &Device, options: &LoadOptions) -> Result<Loaded, LocalError> {
    let weights = Weights::open(path, device)?;
    // Dense weights take the asked type; dequantized GGUF weights are f32.
    let dtype = match weights.dir() {
        Some(_) => options.dtype,
        None => DType::F32,
    };
    let dims = weights.dims().clone();
    let linear = |part: Part| -> Result<Linear, LocalError> {
        let weight = match weights.stored(&part.weight())? {
            Stored::Dense(t) => QMatMul::Tensor(t.to_dtype(dtype)?),
            Stored::Quantized(q) if options.dequantize => QMatMul::Tensor(q.dequantize(device)?),
            Stored::Quantized(q) => QMatMul::from_qtensor(q)?,
        };
        let bias = if weights.has(&part.bias()) {
            Some(dense(&weights, &part.bias(), dtype, device)?)
        } else {
            None
        };
        Ok(Linear::new(weight, bias))
    };
    let mut layers = Vec::with_capacity(dims.num_layers);
    for i in 0..dims.num_layers {
        let l = |m: Module| Part::Layer(i, m);
        layers.push(Layer {
            q: linear(l(Module::Q))?,
            k: linear(l(Module::K))?,
            v: linear(l(Module::V))?,
            o: linear(l(Module::O))?,
            gate: linear(l(Module::Gate))?,
            up: linear(l(Module::Up))?,
            down: linear(l(Module::Down))?,
            attn_norm: dense(&weights, &l(Module::AttnNorm).weight(), dtype, device)?,
            ffn_norm: dense(&weights, &l(Module::FfnNorm).weight(), dtype, device)?,
        });
    }
    let embed_stored = weights.stored(&Part::Embed.weight())?;
    let embed = embed_stored.dequantize(device)?.to_dtype(dtype)?;
    let lm_head = if !dims.tie_word_embeddings && weights.has(&Part::LmHead.weight()) {
        linear(Part::LmHead)?
    } else {
        let weight = match embed_stored {
            Stored::Quantized(q) if !options.dequantize => QMatMul::from_qtensor(q)?,
            _ => QMatMul::Tensor(embed.clone()),
        };
        Linear::new(weight, None)
    };
    let norm = dense(&weights, &Part::Norm.weight(), dtype, device)?;
    let model = Model::new(dims, embed, layers, norm, lm_head)?;
    let codec = weights.codec(options.tokenizer)?;
    Ok(Loaded { model, codec })
}

/// A tensor as a plain one in `dtype` (GGUF tensors dequantized, rows as stored).
fn dense(
    weights: &Weights,
    name: &str,
    dtype: DType,
    device: &Device,
) -> Result<Tensor, LocalError> {
    Ok(weights.stored(name)?.dequantize(device)?.to_dtype(dtype)?)
}
