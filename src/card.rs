//! The dataset card an export writes as its `README.md`: YAML metadata the Hugging Face Hub and
//! `datasets.load_dataset(DIR)` read (`configs:` with the data files of each split, the
//! features of the layout, languages, license), then what a reader needs to trust the data:
//! counts, languages, sources, the generation runs, the curation with what each step rejected,
//! the score distributions of the exported records, and how to load it.

use std::fmt::Write as _;

use instill_core::{OutputFormat, summarize, utc};
use instill_storage::{ExportScores, Provenance};
use serde_json::Value;

use crate::lf_info::LfNames;
use crate::scoreboard::{bin_label, describe, sentence, short, short_or_dash};
use crate::shards::{ShardInfo, Split};

/// The file name of the card inside an export.
pub const CARD: &str = "README.md";

/// Everything the card describes.
pub struct CardInput<'a> {
    /// The dataset's name (the export directory's name).
    pub name: &'a str,
    /// The layout of the lines.
    pub format: OutputFormat,
    /// Whether `messages` turns carry `reasoning_content`.
    pub reasoning: bool,
    /// Whether the shards are zstd-compressed JSONL.
    pub zstd: bool,
    /// Whether the shards are Parquet files.
    pub parquet: bool,
    /// Every shard, train first.
    pub shards: &'a [ShardInfo],
    /// Which records (`kept`, `accepted`, …).
    pub status: &'a str,
    /// The validation fraction and seed.
    pub val_fraction: f64,
    /// The split's seed.
    pub seed: u64,
    /// Where the records came from.
    pub provenance: &'a Provenance,
    /// The names of the LLaMA-Factory entries in `dataset_info.json`.
    pub lf: &'a LfNames,
    /// When the export was made, Unix milliseconds.
    pub created_at_ms: i64,
}

/// The card's full text.
pub fn render(c: &CardInput) -> String {
    let mut out = String::new();
    front_matter(c, &mut out);
    let rows: u64 = c.shards.iter().map(|s| s.rows).sum();
    let _ = writeln!(out, "# {}\n", c.name);
    let _ = writeln!(
        out,
        "{} instruction records exported by instill {} on {} in the `{}` layout, as {}.\n",
        rows,
        env!("CARGO_PKG_VERSION"),
        utc(c.created_at_ms),
        c.format.name(),
        file_kind(c.zstd, c.parquet)
    );
    splits_section(c, &mut out);
    columns_section(c.format, &mut out);
    languages_section(c.provenance, &mut out);
    sources_section(c.provenance, &mut out);
    runs_section(c.provenance, &mut out);
    curation_section(c, &mut out);
    scores_section(c, &mut out);
    license_section(&mut out);
    loading_section(c, &mut out);
    out
}

pub(crate) fn file_kind(zstd: bool, parquet: bool) -> &'static str {
    match (parquet, zstd) {
        (true, _) => "Parquet (`.parquet`, zstd-compressed pages)",
        (false, true) => "JSON Lines compressed with zstd (`.jsonl.zst`)",
        (false, false) => "JSON Lines (`.jsonl`)",
    }
}

/// The YAML block between `---` lines. Strings go through JSON, whose quoted strings are YAML's.
fn front_matter(c: &CardInput, out: &mut String) {
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
    out.push_str(features_yaml(c.format));
    if c.reasoning && c.format.has_reasoning_field() {
        out.push_str("    - name: reasoning_content\n      dtype: string\n");
    }
    let languages: Vec<&str> = c
        .provenance
        .by_lang
        .iter()
        .map(|(l, _)| l.as_str())
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
    let rows: u64 = c.shards.iter().map(|s| s.rows).sum();
    let _ = writeln!(out, "size_categories:\n- {}", size_category(rows));
    out.push_str("task_categories:\n- text-generation\ntags:\n- instill\n- instruction-tuning\n");
    if c.provenance.by_origin.iter().any(|(o, _)| o == "generated") {
        out.push_str("- synthetic\n");
    }
    out.push_str("---\n\n");
}

