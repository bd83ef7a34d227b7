//! LoRA adapters: A (Kaiming-uniform) and B (zeros) per target module, scale alpha/r, seeded
//! dropout; merging into base weights (the adapter directory's format is [`crate::peft`]'s).

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;

use crate::TrainError;
use crate::ops;
use instill_core::SplitMix;

/// An adapter's settings, with PEFT's field names where it has them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraConfig {
    /// Rank.
    pub r: usize,
    /// Scale numerator: the update is `alpha / r · B A`.
    pub alpha: f64,
    /// Dropout on the adapter's input while training.
    pub dropout: f64,
    /// Module names (`q_proj`, …) that get adapters.
    pub target_modules: Vec<String>,
    /// Modules trained in full beside the adapters (`embed_tokens`, `lm_head`).
    pub modules_to_save: Vec<String>,
    /// Rank-stabilised LoRA: the update is `alpha / √r · B A`.
    pub use_rslora: bool,
    /// PEFT's `rank_pattern`: (module name pattern, rank) overriding `r`.
    pub rank_pattern: Vec<(String, usize)>,
    /// PEFT's `alpha_pattern`: (module name pattern, alpha) overriding `alpha`.
    pub alpha_pattern: Vec<(String, f64)>,
}

/// Values of a dropout mask drawn by one task (the draws of a chunk start where the ones
/// before it end: [`SplitMix::skip`]).
const MASK_CHUNK: usize = 1 << 14;

/// `n` draws from `seed`, each `1 / (1 − p)` (kept: a uniform draw below `1 − p`) or 0, in
/// parallel chunks of one sequence, each chunk in one vectorised loop ([`ops::fill_mask`]).
fn dropout_mask(seed: u64, p: f64, n: usize) -> Vec<f32> {
    let keep = 1.0 - p;
    let kept = (1.0 / keep) as f32;
    let mut mask = vec![0f32; n];
    mask.par_chunks_mut(MASK_CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| ops::fill_mask(chunk, seed, (c * MASK_CHUNK) as u64, keep, kept));
    mask
}

/// Ranks above this are refused (they exceed any layer instill loads).
pub const MAX_RANK: usize = 1 << 16;

impl LoraConfig {
    /// The rank and scale of the adapter on `module` (its name in the base model, e.g.
    /// `model.layers.0.self_attn.q_proj`), by PEFT's rule: a pattern of `rank_pattern` /
    /// `alpha_pattern` that matches the end of the name at a dot boundary overrides `r` /
    /// `alpha`; the scale is `alpha / r`, or `alpha / √r` with `use_rslora`. Two patterns that
    /// match with different values are refused (PEFT would take whichever it lists first).
    pub fn rank_and_scale(&self, module: &str) -> Result<(usize, f64), TrainError> {
        let r = pattern_value(&self.rank_pattern, module, "rank_pattern")?.unwrap_or(self.r);
        let alpha =
            pattern_value(&self.alpha_pattern, module, "alpha_pattern")?.unwrap_or(self.alpha);
        let divisor = if self.use_rslora {
            (r as f64).sqrt()
        } else {
            r as f64
        };
        Ok((r, alpha / divisor))
    }
}

/// The value of the patterns that match `module` (PEFT's `get_pattern_key`: the whole name,
/// or its end after a dot, matches the pattern as a regular expression).
fn pattern_value<T: Copy + PartialEq + std::fmt::Display>(
    patterns: &[(String, T)],
    module: &str,
    field: &str,
) -> Result<Option<T>, TrainError> {
    let mut found: Option<(&str, T)> = None;
    for (pattern, value) in patterns {
        let re = pattern_regex(pattern).map_err(|e| {
            TrainError::Config(format!(
                "adapter_config.json: {field}: pattern {pattern:?}: {e}"
            ))
        })?;
        if !re.is_match(module) {
            continue;
        }
        match found {
            Some((first, v)) if v != *value => {
                return Err(TrainError::Config(format!(
                    "adapter_config.json: {field}: patterns {first:?} ({v}) and {pattern:?} ({value}) both match {module}; PEFT's choice between them depends on their order: keep one"
                )));
            }
            Some(_) => {}
            None => found = Some((pattern, *value)),
        }
    }
    Ok(found.map(|(_, v)| v))
}

