//! The shape of a Llama-family network (Llama, Mistral, Qwen2), read once from a Hugging Face
//! `config.json` or from GGUF metadata, every number bounded and cross-checked; and every tensor
//! of the checkpoint checked against it before a loader builds anything from it.

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use serde_json::Value;

use crate::ModelFileError;
use crate::arch::{Architecture, QkLayout};
use crate::names::{Module, Part};
use crate::rope::{Rope, RopeScaling};

pub use crate::limits::{
    MAX_CONTEXT, MAX_HEAD_DIM, MAX_HEADS, MAX_HIDDEN, MAX_INTERMEDIATE, MAX_LAYERS, MAX_VOCAB,
};

/// One number of the shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// Vocabulary size.
    Vocab,
    /// Hidden size.
    Hidden,
    /// Decoder layers.
    Layers,
    /// Attention heads.
    Heads,
    /// Key/value heads.
    KvHeads,
    /// Size of one head.
    HeadDim,
    /// MLP width.
    Intermediate,
    /// Context length.
    Context,
    /// Attention window (Mistral).
    SlidingWindow,
    /// RMSNorm epsilon.
    Eps,
    /// RoPE base.
    Theta,
}

/// Where the shape was read from: names its fields in errors.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A Hugging Face `config.json`.
    Config,
    /// GGUF metadata of this architecture.
    Gguf {
        /// `general.architecture`.
        arch: String,
    },
}

impl Source {
    /// The name of `field` in this source (`num_hidden_layers`, `llama.block_count`).
    pub fn name(&self, field: Field) -> String {
        match self {
            Source::Config => match field {
                Field::Vocab => "vocab_size",
                Field::Hidden => "hidden_size",
                Field::Layers => "num_hidden_layers",
                Field::Heads => "num_attention_heads",
                Field::KvHeads => "num_key_value_heads",
                Field::HeadDim => "head_dim",
                Field::Intermediate => "intermediate_size",
                Field::Context => "max_position_embeddings",
                Field::SlidingWindow => "sliding_window",
                Field::Eps => "rms_norm_eps",
                Field::Theta => "rope_theta",
            }
            .to_string(),
            Source::Gguf { arch } => {
                let key = match field {
                    Field::Vocab => "vocab_size",
                    Field::Hidden => "embedding_length",
                    Field::Layers => "block_count",
                    Field::Heads => "attention.head_count",
                    Field::KvHeads => "attention.head_count_kv",
                    Field::HeadDim => "attention.key_length",
                    Field::Intermediate => "feed_forward_length",
                    Field::Context => "context_length",
                    Field::SlidingWindow => "attention.sliding_window",
                    Field::Eps => "attention.layer_norm_rms_epsilon",
                    Field::Theta => "rope.freq_base",
                };
                format!("{arch}.{key}")
            }
        }
    }
}

/// A value as found in the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// An integer (any sign, any width the format has).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// Something else: what it is (`a string`, `a list`).
    Other(&'static str),
}

/// A model's configuration: its architecture and shape, every number within bounds and
/// consistent with the others. Both decoders (generation and training) are built from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dims {
    /// The file it was read from.
    pub path: PathBuf,
    /// Which kind of file, for field names.
    pub source: Source,
    /// The decoder family.
    pub architecture: Architecture,
    /// How the query/key rows of the weights this configuration goes with pair up for RoPE:
    /// as in the file (GGUF Llama: interleaved); [`crate::weights::Weights::dense`] gives
    /// Hugging Face's halves.
    pub qk_layout: QkLayout,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Attention heads.
    pub num_heads: usize,
    /// Key/value heads; divides `num_heads`.
    pub num_kv_heads: usize,
    /// Size of one head (even: RoPE rotates pairs).
    pub head_dim: usize,
    /// MLP width, when the file states it.
    pub intermediate_size: Option<usize>,
    /// Positions the model was trained for (`max_position_embeddings`).
    pub max_position: usize,
    /// Mistral's attention window, when the model uses one.
    pub sliding_window: Option<usize>,
    /// RMSNorm epsilon.
    pub rms_norm_eps: f64,
    /// RoPE base.
    pub rope_theta: f64,
    /// Whether the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
    /// How RoPE is scaled beyond the pretrained context (see [`crate::rope`]); `None`: plain.
    pub rope_scaling: Option<RopeScaling>,
}

