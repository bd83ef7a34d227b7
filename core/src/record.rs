//! The record types every crate shares: one instruction pair (with optional system prompt and
//! earlier turns), its language, status and origin.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// One exchange of an earlier turn in a multi-turn record: what the user said, what the assistant
/// answered. Serialised as a two-element array `["user", "assistant"]`, the `history` convention of
/// Alpaca-style multi-turn datasets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exchange(pub String, pub String);

impl Exchange {
    /// What the user said.
    pub fn user(&self) -> &str {
        &self.0
    }

    /// What the assistant answered.
    pub fn assistant(&self) -> &str {
        &self.1
    }
}

/// An instruction pair: the unit that is imported, generated, deduplicated, filtered and exported.
///
/// A multi-turn conversation keeps its last exchange in `instruction`/`output` and every earlier
/// exchange, in order, in `history`; nothing is flattened away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The task, as the user states it (for a conversation: the last user turn).
    pub instruction: String,
    /// Optional context for the task; empty when the task needs none.
    pub input: String,
    /// The answer (for a conversation: the last assistant turn).
    pub output: String,
    /// Optional system prompt; empty when there is none.
    pub system: String,
    /// Earlier exchanges of a conversation, oldest first; empty for a single-turn record.
    pub history: Vec<Exchange>,
    /// The reasoning behind `output` (a reasoning model's `reasoning_content`, or the
    /// `<think>…</think>` block before its answer); empty when there is none. Filters, dedup
    /// and the content hash judge `output` alone. Absent from (and empty when read without) the
    /// JSON form, so records serialised before it read and write as they did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reasoning: String,
}

impl Record {
    /// A single-turn record without system prompt.
    pub fn new(
        instruction: impl Into<String>,
        input: impl Into<String>,
        output: impl Into<String>,
    ) -> Self {
        Record {
            instruction: instruction.into(),
            input: input.into(),
            output: output.into(),
            ..Record::default()
        }
    }

    /// The text the user sends in the last turn: the instruction, then the input after a blank
    /// line when there is one. This is how chat layouts (`conversations`, `messages`) carry an
    /// Alpaca-style input, which they have no field for.
    pub fn user_turn(&self) -> String {
        if self.input.is_empty() {
            self.instruction.clone()
        } else {
            format!("{}\n\n{}", self.instruction, self.input)
        }
    }

    /// The first thing the user said: the first exchange's user turn for a conversation, the
    /// instruction otherwise. A conversation is about its opening; later user turns are
    /// follow-ups ("tell me more") that say little on their own, so dedup compares this.
    pub fn first_user_turn(&self) -> &str {
        self.history.first().map_or(&self.instruction, |e| &e.0)
    }

    /// The opening exchange as a single-turn record (with the system prompt): what the quality
    /// rules judge a conversation by. The record itself when it has no history.
    pub fn opening(&self) -> Cow<'_, Record> {
        match self.history.first() {
            None => Cow::Borrowed(self),
            Some(first) => Cow::Owned(Record {
                instruction: first.0.clone(),
                output: first.1.clone(),
                system: self.system.clone(),
                ..Record::default()
            }),
        }
    }

    /// Whether any turn of the record (every exchange of its history, and the last user turn
    /// and answer) is empty or only whitespace.
    pub fn has_empty_turn(&self) -> bool {
        let blank = |s: &str| s.trim().is_empty();
        blank(&self.instruction)
            || blank(&self.output)
            || self.history.iter().any(|e| blank(&e.0) || blank(&e.1))
    }

    /// `history` as the JSON text stored in the database, or `None` for a single-turn record.
    pub fn history_json(&self) -> Option<String> {
        if self.history.is_empty() {
            None
        } else {
            serde_json::to_string(&self.history).ok()
        }
    }

    /// Parses the stored JSON form of `history` (see [`Record::history_json`]).
    pub fn parse_history(json: Option<&str>) -> Result<Vec<Exchange>, serde_json::Error> {
        match json {
            None | Some("") => Ok(Vec::new()),
            Some(text) => serde_json::from_str(text),
        }
    }
}

