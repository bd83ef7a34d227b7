//! Rubrics: the words an LLM judge reads to score one stored record. The built-in ones
//! (`templates/judge/{en,zh}.j2`, worded by the team) rate instruction quality and the answer's
//! helpfulness, correctness and harmlessness from 1 to 10, asking for a short rationale first
//! and a last line `Score: N` / `评分：N`; a user's file is any minijinja template over the
//! same variables.
//!
//! A rubric file may open with a header comment declaring its scale,
//! `{#- instill: min=0 max=5 -#}`; without one the scale is 1–10. Its variables are
//! `instruction`, `input`, `output`, `history` (a list of `{user, assistant}`), `min` and `max`;
//! it must show `instruction` and `output`, and any other name is refused when the file is
//! read, not when the first record is.

use std::collections::BTreeSet;

use instill_core::{Exchange, Lang};
use minijinja::{AutoEscape, Environment, Value, context};
use serde::Serialize;
use xxhash_rust::xxh3::xxh3_128;

use crate::score::Scale;
use crate::template::header_pairs;

/// Why a rubric cannot be used. Messages name the rubric and, where there is one, the line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RubricError {
    /// The first line is an instill header that does not read.
    #[error(
        "{name}:{line}: {message} (the header reads {{#- instill: min=1 max=10 -#}}; both optional)"
    )]
    Header {
        /// The rubric's name (its file).
        name: String,
        /// The line (1).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// minijinja cannot compile the template.
    #[error("{name}:{line}: {message}")]
    Syntax {
        /// The rubric's name.
        name: String,
        /// The line minijinja names (1 when it names none).
        line: usize,
        /// What minijinja said.
        message: String,
    },
    /// The template uses a name that is not one of the rubric's variables.
    #[error("{name}:{line}: unknown variable `{variable}` (a rubric knows {KNOWN})")]
    UnknownVariable {
        /// The rubric's name.
        name: String,
        /// The first line the variable appears on.
        line: usize,
        /// The unknown name.
        variable: String,
    },
    /// The template never shows a variable a judge must see.
    #[error("{name}: the rubric never shows `{variable}`: the judge would not see it")]
    Missing {
        /// The rubric's name.
        name: String,
        /// `instruction` or `output`.
        variable: &'static str,
    },
    /// Rendering failed.
    #[error("{name}: {message}")]
    Render {
        /// The rubric's name.
        name: String,
        /// What minijinja said.
        message: String,
    },
}

const KNOWN: &str = "instruction, input, output, history, min, max";
const VARIABLES: &[&str] = &["instruction", "input", "output", "history", "min", "max"];
/// minijinja's global functions, which its static analysis reports as undeclared.
const GLOBALS: &[&str] = &["range", "dict", "namespace", "cycler", "joiner", "debug"];

/// A rubric: its name, template text, scale and content hash, compiled.
#[derive(Debug, Clone)]
pub struct Rubric {
    name: String,
    text: String,
    scale: Scale,
    hash: String,
    env: Environment<'static>,
}

/// One earlier exchange as a template sees it.
#[derive(Serialize)]
struct Turn<'a> {
    user: &'a str,
    assistant: &'a str,
}

impl Rubric {
    /// The built-in rubric for records in `lang`: Chinese for [`Lang::Zh`], English otherwise.
    /// Named `builtin/zh` or `builtin/en`.
    pub fn builtin(lang: Lang) -> Result<Rubric, RubricError> {
        match lang {
            Lang::Zh => Rubric::parse("builtin/zh", include_str!("../templates/judge/zh.j2")),
            Lang::En | Lang::Other => {
                Rubric::parse("builtin/en", include_str!("../templates/judge/en.j2"))
            }
        }
    }

    /// A rubric from its text; `name` (its file) is used in messages.
    pub fn parse(name: &str, text: &str) -> Result<Rubric, RubricError> {
        let scale = header_scale(name, text.lines().next().unwrap_or(""))?;
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.add_template_owned(name.to_string(), text.to_string())
            .map_err(|e| RubricError::Syntax {
                name: name.to_string(),
                line: e.line().unwrap_or(1),
                message: e.detail().unwrap_or(&e.to_string()).to_string(),
            })?;
        check_variables(&env, name, text)?;
        Ok(Rubric {
            name: name.to_string(),
            text: text.to_string(),
            scale,
            hash: format!("{:032x}", xxh3_128(text.as_bytes())),
            env,
        })
    }