impl Dims {
    /// The rotary embedding this configuration declares (base and scaling).
    pub fn rope(&self) -> Rope {
        Rope::new(
            self.head_dim,
            self.rope_theta,
            self.max_position,
            self.rope_scaling.clone(),
        )
    }

    /// The configuration stated by a `config.json` (already parsed) at `path`; a `model_type`
    /// other than llama, mistral or qwen2 is refused.
    pub fn from_config(v: &Value, path: &Path) -> Result<Dims, ModelFileError> {
        let architecture =
            Architecture::from_model_type(v.get("model_type").and_then(Value::as_str), path)?;
        let rope = v.get("rope_parameters").filter(|r| r.is_object());
        let get = |field: Field| -> Option<Num> {
            let raw = match field {
                Field::Theta => v
                    .get("rope_theta")
                    .or_else(|| rope.and_then(|r| r.get("rope_theta"))),
                // Qwen2 has the window in its config but uses it only with use_sliding_window.
                Field::SlidingWindow
                    if v.get("use_sliding_window").and_then(Value::as_bool) == Some(false) =>
                {
                    None
                }
                _ => v.get(Source::Config.name(field)),
            };
            raw.and_then(json_num)
        };
        let tied = v
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut dims = build(path, Source::Config, &get, tied)?;
        dims.architecture = architecture;
        dims.rope_scaling = RopeScaling::from_config(v, path, dims.max_position)?;
        Ok(dims)
    }