pub(crate) fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `datasets` features of a layout: every line is read into these columns, so shards whose
/// lines lack an optional Alpaca column still load (the column is then null).
fn features_yaml(format: OutputFormat) -> &'static str {
    match format {
        OutputFormat::Alpaca => {
            "  - name: instruction\n    dtype: string\n  - name: input\n    dtype: string\n  \
             - name: output\n    dtype: string\n  - name: system\n    dtype: string\n  \
             - name: history\n    list:\n      list: string\n"
        }
        OutputFormat::ShareGpt => {
            "  - name: conversations\n    list:\n    - name: from\n      dtype: string\n    \
             - name: value\n      dtype: string\n"
        }
        OutputFormat::Messages => {
            "  - name: messages\n    list:\n    - name: role\n      dtype: string\n    \
             - name: content\n      dtype: string\n"
        }
    }
}

/// The Hub's `size_categories` bucket for `rows`.
pub(crate) fn size_category(rows: u64) -> &'static str {
    match rows {
        0..1_000 => "n<1K",
        1_000..10_000 => "1K<n<10K",
        10_000..100_000 => "10K<n<100K",
        100_000..1_000_000 => "100K<n<1M",
        1_000_000..10_000_000 => "1M<n<10M",
        10_000_000..100_000_000 => "10M<n<100M",
        _ => "100M<n<1B",
    }
}

/// The splits table: each split's rows (`unit`: records, pairs), files and bytes on disk.
pub(crate) fn split_table(shards: &[ShardInfo], unit: &str, out: &mut String) {
    let _ = write!(
        out,
        "## Splits\n\n| split | {unit} | files | bytes on disk |\n|---|---:|---:|---:|\n"
    );
    for split in Split::ALL {
        let files: Vec<&ShardInfo> = shards.iter().filter(|s| s.split == split).collect();
        if files.is_empty() {
            continue;
        }
        let rows: u64 = files.iter().map(|s| s.rows).sum();
        let bytes: u64 = files.iter().map(|s| s.bytes).sum();
        let _ = writeln!(
            out,
            "| {} | {rows} | {} | {bytes} |",
            split.name(),
            files.len()
        );
    }
}

fn splits_section(c: &CardInput, out: &mut String) {
    split_table(c.shards, "records", out);
    let _ = writeln!(
        out,
        "\nThe records: {}.{}\n",
        status_meaning(c.status),
        if c.val_fraction > 0.0 {
            format!(
                " The validation split holds {} of the records, chosen by a hash of each \
                 record's normalised content with seed {} (`instill train --val-fraction {} \
                 --seed {}` holds out the same records).",
                c.val_fraction, c.seed, c.val_fraction, c.seed
            )
        } else {
            String::new()
        }
    );
}

fn columns_section(format: OutputFormat, out: &mut String) {
    out.push_str("## Columns\n\n");
    out.push_str(match format {
        OutputFormat::Alpaca => {
            "- `instruction` (string): the task.\n- `input` (string): its input, often empty.\n\
             - `output` (string): the answer.\n- `system` (string): the system prompt; null or \
             empty when there is none.\n- `history` (list of [user, assistant] pairs): earlier \
             turns of a conversation; null or empty when there are none.\n"
        }
        OutputFormat::ShareGpt => {
            "- `conversations` (list of {`from`, `value`}): the turns in order; `from` is \
             `system` (first, when there is a system prompt), `human` or `gpt`. The last `human` \
             turn is the instruction, followed by its input after a blank line.\n"
        }
        OutputFormat::Messages => {
            "- `messages` (list of {`role`, `content`}): OpenAI's chat layout, which trl's \
             `SFTTrainer` takes as it is; `role` is `system` (first, when there is a system \
             prompt), `user` or `assistant`. The last `user` message is the instruction, \
             followed by its input after a blank line.\n"
        }
    });
    out.push('\n');
}

fn languages_section(p: &Provenance, out: &mut String) {
    out.push_str("## Languages\n\n| language | records |\n|---|---:|\n");
    for (lang, n) in &p.by_lang {
        let name = match lang.as_str() {
            "zh" => "Chinese (zh)",
            "en" => "English (en)",
            _ => "other",
        };
        let _ = writeln!(out, "| {name} | {n} |");
    }
    out.push_str("\nDetected per record from its script and words.\n\n");
}