fn pattern_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!(r"^(?:.*\.)?(?:{pattern})$"))
}

/// One module's adapter.
#[derive(Debug, Clone)]
pub struct Lora {
    /// `[r, in]`.
    pub a: Var,
    /// `[out, r]`.
    pub b: Var,
    /// `alpha / r` (`alpha / √r` with rsLoRA), patterns applied.
    pub scale: f64,
    /// Dropout probability.
    pub dropout: f64,
}

impl Lora {
    /// A fresh adapter: A ~ Kaiming-uniform (bound 1/√in, PEFT's default), B = 0.
    /// `module` is the layer's name in the base model (for `rank_pattern`, `alpha_pattern`).
    pub fn new(
        cfg: &LoraConfig,
        module: &str,
        in_dim: usize,
        out_dim: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Lora, TrainError> {
        let (r, scale) = cfg.rank_and_scale(module)?;
        let bound = 1.0 / (in_dim as f64).sqrt();
        let mut rng = SplitMix::new(seed);
        let a: Vec<f32> = (0..r * in_dim)
            .map(|_| ((rng.unit() * 2.0 - 1.0) * bound) as f32)
            .collect();
        Ok(Lora {
            a: Var::from_tensor(&Tensor::from_vec(a, (r, in_dim), device)?)?,
            b: Var::from_tensor(&Tensor::zeros((out_dim, r), DType::F32, device)?)?,
            scale,
            dropout: cfg.dropout,
        })
    }

    /// `scale · dropout(x) Aᵀ Bᵀ`; dropout only with a seed (training), its mask drawn from it.
    pub fn forward(&self, x: &Tensor, dropout_seed: Option<u64>) -> Result<Tensor, TrainError> {
        let y = self
            .input(x, dropout_seed)?
            .broadcast_matmul(&self.a.as_tensor().t()?)?
            .broadcast_matmul(&self.b.as_tensor().t()?)?;
        Ok((y * self.scale)?.to_dtype(x.dtype())?)
    }

    /// The dropout mask of an input of `n` values: `1 / (1 − dropout)` where kept, 0 where
    /// dropped, drawn from `dropout_seed`; `None` when nothing is dropped (no seed: not
    /// training; or no dropout).
    pub(crate) fn mask(&self, n: usize, dropout_seed: Option<u64>) -> Option<Vec<f32>> {
        let seed = dropout_seed.filter(|_| self.dropout > 0.0)?;
        Some(dropout_mask(seed, self.dropout, n))
    }

    /// What the adapter reads: `dropout(x)` in f32 (adapters compute in f32 whatever the
    /// base's type), the mask [`Lora::mask`].
    pub(crate) fn input(
        &self,
        x: &Tensor,
        dropout_seed: Option<u64>,
    ) -> Result<Tensor, TrainError> {
        let input = x.to_dtype(DType::F32)?;
        match self.mask(input.elem_count(), dropout_seed) {
            Some(mask) => Ok((&input * Tensor::from_vec(mask, input.shape(), input.device())?)?),
            None => Ok(input),
        }
    }

    /// `scale · B A`, the update merged into the base weight.
    pub fn delta(&self) -> Result<Tensor, TrainError> {
        Ok((self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale)?)
    }
}

/// `W' = W + scale · B A` for every adapted module (scale: [`LoraConfig::rank_and_scale`]) of `base` (Hugging Face names); checks
/// every shape and the vocabulary of saved embeddings/heads, naming both sizes when they differ.
pub fn merge(
    base: &mut HashMap<String, Tensor>,
    cfg: &LoraConfig,
    adapter: &HashMap<String, Tensor>,
) -> Result<usize, TrainError> {
    let mut merged = 0;
    let mut names: Vec<&String> = adapter.keys().collect();
    names.sort();
    for name in names {
        let tensor = &adapter[name];
        let Some(module) = name.strip_prefix("base_model.model.") else {
            return Err(TrainError::Config(format!(
                "adapter tensor {name}: not a PEFT name (base_model.model.…)"
            )));
        };
        if let Some(module) = module.strip_suffix(".lora_A.weight") {
            let b_name = format!("base_model.model.{module}.lora_B.weight");
            let b = adapter.get(&b_name).ok_or_else(|| {
                TrainError::Config(format!("adapter has {name} but not {b_name}"))
            })?;
            let w_name = format!("{module}.weight");
            let w = base.get(&w_name).ok_or_else(|| {
                TrainError::Config(format!(
                    "adapter targets {w_name}, which the base model does not have"
                ))
            })?;
            let (out_dim, in_dim) = w.dims2()?;
            let (ra, ia) = tensor.dims2()?;
            let (ob, rb) = b.dims2()?;
            if ia != in_dim || ob != out_dim || ra != rb {
                return Err(TrainError::Shape(format!(
                    "{module}: base weight is [{out_dim}, {in_dim}] but the adapter's B·A is [{ob}, {rb}]·[{ra}, {ia}]"
                )));
            }
            let (r, scale) = cfg.rank_and_scale(module)?;
            if ra != r {
                return Err(TrainError::Shape(format!(
                    "{module}: adapter_config.json gives it rank {r} (r, rank_pattern) but its lora_A has {ra} rows"
                )));
            }
            let delta = (b
                .to_dtype(DType::F32)?
                .matmul(&tensor.to_dtype(DType::F32)?)?
                * scale)?;
            let updated = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
            base.insert(w_name, updated);
            merged += 1;
        } else if module.ends_with(".lora_B.weight") {
            continue;
        } else {
            // modules_to_save: a full replacement, e.g. an embedding for a larger vocabulary.
            let key = module
                .replace(".modules_to_save.default", "")
                .replace(".original_module", "");
            let Some(w) = base.get(&key) else {
                return Err(TrainError::Config(format!(
                    "adapter tensor {name}: the base model has no {key}"
                )));
            };
            if w.dims() != tensor.dims() {
                let rows = |t: &Tensor| t.dims().first().copied().unwrap_or(0);
                return Err(TrainError::Shape(format!(
                    "{key}: the base model's vocabulary is {} tokens ({:?}) but the adapter's is {} ({:?}); merge onto the base model the adapter was trained from",
                    rows(w),
                    w.dims(),
                    rows(tensor),
                    tensor.dims()
                )));
            }
            base.insert(key, tensor.clone());
        }
    }
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drawn in vectorised chunks, compared on integers: the mask `unit() < 1 − p` drawn one
    /// value at a time gives, for rates whose `1 − p` is exact in binary and ones that are not.
    #[test]
    fn a_mask_drawn_in_chunks_is_the_one_drawn_in_sequence() {
        let n = 3 * MASK_CHUNK + 5;
        for (seed, p) in [
            (42, 0.1),
            (7, 0.05),
            (u64::MAX, 0.5),
            (3, 1.0 / 3.0),
            (9, 0.999),
        ] {
            let keep = 1.0 - p;
            let mut rng = SplitMix::new(seed);
            let sequential: Vec<f32> = (0..n)
                .map(|_| {
                    if rng.unit() < keep {
                        (1.0 / keep) as f32
                    } else {
                        0.0
                    }
                })
                .collect();
            let chunked = dropout_mask(seed, p, n);
            assert!(chunked == sequential, "seed {seed}, p {p}");
            assert!(chunked.contains(&0.0) && chunked.iter().any(|&m| m > 0.0));
        }
    }
}
