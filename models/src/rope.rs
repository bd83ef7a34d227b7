//! Rotary position embeddings: the scaling a model declares (Llama 3's, linear, dynamic NTK), read
//! from `config.json` or GGUF metadata and checked, and the frequencies and `(cos, sin)` tables
//! both decoders (generation and training) rotate queries and keys with.
//!
//! Every scaling type is named in one place, [`ScalingType::parse`]: a type instill does not
//! implement (`yarn`, `longrope`, `su`, ...) is refused there, naming the file and the field,
//! whichever format it came from.
//!
//! The tables are made for the positions a forward pass needs (`start .. start + len`), never
//! as one table as long as the (untrusted) context: a context of 2²² positions and heads of 1024
//! would otherwise cost gigabytes before the first token. Computing a few thousand angles per
//! forward pass costs nothing next to the matmuls.

use std::borrow::Cow;
use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde_json::Value;

use crate::ModelFileError;
use crate::limits::MAX_CONTEXT;

/// A scaling factor at most (Llama 3.1 uses 8, Llama 3.2 32; linear models up to a few dozen).
pub const MAX_FACTOR: f64 = 1e6;

/// The GGUF tensor in which llama.cpp stores Llama 3's scaling: one divisor per frequency.
pub const GGUF_FREQ_FACTORS: &str = "rope_freqs.weight";

/// How a model stretches RoPE beyond the context it was pretrained on. Every value is checked
/// (finite, positive, bounded) when read.
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Llama 3.1+ (`rope_type: llama3`): wavelengths shorter than
    /// `original / high_freq_factor` are kept, those longer than `original / low_freq_factor`
    /// are divided by `factor`, those in between interpolated.
    Llama3 {
        /// Divisor of the low frequencies.
        factor: f64,
        /// Bound of the low-frequency band, as a divisor of the original context.
        low_freq_factor: f64,
        /// Bound of the high-frequency band (greater than `low_freq_factor`).
        high_freq_factor: f64,
        /// The context the model was pretrained with (`original_max_position_embeddings`).
        original_max_position_embeddings: usize,
    },
    /// Position interpolation (`rope_type: linear`): every frequency divided by `factor`.
    Linear {
        /// The divisor.
        factor: f64,
    },
    /// Dynamic NTK (`rope_type: dynamic`), as transformers computes it: for a sequence of
    /// `seq_len` positions beyond `max_position_embeddings`, the base becomes
    /// `theta · (factor · seq_len / max_position_embeddings − (factor − 1))^(d / (d − 2))`; up to
    /// `max_position_embeddings` the frequencies are plain RoPE's.
    ///
    /// A fixed table cannot follow transformers' state across calls (it keeps the longest
    /// length seen until a call shorter than `max_position_embeddings` resets it). Here the
    /// length is that of the sequence so far (`start + len` of [`Rope::cos_sin`]), which is
    /// what transformers computes within one sequence. The generator refuses positions past the
    /// context, so there dynamic scaling equals plain RoPE, exactly as in transformers; the
    /// trainer takes longer sequences, and there the base grows with them.
    Dynamic {
        /// The NTK factor.
        factor: f64,
    },
    /// llama.cpp's `rope_freqs.weight` (how a GGUF of Llama 3.x carries its `llama3` scaling):
    /// frequency `i` is divided by `factors[i]`; `head_dim / 2` of them, each finite and
    /// positive.
    FreqFactors(Vec<f32>),
}

/// The scaling types instill implements, by the names the files use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalingType {
    /// Plain RoPE (`default`; GGUF's `none`).
    None,
    /// `llama3`.
    Llama3,
    /// `linear`.
    Linear,
    /// `dynamic`.
    Dynamic,
}

