//! The one table of a Llama-family checkpoint's tensors: each part of the network under its
//! Hugging Face name, its GGUF (llama.cpp) name and the short name PEFT and `--target-modules`
//! use. Loaders, checks, savers and LoRA all name tensors through it.

/// A module of a decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Module {
    /// Query projection.
    Q,
    /// Key projection.
    K,
    /// Value projection.
    V,
    /// Attention output projection.
    O,
    /// MLP gate projection.
    Gate,
    /// MLP up projection.
    Up,
    /// MLP down projection.
    Down,
    /// RMSNorm before attention.
    AttnNorm,
    /// RMSNorm before the MLP.
    FfnNorm,
}

/// Every module of a layer, linear ones first in checkpoint order.
pub const LAYER_MODULES: [Module; 9] = [
    Module::Q,
    Module::K,
    Module::V,
    Module::O,
    Module::Gate,
    Module::Up,
    Module::Down,
    Module::AttnNorm,
    Module::FfnNorm,
];

/// The linear modules of a layer: what LoRA can adapt.
pub const LINEAR_MODULES: [Module; 7] = [
    Module::Q,
    Module::K,
    Module::V,
    Module::O,
    Module::Gate,
    Module::Up,
    Module::Down,
];

/// The short names of [`LINEAR_MODULES`] (`q_proj`, …), as LoRA targets are named.
pub const LINEAR_NAMES: [&str; 7] = [
    Module::Q.short(),
    Module::K.short(),
    Module::V.short(),
    Module::O.short(),
    Module::Gate.short(),
    Module::Up.short(),
    Module::Down.short(),
];

/// The short names of the parts LoRA may train in full (PEFT's `modules_to_save`).
pub const WHOLE_NAMES: [&str; 2] = [Part::Embed.short(), Part::LmHead.short()];

impl Module {
    /// Its name inside a Hugging Face layer (`self_attn.q_proj`).
    pub const fn hf(self) -> &'static str {
        match self {
            Module::Q => "self_attn.q_proj",
            Module::K => "self_attn.k_proj",
            Module::V => "self_attn.v_proj",
            Module::O => "self_attn.o_proj",
            Module::Gate => "mlp.gate_proj",
            Module::Up => "mlp.up_proj",
            Module::Down => "mlp.down_proj",
            Module::AttnNorm => "input_layernorm",
            Module::FfnNorm => "post_attention_layernorm",
        }
    }

    /// Its name inside a GGUF block (`attn_q`).
    pub const fn gguf(self) -> &'static str {
        match self {
            Module::Q => "attn_q",
            Module::K => "attn_k",
            Module::V => "attn_v",
            Module::O => "attn_output",
            Module::Gate => "ffn_gate",
            Module::Up => "ffn_up",
            Module::Down => "ffn_down",
            Module::AttnNorm => "attn_norm",
            Module::FfnNorm => "ffn_norm",
        }
    }

    /// Its short name (`q_proj`, `input_layernorm`): the last part of the Hugging Face name.
    pub const fn short(self) -> &'static str {
        match self {
            Module::Q => "q_proj",
            Module::K => "k_proj",
            Module::V => "v_proj",
            Module::O => "o_proj",
            Module::Gate => "gate_proj",
            Module::Up => "up_proj",
            Module::Down => "down_proj",
            Module::AttnNorm => "input_layernorm",
            Module::FfnNorm => "post_attention_layernorm",
        }
    }

    /// The module of a short name (`q_proj`).
    pub fn from_short(name: &str) -> Option<Module> {
        LAYER_MODULES.into_iter().find(|m| m.short() == name)
    }
}

/// A part of the network that holds weights (and perhaps a bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The token embedding.
    Embed,
    /// The final RMSNorm.
    Norm,
    /// The LM head (absent when tied to the embedding).
    LmHead,
    /// A module of decoder layer `.0`.
    Layer(usize, Module),
}

impl Part {
    /// Its Hugging Face name, without `.weight` (`model.layers.0.self_attn.q_proj`).
    pub fn hf(self) -> String {
        match self {
            Part::Layer(i, m) => format!("{HF_LAYERS}{i}.{}", m.hf()),
            other => other.whole_hf().to_string(),
        }
    }