/// A table cell: no line breaks, no column separators.
pub(crate) fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn sources_section(p: &Provenance, out: &mut String) {
    out.push_str("## Sources\n\n| source | records |\n|---|---:|\n");
    for (source, n) in &p.by_source {
        let _ = writeln!(out, "| {} | {n} |", cell(source));
    }
    let origins: Vec<String> = p
        .by_origin
        .iter()
        .map(|(origin, n)| format!("{n} {origin}"))
        .collect();
    if !origins.is_empty() {
        let _ = writeln!(out, "\nOf the exported records: {}.", origins.join(", "));
    }
    if let Some(line) = evolved_sentence(p) {
        let _ = writeln!(out, "\n{line}");
    }
    if !p.imports.is_empty() {
        out.push_str(
            "\nThe imported files they came from:\n\n| file | layout | SHA-256 of the file | records in this export |\n|---|---|---|---:|\n",
        );
        for i in &p.imports {
            let _ = writeln!(
                out,
                "| {} | {} | `{}` | {} |",
                cell(&file_name(&i.path)),
                cell(&i.format),
                cell(&i.sha256),
                i.records
            );
        }
    }
    out.push('\n');
}

/// How many exported records `instill evolve` wrote and from what, when any.
fn evolved_sentence(p: &Provenance) -> Option<String> {
    let seeds: i64 = p.evolved.iter().map(|e| e.from_seeds).sum();
    let records: i64 = p.evolved.iter().map(|e| e.from_records).sum();
    let rounds = p.evolved.iter().map(|e| e.round).max()?;
    Some(format!(
        "{} of them were evolved by `instill evolve` (Evol-Instruct: an instruction rewritten, \
         answered, and kept only past the elimination rules, the quality rules and dedup), \
         over {rounds} round{}: {seeds} rewritten from a seed task, {records} from a record \
         (an imported or generated one, or a rewrite kept in an earlier round).",
        seeds + records,
        if rounds == 1 { "" } else { "s" }
    ))
}

/// A run's evolved records of this export round by round, when it is an evolve run.
fn evolved_rounds(p: &Provenance, run: &str) -> Option<String> {
    let rounds: Vec<String> = p
        .evolved
        .iter()
        .filter(|e| e.run == run)
        .map(|e| {
            format!(
                "round {}: {} ({} from seed tasks, {} from records)",
                e.round,
                e.from_seeds + e.from_records,
                e.from_seeds,
                e.from_records
            )
        })
        .collect();
    (!rounds.is_empty()).then(|| format!("- evolved records by round: {}", rounds.join("; ")))
}

/// What `--status` selected, in words.
fn status_meaning(status: &str) -> String {
    let meaning = match status {
        "kept" => "every record that `filter` and `dedup` did not reject",
        "accepted" => "the records accepted when they were generated or judged",
        "pending" => "the records not yet judged",
        "rejected" => "only rejected records",
        "all" => "every record, rejected ones included",
        other => return format!("records with status `{other}`"),
    };
    format!("{meaning} (`--status {status}`)")
}

/// The file name of an imported path: the card may be shared, the directories are the user's.
fn file_name(path: &str) -> String {
    std::path::Path::new(path)
        .file_name()
        .map_or_else(|| path.to_string(), |n| n.to_string_lossy().into_owned())
}

/// The settings of a generation run that a reader needs, from its stored fingerprint (a run on
/// the stage engine — chat, magpie — keeps its own under `settings`).
const RUN_FIELDS: [(&str, &str); 13] = [
    ("mode", "mode"),
    ("model", "model"),
    ("system", "system prompt"),
    (
        "pre_query",
        "pre-query text (the prompt magpie's instructions continue)",
    ),
    ("template", "prompt template"),
    ("seeds", "seed tasks"),
    ("seeds_per_prompt", "seed examples per prompt"),
    ("generated_per_prompt", "generated examples per prompt"),
    ("seed", "random seed"),
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("max_tokens", "max_tokens"),
    ("rouge_threshold", "ROUGE-L threshold"),
];