impl ScalingType {
    /// The type named `name` in `field` of `path`; any type instill does not implement is
    /// refused here, naming it, the field and the file.
    pub fn parse(name: &str, path: &Path, field: &str) -> Result<ScalingType, ModelFileError> {
        match name {
            "default" | "none" => Ok(ScalingType::None),
            "llama3" => Ok(ScalingType::Llama3),
            "linear" => Ok(ScalingType::Linear),
            "dynamic" => Ok(ScalingType::Dynamic),
            other => Err(ModelFileError::field(
                path,
                field,
                format!(
                    "RoPE scaling {other:?} is not supported (instill implements llama3, linear and dynamic)"
                ),
            )),
        }
    }
}

impl RopeScaling {
    /// The scaling a `config.json` declares: `rope_scaling` (with `rope_type`, or the legacy
    /// `type`), else transformers 5's `rope_parameters`; `None` for plain RoPE.
    /// `max_position_embeddings` is the default of llama3's `original_max_position_embeddings`,
    /// as in transformers.
    pub fn from_config(
        v: &Value,
        path: &Path,
        max_position_embeddings: usize,
    ) -> Result<Option<RopeScaling>, ModelFileError> {
        // transformers: `rope_scaling or rope_parameters`.
        let (key, params) = match v.get("rope_scaling") {
            Some(Value::Null) | None => match v.get("rope_parameters") {
                Some(Value::Null) | None => return Ok(None),
                Some(p) => ("rope_parameters", p),
            },
            Some(p) => ("rope_scaling", p),
        };
        let Value::Object(map) = params else {
            return Err(ModelFileError::field(
                path,
                key,
                format!("is {}, not an object", json_kind(params)),
            ));
        };
        let type_key = if map.contains_key("rope_type") {
            "rope_type"
        } else {
            "type"
        };
        let field = |name: &str| format!("{key}.{name}");
        let kind = match map.get(type_key) {
            None | Some(Value::Null) => ScalingType::None,
            Some(Value::String(s)) => ScalingType::parse(s, path, &field(type_key))?,
            Some(other) => {
                return Err(ModelFileError::field(
                    path,
                    field(type_key),
                    format!("is {}, not a string", json_kind(other)),
                ));
            }
        };
        let number = |name: &str| -> Result<Option<f64>, ModelFileError> {
            match map.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => Ok(n.as_f64()),
                Some(other) => Err(ModelFileError::field(
                    path,
                    field(name),
                    format!("is {}, not a number", json_kind(other)),
                )),
            }
        };
        let original = match map.get("original_max_position_embeddings") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_u64()
                    .and_then(|u| usize::try_from(u).ok())
                    .ok_or_else(|| {
                        ModelFileError::field(
                            path,
                            field("original_max_position_embeddings"),
                            format!("{n} is not a positive integer"),
                        )
                    })?,
            ),
            Some(other) => {
                return Err(ModelFileError::field(
                    path,
                    field("original_max_position_embeddings"),
                    format!("is {}, not an integer", json_kind(other)),
                ));
            }
        };
        let raw = Raw {
            kind,
            factor: number("factor")?,
            low_freq_factor: number("low_freq_factor")?,
            high_freq_factor: number("high_freq_factor")?,
            original: original.or(Some(max_position_embeddings)),
        };
        raw.check(path, &field)
    }

    /// The scaling of a GGUF file of architecture `arch` at `path`: `ARCH.rope.scaling.type`
    /// (with `.factor`; `.original_context_length`), the older `ARCH.rope.scale_linear`, and
    /// llama.cpp's `rope_freqs.weight` tensor (read from the file), which must hold
    /// `head_dim / 2` finite positive factors and cannot be combined with another scaling.
    pub fn from_gguf(
        content: &gguf_file::Content,
        arch: &str,
        path: &Path,
        head_dim: usize,
    ) -> Result<Option<RopeScaling>, ModelFileError> {
        let key = |name: &str| format!("{arch}.rope.{name}");
        let number = |name: &str| -> Result<Option<f64>, ModelFileError> {
            content
                .metadata
                .get(&key(name))
                .map(|v| {
                    gguf_number(v)
                        .ok_or_else(|| ModelFileError::field(path, key(name), "is not a number"))
                })
                .transpose()
        };
        let type_key = key("scaling.type");
        let kind = match content.metadata.get(&type_key) {
            None => None,
            Some(v) => {
                let name = v
                    .to_string()
                    .map_err(|_| ModelFileError::field(path, &type_key, "is not a string"))?;
                Some(ScalingType::parse(name, path, &type_key)?)
            }
        };
        let legacy_linear = number("scale_linear")?.filter(|&f| f != 1.0);
        let (kind, factor) = match (kind, legacy_linear) {
            (Some(kind), _) => (kind, number("scaling.factor")?.or(legacy_linear)),
            (None, Some(f)) => (ScalingType::Linear, Some(f)),
            (None, None) => (ScalingType::None, None),
        };
        let original = number("scaling.original_context_length")?
            .filter(|x| x.fract() == 0.0 && *x >= 1.0 && *x <= MAX_CONTEXT as f64)
            .map(|x| x as usize);
        let raw = Raw {
            kind,
            factor,
            low_freq_factor: None,
            high_freq_factor: None,
            original,
        };
        let field = |name: &str| key(&format!("scaling.{name}"));
        let declared = raw.check(path, &field)?;
        if !content.tensor_infos.contains_key(GGUF_FREQ_FACTORS) {
            return Ok(declared);
        }
        let tensor_field = format!("tensor {GGUF_FREQ_FACTORS}");
        if declared.is_some() {
            return Err(ModelFileError::field(
                path,
                tensor_field,
                format!("per-frequency factors together with {type_key} are not supported"),
            ));
        }
        let factors = read_freq_factors(content, path, head_dim)?;
        Ok(Some(RopeScaling::FreqFactors(factors)))
    }

    /// This scaling as a `config.json`'s `rope_scaling` (for the config written beside a model
    /// trained from a GGUF file). Per-frequency factors have no such form: refused, naming the
    /// tensor.
    pub fn to_config(&self, path: &Path) -> Result<Value, ModelFileError> {
        Ok(match self {
            RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            } => serde_json::json!({
                "rope_type": "llama3", "factor": factor, "low_freq_factor": low_freq_factor,
                "high_freq_factor": high_freq_factor,
                "original_max_position_embeddings": original_max_position_embeddings,
            }),
            RopeScaling::Linear { factor } => {
                serde_json::json!({"rope_type": "linear", "factor": factor})
            }
            RopeScaling::Dynamic { factor } => {
                serde_json::json!({"rope_type": "dynamic", "factor": factor})
            }
            RopeScaling::FreqFactors(_) => {
                return Err(ModelFileError::field(
                    path,
                    format!("tensor {GGUF_FREQ_FACTORS}"),
                    "per-frequency RoPE factors (llama.cpp's form of Llama 3 scaling) have no config.json form; use the model's Hugging Face directory",
                ));
            }
        })
    }
}