    /// The configuration stated by the metadata of a GGUF file (the vocabulary from
    /// `ARCH.vocab_size`, else the rows of `token_embd.weight`); a `general.architecture` other
    /// than llama or qwen2 is refused. The RoPE scaling comes from the metadata, or from
    /// llama.cpp's `rope_freqs.weight`, read from the file at `path`.
    pub fn from_gguf(content: &gguf_file::Content, path: &Path) -> Result<Dims, ModelFileError> {
        let arch = content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok());
        let architecture = Architecture::from_gguf(arch.map(String::as_str), path)?;
        let source = Source::Gguf {
            arch: architecture.name().to_string(),
        };
        let embed_rows = content
            .tensor_infos
            .get(&format!("{}.weight", Part::Embed.gguf()))
            .and_then(|t| t.shape.dims().first().copied());
        let get = |field: Field| -> Option<Num> {
            match content.metadata.get(&source.name(field)) {
                Some(v) => Some(gguf_num(v)),
                None if field == Field::Vocab => embed_rows.map(|n| Num::Int(n as i128)),
                None => None,
            }
        };
        let tied = !content.tensor_infos.contains_key("output.weight");
        let mut dims = build(path, source.clone(), &get, tied)?;
        dims.architecture = architecture;
        dims.qk_layout = architecture.gguf_qk_layout();
        dims.rope_scaling =
            RopeScaling::from_gguf(content, architecture.name(), path, dims.head_dim)?;
        Ok(dims)
    }

    /// The context the model can attend over: its trained length, capped at its attention
    /// window when it has one (within the window that is full attention).
    pub fn context(&self) -> usize {
        self.sliding_window
            .map_or(self.max_position, |w| w.min(self.max_position))
    }

    fn name(&self, field: Field) -> String {
        self.source.name(field)
    }

    fn bad(&self, field: impl Into<String>, message: impl Into<String>) -> ModelFileError {
        ModelFileError::field(&self.path, field, message)
    }

    /// Checks every tensor whose Hugging Face name the loaders use against this shape:
    /// `tensors` yields (name to report, Hugging Face name, shape). A layer index at or past
    /// the layer count, a zero or wrong dimension is an error naming the tensor and the fields.
    pub fn check_tensors<'a>(
        &self,
        tensors: impl IntoIterator<Item = (&'a str, String, &'a [usize])>,
    ) -> Result<(), ModelFileError> {
        let tensors: Vec<(&str, String, &[usize])> = tensors.into_iter().collect();
        // Configs without intermediate_size (GGUF without feed_forward_length): the first gate
        // projection states it, and every other MLP weight must agree with it.
        let intermediate = match self.intermediate_size {
            Some(i) => i,
            None => tensors
                .iter()
                .find(|(_, hf, _)| *hf == Part::Layer(0, Module::Gate).weight())
                .and_then(|(_, _, s)| s.first().copied())
                .filter(|&i| (1..=MAX_INTERMEDIATE).contains(&i))
                .unwrap_or(0),
        };
        for (shown, hf, shape) in &tensors {
            let Some((want, fields)) = self.expected(hf, intermediate)? else {
                continue;
            };
            if shape != &want.as_slice() {
                return Err(self.bad(
                    format!("tensor {shown}"),
                    format!("shape {shape:?} disagrees with {fields}: expected {want:?}"),
                ));
            }
        }
        let present: std::collections::HashSet<&str> =
            tensors.iter().map(|(_, hf, _)| hf.as_str()).collect();
        if let Some(missing) = self
            .required()
            .into_iter()
            .find(|n| !present.contains(n.as_str()))
        {
            return Err(self.bad(
                format!("tensor {missing}"),
                format!(
                    "is missing, and {} is {}",
                    self.name(Field::Layers),
                    self.num_layers
                ),
            ));
        }
        Ok(())
    }

    /// The Hugging Face names of the tensors every checkpoint of this shape has.
    pub fn required(&self) -> Vec<String> {
        let layers = (0..self.num_layers)
            .flat_map(|i| crate::names::LAYER_MODULES.map(|m| Part::Layer(i, m)));
        [Part::Embed, Part::Norm]
            .into_iter()
            .chain(layers)
            .map(Part::weight)
            .collect()
    }

    /// The shape a tensor must have and the fields that say so; `None` for names the loaders
    /// do not use.
    fn expected(
        &self,
        hf: &str,
        intermediate: usize,
    ) -> Result<Option<(Vec<usize>, String)>, ModelFileError> {
        let (v, h) = (self.vocab_size, self.hidden_size);
        let n = |f: Field, value: usize| format!("{} {value}", self.name(f));
        let hidden = n(Field::Hidden, h);
        let q = self.num_heads * self.head_dim;
        let kv = self.num_kv_heads * self.head_dim;
        let q_fields = format!(
            "{}, {}, {hidden}",
            n(Field::Heads, self.num_heads),
            n(Field::HeadDim, self.head_dim)
        );
        let kv_fields = format!(
            "{}, {}, {hidden}",
            n(Field::KvHeads, self.num_kv_heads),
            n(Field::HeadDim, self.head_dim)
        );
        let i_fields = format!("{}, {hidden}", n(Field::Intermediate, intermediate));
        // Any tensor of a layer past the count, whatever its module, is refused.
        if let Some(index) = crate::names::hf_layer(hf)
            && index >= self.num_layers
        {
            return Err(self.bad(
                format!("tensor {hf}"),
                format!(
                    "layer {index} exists but {} is {}",
                    self.name(Field::Layers),
                    self.num_layers
                ),
            ));
        }
        let Some((part, kind)) = Part::from_hf(hf) else {
            return Ok(None);
        };
        let bias = match kind {
            "weight" => false,
            "bias" => true,
            _ => return Ok(None),
        };
        Ok(Some(match (part, bias) {
            (Part::Embed | Part::LmHead, false) => {
                (vec![v, h], format!("{}, {hidden}", n(Field::Vocab, v)))
            }
            (Part::Norm, false) | (Part::Layer(_, Module::AttnNorm | Module::FfnNorm), false) => {
                (vec![h], hidden)
            }
            (Part::Layer(_, Module::Q), false) => (vec![q, h], q_fields),
            (Part::Layer(_, Module::Q), true) => (vec![q], q_fields),
            (Part::Layer(_, Module::K | Module::V), false) => (vec![kv, h], kv_fields),
            (Part::Layer(_, Module::K | Module::V), true) => (vec![kv], kv_fields),
            (Part::Layer(_, Module::O), false) => (vec![h, q], q_fields),
            (Part::Layer(_, Module::Gate | Module::Up), false) => (vec![intermediate, h], i_fields),
            (Part::Layer(_, Module::Down), false) => (vec![h, intermediate], i_fields),
            _ => return Ok(None),
        }))
    }
}

