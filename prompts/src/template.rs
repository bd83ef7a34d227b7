//! Prompt templates: the built-in self-instruct ones and their chain-of-thought (`cot`)
//! variants (Chinese and English, chat and completion shapes) and users' own, each declaring in its first line the reply format it asks for.

use minijinja::{Environment, context};
use serde::Serialize;

use crate::parse::ReplyFormat;

/// Why a template cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No built-in template has this name.
    #[error("unknown template `{name}` (built in: {known}; or give a path to a .j2 file)")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The built-in names.
        known: String,
    },
    /// The file's first line does not declare its reply format.
    #[error(
        "{source_name}: the first line must declare the reply format, e.g. {{#- instill: format=en shape=chat tasks=20 -#}} ({message})"
    )]
    Header {
        /// Where the template came from.
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// minijinja refused the template or failed to render it.
    #[error("{source_name}: {message}")]
    Render {
        /// Where the template came from.
        source_name: String,
        /// What minijinja said.
        message: String,
    },
}

/// Whether the prompt is a chat message (the model answers with the new tasks) or a completion
/// text the model continues (it ends with the next task's `N. Instruction:` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Shape {
    /// One user message; the reply holds whole tasks.
    Chat,
    /// A text to continue; the reply starts inside the next task.
    Completion,
}

/// One example task shown to the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Example {
    /// The instruction.
    pub instruction: String,
    /// The input, empty when none.
    pub input: String,
    /// The output.
    pub output: String,
}

/// A loaded, compiled template with what its header declares.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    env: Environment<'static>,
    /// The reply format (labels and no-input marker) the template asks for.
    pub format: ReplyFormat,
    /// Chat or completion.
    pub shape: Shape,
    /// How many tasks the list holds, examples included.
    pub tasks: usize,
}

const BUILTIN: &[(&str, &str)] = &[
    (
        "en/self_instruct.chat",
        include_str!("../templates/en/self_instruct.chat.j2"),
    ),
    (
        "en/self_instruct.completion",
        include_str!("../templates/en/self_instruct.completion.j2"),
    ),
    (
        "zh/self_instruct.chat",
        include_str!("../templates/zh/self_instruct.chat.j2"),
    ),
    (
        "zh/self_instruct.completion",
        include_str!("../templates/zh/self_instruct.completion.j2"),
    ),
    ("en/cot.chat", include_str!("../templates/en/cot.chat.j2")),
    (
        "en/cot.completion",
        include_str!("../templates/en/cot.completion.j2"),
    ),
    ("zh/cot.chat", include_str!("../templates/zh/cot.chat.j2")),
    (
        "zh/cot.completion",
        include_str!("../templates/zh/cot.completion.j2"),
    ),
];

/// The `key=value` pairs of a template's first line when it is an instill header comment
/// (`{#- instill: format=en tasks=20 -#}`); `None` when the line is something else, an error
/// naming a pair that is not `key=value`.
pub(crate) fn header_pairs(line: &str) -> Option<Result<Vec<(&str, &str)>, String>> {
    let body = line
        .trim()
        .strip_prefix("{#")
        .and_then(|h| h.strip_suffix("#}"))
        .map(|h| h.trim_matches(|c: char| c == '-' || c.is_whitespace()))
        .and_then(|h| h.strip_prefix("instill:"))?;
    Some(
        body.split_whitespace()
            .map(|pair| {
                pair.split_once('=')
                    .ok_or_else(|| format!("`{pair}` is not key=value"))
            })
            .collect(),
    )
}

impl Template {
    /// The built-in template `name` (`en/self_instruct`, `zh/self_instruct`, or the
    /// chain-of-thought `en/cot`, `zh/cot` whose outputs reason in a `<think>` block before the
    /// answer; completed with the shape: `en/self_instruct.chat`).
    pub fn builtin(name: &str, shape: Shape) -> Result<Template, TemplateError> {
        let full = match shape {
            Shape::Chat if !name.contains('.') => format!("{name}.chat"),
            Shape::Completion if !name.contains('.') => format!("{name}.completion"),
            _ => name.to_string(),
        };
        let source = BUILTIN
            .iter()
            .find(|(n, _)| *n == full)
            .map(|(_, s)| *s)
            .ok_or_else(|| TemplateError::Unknown {
                name: name.to_string(),
                known: "en/self_instruct, zh/self_instruct, en/cot, zh/cot".into(),
            })?;
        Template::from_source(&full, source)
    }

    /// A template from its text; `name` is used in messages. The first line must be a comment
    /// `{#- instill: format=en|zh shape=chat|completion tasks=N -#}`.
    pub fn from_source(name: &str, source: &str) -> Result<Template, TemplateError> {
        let header = source.lines().next().unwrap_or("");
        let header_err = |message: String| TemplateError::Header {
            source_name: name.to_string(),
            message,
        };
        let pairs = header_pairs(header)
            .ok_or_else(|| header_err(format!("found {header:?}")))?
            .map_err(header_err)?;
        let (mut format, mut shape, mut tasks) = (None, None, None);
        for (k, v) in pairs {
            match k {
                "format" => {
                    format =
                        Some(ReplyFormat::from_name(v).ok_or_else(|| {
                            header_err(format!("unknown format `{v}` (en or zh)"))
                        })?)
                }
                "shape" => {
                    shape = Some(match v {
                        "chat" => Shape::Chat,
                        "completion" => Shape::Completion,
                        _ => {
                            return Err(header_err(format!(
                                "unknown shape `{v}` (chat or completion)"
                            )));
                        }
                    })
                }
                "tasks" => {
                    tasks = Some(
                        v.parse::<usize>()
                            .map_err(|_| header_err(format!("tasks=`{v}` is not a number")))?,
                    )
                }
                _ => return Err(header_err(format!("unknown key `{k}`"))),
            }
        }
        // Compiled once, here: a broken template fails before any request is sent.
        let mut env = Environment::new();
        env.add_template_owned(name.to_string(), source.to_string())
            .map_err(|e| TemplateError::Render {
                source_name: name.to_string(),
                message: e.to_string(),
            })?;
        Ok(Template {
            name: name.to_string(),
            env,
            format: format.ok_or_else(|| header_err("no format=".into()))?,
            shape: shape.unwrap_or(Shape::Chat),
            tasks: tasks.unwrap_or(20).max(1),
        })
    }

    /// The name the template was loaded as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The prompt for these examples (the list holds `self.tasks` tasks; the model writes the
    /// ones after the examples).
    pub fn render(&self, examples: &[Example]) -> Result<String, TemplateError> {
        let tmpl = self
            .env
            .get_template(&self.name)
            .map_err(|e| TemplateError::Render {
                source_name: self.name.clone(),
                message: e.to_string(),
            })?;
        tmpl.render(context! {
            examples => minijinja::value::Serde(examples),
            num_tasks => self.tasks.max(examples.len() + 1),
            next => examples.len() + 1,
        })
        .map_err(|e| TemplateError::Render {
            source_name: self.name.clone(),
            message: e.to_string(),
        })
    }

    /// What the reply of a completion-shape prompt is missing at its start: the label the prompt
    /// ended with (`4. Instruction:`); empty for chat prompts.
    pub fn reply_prefix(&self, examples: usize) -> String {
        match self.shape {
            Shape::Chat => String::new(),
            Shape::Completion => format!("{}. {}:", examples + 1, self.format.labels().0),
        }
    }
}