/// The fields of a scaling as found, before they are checked.
#[derive(Debug)]
struct Raw {
    kind: ScalingType,
    factor: Option<f64>,
    low_freq_factor: Option<f64>,
    high_freq_factor: Option<f64>,
    original: Option<usize>,
}

impl Raw {
    /// The checked scaling; `field` names a field (`factor`) as the file does.
    fn check(
        &self,
        path: &Path,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Option<RopeScaling>, ModelFileError> {
        let positive = |name: &str, value: Option<f64>| -> Result<f64, ModelFileError> {
            let x = value.ok_or_else(|| ModelFileError::field(path, field(name), "is missing"))?;
            if x.is_finite() && x > 0.0 && x <= MAX_FACTOR {
                Ok(x)
            } else {
                Err(ModelFileError::field(
                    path,
                    field(name),
                    format!("{x} is out of range (above 0, at most {MAX_FACTOR})"),
                ))
            }
        };
        Ok(Some(match self.kind {
            ScalingType::None => return Ok(None),
            ScalingType::Linear => RopeScaling::Linear {
                factor: positive("factor", self.factor)?,
            },
            ScalingType::Dynamic => RopeScaling::Dynamic {
                factor: positive("factor", self.factor)?,
            },
            ScalingType::Llama3 => {
                let low = positive("low_freq_factor", self.low_freq_factor)?;
                let high = positive("high_freq_factor", self.high_freq_factor)?;
                if high <= low {
                    return Err(ModelFileError::field(
                        path,
                        field("high_freq_factor"),
                        format!("{high} is not above {} {low}", field("low_freq_factor")),
                    ));
                }
                let original = self
                    .original
                    .filter(|o| (1..=MAX_CONTEXT).contains(o))
                    .ok_or_else(|| {
                        ModelFileError::field(
                            path,
                            field("original_max_position_embeddings"),
                            format!("is missing or out of range (1 to {MAX_CONTEXT})"),
                        )
                    })?;
                RopeScaling::Llama3 {
                    factor: positive("factor", self.factor)?,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: original,
                }
            }
        }))
    }
}

/// `rope_freqs.weight` of a GGUF file: its shape checked against the head, then read.
fn read_freq_factors(
    content: &gguf_file::Content,
    path: &Path,
    head_dim: usize,
) -> Result<Vec<f32>, ModelFileError> {
    let field = format!("tensor {GGUF_FREQ_FACTORS}");
    let bad = |message: String| ModelFileError::field(path, &field, message);
    let shape = content
        .tensor_infos
        .get(GGUF_FREQ_FACTORS)
        .map(|t| t.shape.dims().to_vec())
        .unwrap_or_default();
    if shape != [head_dim / 2] {
        return Err(bad(format!(
            "shape {shape:?}; expected [{}] (half the head size)",
            head_dim / 2
        )));
    }
    let mut file = std::fs::File::open(path).map_err(|e| ModelFileError::io(path, e))?;
    let factors = content
        .tensor(&mut file, GGUF_FREQ_FACTORS, &Device::Cpu)
        .and_then(|q| q.dequantize(&Device::Cpu))
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| bad(e.to_string()))?;
    if let Some((i, f)) = factors
        .iter()
        .enumerate()
        .find(|(_, f)| !(f.is_finite() && **f > 0.0 && f64::from(**f) <= MAX_FACTOR))
    {
        return Err(bad(format!(
            "factor {i} is {f}; each must be above 0 and at most {MAX_FACTOR}"
        )));
    }
    Ok(factors)
}

