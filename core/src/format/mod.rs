//! Dataset layouts: the ones instill reads (self-instruct seeds, Alpaca, BELLE, ShareGPT
//! `conversations`, OpenAI `messages`, and the preference-pair layouts: trl's, UltraFeedback's,
//! LLaMA-Factory's ranking), the ones it writes (Alpaca, ShareGPT, `messages`; for pairs trl's
//! two and LLaMA-Factory's ranking), and the detection of a file's layout from its first record.

mod pair_parse;
#[cfg(test)]
mod pair_tests;
mod pair_write;
mod parse;
mod write;

pub use pair_parse::parse_pair;
pub use pair_write::{Unfit, pair_fits, write_pair};
pub use parse::{FieldError, parse_records, parse_seeds};
pub use write::{chat_turns, turn_reasoning, write_record};

use serde::Deserialize;
use std::collections::BTreeMap;

/// A layout instill can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFormat {
    /// self-instruct seed tasks: `instruction`, `instances: [{input, output}]`, `is_classification`.
    SelfInstruct,
    /// Alpaca: `instruction`, `input` (optional), `output`, and the optional `system` and
    /// `history` (`[[user, assistant], …]`) of multi-turn Alpaca-style files.
    Alpaca,
    /// BELLE: Alpaca's fields, or the older `input` (the instruction) + `target` (the answer).
    Belle,
    /// ShareGPT / BELLE multi-turn: `conversations: [{from, value}]`, optional `system`.
    ShareGpt,
    /// OpenAI chat fine-tuning: `messages: [{role, content}]`.
    Messages,
    /// trl's preference format: `prompt`, `chosen`, `rejected`, as texts or message lists, the
    /// prompt explicit or implicit; UltraFeedback-binarized (with `score_chosen`,
    /// `score_rejected`) is one of its shapes. Each row is a pair and a record (the prompt
    /// answered by the chosen answer).
    Dpo,
    /// LLaMA-Factory's ranking layouts: alpaca-style (`instruction`, `input`, `chosen`,
    /// `rejected`, optional `system`, `history`) or sharegpt-style (`conversations` ending with
    /// the user's turn, `chosen` / `rejected` one `{from, value}` each).
    Ranking,
}

impl InputFormat {
    /// Every layout, in the order `--help` lists them.
    pub const ALL: [InputFormat; 7] = [
        InputFormat::SelfInstruct,
        InputFormat::Alpaca,
        InputFormat::Belle,
        InputFormat::ShareGpt,
        InputFormat::Messages,
        InputFormat::Dpo,
        InputFormat::Ranking,
    ];

    /// Whether each record of the layout is a preference pair ([`parse_pair`] reads it).
    pub fn is_pair(self) -> bool {
        matches!(self, InputFormat::Dpo | InputFormat::Ranking)
    }

    /// The name used on the command line and in summaries.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::SelfInstruct => "self-instruct",
            InputFormat::Alpaca => "alpaca",
            InputFormat::Belle => "belle",
            InputFormat::ShareGpt => "sharegpt",
            InputFormat::Messages => "messages",
            InputFormat::Dpo => "dpo",
            InputFormat::Ranking => "lf-ranking",
        }
    }

    /// Detects the layout from the first record of a file (the raw JSON object). The error
    /// names the keys it found when none fits.
    pub fn detect(first_record: &[u8]) -> Result<InputFormat, DetectError> {
        #[derive(Deserialize)]
        struct Keys(BTreeMap<String, serde::de::IgnoredAny>);
        let keys = match serde_json::from_slice::<Keys>(first_record) {
            Ok(Keys(keys)) => keys,
            Err(e) => return Err(DetectError::Unreadable(e.to_string())),
        };
        InputFormat::from_keys(|k| keys.contains_key(k))
            .ok_or_else(|| DetectError::UnknownKeys(keys.into_keys().collect()))
    }

    /// Detects the layout of a table from its column names, by the same rule as [`detect`]
    /// applies to a record's keys. The error names the columns (sorted).
    ///
    /// [`detect`]: InputFormat::detect
    pub fn detect_columns<S: AsRef<str>>(columns: &[S]) -> Result<InputFormat, DetectError> {
        InputFormat::from_keys(|k| columns.iter().any(|c| c.as_ref() == k)).ok_or_else(|| {
            let mut names: Vec<String> = columns.iter().map(|c| c.as_ref().to_string()).collect();
            names.sort();
            DetectError::UnknownColumns(names)
        })
    }

    /// The layout a record with these keys (or a table with these columns) is in.
    fn from_keys(has: impl Fn(&str) -> bool) -> Option<InputFormat> {
        // Pairs first: UltraFeedback also has `messages`, LLaMA-Factory's ranking rows
        // `instruction` or `conversations`.
        if has("chosen") && has("rejected") {
            if has("instruction") || has("conversations") {
                Some(InputFormat::Ranking)
            } else {
                Some(InputFormat::Dpo)
            }
        } else if has("instances") {
            Some(InputFormat::SelfInstruct)
        } else if has("conversations") {
            Some(InputFormat::ShareGpt)
        } else if has("messages") {
            Some(InputFormat::Messages)
        } else if has("target") {
            Some(InputFormat::Belle)
        } else if has("instruction") {
            Some(InputFormat::Alpaca)
        } else {
            None
        }
    }
}

