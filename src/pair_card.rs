//! The dataset card (`README.md`) of a pair export: the YAML `configs:` and features that
//! `datasets.load_dataset(DIR)` reads, then the pair sets with their counts and the judge's
//! margin, the split, the columns, languages, license, and how trl and LLaMA-Factory load it.
//! The record card's shared pieces (quoting, size buckets, license) come from `card.rs`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use instill_core::{PairFormat, utc};

use crate::card::{cell, file_kind, license_section, quoted, size_category};
use crate::cmd::export_pairs::SetWritten;
use crate::lf_info::LfNames;
use crate::scoreboard::short;
use crate::shards::{ShardInfo, Split};

/// Everything the card describes.
pub struct PairCardInput<'a> {
    /// The dataset's name (the export directory's name).
    pub name: &'a str,
    /// The layout of the lines.
    pub format: PairFormat,
    /// Whether `dpo-messages` answers carry `reasoning_content`.
    pub reasoning: bool,
    /// Whether the shards are zstd-compressed JSONL.
    pub zstd: bool,
    /// Every shard, train first.
    pub shards: &'a [ShardInfo],
    /// Which prompts' pairs (`kept`, `accepted`, …).
    pub status: &'a str,
    /// The validation fraction.
    pub val_fraction: f64,
    /// The split's seed.
    pub seed: u64,
    /// The sets exported.
    pub sets: &'a [SetWritten],
    /// Pairs per prompt language.
    pub langs: &'a BTreeMap<String, u64>,
    /// The LLaMA-Factory entries, when the export has a `dataset_info.json`.
    pub lf: Option<&'a LfNames>,
    /// When the export was made, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The card's full text.
pub fn render(c: &PairCardInput) -> String {
    let mut out = String::new();
    let rows: u64 = c.shards.iter().map(|s| s.rows).sum();
    front_matter(c, rows, &mut out);
    let _ = writeln!(out, "# {}\n", c.name);
    let _ = writeln!(
        out,
        "{rows} preference pairs (a prompt, a chosen and a rejected answer) exported by instill \
         {} on {} in the `{}` layout, as {}.\n",
        env!("CARGO_PKG_VERSION"),
        utc(c.created_at_ms),
        c.format.name(),
        file_kind(c.zstd, false)
    );
    splits_section(c, &mut out);
    out.push_str("## Columns\n\n");
    out.push_str(columns_text(c.format, c.reasoning));
    sets_section(c.sets, &mut out);
    out.push_str("## Languages\n\n| language of the prompt | pairs |\n|---|---:|\n");
    for (lang, n) in c.langs {
        let _ = writeln!(out, "| {lang} | {n} |");
    }
    out.push('\n');
    license_section(&mut out);
    loading_section(c, &mut out);
    out
}

fn front_matter(c: &PairCardInput, rows: u64, out: &mut String) {
    out.push_str("---\nconfigs:\n- config_name: default\n  data_files:\n");
    for split in Split::ALL {
        let files: Vec<&ShardInfo> = c.shards.iter().filter(|s| s.split == split).collect();
        if files.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  - split: {}\n    path:", split.name());
        for f in files {
            let _ = writeln!(out, "    - {}", quoted(&f.file));
        }
    }
    out.push_str("dataset_info:\n  features:\n");
    out.push_str(&features_yaml(c.format, c.reasoning));
    let languages: Vec<&str> = c
        .langs
        .keys()
        .map(String::as_str)
        .filter(|l| matches!(*l, "zh" | "en"))
        .collect();
    if !languages.is_empty() {
        out.push_str("language:\n");
        for l in languages {
            let _ = writeln!(out, "- {l}");
        }
    }
    out.push_str("license: unknown # fill in the license of this data (see \"License\" below)\n");
    let _ = writeln!(out, "pretty_name: {}", quoted(c.name));
    let _ = writeln!(out, "size_categories:\n- {}", size_category(rows));
    out.push_str(
        "task_categories:\n- text-generation\ntags:\n- instill\n- dpo\n- preference\n---\n\n",
    );
}

/// The `datasets` features of a pair layout.
fn features_yaml(format: PairFormat, reasoning: bool) -> String {
    let string = |name: &str| format!("  - name: {name}\n    dtype: string\n");
    match format {
        PairFormat::Dpo => ["prompt", "chosen", "rejected"].map(string).concat(),
        PairFormat::DpoMessages => {
            let messages = |name: &str, reasoning: bool| {
                let mut f = format!(
                    "  - name: {name}\n    list:\n    - name: role\n      dtype: string\n    \
                     - name: content\n      dtype: string\n"
                );
                if reasoning {
                    f.push_str("    - name: reasoning_content\n      dtype: string\n");
                }
                f
            };
            [
                messages("prompt", false),
                messages("chosen", reasoning),
                messages("rejected", reasoning),
            ]
            .concat()
        }
        PairFormat::RankingShareGpt => {
            let turn = |name: &str| {
                format!(
                    "  - name: {name}\n    struct:\n    - name: from\n      dtype: string\n    \
                     - name: value\n      dtype: string\n"
                )
            };
            format!(
                "  - name: conversations\n    list:\n    - name: from\n      dtype: string\n    \
                 - name: value\n      dtype: string\n{}{}",
                turn("chosen"),
                turn("rejected")
            )
        }
        PairFormat::Ranking => {
            let mut f = ["instruction", "input", "chosen", "rejected", "system"]
                .map(string)
                .concat();
            f.push_str("  - name: history\n    list:\n      list: string\n");
            f
        }
    }
}

