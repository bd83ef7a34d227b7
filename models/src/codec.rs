//! Text in and out of a model: the tokenizer (from `tokenizer.json` or built from GGUF
//! metadata), the special tokens that end a reply, and the chat template rendered with minijinja.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file;
use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::ModelFileError;
use crate::chat_template::{ChatTemplate, TokenizerConfig};

/// Why text could not be turned into token ids or back, or a codec could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The model ships no chat template, and a prompt needed one.
    #[error("the model has no chat template")]
    NoChatTemplate,
    /// The chat template could not be compiled or rendered.
    #[error("chat template: {0}")]
    Template(String),
    /// A tokenizer or tokenizer configuration file cannot be used.
    #[error(transparent)]
    File(#[from] ModelFileError),
}

/// A tokenizer with what generation needs around it.
#[derive(Debug, Clone)]
pub struct Codec {
    /// The tokenizer proper.
    pub tokenizer: Tokenizer,
    /// Token ids that end a reply (EOS, `<|im_end|>`, `<|eot_id|>`, …).
    pub eos_ids: Vec<u32>,
    /// The BOS token, when the model has one.
    pub bos: Option<String>,
    /// The EOS token's text (templates refer to it as `eos_token`).
    pub eos: Option<String>,
    /// Whether a plain (completion) prompt starts with BOS.
    pub add_bos: bool,
    /// The chat template (Jinja), when the model ships one.
    pub chat_template: Option<String>,
}

impl Codec {
    /// Token ids of a prompt: the chat template applied to one user message (`chat`), or the
    /// text itself behind BOS when the model wants one.
    pub fn encode_prompt(&self, prompt: &str, chat: bool) -> Result<Vec<u32>, CodecError> {
        let text = if chat {
            self.render_chat(&[("user", prompt)])?
        } else {
            match (&self.bos, self.add_bos) {
                (Some(bos), true) if !prompt.starts_with(bos.as_str()) => format!("{bos}{prompt}"),
                _ => prompt.to_string(),
            }
        };
        self.encode(&text)
    }

