//! Where `train` and `merge-lora` write: `--out` checked before any work (never one of their
//! inputs, never a directory they did not write), the manifest that lists what they write, and
//! the settings a `--resume` must match.

use std::path::Path;

use anyhow::bail;
use serde::Serialize;

use crate::cli::TrainArgs;
use crate::outdir::{self, Found};

/// Files of a full model directory besides its weights and config, copied from the base.
pub const TOKENIZER_FILES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
];

/// Every file a full model directory may hold.
pub fn model_files() -> Vec<String> {
    ["model.safetensors", "config.json"]
        .into_iter()
        .chain(TOKENIZER_FILES)
        .map(String::from)
        .collect()
}

/// The manifest of a train or merge-lora output directory.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    instill_version: &'static str,
    command: &'static str,
    /// Every file the command may write there: what `--overwrite` and `--resume` accept.
    files: &'a [String],
}

/// Writes the manifest of `command`'s output directory `dir`.
pub fn write_manifest(dir: &Path, command: &'static str, files: &[String]) -> anyhow::Result<()> {
    let manifest = Manifest {
        instill_version: env!("CARGO_PKG_VERSION"),
        command,
        files,
    };
    outdir::write_manifest(dir, &manifest)
}

/// What `train` does with its `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Missing or empty: a new run.
    Fresh,
    /// Its earlier output, replaced (`--overwrite`).
    Replace,
    /// Its earlier run, continued (`--resume`).
    Resume,
}

/// Checks `train`'s `--out` against its inputs and the replace rule, before any work.
pub fn plan(args: &TrainArgs, db: Option<&Path>) -> anyhow::Result<Plan> {
    let mut inputs = vec![("--model", args.model.as_path())];
    inputs.extend(args.data.iter().map(|d| ("--data", d.as_path())));
    inputs.extend(db.map(|d| ("--db", d)));
    outdir::keep_apart(&args.out, &inputs)?;
    let shown = args.out.display();
    Ok(match (outdir::inspect(&args.out)?, args.resume) {
        (Found::Missing | Found::Empty, false) => Plan::Fresh,
        (Found::Missing | Found::Empty, true) => {
            bail!("{shown}: no earlier `instill train` output to resume")
        }
        (Found::Ours { command }, true) if command != "train" => {
            bail!("{shown}: written by `instill {command}`, not by train: nothing to resume")
        }
        (Found::Ours { .. }, true) => Plan::Resume,
        (Found::Ours { .. }, false) if args.overwrite => Plan::Replace,
        (Found::Ours { .. }, false) => bail!(
            "{shown}: exists and is not empty (an earlier instill output); pass --resume to \
             continue its training or --overwrite to replace it"
        ),
    })
}

/// Readies `--out` for the run, once the data and model have loaded: an earlier output being
/// replaced is emptied, and the manifest listing `files` is written first.
pub fn ready(out: &Path, plan: Plan, files: &[String]) -> anyhow::Result<()> {
    if plan == Plan::Replace {
        outdir::clear(out)?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    write_manifest(out, "train", files)?;
    outdir::sync_dir(&outdir::parent_of(out))
}

/// The settings beyond the trainer's own that a `--resume` must match, by their flag names.
pub fn settings(args: &TrainArgs) -> Vec<(String, String)> {
    let data = if args.data.is_empty() {
        format!("the database's {} records", args.status)
    } else {
        let paths: Vec<String> = args
            .data
            .iter()
            .map(|d| outdir::resolved(d).display().to_string())
            .collect();
        paths.join(", ")
    };
    let mut out = vec![
        ("model", outdir::resolved(&args.model).display().to_string()),
        ("data", data),
        ("template", args.template.clone()),
        ("max_len", args.max_len.to_string()),
        ("val_fraction", args.val_fraction.to_string()),
        ("lora", args.lora.to_string()),
        ("dtype", args.dtype.clone()),
    ];
    if args.lora {
        out.extend([
            ("lora_r", args.lora_r.to_string()),
            ("lora_alpha", args.lora_alpha.to_string()),
            ("lora_dropout", args.lora_dropout.to_string()),
            ("target_modules", args.target_modules.join(",")),
            ("modules_to_save", args.modules_to_save.join(",")),
        ]);
    }
    out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