fn gguf_number(v: &gguf_file::Value) -> Option<f64> {
    use gguf_file::Value as V;
    Some(match v {
        V::U8(x) => f64::from(*x),
        V::I8(x) => f64::from(*x),
        V::U16(x) => f64::from(*x),
        V::I16(x) => f64::from(*x),
        V::U32(x) => f64::from(*x),
        V::I32(x) => f64::from(*x),
        V::U64(x) => *x as f64,
        V::I64(x) => *x as f64,
        V::F32(x) => f64::from(*x),
        V::F64(x) => *x,
        V::Bool(_) | V::String(_) | V::Array(_) => return None,
    })
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// A model's rotary embedding: its frequencies with the scaling applied, and `(cos, sin)` for
/// any range of positions. Built once per model, shared by every layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Rope {
    head_dim: usize,
    theta: f64,
    /// `max_position_embeddings` (dynamic scaling starts past it).
    max_position: usize,
    scaling: Option<RopeScaling>,
    /// `head_dim / 2` frequencies, scaled (for dynamic: those up to `max_position`).
    inv_freq: Vec<f32>,
}

impl Rope {
    /// The embedding of heads of `head_dim` (even) with base `theta`, trained for
    /// `max_position` positions, with `scaling`.
    pub fn new(
        head_dim: usize,
        theta: f64,
        max_position: usize,
        scaling: Option<RopeScaling>,
    ) -> Rope {
        let mut rope = Rope {
            head_dim,
            theta,
            max_position,
            scaling,
            inv_freq: Vec::new(),
        };
        rope.inv_freq = rope.frequencies(theta);
        rope
    }