    /// Token ids of a text; special tokens written in it are recognised, none are added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, CodecError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| CodecError::Tokenizer(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The ids of those of `texts` that are one special token each (decoded text leaves them
    /// out, so a stop string that is one can only be seen as its id).
    pub fn special_token_ids(&self, texts: &[String]) -> Vec<u32> {
        let added = self.tokenizer.get_added_tokens_decoder();
        let mut ids: Vec<u32> = added
            .iter()
            .filter(|(_, t)| t.special && texts.contains(&t.content))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Text of token ids, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String, CodecError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| CodecError::Tokenizer(e.to_string()))
    }

    /// Renders the chat template for `messages` (role, content), ready for the assistant's turn.
    pub fn render_chat(&self, messages: &[(&str, &str)]) -> Result<String, CodecError> {
        self.render(messages, true)
    }

    /// What the chat template writes to open the assistant's turn after `messages` (its
    /// `add_generation_prompt` text, e.g. `<|im_start|>assistant\n`): the rendering with it less
    /// the rendering without it. Empty for a template that writes none; an error when the one
    /// rendering does not extend the other, so no such text can be told.
    pub fn generation_prompt(&self, messages: &[(&str, &str)]) -> Result<String, CodecError> {
        let with = self.render(messages, true)?;
        let without = self.render(messages, false)?;
        with.strip_prefix(without.as_str())
            .map(str::to_string)
            .ok_or_else(|| {
                CodecError::Template(
                    "the rendering that opens the assistant's turn does not extend the one that does not, so the turn's opening text cannot be told".into(),
                )
            })
    }

    fn render(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<String, CodecError> {
        let template = self
            .chat_template
            .as_deref()
            .ok_or(CodecError::NoChatTemplate)?;
        crate::chat_template::render(
            template,
            self.bos.as_deref(),
            self.eos.as_deref(),
            messages,
            add_generation_prompt,
        )
    }

    /// The chat template with the special tokens it refers to, when the model ships one.
    pub fn template(&self) -> Option<ChatTemplate> {
        self.chat_template.as_ref().map(|source| ChatTemplate {
            source: source.clone(),
            bos: self.bos.clone(),
            eos: self.eos.clone(),
        })
    }

    /// The codec of a Hugging Face model directory: `tokenizer.json`, `tokenizer_config.json`
    /// (chat template, BOS/EOS) and `generation_config.json` (extra EOS ids) when present.
    pub fn from_hf_dir(dir: &Path, tokenizer_file: Option<&Path>) -> Result<Codec, CodecError> {
        let tokenizer_path =
            tokenizer_file.map_or_else(|| dir.join("tokenizer.json"), Path::to_path_buf);
        let tokenizer = load_tokenizer_file(&tokenizer_path)?;
        let TokenizerConfig {
            bos,
            eos,
            chat_template,
            add_bos,
        } = TokenizerConfig::read(dir)?;
        let mut eos_ids: Vec<u32> = eos
            .iter()
            .filter_map(|t| tokenizer.token_to_id(t))
            .collect();
        if let Ok(bytes) = std::fs::read(dir.join("generation_config.json"))
            && let Ok(generation) = serde_json::from_slice::<Value>(&bytes)
        {
            match generation.get("eos_token_id") {
                Some(Value::Number(n)) => eos_ids.extend(n.as_u64().map(|v| v as u32)),
                Some(Value::Array(ids)) => {
                    eos_ids.extend(ids.iter().filter_map(Value::as_u64).map(|v| v as u32))
                }
                _ => {}
            }
        }
        eos_ids.sort_unstable();
        eos_ids.dedup();
        Ok(Codec {
            tokenizer,
            eos_ids,
            bos,
            eos,
            add_bos,
            chat_template,
        })
    }

    /// The codec of a GGUF file: the tokenizer rebuilt from `tokenizer.ggml.*` (or read from
    /// `tokenizer_file`), the chat template from `tokenizer.chat_template`.
    pub fn from_gguf(
        path: &Path,
        content: &gguf_file::Content,
        tokenizer_file: Option<&Path>,
    ) -> Result<Codec, CodecError> {
        let meta = &content.metadata;
        let string = |key: &str| meta.get(key).and_then(|v| v.to_string().ok()).cloned();
        let id = |key: &str| meta.get(key).and_then(|v| v.to_u32().ok());
        let tokens = strings(meta, "tokenizer.ggml.tokens");
        let tokenizer = match tokenizer_file {
            Some(file) => load_tokenizer_file(file)?,
            None => gguf_tokenizer(path, content, &tokens)?,
        };
        let name = |i: Option<u32>| i.and_then(|i| tokens.get(i as usize).cloned());
        let bos = name(id("tokenizer.ggml.bos_token_id"));
        let eos_id = id("tokenizer.ggml.eos_token_id");
        let eos = name(eos_id);
        let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
        eos_ids.extend(id("tokenizer.ggml.eot_token_id"));
        eos_ids.sort_unstable();
        eos_ids.dedup();
        let add_bos = meta
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.to_bool().ok())
            .unwrap_or(false);
        Ok(Codec {
            tokenizer,
            eos_ids,
            bos,
            eos,
            add_bos,
            chat_template: string("tokenizer.chat_template"),
        })
    }
}

fn load_tokenizer_file(path: &Path) -> Result<Tokenizer, CodecError> {
    Tokenizer::from_file(path).map_err(|e| {
        ModelFileError::Format {
            path: path.to_path_buf(),
            message: format!("not a usable tokenizer.json: {e}"),
        }
        .into()
    })
}