fn columns_text(format: PairFormat, reasoning: bool) -> &'static str {
    match (format, reasoning) {
        (PairFormat::Dpo, _) => {
            "- `prompt` (string): the user's turn (the instruction, then its input after a blank \
             line).\n- `chosen` (string): the preferred answer.\n- `rejected` (string): the \
             answer it is preferred to.\n\ntrl's standard preference format, which `DPOTrainer` \
             takes as it is.\n\n"
        }
        (PairFormat::DpoMessages, false) => {
            "- `prompt` (list of {`role`, `content`}): the conversation before the answer: \
             `system` first when there is a system prompt, earlier `user` / `assistant` turns, \
             then the `user` turn (the instruction, its input after a blank line).\n- `chosen`, \
             `rejected` (one {`role`: `assistant`, `content`} each): the preferred answer and the \
             one it is preferred to.\n\ntrl's conversational preference format: `DPOTrainer` \
             applies the model's chat template to it.\n\n"
        }
        (PairFormat::DpoMessages, true) => {
            "- `prompt` (list of {`role`, `content`}): the conversation before the answer: \
             `system` first when there is a system prompt, earlier `user` / `assistant` turns, \
             then the `user` turn (the instruction, its input after a blank line).\n- `chosen`, \
             `rejected` (one {`role`: `assistant`, `content`, `reasoning_content`} each): the \
             preferred answer and the one it is preferred to, with the reasoning behind each \
             (empty when none).\n\ntrl's conversational preference format: `DPOTrainer` \
             applies the model's chat template to it.\n\n"
        }
        (PairFormat::RankingShareGpt, _) => {
            "- `conversations` (list of {`from`, `value`}): the conversation before the answer: \
             `system` first when there is a system prompt, earlier `human` / `gpt` turns, then \
             the `human` turn (the instruction, its input after a blank line).\n- `chosen`, \
             `rejected` ({`from`: `gpt`, `value`} each): the preferred answer and the one it is \
             preferred to.\n\nLLaMA-Factory's sharegpt-style preference layout (`\"ranking\": \
             true` in `dataset_info.json`).\n\n"
        }
        (PairFormat::Ranking, _) => {
            "- `instruction` (string): the task.\n- `input` (string): its input, often empty.\n\
             - `chosen` (string): the preferred answer.\n- `rejected` (string): the answer it is \
             preferred to.\n- `system` (string): the system prompt; null or empty when there is \
             none.\n- `history` (list of [user, assistant] pairs): earlier turns; null or empty \
             when there are none.\n\nLLaMA-Factory's alpaca-style preference layout (`\"ranking\": \
             true` in `dataset_info.json`).\n\n"
        }
    }
}

fn splits_section(c: &PairCardInput, out: &mut String) {
    crate::card::split_table(c.shards, "pairs", out);
    let _ = writeln!(
        out,
        "\nThe pairs whose prompt record passes `--status {}`.{}\n",
        c.status,
        if c.val_fraction > 0.0 {
            format!(
                " The validation split holds {} of the pairs, chosen by a hash of each pair's \
                 normalised prompt (instruction, input, system prompt, earlier turns) with seed \
                 {}: every pair of one prompt lands on the same side, whatever its answers.",
                c.val_fraction, c.seed
            )
        } else {
            String::new()
        }
    );
}

fn sets_section(sets: &[SetWritten], out: &mut String) {
    out.push_str(
        "## Pair sets\n\n| set | made by | pairs in this export | graded on both sides | mean margin (chosen − rejected) |\n|---|---|---:|---:|---:|\n",
    );
    for s in sets {
        let made_by = match s.made_by {
            "pairs" => "`instill pairs` (answers sampled and graded by a judge)",
            _ => "imported",
        };
        let margin = s.mean_margin.map_or_else(|| "–".to_string(), short);
        let _ = writeln!(
            out,
            "| {} | {made_by} | {} | {} | {margin} |",
            cell(&s.name),
            s.pairs,
            s.graded
        );
    }
    for s in sets.iter().filter(|s| !s.no_pair.is_empty()) {
        let why: Vec<String> = s
            .no_pair
            .iter()
            .map(|(k, n)| format!("{n} `{k}`"))
            .collect();
        let _ = writeln!(
            out,
            "\nInstructions of `{}` without a pair (not in this export): {}.",
            cell(&s.name),
            why.join(", ")
        );
    }
    out.push('\n');
}

fn loading_section(c: &PairCardInput, out: &mut String) {
    out.push_str("## How to load\n\n```python\nfrom datasets import load_dataset\n\n");
    let _ = writeln!(
        out,
        "ds = load_dataset(\"path/to/{}\")  # this directory, or its repository on the Hub\n```\n",
        c.name
    );
    if matches!(c.format, PairFormat::Dpo | PairFormat::DpoMessages) {
        out.push_str(
            "trl: `DPOTrainer(model=..., args=DPOConfig(...), train_dataset=ds[\"train\"])`.\n\n",
        );
    }
    if c.zstd {
        out.push_str(
            "The shards are zstd-compressed: `datasets` needs the `zstandard` package. \
             LLaMA-Factory cannot read `.jsonl.zst` files.\n",
        );
        return;
    }
    match c.lf {
        Some(names) => {
            out.push_str("LLaMA-Factory reads `dataset_info.json` in this directory (`stage: dpo`):\n\n```yaml\n");
            let _ = writeln!(
                out,
                "dataset_dir: path/to/{}\ndataset: {}",
                c.name, names.train
            );
            if let Some(val) = &names.validation {
                let _ = writeln!(out, "eval_dataset: {val}");
            }
            out.push_str("```\n");
        }
        None => out.push_str(
            "LLaMA-Factory does not read this layout's message lists: export with `--format \
             lf-ranking` for it.\n",
        ),
    }
}
