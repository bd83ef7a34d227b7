//! The rules that look for words in a record: which fields each reads ([`RuleField`]), how a
//! word matches ([`Matching`]) and the word lists with their sources ([`WordRule`]).
//!
//! Each list reads the fields its source reads: Alpaca's `generate_instruction.py` looks for its
//! words in the instruction only; BELLE's (`1.5M/generate_instruction.py`) looks in the whole
//! generated block, instruction, input and output. A rules file may change the fields
//! (`fields = ["instruction", "input"]`), as an explicit choice.

use instill_core::{Record, has_cjk, is_cjk};
use serde::{Deserialize, Deserializer, Serialize};

/// A field of a record that a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleField {
    /// The task.
    Instruction,
    /// The optional context the task works on.
    Input,
    /// The answer.
    Output,
}

impl RuleField {
    /// This field's text in `record`.
    pub fn text(self, record: &Record) -> &str {
        match self {
            RuleField::Instruction => &record.instruction,
            RuleField::Input => &record.input,
            RuleField::Output => &record.output,
        }
    }
}

/// How a word of a list matches a text. Both ignore case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matching {
    /// As a whole word (Alpaca's `\b…\b`): `map` matches "a map" but not "mapping". Words with
    /// CJK characters match as substrings (Chinese has no spaces between words).
    Word,
    /// Anywhere, as BELLE's `word in text`: `http` matches "https://…".
    Substring,
}

/// A list of words that disqualify a record when one appears in the fields the rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WordRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// The fields it reads.
    pub fields: Vec<RuleField>,
    /// How a word matches.
    pub matching: Matching,
    /// The list.
    pub words: Vec<String>,
    /// Words added to the list (the usual way to extend it from a rules file).
    pub extra: Vec<String>,
}

/// Alpaca's blacklist, word for word (stanford_alpaca `generate_instruction.py`).
const ALPACA: &[&str] = &[
    "image",
    "images",
    "graph",
    "graphs",
    "picture",
    "pictures",
    "file",
    "files",
    "map",
    "maps",
    "draw",
    "plot",
    "go to",
    "video",
    "audio",
    "music",
    "flowchart",
    "diagram",
];

/// BELLE's blacklist, word for word (LianjiaTech/BELLE `1.5M/generate_instruction.py`).
const BELLE: &[&str] = &[
    "图像",
    "图片",
    "照片",
    "文件",
    "图表",
    "图层",
    "曲线图",
    "折线图",
    "直线图",
    "柱形图",
    "饼状图",
    "链接",
    "http",
    "OpenAI",
    "chatgpt",
    "gpt-3",
    "gpt-3.5",
    "gpt-4",
];

/// instill's own: links a text model cannot open and the names of the models that write
/// generated data.
const LINKS_AND_MODELS: &[&str] = &[
    "http", "https", "www", "url", "chatgpt", "openai", "gpt-3", "gpt-3.5", "gpt-4",
];

impl WordRule {
    fn new(words: &[&str], fields: &[RuleField], matching: Matching, enabled: bool) -> WordRule {
        WordRule {
            enabled,
            fields: fields.to_vec(),
            matching,
            words: words.iter().map(|w| w.to_string()).collect(),
            extra: Vec::new(),
        }
    }

    /// Alpaca's rule: its 18 words as whole words in the instruction.
    pub fn alpaca() -> WordRule {
        WordRule::new(ALPACA, &[RuleField::Instruction], Matching::Word, true)
    }

    /// BELLE's rule: its 18 words as substrings in the instruction, input and output.
    pub fn belle() -> WordRule {
        let all = [RuleField::Instruction, RuleField::Input, RuleField::Output];
        WordRule::new(BELLE, &all, Matching::Substring, true)
    }

    /// instill's links-and-models rule (off by default): `http`, `www`, `url`, `gpt-4`, … as
    /// whole words in the instruction.
    pub fn links_and_models() -> WordRule {
        let ins = [RuleField::Instruction];
        WordRule::new(LINKS_AND_MODELS, &ins, Matching::Word, false)
    }

    /// Whether a word of the list (or of `extra`) appears in a field the rule reads.
    pub fn hits(&self, record: &Record) -> bool {
        let words: Vec<String> = self
            .words
            .iter()
            .chain(&self.extra)
            .map(|w| w.to_lowercase())
            .collect();
        self.fields.iter().any(|f| {
            let text = f.text(record);
            if text.is_empty() {
                return false;
            }
            let text = text.to_lowercase();
            words.iter().any(|w| match self.matching {
                Matching::Word => contains_term(&text, w),
                Matching::Substring => !w.is_empty() && text.contains(w.as_str()),
            })
        })
    }
}

/// Why a rule (the table `name` of a rules file) cannot run: no field to read.
pub(crate) fn require_fields(name: &str, fields: &[RuleField]) -> Result<(), String> {
    if fields.is_empty() {
        return Err(format!(
            "[{name}] fields is empty: name one or more of \"instruction\", \"input\", \"output\""
        ));
    }
    Ok(())
}

/// A rules file's table for a [`WordRule`]: every key optional.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartialWordRule {
    enabled: Option<bool>,
    fields: Option<Vec<RuleField>>,
    matching: Option<Matching>,
    words: Option<Vec<String>>,
    extra: Option<Vec<String>>,
}

/// Reads a rules file's table over `defaults`: the keys it has replace the defaults' values.
fn merged<'de, D: Deserializer<'de>>(d: D, defaults: WordRule) -> Result<WordRule, D::Error> {
    let p = PartialWordRule::deserialize(d)?;
    Ok(WordRule {
        enabled: p.enabled.unwrap_or(defaults.enabled),
        fields: p.fields.unwrap_or(defaults.fields),
        matching: p.matching.unwrap_or(defaults.matching),
        words: p.words.unwrap_or(defaults.words),
        extra: p.extra.unwrap_or(defaults.extra),
    })
}

/// `[blacklist]` over [`WordRule::alpaca`].
pub(crate) fn alpaca_table<'de, D: Deserializer<'de>>(d: D) -> Result<WordRule, D::Error> {
    merged(d, WordRule::alpaca())
}

/// `[blacklist_zh]` over [`WordRule::belle`].
pub(crate) fn belle_table<'de, D: Deserializer<'de>>(d: D) -> Result<WordRule, D::Error> {
    merged(d, WordRule::belle())
}

/// `[links_and_models]` over [`WordRule::links_and_models`].
pub(crate) fn links_table<'de, D: Deserializer<'de>>(d: D) -> Result<WordRule, D::Error> {
    merged(d, WordRule::links_and_models())
}

/// Whether `text` contains `term`: as a whole word for Latin terms (Alpaca's `\b…\b`), as a
/// substring for terms with CJK characters (Chinese has no spaces between words).
pub(crate) fn contains_term(text: &str, term: &str) -> bool {
    if term.is_empty() {
        return false;
    }
    if has_cjk(term) {
        return text.contains(term);
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = text[from..].find(term) {
        let start = from + pos;
        let end = start + term.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let starts_word = term.starts_with(is_word);
        let ends_word = term.ends_with(is_word);
        let left_ok = !starts_word || before.is_none_or(|c| !is_word(c) || is_cjk(c));
        let right_ok = !ends_word || after.is_none_or(|c| !is_word(c) || is_cjk(c));
        if left_ok && right_ok {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}