fn json_num(v: &Value) -> Option<Num> {
    Some(match v {
        Value::Null => return None,
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Num::Int(i128::from(u)),
            (None, Some(i)) => Num::Int(i128::from(i)),
            _ => Num::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::Bool(_) => Num::Other("a boolean"),
        Value::String(_) => Num::Other("a string"),
        Value::Array(_) => Num::Other("a list"),
        Value::Object(_) => Num::Other("an object"),
    })
}

fn gguf_num(v: &gguf_file::Value) -> Num {
    use gguf_file::Value as V;
    match v {
        V::U8(x) => Num::Int(i128::from(*x)),
        V::I8(x) => Num::Int(i128::from(*x)),
        V::U16(x) => Num::Int(i128::from(*x)),
        V::I16(x) => Num::Int(i128::from(*x)),
        V::U32(x) => Num::Int(i128::from(*x)),
        V::I32(x) => Num::Int(i128::from(*x)),
        V::U64(x) => Num::Int(i128::from(*x)),
        V::I64(x) => Num::Int(i128::from(*x)),
        V::F32(x) => Num::Float(f64::from(*x)),
        V::F64(x) => Num::Float(*x),
        V::Bool(_) => Num::Other("a boolean"),
        V::String(_) => Num::Other("a string"),
        V::Array(_) => Num::Other("an array"),
    }
}

