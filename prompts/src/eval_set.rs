//! Evaluation sets in BELLE's format: one JSON object per line (a JSON array of the same objects
//! is read too) with `question`, `std_answer` and `class`, as in BELLE's `eval/eval_set.json`.
//! `std_answer` must be there but may be empty (BELLE leaves it empty for open-ended classes);
//! other fields are ignored. Class labels are compared through [`normalize_class`]: the files
//! BELLE ships spell the same class `open qa` and `open QA`, and one with a non-breaking space.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};
use unicode_normalization::UnicodeNormalization;

/// Why an evaluation file (questions or judge prompts) cannot be read. Each names the line
/// (1-based) and, where it is about one, the field; the caller adds the file's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalFileError {
    /// The line is not JSON.
    #[error("line {line}: not JSON ({message})")]
    Json {
        /// The line.
        line: usize,
        /// What the JSON parser said.
        message: String,
    },
    /// The line is JSON but not an object.
    #[error("line {line}: expected a JSON object, found {found}")]
    NotObject {
        /// The line.
        line: usize,
        /// What was found (`an array`, `a string`, …).
        found: &'static str,
    },
    /// A required field is absent.
    #[error("line {line}: no `{field}` field")]
    MissingField {
        /// The line.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// A field is not a string.
    #[error("line {line}: `{field}` is {found}, expected a string")]
    NotString {
        /// The line.
        line: usize,
        /// The field.
        field: &'static str,
        /// What it is (`a number`, `null`, …).
        found: &'static str,
    },
    /// A field that must say something is empty or only whitespace.
    #[error("line {line}: `{field}` is empty")]
    EmptyField {
        /// The line.
        line: usize,
        /// The field.
        field: &'static str,
    },
    /// Two judge prompts for the same class (after [`normalize_class`]).
    #[error("line {line}: a second prompt for class `{class}` (the first is on line {first})")]
    DuplicateClass {
        /// The line of the second.
        line: usize,
        /// The class, normalised.
        class: String,
        /// The line of the first.
        first: usize,
    },
    /// The file holds no object.
    #[error("no records in the file")]
    NoRecords,
}

/// One question of an evaluation set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalItem {
    /// Its line in the file (1-based): where an error or a report points.
    pub line: usize,
    /// The question the candidate model answers.
    pub question: String,
    /// The reference answer the judge compares with; may be empty.
    pub std_answer: String,
    /// The class, normalised ([`normalize_class`]): the key for its judge prompt and its mean.
    pub class: String,
    /// The class as the file spells it.
    pub raw_class: String,
}

/// A class label as a key: NFKC (a non-breaking space becomes a space, full-width letters
/// ASCII), runs of whitespace as one space, trimmed, lowercase. `closed\u{a0}QA` → `closed qa`.
pub fn normalize_class(label: &str) -> String {
    let nfkc: String = label.nfkc().collect();
    nfkc.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// The questions of an evaluation set in BELLE's format.
pub fn parse_eval_set(text: &str) -> Result<Vec<EvalItem>, EvalFileError> {
    objects(text)?
        .into_iter()
        .map(|(line, obj)| {
            let question = string_field(&obj, line, "question")?;
            if question.trim().is_empty() {
                return Err(EvalFileError::EmptyField {
                    line,
                    field: "question",
                });
            }
            let raw_class = string_field(&obj, line, "class")?;
            let class = normalize_class(&raw_class);
            if class.is_empty() {
                return Err(EvalFileError::EmptyField {
                    line,
                    field: "class",
                });
            }
            Ok(EvalItem {
                line,
                std_answer: string_field(&obj, line, "std_answer")?,
                question,
                class,
                raw_class,
            })
        })
        .collect()
}

/// How many questions each (normalised) class has.
pub fn class_counts(items: &[EvalItem]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for item in items {
        *counts.entry(item.class.clone()).or_default() += 1;
    }
    counts
}

/// A JSON object of a file and the line it starts on.
pub(crate) type Numbered = (usize, Map<String, Value>);

/// The objects of a JSONL file (blank lines skipped) or of a JSON array, each with its line.
pub(crate) fn objects(text: &str) -> Result<Vec<Numbered>, EvalFileError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let values: Vec<(usize, &str)> = if text.trim_start().starts_with('[') {
        let raws: Vec<&RawValue> = serde_json::from_str(text).map_err(|e| EvalFileError::Json {
            line: e.line(),
            message: e.to_string(),
        })?;
        raws.into_iter()
            .map(|raw| (line_at(text, raw.get()), raw.get()))
            .collect()
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| (i + 1, l))
            .collect()
    };
    if values.is_empty() {
        return Err(EvalFileError::NoRecords);
    }
    values
        .into_iter()
        .map(|(line, json)| {
            let value: Value = serde_json::from_str(json).map_err(|e| EvalFileError::Json {
                line: line + e.line() - 1,
                message: e.to_string(),
            })?;
            match value {
                Value::Object(obj) => Ok((line, obj)),
                other => Err(EvalFileError::NotObject {
                    line,
                    found: kind(&other),
                }),
            }
        })
        .collect()
}

/// The line of `text` that `part` (a slice of it) starts on.
fn line_at(text: &str, part: &str) -> usize {
    let offset = (part.as_ptr() as usize).saturating_sub(text.as_ptr() as usize);
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// A string field of an object.
pub(crate) fn string_field(
    obj: &Map<String, Value>,
    line: usize,
    field: &'static str,
) -> Result<String, EvalFileError> {
    match obj.get(field) {
        None => Err(EvalFileError::MissingField { line, field }),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(EvalFileError::NotString {
            line,
            field,
            found: kind(other),
        }),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