/// What detection looks for, for the messages of [`DetectError`].
const EXPECTED_KEYS: &str = "expected `instruction` (alpaca), `input`+`target` (belle), `conversations` (sharegpt), `messages`, `instances` (self-instruct), or `chosen`+`rejected` with `prompt` (dpo) or `instruction`/`conversations` (lf-ranking)";

/// Why a file's layout could not be detected from its first record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    /// The first record is not a JSON object.
    #[error("cannot read the first record: {0}")]
    Unreadable(String),
    /// No layout has these keys (sorted). The caller may suggest naming the layout.
    #[error(
        "cannot detect the format from the first record's keys ({}); {EXPECTED_KEYS}",
        if .0.is_empty() { "none".to_string() } else { .0.join(", ") }
    )]
    UnknownKeys(Vec<String>),
    /// No layout has these columns (sorted). The caller may suggest naming the layout.
    #[error(
        "cannot detect the format from the columns ({}); {EXPECTED_KEYS}",
        if .0.is_empty() { "none".to_string() } else { .0.join(", ") }
    )]
    UnknownColumns(Vec<String>),
}

impl std::str::FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Every pair layout `export` writes reads back by its own name too (`dpo-messages` is
        // one of the shapes `dpo` reads, `lf-ranking-sharegpt` one of `lf-ranking`'s).
        if let Some(p) = PairFormat::ALL.into_iter().find(|p| p.name() == s) {
            return Ok(p.as_input());
        }
        InputFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = InputFormat::ALL.iter().map(|f| f.name()).collect();
                format!(
                    "unknown format `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

impl std::fmt::Display for InputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Alpaca's optional columns that an export writes on every line, empty or not, so that every
/// line of every shard has the same keys: `datasets` and LLaMA-Factory refuse shards whose
/// columns differ. An export sets each when any of its records has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Columns {
    /// Write `system` on every line.
    pub system: bool,
    /// Write `history` on every line.
    pub history: bool,
    /// `messages`: write `reasoning_content` on every assistant message (`""` when none).
    pub reasoning: bool,
}

/// A layout instill writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    /// `{"instruction", "input", "output"}`, plus `system` and `history` when a record has them.
    Alpaca,
    /// `{"conversations": [{"from": "system"|"human"|"gpt", "value"}]}`.
    ShareGpt,
    /// `{"messages": [{"role": "system"|"user"|"assistant", "content"}]}`.
    Messages,
}