    /// Its GGUF name, without `.weight` (`blk.0.attn_q`).
    pub fn gguf(self) -> String {
        match self {
            Part::Embed => "token_embd".into(),
            Part::Norm => "output_norm".into(),
            Part::LmHead => "output".into(),
            Part::Layer(i, m) => format!("blk.{i}.{}", m.gguf()),
        }
    }

    /// The Hugging Face name of its weight.
    pub fn weight(self) -> String {
        format!("{}.weight", self.hf())
    }

    /// The Hugging Face name of its bias.
    pub fn bias(self) -> String {
        format!("{}.bias", self.hf())
    }

    /// Its short name (`embed_tokens`, `q_proj`).
    pub const fn short(self) -> &'static str {
        match self {
            Part::Embed => "embed_tokens",
            Part::Norm => "norm",
            Part::LmHead => "lm_head",
            Part::Layer(_, m) => m.short(),
        }
    }

    fn whole_hf(self) -> &'static str {
        match self {
            Part::Embed => "model.embed_tokens",
            Part::Norm => "model.norm",
            Part::LmHead => "lm_head",
            Part::Layer(..) => "",
        }
    }

    /// The part and the suffix (`weight`, `bias`) of a Hugging Face tensor name.
    pub fn from_hf(name: &str) -> Option<(Part, &str)> {
        let (stem, kind) = name.rsplit_once('.')?;
        for whole in [Part::Embed, Part::Norm, Part::LmHead] {
            if stem == whole.whole_hf() {
                return Some((whole, kind));
            }
        }
        let (index, module) = stem.strip_prefix(HF_LAYERS)?.split_once('.')?;
        let m = LAYER_MODULES.into_iter().find(|m| m.hf() == module)?;
        Some((Part::Layer(index.parse().ok()?, m), kind))
    }

    /// The part and the suffix of a GGUF tensor name.
    pub fn from_gguf(name: &str) -> Option<(Part, &str)> {
        let (stem, kind) = name.rsplit_once('.')?;
        let part = match stem {
            "token_embd" => Part::Embed,
            "output_norm" => Part::Norm,
            "output" => Part::LmHead,
            _ => {
                let (index, module) = stem.strip_prefix("blk.")?.split_once('.')?;
                let m = LAYER_MODULES.into_iter().find(|m| m.gguf() == module)?;
                Part::Layer(index.parse().ok()?, m)
            }
        };
        Some((part, kind))
    }
}

/// The layer a Hugging Face tensor name belongs to (`model.layers.3.…` → 3), whatever its module.
pub fn hf_layer(name: &str) -> Option<usize> {
    let (index, _) = name.strip_prefix(HF_LAYERS)?.split_once('.')?;
    index.parse().ok()
}

/// The prefix of a Hugging Face layer's tensor names.
const HF_LAYERS: &str = "model.layers.";

/// The Hugging Face name of a GGUF tensor (`blk.0.attn_q.weight` →
/// `model.layers.0.self_attn.q_proj.weight`), for the tensors the loaders use.
pub fn hf_name(gguf: &str) -> Option<String> {
    let (part, kind) = Part::from_gguf(gguf)?;
    Some(format!("{}.{kind}", part.hf()))
}

/// The GGUF name of a Hugging Face tensor (the inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    let (part, kind) = Part::from_hf(hf)?;
    Some(format!("{}.{kind}", part.gguf()))
}

/// The parts of a network of `layers` layers, in checkpoint order.
pub fn parts(layers: usize) -> impl Iterator<Item = Part> {
    [Part::Embed]
        .into_iter()
        .chain((0..layers).flat_map(|i| LAYER_MODULES.map(|m| Part::Layer(i, m))))
        .chain([Part::Norm, Part::LmHead])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_go_both_ways() {
        for part in parts(2) {
            let (hf, gguf) = (part.weight(), format!("{}.weight", part.gguf()));
            assert_eq!(hf_name(&gguf).as_deref(), Some(hf.as_str()));
            assert_eq!(gguf_name(&hf).as_deref(), Some(gguf.as_str()));
        }
        assert_eq!(
            hf_name("blk.3.attn_k.bias").as_deref(),
            Some("model.layers.3.self_attn.k_proj.bias")
        );
        assert_eq!(hf_name("blk.x.attn_k.bias"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
        assert_eq!(LINEAR_NAMES[6], "down_proj");
        assert_eq!(WHOLE_NAMES, ["embed_tokens", "lm_head"]);
    }
}
