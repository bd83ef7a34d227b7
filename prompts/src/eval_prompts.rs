//! The judge's prompts for an evaluation: one per class, in BELLE's `eval_prompt.json` format
//! (JSONL of `{"class", "prompt"}`), and the request that puts a class's prompt, the question,
//! the reference answer and the candidate's answer together (`templates/eval/request.zh.j2`),
//! asking for a short reason and then `得分: X` on a 0–1 scale.
//!
//! The built-in prompts (`templates/eval/judge_prompts.zh.jsonl`, worded by the team) cover
//! BELLE's classes; a user's file in the same format replaces them. A class with no prompt is
//! an error the caller reports ([`JudgeRequestError::NoPrompt`], [`JudgePrompts::missing`]),
//! never a guess.

use std::collections::BTreeMap;

use minijinja::{Environment, context};
use xxhash_rust::xxh3::xxh3_128;

use crate::eval_set::{EvalFileError, EvalItem, normalize_class, objects, string_field};
use crate::score::Scale;

const REQUEST: &str = include_str!("../templates/eval/request.zh.j2");

/// Why no judge request could be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JudgeRequestError {
    /// The prompts have none for this class.
    #[error("no judge prompt for class `{class}` (prompts exist for: {known})")]
    NoPrompt {
        /// The class, normalised.
        class: String,
        /// The classes that have one, comma-separated.
        known: String,
    },
    /// The request template failed to render.
    #[error("the judge request: {0}")]
    Render(String),
}

/// One class's prompt as its file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassPrompt {
    /// The class as the file spells it.
    pub class: String,
    /// Its line in the file.
    pub line: usize,
    /// The prompt.
    pub prompt: String,
}

/// The judge's prompts by normalised class, with a content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgePrompts {
    name: String,
    by_class: BTreeMap<String, ClassPrompt>,
    hash: String,
}

impl JudgePrompts {
    /// The built-in Chinese prompts for BELLE's classes (`open qa`, `closed qa`, `brainstorming`,
    /// `rewrite`, `generation`, `math`, `classification`, `summarization`, `code`, `extract`,
    /// `translation`), named `builtin/zh`.
    pub fn builtin() -> Result<JudgePrompts, EvalFileError> {
        JudgePrompts::parse(
            "builtin/zh",
            include_str!("../templates/eval/judge_prompts.zh.jsonl"),
        )
    }

    /// Prompts from a file's text in BELLE's format; `name` (the file) is kept for reports.
    /// Every line needs a non-empty `class` and `prompt`; two lines whose classes normalise
    /// alike are refused.
    pub fn parse(name: &str, text: &str) -> Result<JudgePrompts, EvalFileError> {
        let mut by_class: BTreeMap<String, ClassPrompt> = BTreeMap::new();
        for (line, obj) in objects(text)? {
            let class = string_field(&obj, line, "class")?;
            let prompt = string_field(&obj, line, "prompt")?;
            let key = normalize_class(&class);
            for (field, value) in [("class", &key), ("prompt", &prompt)] {
                if value.trim().is_empty() {
                    return Err(EvalFileError::EmptyField { line, field });
                }
            }
            if let Some(first) = by_class.get(&key) {
                return Err(EvalFileError::DuplicateClass {
                    line,
                    class: key,
                    first: first.line,
                });
            }
            by_class.insert(
                key,
                ClassPrompt {
                    class,
                    line,
                    prompt,
                },
            );
        }
        let mut content = String::from(REQUEST);
        for (key, p) in &by_class {
            content.push_str(&format!("\n{key}\t{}", p.prompt));
        }
        Ok(JudgePrompts {
            name: name.to_string(),
            by_class,
            hash: format!("{:032x}", xxh3_128(content.as_bytes())),
        })
    }

    /// The name it was loaded as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// xxh3-128 of the request template and the prompts by normalised class, 32 hex digits:
    /// the same prompts hash alike whatever the file's line order or spelling of a class.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The scale the prompts ask for: 0–1, BELLE's.
    pub fn scale(&self) -> Scale {
        Scale::UNIT
    }

    /// The normalised classes that have a prompt, sorted.
    pub fn classes(&self) -> impl Iterator<Item = &str> {
        self.by_class.keys().map(String::as_str)
    }

    /// The prompt for `class` (normalised first).
    pub fn prompt(&self, class: &str) -> Result<&ClassPrompt, JudgeRequestError> {
        let key = normalize_class(class);
        self.by_class
            .get(&key)
            .ok_or_else(|| JudgeRequestError::NoPrompt {
                class: key,
                known: self.classes().collect::<Vec<_>>().join(", "),
            })
    }

    /// The classes of `items` that have no prompt, with how many questions each has: what to
    /// report before any request is sent.
    pub fn missing(&self, items: &[EvalItem]) -> BTreeMap<String, usize> {
        let mut missing = BTreeMap::new();
        for item in items {
            if !self.by_class.contains_key(&normalize_class(&item.class)) {
                *missing.entry(item.class.clone()).or_default() += 1;
            }
        }
        missing
    }

    /// The judge's request for `item` answered with `answer`, with its class's prompt.
    pub fn request(&self, item: &EvalItem, answer: &str) -> Result<String, JudgeRequestError> {
        let prompt = self.prompt(&item.class)?;
        judge_request(&prompt.prompt, &item.question, &item.std_answer, answer)
    }
}

/// The judge's request: the class prompt, the question, the reference answer (left out when
/// empty) and the candidate's answer, then the request for a reason and `得分: X`.
pub fn judge_request(
    prompt: &str,
    question: &str,
    std_answer: &str,
    answer: &str,
) -> Result<String, JudgeRequestError> {
    Environment::new()
        .render_str(
            REQUEST,
            context! { prompt, question, std_answer => std_answer.trim(), answer },
        )
        .map_err(|e| JudgeRequestError::Render(e.to_string()))
}
