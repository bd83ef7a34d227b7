//! A model's chat template on its own: the Jinja text with the special tokens it refers to
//! (`bos_token`, `eos_token`), read from a Hugging Face directory's `tokenizer_config.json` (or
//! `chat_template.jinja` beside it), and rendered with minijinja the way transformers'
//! `apply_chat_template` does. [`crate::Codec`] renders through here; so does anything that needs
//! the template without the tokenizer (a completion API's prompts built in the chat format).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::ModelFileError;
use crate::codec::CodecError;

/// A chat template and the special tokens it may write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    /// The Jinja source.
    pub source: String,
    /// `bos_token`, when the model has one.
    pub bos: Option<String>,
    /// `eos_token`, when the model has one.
    pub eos: Option<String>,
}

impl ChatTemplate {
    /// Renders `messages` (role, content); `add_generation_prompt` opens the assistant's turn.
    pub fn render(
        &self,
        messages: &[(&str, &str)],
        add_generation_prompt: bool,
    ) -> Result<String, CodecError> {
        render(
            &self.source,
            self.bos.as_deref(),
            self.eos.as_deref(),
            messages,
            add_generation_prompt,
        )
    }

    /// The template of a Hugging Face directory, or of the `tokenizer_config.json` named:
    /// `None` when the file holds none (and, for a directory, no `chat_template.jinja`).
    pub fn from_path(path: &Path) -> Result<Option<ChatTemplate>, ModelFileError> {
        let config = if path.is_dir() {
            TokenizerConfig::read(path)?
        } else {
            let dir = path.parent().unwrap_or(Path::new("."));
            TokenizerConfig::read_file(&path.to_path_buf(), dir)?
        };
        Ok(config.chat_template.map(|source| ChatTemplate {
            source,
            bos: config.bos,
            eos: config.eos,
        }))
    }
}

/// What generation reads from `tokenizer_config.json`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenizerConfig {
    pub(crate) bos: Option<String>,
    pub(crate) eos: Option<String>,
    pub(crate) chat_template: Option<String>,
    pub(crate) add_bos: bool,
}

impl TokenizerConfig {
    /// `dir/tokenizer_config.json` (all defaults when absent), the template from
    /// `dir/chat_template.jinja` when the file has none.
    pub(crate) fn read(dir: &Path) -> Result<TokenizerConfig, ModelFileError> {
        let path = dir.join("tokenizer_config.json");
        if !path.exists() {
            return Ok(TokenizerConfig {
                chat_template: std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
                ..TokenizerConfig::default()
            });
        }
        TokenizerConfig::read_file(&path, dir)
    }

    fn read_file(path: &PathBuf, dir: &Path) -> Result<TokenizerConfig, ModelFileError> {
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Io {
            path: path.clone(),
            source,
        })?;
        let config: Value = serde_json::from_slice(&bytes).map_err(|e| ModelFileError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let token_text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content").and_then(Value::as_str).map(String::from),
            _ => None,
        };
        let chat_template = match config.get("chat_template") {
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: the one named "default", else the first.
            Some(Value::Array(list)) => list
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(Value::as_str)
                .map(String::from),
            _ => None,
        };
        Ok(TokenizerConfig {
            bos: config.get("bos_token").and_then(token_text),
            eos: config.get("eos_token").and_then(token_text),
            chat_template: chat_template
                .or_else(|| std::fs::read_to_string(dir.join("chat_template.jinja")).ok()),
            add_bos: config
                .get("add_bos_token")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }
}

/// Renders the template `source` for `messages` with minijinja (Python's string methods,
/// `raise_exception`), as transformers does.
pub(crate) fn render(
    source: &str,
    bos: Option<&str>,
    eos: Option<&str>,
    messages: &[(&str, &str)],
    add_generation_prompt: bool,
) -> Result<String, CodecError> {
    let mut env = minijinja::Environment::new();
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function("raise_exception", |message: String| -> Result<String, _> {
        Err(minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            message,
        ))
    });
    env.add_template("chat", source)
        .map_err(|e| CodecError::Template(e.to_string()))?;
    let messages: Vec<Value> = messages
        .iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect();
    env.get_template("chat")
        .and_then(|t| {
            t.render(minijinja::context! {
                messages => minijinja::value::Serde(&messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => bos.unwrap_or_default(),
                eos_token => eos.unwrap_or_default(),
            })
        })
        .map_err(|e| CodecError::Template(e.to_string()))
}