fn runs_section(p: &Provenance, out: &mut String) {
    if p.runs.is_empty() {
        return;
    }
    out.push_str("## Generation runs\n\n");
    for run in &p.runs {
        let config: Value = serde_json::from_str(&run.config_json).unwrap_or_default();
        let _ = writeln!(
            out,
            "### `{}`\n\n{} records of this export, started {}.\n",
            cell(&run.name),
            run.records,
            utc(run.started_at)
        );
        for (key, label) in RUN_FIELDS {
            let value = match &config[key] {
                Value::Null => &config["settings"][key],
                v => v,
            };
            match value {
                Value::Null => {}
                Value::String(s) => {
                    let _ = writeln!(out, "- {label}: `{}`", cell(s));
                }
                v => {
                    let _ = writeln!(out, "- {label}: {v}");
                }
            }
        }
        if let Some(line) = evolved_rounds(p, &run.name) {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
}

fn curation_section(c: &CardInput, out: &mut String) {
    let p = c.provenance;
    out.push_str("## Curation\n\n");
    if p.curations.is_empty() {
        out.push_str(
            "No `instill dedup`, `instill filter` or `instill select` run was stored for this \
             database.\n",
        );
    }
    for (i, cur) in p.curations.iter().enumerate() {
        let settings: Value = serde_json::from_str(&cur.settings_json).unwrap_or_default();
        let rejected: Value = serde_json::from_str(&cur.rejected_json).unwrap_or_default();
        let select = cur.command == "select";
        let checked = if select {
            "decided over {} records not rejected by another step"
        } else {
            "checked {} records not rejected before it"
        }
        .replace("{}", &cur.checked.to_string());
        let superseded = select && p.curations[i + 1..].iter().any(|c| c.command == "select");
        let _ = writeln!(
            out,
            "- `instill {}` on {}: {checked}{}; rejected {}{}.",
            cur.command,
            utc(cur.created_at),
            curation_settings(&settings),
            rejected_counts(&rejected),
            if superseded {
                " (a later `select` decided these records again)"
            } else {
                ""
            }
        );
    }
    if !p.rejected_by_reason.is_empty() {
        out.push_str(
            "\nRejected records in the database (not in this export), by reason:\n\n\
             | reason | records |\n|---|---:|\n",
        );
        for (reason, n) in &p.rejected_by_reason {
            let _ = writeln!(out, "| {} | {n} |", cell(reason));
        }
    }
    out.push('\n');
}

/// `dedup`'s stages with their thresholds, `filter`'s rule set, or `select`'s scorer and
/// thresholds, from the stored summary.
fn curation_settings(settings: &Value) -> String {
    if let Some(rules) = settings["rules"].as_str() {
        return format!(", with the rules `{}`", cell(rules));
    }
    if let Some(scorer) = settings["scorer"].as_str() {
        return selection_settings(scorer, settings);
    }
    let mut parts = Vec::new();
    if !settings["exact"].is_null() {
        parts.push("exact duplicates".to_string());
    }
    if let Some(m) = settings["minhash"].as_object() {
        let shingling = settings["shingling"].as_str().unwrap_or("");
        parts.push(format!(
            "MinHash-LSH at Jaccard {} ({shingling})",
            m.get("threshold").unwrap_or(&Value::Null)
        ));
    }
    if let Some(r) = settings["rouge_l"].as_object() {
        parts.push(format!(
            "ROUGE-L at {} ({} tokenizer)",
            r.get("threshold").unwrap_or(&Value::Null),
            r.get("tokenizer").and_then(Value::as_str).unwrap_or("")
        ));
    }
    let compared = match settings["field"].as_str() {
        Some("instruction") => " (exact and MinHash compare the instruction alone)",
        Some(_) => " (exact and MinHash compare the whole record)",
        None => "",
    };
    if parts.is_empty() {
        String::new()
    } else {
        format!(", by {}{compared}", parts.join(", "))
    }
}

/// `select`'s settings in words: the scorer, its thresholds, the budget, the diversity rule.
fn selection_settings(scorer: &str, s: &Value) -> String {
    let scale = s["scale"]
        .as_array()
        .and_then(|a| Some((a.first()?.as_f64()?, a.get(1)?.as_f64()?)))
        .map_or_else(String::new, |(lo, hi)| {
            format!(", scale {}–{}", short(lo), short(hi))
        });
    let mut parts = Vec::new();
    if let Some(x) = s["min_score"].as_f64() {
        parts.push(format!("keeping scores of at least {}", short(x)));
    }
    if let Some(x) = s["max_score"].as_f64() {
        parts.push(format!("keeping scores of at most {}", short(x)));
    }
    if let Some(k) = s["top_k"].as_u64() {
        parts.push(format!("keeping the best {k}"));
    }
    if let Some(f) = s["top_fraction"].as_f64() {
        parts.push(format!("keeping the best {}%", short(f * 100.0)));
    }
    if let Some(t) = s["diverse_threshold"].as_f64() {
        let method = match s["diverse_method"].as_str() {
            Some("minhash") => "MinHash Jaccard",
            _ => "ROUGE-L",
        };
        parts.push(format!(
            "dropping records above {method} {} to a better-scored kept one",
            short(t)
        ));
    }
    if s["keep_unscored"].as_bool() == Some(true) {
        parts.push("keeping records without a score".into());
    }
    let method = s["method"].as_str().unwrap_or("judge");
    let mut out = format!(", by the scores of `{}` ({method}{scale})", cell(scorer));
    if !parts.is_empty() {
        out.push_str(": ");
        out.push_str(&parts.join(", "));
    }
    out
}

fn rejected_counts(rejected: &Value) -> String {
    let counts: Vec<String> = rejected
        .as_object()
        .map(|m| m.iter().map(|(k, v)| format!("{v} `{k}`")).collect())
        .unwrap_or_default();
    if counts.is_empty() {
        "none".to_string()
    } else {
        counts.join(", ")
    }
}

/// Each scorer's distribution over the records of this export, the judge and its rubric.
fn scores_section(c: &CardInput, out: &mut String) {
    let p = c.provenance;
    if p.scores.is_empty() {
        return;
    }
    let rows: u64 = c.shards.iter().map(|s| s.rows).sum();
    out.push_str("## Scores\n\n");
    for s in &p.scores {
        scorer_scores(s, rows, out);
    }
}

fn scorer_scores(s: &ExportScores, rows: u64, out: &mut String) {
    let sc = &s.scorer;
    let d = summarize(s.scores.iter().copied(), sc.scale);
    let not_scored = rows.saturating_sub(d.n + d.unscored);
    let about = sentence(&describe(sc));
    let _ = writeln!(
        out,
        "### `{}`\n\n{}.\n\nOf the {rows} records in this export: {} scored, {} without a score (the scorer \
         could read none), {not_scored} not scored.",
        cell(&sc.name),
        cell(&about),
        d.n,
        d.unscored
    );
    if d.n == 0 {
        out.push('\n');
        return;
    }
    let _ = writeln!(
        out,
        "Mean {}, median {}, lowest {}, highest {}.\n\n| score | records | |\n|---|---:|---|",
        short_or_dash(d.mean),
        short_or_dash(d.median),
        short_or_dash(d.min),
        short_or_dash(d.max)
    );
    let most = d.bins.iter().map(|b| b.n).max().unwrap_or(0).max(1);
    for b in &d.bins {
        let bar = "█".repeat((b.n * 20).div_ceil(most) as usize);
        let _ = writeln!(out, "| {} | {} | {bar} |", bin_label(b, sc.scale), b.n);
    }
    out.push('\n');
}

pub(crate) fn license_section(out: &mut String) {
    out.push_str(
        "## License\n\nThe `license` field above is `unknown`: set it before you share this \
         data. Generated records are also bound by the terms of the model that wrote them; \
         imported records keep the license of their source.\n\n",
    );
}

fn loading_section(c: &CardInput, out: &mut String) {
    out.push_str("## How to load\n\n```python\nfrom datasets import load_dataset\n\n");
    let _ = writeln!(
        out,
        "ds = load_dataset(\"path/to/{}\")  # this directory, or its repository on the Hub\n```\n",
        c.name
    );
    if c.zstd {
        out.push_str(
            "The shards are zstd-compressed: `datasets` needs the `zstandard` package \
             (`pip install zstandard`) to read them. **LLaMA-Factory cannot read `.jsonl.zst` \
             files**: it refuses the entries of `dataset_info.json` here. Export again without \
             `--compress zstd` (JSONL or `--file-format parquet`, which it reads) to train with \
             it.\n",
        );
        return;
    }
    out.push_str("LLaMA-Factory reads `dataset_info.json` in this directory:\n\n```yaml\n");
    let _ = writeln!(
        out,
        "dataset_dir: path/to/{}\ndataset: {}",
        c.name, c.lf.train
    );
    if let Some(val) = &c.lf.validation {
        let _ = writeln!(out, "eval_dataset: {val}");
    }
    out.push_str("```\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_buckets() {
        assert_eq!(size_category(0), "n<1K");
        assert_eq!(size_category(999), "n<1K");
        assert_eq!(size_category(1_000), "1K<n<10K");
        assert_eq!(size_category(52_002), "10K<n<100K");
    }
}