/// Reads and checks every field; `get` gives the raw value of a field (None when absent).
fn build(
    path: &Path,
    source: Source,
    get: &dyn Fn(Field) -> Option<Num>,
    tie_word_embeddings: bool,
) -> Result<Dims, ModelFileError> {
    let name = |f: Field| source.name(f);
    let bad = |f: Field, message: String| ModelFileError::field(path, name(f), message);
    let int = |f: Field, max: usize| -> Result<Option<usize>, ModelFileError> {
        match get(f) {
            None => Ok(None),
            Some(Num::Int(n)) if n >= 1 && n <= max as i128 => Ok(Some(n as usize)),
            Some(Num::Int(n)) => Err(bad(f, format!("{n} is out of range (1 to {max})"))),
            Some(Num::Float(x)) => Err(bad(f, format!("{x} is not an integer"))),
            Some(Num::Other(what)) => Err(bad(f, format!("is {what}, not an integer"))),
        }
    };
    let need = |f: Field, max: usize| int(f, max)?.ok_or_else(|| bad(f, "is missing".into()));
    let positive = |f: Field, default: f64, max: f64| -> Result<f64, ModelFileError> {
        let x = match get(f) {
            None => return Ok(default),
            Some(Num::Int(n)) => n as f64,
            Some(Num::Float(x)) => x,
            Some(Num::Other(what)) => return Err(bad(f, format!("is {what}, not a number"))),
        };
        if x.is_finite() && x > 0.0 && x < max {
            Ok(x)
        } else {
            Err(bad(
                f,
                format!("{x} is out of range (above 0, below {max})"),
            ))
        }
    };
    let vocab_size = need(Field::Vocab, MAX_VOCAB)?;
    let hidden_size = need(Field::Hidden, MAX_HIDDEN)?;
    let num_layers = need(Field::Layers, MAX_LAYERS)?;
    let num_heads = need(Field::Heads, MAX_HEADS)?;
    let head_dim = match int(Field::HeadDim, MAX_HEAD_DIM)? {
        Some(d) => d,
        None if hidden_size.is_multiple_of(num_heads) => hidden_size / num_heads,
        None => {
            return Err(bad(
                Field::Hidden,
                format!(
                    "{hidden_size} is not divisible by {} {num_heads} (and {} is not given)",
                    name(Field::Heads),
                    name(Field::HeadDim)
                ),
            ));
        }
    };
    if !head_dim.is_multiple_of(2) {
        return Err(bad(
            Field::HeadDim,
            format!("{head_dim} is odd; rotary embeddings need an even head size"),
        ));
    }
    let num_kv_heads = int(Field::KvHeads, num_heads)?.unwrap_or(num_heads);
    if !num_heads.is_multiple_of(num_kv_heads) {
        return Err(bad(
            Field::KvHeads,
            format!(
                "{num_kv_heads} does not divide {} {num_heads}",
                name(Field::Heads)
            ),
        ));
    }
    let sliding_window = match get(Field::SlidingWindow) {
        // 0 (and a window given only as "off") means none.
        Some(Num::Int(0)) => None,
        _ => int(Field::SlidingWindow, MAX_CONTEXT)?,
    };
    Ok(Dims {
        path: path.to_path_buf(),
        architecture: Architecture::Llama,
        qk_layout: QkLayout::Halves,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        num_kv_heads,
        head_dim,
        intermediate_size: int(Field::Intermediate, MAX_INTERMEDIATE)?,
        max_position: int(Field::Context, MAX_CONTEXT)?.unwrap_or(4096),
        sliding_window,
        rms_norm_eps: positive(Field::Eps, 1e-6, 1.0)?,
        rope_theta: positive(Field::Theta, 10_000.0, 1e12)?,
        tie_word_embeddings,
        rope_scaling: None,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tiny() -> Value {
        json!({"model_type": "llama", "vocab_size": 400, "hidden_size": 64,
               "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
               "num_key_value_heads": 2, "max_position_embeddings": 256})
    }

    fn error(patch: Value) -> String {
        let mut v = tiny();
        for (k, x) in patch.as_object().into_iter().flatten() {
            v[k] = x.clone();
        }
        Dims::from_config(&v, Path::new("m/config.json"))
            .map(|d| format!("accepted: {d:?}"))
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn a_sane_config_reads_with_its_defaults() {
        let d = Dims::from_config(&tiny(), Path::new("config.json")).expect("dims");
        assert_eq!((d.head_dim, d.context(), d.rope_theta), (16, 256, 10_000.0));
    }

    #[test]
    fn each_absurd_field_is_named() {
        for (patch, want) in [
            (
                json!({"num_hidden_layers": 0}),
                "num_hidden_layers: 0 is out of range",
            ),
            (
                json!({"num_hidden_layers": 1_000_000_000_000u64}),
                "num_hidden_layers: 1000000000000 is out of range",
            ),
            (json!({"num_attention_heads": 0}), "num_attention_heads: 0"),
            (
                json!({"max_position_embeddings": 1u64 << 40}),
                "max_position_embeddings",
            ),
            (json!({"vocab_size": -5}), "vocab_size: -5 is out of range"),
            (json!({"vocab_size": "400"}), "vocab_size: is a string"),
            (
                json!({"hidden_size": 63}),
                "hidden_size: 63 is not divisible",
            ),
            (
                json!({"num_key_value_heads": 3}),
                "num_key_value_heads: 3 does not divide",
            ),
            (json!({"rms_norm_eps": -1.0}), "rms_norm_eps: -1"),
            (json!({"head_dim": 15}), "head_dim: 15 is odd"),
        ] {
            let got = error(patch);
            assert!(
                got.starts_with("m/config.json: ") && got.contains(want),
                "{got} (wanted {want})"
            );
        }
    }

    #[test]
    fn a_tensor_that_disagrees_names_it_and_the_fields() {
        let d = Dims::from_config(&tiny(), Path::new("config.json")).expect("dims");
        let ok = [16usize * 4, 64];
        let bad = [48usize, 64];
        // The right shape passes; then the first tensor the checkpoint lacks is named.
        let e = d
            .check_tensors([(
                "q",
                "model.layers.0.self_attn.q_proj.weight".to_string(),
                &ok[..],
            )])
            .expect_err("incomplete")
            .to_string();
        assert!(
            e.contains("tensor model.embed_tokens.weight: is missing"),
            "{e}"
        );
        let e = d
            .check_tensors([(
                "q",
                "model.layers.1.self_attn.q_proj.weight".to_string(),
                &bad[..],
            )])
            .expect_err("wrong shape")
            .to_string();
        assert!(
            e.contains("tensor q") && e.contains("num_attention_heads 4"),
            "{e}"
        );
        let e = d
            .check_tensors([(
                "x",
                "model.layers.2.input_layernorm.weight".to_string(),
                &ok[..1],
            )])
            .expect_err("extra layer")
            .to_string();
        assert!(e.contains("num_hidden_layers is 2"), "{e}");
    }
}