    /// The name it was loaded as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The template's text, header included.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The scale its scores are on.
    pub fn scale(&self) -> Scale {
        self.scale
    }

    /// xxh3-128 of the text, 32 hex digits: equal texts, equal hashes, whatever the name.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The judge's prompt for one record: its instruction, input (may be empty), output and
    /// earlier turns (empty for a single-turn record).
    pub fn render(
        &self,
        instruction: &str,
        input: &str,
        output: &str,
        history: &[Exchange],
    ) -> Result<String, RubricError> {
        let render_err = |e: minijinja::Error| RubricError::Render {
            name: self.name.clone(),
            message: e.to_string(),
        };
        let turns: Vec<Turn<'_>> = history
            .iter()
            .map(|e| Turn {
                user: e.user(),
                assistant: e.assistant(),
            })
            .collect();
        self.env
            .get_template(&self.name)
            .map_err(render_err)?
            .render(context! {
                instruction, input, output,
                history => minijinja::value::Serde(&turns),
                min => number(self.scale.min),
                max => number(self.scale.max),
            })
            .map_err(render_err)
    }
}

/// A bound as a template shows it: `1`, not `1.0`.
fn number(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        Value::from(v as i64)
    } else {
        Value::from(v)
    }
}

/// The scale a rubric's first line declares; 1–10 when it declares none.
fn header_scale(name: &str, first: &str) -> Result<Scale, RubricError> {
    let err = |message: String| RubricError::Header {
        name: name.to_string(),
        line: 1,
        message,
    };
    let Some(pairs) = header_pairs(first) else {
        let opens = first.trim_start().strip_prefix("{#").map(|h| {
            h.trim_start_matches(|c: char| c == '-' || c.is_whitespace())
                .starts_with("instill:")
        });
        if opens == Some(true) {
            return Err(err(
                "the header comment must be alone on the first line".into()
            ));
        }
        return Ok(Scale::ONE_TO_TEN);
    };
    let mut scale = Scale::ONE_TO_TEN;
    for (k, v) in pairs.map_err(err)? {
        let bound = v
            .parse::<f64>()
            .ok()
            .filter(|b| b.is_finite())
            .ok_or_else(|| err(format!("{k}=`{v}` is not a number")));
        match k {
            "min" => scale.min = bound?,
            "max" => scale.max = bound?,
            _ => return Err(err(format!("unknown key `{k}` (min or max)"))),
        }
    }
    if scale.min >= scale.max {
        return Err(err(format!(
            "min={} is not below max={}",
            scale.min, scale.max
        )));
    }
    Ok(scale)
}

/// Refuses names a rubric does not know and a template that hides the instruction or output.
fn check_variables(env: &Environment<'_>, name: &str, text: &str) -> Result<(), RubricError> {
    let template = env.get_template(name).map_err(|e| RubricError::Render {
        name: name.to_string(),
        message: e.to_string(),
    })?;
    let used: BTreeSet<String> = template.undeclared_variables(false).into_iter().collect();
    if let Some(unknown) = used
        .iter()
        .find(|v| !VARIABLES.contains(&v.as_str()) && !GLOBALS.contains(&v.as_str()))
    {
        return Err(RubricError::UnknownVariable {
            name: name.to_string(),
            line: line_of(text, unknown),
            variable: unknown.clone(),
        });
    }
    for variable in ["instruction", "output"] {
        if !used.contains(variable) {
            return Err(RubricError::Missing {
                name: name.to_string(),
                variable,
            });
        }
    }
    Ok(())
}

/// The first line holding `word` as a whole identifier (1 when none does).
fn line_of(text: &str, word: &str) -> usize {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    text.lines()
        .position(|line| {
            line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
            })
        })
        .map_or(1, |i| i + 1)
}
