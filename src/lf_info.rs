//! LLaMA-Factory's `dataset_info.json` for an export: one entry per split whose `file_name` is
//! the split's directory under `data/`, with the `formatting` (alpaca or sharegpt) and the
//! `columns`/`tags` of the layout, so that `dataset_dir=DIR` loads the export as it is; for
//! preference pairs, `"ranking": true` with the `chosen` and `rejected` columns.

use instill_core::{Columns, OutputFormat, PairFormat};
use serde_json::{Map, Value, json};

use crate::shards::Split;

/// The file name LLaMA-Factory reads in its `dataset_dir`.
pub const LF_INFO: &str = "dataset_info.json";

/// The entry names: `NAME` for train, `NAME_validation` when there is a validation split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LfNames {
    /// The training split's entry.
    pub train: String,
    /// The validation split's entry, when the export has one.
    pub validation: Option<String>,
}

impl LfNames {
    /// Names from the export directory's name, reduced to letters, digits, `_`, `-` and `.`.
    pub fn new(dir_name: &str, has_validation: bool) -> LfNames {
        let clean: String = dir_name
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || "_-.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let train = if clean.trim_matches(['_', '.']).is_empty() {
            "instill".to_string()
        } else {
            clean
        };
        LfNames {
            validation: has_validation.then(|| format!("{train}_validation")),
            train,
        }
    }
}

/// The `dataset_info.json` text: one entry per split present.
pub fn render(names: &LfNames, format: OutputFormat, columns: Columns) -> String {
    let mut info = Map::new();
    info.insert(names.train.clone(), entry(Split::Train, format, columns));
    if let Some(val) = &names.validation {
        info.insert(val.clone(), entry(Split::Validation, format, columns));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(info)).unwrap_or_default();
    text.push('\n');
    text
}

/// The `dataset_info.json` text of a pair export, for the layouts LLaMA-Factory reads as
/// preference data (`"ranking": true`): `lf-ranking` (alpaca formatting: instruction, input,
/// chosen, rejected, and system and history when the export writes them), `lf-ranking-sharegpt`
/// (sharegpt formatting: conversations, chosen, rejected, the tags) and `dpo` (alpaca
/// formatting, the prompt text as the instruction). None for `dpo-messages`, whose message lists it does not read.
pub fn render_pairs(names: &LfNames, format: PairFormat, columns: Columns) -> Option<String> {
    let mut tags = None;
    let columns = match format {
        PairFormat::DpoMessages => return None,
        PairFormat::RankingShareGpt => {
            tags = Some(
                json!({"role_tag": "from", "content_tag": "value", "user_tag": "human",
                               "assistant_tag": "gpt", "system_tag": "system"}),
            );
            json!({"messages": "conversations", "chosen": "chosen", "rejected": "rejected"})
        }
        PairFormat::Dpo => json!({"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"}),
        PairFormat::Ranking => {
            let mut c = json!({"prompt": "instruction", "query": "input",
                               "chosen": "chosen", "rejected": "rejected"});
            if columns.system {
                c["system"] = json!("system");
            }
            if columns.history {
                c["history"] = json!("history");
            }
            c
        }
    };
    let formatting = if tags.is_some() { "sharegpt" } else { "alpaca" };
    let entry = |split: Split| {
        let mut e = json!({"file_name": split.dir(), "formatting": formatting, "ranking": true,
                           "columns": columns.clone()});
        if let Some(tags) = &tags {
            e["tags"] = tags.clone();
        }
        e
    };
    let mut info = Map::new();
    info.insert(names.train.clone(), entry(Split::Train));
    if let Some(val) = &names.validation {
        info.insert(val.clone(), entry(Split::Validation));
    }
    let mut text = serde_json::to_string_pretty(&Value::Object(info)).unwrap_or_default();
    text.push('\n');
    Some(text)
}

/// One split's entry. Alpaca's `system` and `history` columns are named only when the export
/// writes them (LLaMA-Factory reads a named column on every row).
fn entry(split: Split, format: OutputFormat, columns: Columns) -> Value {
    let (formatting, columns, tags) = match format {
        OutputFormat::Alpaca => {
            let mut c = json!({"prompt": "instruction", "query": "input", "response": "output"});
            if columns.system {
                c["system"] = json!("system");
            }
            if columns.history {
                c["history"] = json!("history");
            }
            ("alpaca", c, None)
        }
        OutputFormat::ShareGpt => (
            "sharegpt",
            json!({"messages": "conversations"}),
            Some(
                json!({"role_tag": "from", "content_tag": "value", "user_tag": "human",
                        "assistant_tag": "gpt", "system_tag": "system"}),
            ),
        ),
        OutputFormat::Messages => (
            "sharegpt",
            json!({"messages": "messages"}),
            Some(
                json!({"role_tag": "role", "content_tag": "content", "user_tag": "user",
                        "assistant_tag": "assistant", "system_tag": "system"}),
            ),
        ),
    };
    let mut e = json!({"file_name": split.dir(), "formatting": formatting, "columns": columns});
    if let Some(tags) = tags {
        e["tags"] = tags;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_directory() {
        assert_eq!(LfNames::new("zh-sft", false).train, "zh-sft");
        assert_eq!(
            LfNames::new("my data", true).validation.as_deref(),
            Some("my_data_validation")
        );
        assert_eq!(LfNames::new("..", false).train, "instill");
    }

    #[test]
    fn alpaca_names_only_the_columns_written() {
        let names = LfNames::new("d", false);
        let plain: Value =
            serde_json::from_str(&render(&names, OutputFormat::Alpaca, Columns::default()))
                .unwrap();
        assert_eq!(plain["d"]["columns"].as_object().unwrap().len(), 3);
        let full = Columns {
            system: true,
            history: true,
            reasoning: true,
        };
        let all: Value = serde_json::from_str(&render(&names, OutputFormat::Alpaca, full)).unwrap();
        assert_eq!(all["d"]["columns"]["history"], "history");
        assert_eq!(all["d"]["file_name"], "data/train");
    }
}