/// Pre-tokenizer split patterns of the byte-level BPE families, keyed by `tokenizer.ggml.pre`
/// (the names llama.cpp's converter writes).
fn pre_tokenizer(pre: &str) -> Option<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": use_regex});
    let split = |pattern: &str| json!({"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false});
    Some(match pre {
        "default" | "gpt-2" | "gpt2" => byte_level(true),
        "smollm" | "starcoder" => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
        "qwen2" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        "llama-bpe" | "llama3" => json!({"type": "Sequence", "pretokenizers": [
            split(r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"),
            byte_level(false)]}),
        _ => return None,
    })
}

const SUPPORTED_PRE: &str = "default, gpt2, smollm, starcoder, qwen2, llama-bpe";

/// Rebuilds a byte-level BPE tokenizer from GGUF metadata: vocabulary, merges, control tokens
/// as special added tokens, the family's pre-tokenizer, a byte-level decoder.
fn gguf_tokenizer(
    path: &Path,
    content: &gguf_file::Content,
    tokens: &[String],
) -> Result<Tokenizer, CodecError> {
    let meta = &content.metadata;
    let unsupported = |what: String| -> CodecError {
        ModelFileError::Unsupported {
            path: path.to_path_buf(),
            message: format!(
                "{what}; instill builds byte-level BPE tokenizers (tokenizer.ggml.model = gpt2, pre = {SUPPORTED_PRE}); give a tokenizer.json for others"
            ),
        }
        .into()
    };
    let model = meta
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("(none)");
    if model != "gpt2" {
        return Err(unsupported(format!("tokenizer.ggml.model is {model:?}")));
    }
    let pre_name = meta
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str)
        .unwrap_or("default");
    let pre = pre_tokenizer(pre_name)
        .ok_or_else(|| unsupported(format!("tokenizer.ggml.pre is {pre_name:?}")))?;
    if tokens.is_empty() {
        return Err(unsupported("tokenizer.ggml.tokens is missing".into()));
    }
    let merges = strings(meta, "tokenizer.ggml.merges");
    let types: Vec<i64> = meta
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.to_vec().ok())
        .map(|list| {
            list.iter()
                .map(|t| t.to_i32().map(i64::from).unwrap_or(1))
                .collect()
        })
        .unwrap_or_default();
    let vocab: serde_json::Map<String, Value> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    // Control (3) and user-defined (4) tokens are matched whole, before the BPE sees the text.
    let added: Vec<Value> = types
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t, 3 | 4))
        .filter_map(|(i, t)| {
            tokens.get(i).map(|content| {
                json!({"id": i, "content": content, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": *t == 4, "special": *t == 3})
            })
        })
        .collect();
    let spec = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": merges},
    });
    let text = spec.to_string();
    text.parse::<Tokenizer>()
        .map_err(|e| unsupported(format!("the tokenizer could not be rebuilt ({e})")))
}

/// The strings of the GGUF metadata list `key` (empty when absent; non-strings skipped).
fn strings(meta: &HashMap<String, gguf_file::Value>, key: &str) -> Vec<String> {
    meta.get(key)
        .and_then(|v| v.to_vec().ok())
        .map(|list| {
            list.iter()
                .filter_map(|t| t.to_string().ok().cloned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(template: &str) -> Codec {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/local/tiny-llama");
        Codec {
            chat_template: Some(template.to_string()),
            ..Codec::from_hf_dir(&dir, None).expect("fixture codec")
        }
    }

    /// Stop strings that are one special token are found by id (decoding drops them); other
    /// strings, and tokens that are not special, are not.
    #[test]
    fn stop_strings_that_are_special_tokens_are_found_by_id() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/local/smollm2");
        let c = Codec::from_hf_dir(&dir, None).expect("fixture codec");
        let stops: Vec<String> = ["<|im_end|>", "\n", "hello", "<|im_start|>user"]
            .map(String::from)
            .to_vec();
        let im_end = c.tokenizer.token_to_id("<|im_end|>").expect("im_end");
        assert_eq!(c.special_token_ids(&stops), vec![im_end]);
        assert_eq!(c.decode(&[im_end]).expect("decode"), "");
        assert!(c.special_token_ids(&[]).is_empty());
    }

    #[test]
    fn the_generation_prompt_is_what_opening_the_assistants_turn_adds() {
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let turns = [("system", "Be brief."), ("user", "hi")];
        assert_eq!(
            codec(chatml).generation_prompt(&turns).expect("chatml"),
            "<|im_start|>assistant\n"
        );
        // Llama 2's template writes nothing for it.
        let plain = "{% for m in messages %}[{{ m.content }}]{% endfor %}";
        assert_eq!(codec(plain).generation_prompt(&turns).expect("plain"), "");
        // A template whose two renderings diverge has no such text.
        let odd = "{% if add_generation_prompt %}A{% else %}B{% endif %}";
        assert!(matches!(
            codec(odd).generation_prompt(&turns),
            Err(CodecError::Template(_))
        ));
    }
}