/// The language of a record, as far as instill cares: Chinese, English, or anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Chinese (Han script dominates).
    Zh,
    /// English.
    En,
    /// Anything else, including text with too little signal to tell.
    Other,
}

impl Lang {
    /// The code stored in the database and printed in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Lang::Zh => "zh",
            Lang::En => "en",
            Lang::Other => "other",
        }
    }

    /// Parses a stored code; unknown codes read as [`Lang::Other`].
    pub fn from_code(code: &str) -> Lang {
        match code {
            "zh" => Lang::Zh,
            "en" => Lang::En,
            _ => Lang::Other,
        }
    }
}

impl std::fmt::Display for Lang {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a record entered the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Written by a generation run.
    Generated,
    /// Loaded from an existing dataset by `instill import`.
    Imported,
}

impl Origin {
    /// The code stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Generated => "generated",
            Origin::Imported => "imported",
        }
    }
}

/// Where an evolved record came from (`instill evolve`): the task it rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EvolvedFrom {
    /// A seed task (`seeds.id`): round 1 of a run evolving the seed tasks.
    Seed(i64),
    /// A record (`records.id`): an imported or generated record, or an earlier round's
    /// evolution.
    Record(i64),
}

/// An evolved record's provenance: what it rewrites, in which round, by which operation.
/// Kept beside the record; filters, dedup and `norm_hash` never read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Evolution {
    /// The task it rewrites.
    pub from: EvolvedFrom,
    /// The round (1 for the first rewrite of the pool's tasks).
    pub round: u32,
    /// The operation.
    pub op: crate::EvolveOp,
}

/// A seed task: the examples a generation run shows the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The self-instruct task name (`id`/`name` in seed files), empty when the file has none.
    pub name: String,
    /// The instruction, input and output of the task's first instance.
    pub record: Record,
    /// Whether the task is a classification task (self-instruct's `is_classification`).
    pub is_classification: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trips_through_its_json_form() {
        let mut r = Record::new("第二个问题", "", "第二个回答");
        r.history = vec![Exchange("你好".into(), "你好！有什么可以帮你？".into())];
        let json = r.history_json();
        assert_eq!(
            json.as_deref(),
            Some(r#"[["你好","你好！有什么可以帮你？"]]"#)
        );
        assert_eq!(
            Record::parse_history(json.as_deref()).ok(),
            Some(r.history.clone())
        );
        assert_eq!(Record::new("a", "", "b").history_json(), None);
    }

    #[test]
    fn a_conversation_opens_with_its_first_exchange() {
        let mut r = Record::new("再详细一点", "", "好的……");
        r.system = "你是助手".into();
        assert_eq!(r.first_user_turn(), "再详细一点");
        assert!(matches!(r.opening(), Cow::Borrowed(_)));
        r.history = vec![
            Exchange("如何学习书法？".into(), "先练基本笔画。".into()),
            Exchange("要练多久？".into(), "每天半小时。".into()),
        ];
        assert_eq!(r.first_user_turn(), "如何学习书法？");
        let o = r.opening();
        assert_eq!(
            (o.instruction.as_str(), o.output.as_str(), o.system.as_str()),
            ("如何学习书法？", "先练基本笔画。", "你是助手")
        );
        assert!(o.history.is_empty());
        assert!(!r.has_empty_turn());
        r.history[1].0 = " ".into();
        assert!(r.has_empty_turn());
    }

    #[test]
    fn user_turn_joins_input_after_a_blank_line() {
        assert_eq!(Record::new("Sum", "1 2", "3").user_turn(), "Sum\n\n1 2");
        assert_eq!(Record::new("Sum", "", "3").user_turn(), "Sum");
    }
}