impl OutputFormat {
    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            OutputFormat::Alpaca => "alpaca",
            OutputFormat::ShareGpt => "sharegpt",
            OutputFormat::Messages => "messages",
        }
    }

    /// A chat layout's words for the system, user and assistant turns (`None` for Alpaca, which
    /// has fields instead of turns).
    pub fn turn_names(self) -> Option<[&'static str; 3]> {
        match self {
            OutputFormat::Alpaca => None,
            OutputFormat::ShareGpt => Some(["system", "human", "gpt"]),
            OutputFormat::Messages => Some(["system", "user", "assistant"]),
        }
    }

    /// Whether the layout has a field for reasoning (`messages`: `reasoning_content` on the
    /// assistant message); the others carry it inline or not at all.
    pub fn has_reasoning_field(self) -> bool {
        self == OutputFormat::Messages
    }

    /// The layout that reads this one back.
    pub fn as_input(self) -> InputFormat {
        match self {
            OutputFormat::Alpaca => InputFormat::Alpaca,
            OutputFormat::ShareGpt => InputFormat::ShareGpt,
            OutputFormat::Messages => InputFormat::Messages,
        }
    }
}

impl std::fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A layout of preference pairs instill writes ([`write_pair`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PairFormat {
    /// trl's standard preference format: `{"prompt", "chosen", "rejected"}`, three texts.
    Dpo,
    /// trl's conversational preference format: `prompt` a list of messages, `chosen` and
    /// `rejected` one assistant message each.
    DpoMessages,
    /// LLaMA-Factory's alpaca-style ranking rows: `instruction`, `input`, `chosen`,
    /// `rejected` (+ `system`, `history`).
    Ranking,
    /// LLaMA-Factory's sharegpt-style ranking rows: `conversations` (system first when there
    /// is one, ending with the user's turn), `chosen` and `rejected` one `{from, value}` each.
    RankingShareGpt,
}

impl PairFormat {
    /// Every pair layout, in the order `--help` lists them.
    pub const ALL: [PairFormat; 4] = [
        PairFormat::Dpo,
        PairFormat::DpoMessages,
        PairFormat::Ranking,
        PairFormat::RankingShareGpt,
    ];

    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            PairFormat::Dpo => "dpo",
            PairFormat::DpoMessages => "dpo-messages",
            PairFormat::Ranking => "lf-ranking",
            PairFormat::RankingShareGpt => "lf-ranking-sharegpt",
        }
    }

    /// Whether the layout has a field for an answer's reasoning (`dpo-messages`:
    /// `reasoning_content` on the assistant message).
    pub fn has_reasoning_field(self) -> bool {
        self == PairFormat::DpoMessages
    }

    /// The layout that reads this one back.
    pub fn as_input(self) -> InputFormat {
        match self {
            PairFormat::Dpo | PairFormat::DpoMessages => InputFormat::Dpo,
            PairFormat::Ranking | PairFormat::RankingShareGpt => InputFormat::Ranking,
        }
    }
}

impl std::fmt::Display for PairFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_layout_from_its_keys() {
        let cases = [
            (
                r#"{"id":"t1","instruction":"x","instances":[]}"#,
                "self-instruct",
            ),
            (r#"{"instruction":"x","input":"","output":"y"}"#, "alpaca"),
            (r#"{"instruction":"x","output":"y"}"#, "alpaca"),
            (r#"{"input":"x","target":"y"}"#, "belle"),
            (r#"{"conversations":[]}"#, "sharegpt"),
            (r#"{"messages":[]}"#, "messages"),
        ];
        for (json, want) in cases {
            assert_eq!(
                InputFormat::detect(json.as_bytes()).map(InputFormat::name),
                Ok(want)
            );
        }
        let err = InputFormat::detect(br#"{"question":"x","answer":"y"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("(answer, question)"), "{err}");
        assert_eq!(
            InputFormat::detect_columns(&["id", "messages"]),
            Ok(InputFormat::Messages)
        );
        let err = InputFormat::detect_columns(&["q", "a"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("from the columns (a, q)"), "{err}");
    }

    #[test]
    fn parses_format_names() {
        for f in InputFormat::ALL {
            assert_eq!(f.name().parse::<InputFormat>(), Ok(f));
        }
        assert_eq!("dpo-messages".parse::<InputFormat>(), Ok(InputFormat::Dpo));
        assert_eq!(
            "lf-ranking-sharegpt".parse::<InputFormat>(),
            Ok(InputFormat::Ranking)
        );
        assert!(
            "csv"
                .parse::<InputFormat>()
                .unwrap_err()
                .contains("unknown format `csv`")
        );
    }
}