    /// The scaling, if any.
    pub fn scaling(&self) -> Option<&RopeScaling> {
        self.scaling.as_ref()
    }

    /// The base.
    pub fn theta(&self) -> f64 {
        self.theta
    }

    /// The `head_dim / 2` frequencies of sequences up to `max_position_embeddings` long.
    pub fn inv_freq(&self) -> &[f32] {
        &self.inv_freq
    }

    /// The frequencies for a sequence of `seq_len` positions: [`Rope::inv_freq`], except for
    /// dynamic scaling past `max_position_embeddings` (see [`RopeScaling::Dynamic`]).
    pub fn inv_freq_for(&self, seq_len: usize) -> Cow<'_, [f32]> {
        match self.scaling {
            Some(RopeScaling::Dynamic { factor }) if seq_len > self.max_position => {
                let d = self.head_dim as f64;
                let ratio = factor * seq_len as f64 / self.max_position as f64 - (factor - 1.0);
                Cow::Owned(self.frequencies(self.theta * ratio.powf(d / (d - 2.0))))
            }
            _ => Cow::Borrowed(&self.inv_freq),
        }
    }

    /// `(cos, sin)`, `[len, head_dim / 2]` each in `dtype`, of positions `start .. start + len`
    /// (a sequence of `start + len` positions so far, for dynamic scaling).
    pub fn cos_sin(
        &self,
        start: usize,
        len: usize,
        device: &Device,
        dtype: DType,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let inv = self.inv_freq_for(start.saturating_add(len));
        let half = inv.len();
        let mut angles = Vec::with_capacity(len * half);
        for p in start..start.saturating_add(len) {
            angles.extend(inv.iter().map(|f| p as f32 * f));
        }
        let angles = Tensor::from_vec(angles, (len, half), device)?;
        Ok((
            angles.cos()?.to_dtype(dtype)?,
            angles.sin()?.to_dtype(dtype)?,
        ))
    }

    /// The frequencies of base `base`, scaled (dynamic's base is already adjusted), in f32 as
    /// transformers computes them.
    fn frequencies(&self, base: f64) -> Vec<f32> {
        let d = self.head_dim;
        let plain = (0..d / 2).map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / d as f32));
        match &self.scaling {
            None | Some(RopeScaling::Dynamic { .. }) => plain.collect(),
            Some(RopeScaling::Linear { factor }) => plain.map(|f| f / *factor as f32).collect(),
            Some(RopeScaling::FreqFactors(factors)) => plain
                .enumerate()
                .map(|(i, f)| f / factors.get(i).copied().unwrap_or(1.0))
                .collect(),
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let (factor, low, high) = (
                    *factor as f32,
                    *low_freq_factor as f32,
                    *high_freq_factor as f32,
                );
                let original = *original_max_position_embeddings as f32;
                let (low_wavelen, high_wavelen) = (original / low, original / high);
                plain
                    .map(|f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (original / wavelen - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(config: Value) -> Result<Option<RopeScaling>, String> {
        RopeScaling::from_config(&config, Path::new("m/config.json"), 256)
            .map_err(|e| e.to_string())
    }

    fn close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                ((g - w) / w).abs() < 2e-6,
                "frequency {i}: {g} vs transformers' {w}"
            );
        }
    }

    fn rope(scaling: Value) -> Rope {
        let s = parse(json!({ "rope_scaling": scaling })).expect("scaling");
        Rope::new(16, 10_000.0, 256, s)
    }

    #[test]
    fn unknown_types_are_refused_naming_the_file_and_the_field() {
        for (config, field) in [
            (
                json!({"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}),
                "rope_scaling.rope_type",
            ),
            (
                json!({"rope_scaling": {"type": "su", "factor": 4.0}}),
                "rope_scaling.type",
            ),
            (
                json!({"rope_parameters": {"rope_type": "longrope", "rope_theta": 1e4}}),
                "rope_parameters.rope_type",
            ),
        ] {
            let e = parse(config).expect_err("refused");
            assert!(
                e.starts_with(&format!("m/config.json: {field}: RoPE scaling \""))
                    && e.contains("not supported"),
                "{e}"
            );
        }
    }

    #[test]
    fn plain_configs_have_no_scaling_and_absurd_values_are_named() {
        for plain in [
            json!({}),
            json!({"rope_scaling": null}),
            json!({"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}}),
        ] {
            assert_eq!(parse(plain), Ok(None));
        }
        for (scaling, want) in [
            (
                json!({"rope_type": "linear"}),
                "rope_scaling.factor: is missing",
            ),
            (
                json!({"rope_type": "linear", "factor": -2.0}),
                "rope_scaling.factor: -2 is out of range",
            ),
            (
                json!({"rope_type": "dynamic", "factor": "2"}),
                "rope_scaling.factor: is a string",
            ),
            (
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                       "high_freq_factor": 1.0}),
                "rope_scaling.high_freq_factor: 1 is not above",
            ),
            (
                json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                       "high_freq_factor": 4.0, "original_max_position_embeddings": 0}),
                "rope_scaling.original_max_position_embeddings",
            ),
            (json!("llama3"), "rope_scaling: is a string, not an object"),
        ] {
            let e = parse(json!({ "rope_scaling": scaling })).expect_err("refused");
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }

    #[test]
    fn llama3_frequencies_are_transformers() {
        // transformers 5.24 `_compute_llama3_parameters`, head_dim 16, theta 1e4: the first
        // kept, the second interpolated, the rest divided by 8.
        let r = rope(
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
        );
        close(
            r.inv_freq(),
            &[
                1.0,
                0.095_839_98,
                0.012_5,
                0.003_952_847_3,
                0.001_25,
                0.000_395_284_73,
                0.000_125,
                3.952_847_3e-5,
            ],
        );
        // Llama 3.2's own numbers (head 128, theta 5e5, factor 32, original 8192).
        let s = RopeScaling::Llama3 {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let r = Rope::new(128, 500_000.0, 131_072, Some(s));
        let picked: Vec<f32> = [0, 20, 30, 40, 50, 63]
            .iter()
            .map(|&i| r.inv_freq()[i])
            .collect();
        close(
            &picked,
            &[
                1.0,
                0.016_560_44,
                0.001_290_548,
                8.570_256e-6,
                1.102_883_6e-6,
                7.672_315e-8,
            ],
        );
    }

    #[test]
    fn linear_frequencies_are_transformers() {
        let r = rope(json!({"type": "linear", "factor": 4.0}));
        close(
            r.inv_freq(),
            &[
                0.25,
                0.079_056_94,
                0.025,
                0.007_905_695,
                0.002_5,
                0.000_790_569_5,
                0.000_25,
                7.905_695e-5,
            ],
        );
    }

    #[test]
    fn dynamic_frequencies_are_transformers() {
        let r = rope(json!({"rope_type": "dynamic", "factor": 2.0}));
        let plain = Rope::new(16, 10_000.0, 256, None);
        // Within max_position_embeddings: plain RoPE.
        assert_eq!(r.inv_freq_for(100).as_ref(), plain.inv_freq());
        assert_eq!(r.inv_freq_for(256).as_ref(), plain.inv_freq());
        // 1024 positions: transformers' `_compute_dynamic_ntk_parameters(seq_len=1024)`.
        close(
            &r.inv_freq_for(1024),
            &[
                1.0,
                0.239_481_34,
                0.057_351_32,
                0.013_734_572,
                0.003_289_173_8,
                0.000_787_695_8,
                0.000_188_638_46,
                4.517_539e-5,
            ],
        );
    }

    #[test]
    fn per_frequency_factors_divide_and_have_no_config_form() {
        let plain = Rope::new(16, 10_000.0, 256, None);
        let factors: Vec<f32> = (0..8).map(|i| 1.0 + i as f32).collect();
        let r = Rope::new(16, 10_000.0, 256, Some(RopeScaling::FreqFactors(factors)));
        for (i, (a, b)) in r.inv_freq().iter().zip(plain.inv_freq()).enumerate() {
            assert_eq!(*a, b / (1.0 + i as f32));
        }
        let e = r
            .scaling()
            .expect("scaling")
            .to_config(Path::new("m.gguf"))
            .expect_err("no config form")
            .to_string();
        assert!(e.starts_with("m.gguf: tensor rope_freqs.weight: "), "{e}");
    }

    #[test]
    fn configs_round_trip() {
        for scaling in [
            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                   "high_freq_factor": 4.0, "original_max_position_embeddings": 32}),
            json!({"rope_type": "linear", "factor": 2.0}),
            json!({"rope_type": "dynamic", "factor": 2.0}),
        ] {
            let s = parse(json!({ "rope_scaling": scaling.clone() }))
                .expect("reads")
                .expect("scaled");
            assert_eq!(s.to_config(Path::new("x")).expect("config"), scaling);
        }
    }

    fn gguf(meta: Vec<(&str, gguf_file::Value)>) -> gguf_file::Content {
        gguf_file::Content {
            magic: gguf_file::VersionedMagic::GgufV3,
            metadata: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            tensor_infos: Default::default(),
            tensor_data_offset: 0,
        }
    }

    #[test]
    fn gguf_metadata_reads_linear_and_refuses_yarn_by_name() {
        use gguf_file::Value as V;
        let read = |meta| RopeScaling::from_gguf(&gguf(meta), "llama", Path::new("m.gguf"), 16);
        assert_eq!(read(vec![]).expect("plain"), None);
        assert_eq!(
            read(vec![
                ("llama.rope.scaling.type", V::String("linear".into())),
                ("llama.rope.scaling.factor", V::F32(4.0)),
            ])
            .expect("linear"),
            Some(RopeScaling::Linear { factor: 4.0 })
        );
        assert_eq!(
            read(vec![("llama.rope.scale_linear", V::F32(2.0))]).expect("legacy"),
            Some(RopeScaling::Linear { factor: 2.0 })
        );
        let e = read(vec![
            ("llama.rope.scaling.type", V::String("yarn".into())),
            ("llama.rope.scaling.factor", V::F32(4.0)),
        ])
        .expect_err("yarn")
        .to_string();
        assert!(
            e.starts_with(
                "m.gguf: llama.rope.scaling.type: RoPE scaling \"yarn\" is not supported"
            ),
            "{e}"
        );
        let e = read(vec![(
            "llama.rope.scaling.type",
            V::String("linear".into()),
        )])
        .expect_err("no factor")
        .to_string();
        assert!(e.contains("llama.rope.scaling.factor: is missing"), "{e}");
    }

    #[test]
    fn tables_are_made_for_the_positions_asked() {
        let r = rope(json!({"rope_type": "linear", "factor": 2.0}));
        let (cos, sin) = r.cos_sin(5, 3, &Device::Cpu, DType::F32).expect("table");
        assert_eq!(cos.dims(), [3, 8]);
        let sin = sin.to_vec2::<f32>().expect("sin");
        assert_eq!(sin[1][0], (6.0f32 * 0.5).sin());
        // A context of 2²² positions costs nothing until positions are asked for.
        let long = Rope::new(1024, 1e6, MAX_CONTEXT, None);
        assert_eq!(long.inv_freq().len(), 512);
        let (cos, _) = long
            .cos_sin(MAX_CONTEXT - 1, 1, &Device::Cpu, DType::F32)
            .expect("last position");
        assert_eq!(cos.dims(), [1, 512]);
    }
}
