//! Where `train` and `merge-lora` write: `--out` checked before any work (never one of their
//! inputs, never a directory they did not write), the manifest that lists what they write, and
//! the settings a `--resume` must match.

use std::path::Path;

use anyhow::bail;
use instill_models::save::{TOKENIZER_FILES, WEIGHTS_FILE};
use instill_trainer::peft::ADAPTER_FILES;
use serde::Serialize;

use crate::cli::TrainArgs;
use crate::outdir::{self, Producer, Stamp};

/// Every file a full model directory may hold.
pub fn model_files() -> Vec<String> {
    [WEIGHTS_FILE, "config.json"]
        .into_iter()
        .chain(TOKENIZER_FILES)
        .map(String::from)
        .collect()
}

/// Where a train run writes its adapter or model before they are renamed into place.
const FINAL_STAGING: &str = "final.tmp";

/// Every file a train run may write, LoRA or full: its checkpoints and loss log, an adapter, a
/// model, and those as staged in [`FINAL_STAGING`]. A resume that switches `--lora` is refused
/// before anything is written, and the manifest lists both, so an output is always resumable
/// or replaceable.
pub fn train_files() -> Vec<String> {
    let mut files = instill_trainer::train::files();
    let finals: Vec<String> = ADAPTER_FILES
        .map(String::from)
        .into_iter()
        .chain(model_files())
        .collect();
    files.extend(finals.iter().map(|f| format!("{FINAL_STAGING}/{f}")));
    files.extend(finals);
    files
}

/// Writes a run's adapter or model into `out` whole: `write` fills `out/final.tmp` (a leftover
/// from a killed run is removed first), each file is synced, then renamed into `out`, the
/// weights last. A kill at any point leaves no half-written file where a loader looks; the same
/// command with `--resume` writes them again from the last checkpoint.
pub fn write_final(
    out: &Path,
    write: impl FnOnce(&Path) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let staged = out.join(FINAL_STAGING);
    let cannot = |what: &str, p: &Path, e: std::io::Error| {
        anyhow::anyhow!("{}: cannot {what}: {e}", p.display())
    };
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| cannot("remove", &staged, e))?;
    }
    std::fs::create_dir_all(&staged).map_err(|e| cannot("create", &staged, e))?;
    write(&staged)?;
    let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(&staged)
        .and_then(|d| d.map(|e| e.map(|e| e.file_name())).collect())
        .map_err(|e| cannot("read", &staged, e))?;
    // Weights last: their presence means the rest is in place.
    names.sort_by_key(|n| n.to_string_lossy().ends_with(".safetensors"));
    for name in names {
        let (from, to) = (staged.join(&name), out.join(&name));
        std::fs::File::open(&from)
            .and_then(|f| f.sync_all())
            .map_err(|e| cannot("sync", &from, e))?;
        std::fs::rename(&from, &to).map_err(|e| cannot("write", &to, e))?;
    }
    std::fs::remove_dir(&staged).map_err(|e| cannot("remove", &staged, e))?;
    outdir::sync_dir(out)
}

/// Whether `name` is a file a merged model's staging directory holds.
pub fn is_model_file(name: &str) -> bool {
    name == outdir::MANIFEST || model_files().iter().any(|f| f == name)
}

/// The manifest of a train or merge-lora output directory.
#[derive(Debug, Serialize)]
struct Manifest<'a> {
    #[serde(flatten)]
    stamp: Stamp,
    /// Every file the command may write there: what `--overwrite` and `--resume` accept.
    files: &'a [String],
}

/// Writes the manifest of `command`'s output directory `dir`.
pub fn write_manifest(dir: &Path, command: Producer, files: &[String]) -> anyhow::Result<()> {
    let manifest = Manifest {
        stamp: Stamp::new(command),
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

/// Refuses a `--out` that is, holds or lies inside one of `train`'s inputs.
pub fn keep_apart(args: &TrainArgs, db: &str) -> anyhow::Result<()> {
    let mut inputs = vec![("--model", args.model.as_path())];
    inputs.extend(args.data.iter().map(|d| ("--data", d.as_path())));
    outdir::keep_apart(&args.out, db, &inputs)
}

/// Checks `train`'s `--out` against its inputs and the replace rule, before any work.
pub fn plan(args: &TrainArgs, db: &str) -> anyhow::Result<Plan> {
    keep_apart(args, db)?;
    let shown = args.out.display();
    let found = outdir::inspect(&args.out)?;
    let ours = outdir::own_output(&args.out, &found, Producer::Train)?;
    Ok(match (ours, args.resume) {
        (false, false) => Plan::Fresh,
        (false, true) => bail!("{shown}: no earlier `instill train` output to resume"),
        (true, true) => Plan::Resume,
        (true, false) if args.overwrite => Plan::Replace,
        (true, false) => bail!(
            "{shown}: exists and is not empty (an earlier `instill train` output); pass --resume \
             to continue its training or --overwrite to replace it"
        ),
    })
}

/// Readies `--out` for the run, once the data and model have loaded and a resume's settings
/// are checked: an earlier output being replaced is emptied, and the manifest is written.
pub fn ready(out: &Path, plan: Plan) -> anyhow::Result<()> {
    if plan == Plan::Replace {
        outdir::clear(out, Producer::Train)?;
    }
    std::fs::create_dir_all(out)
        .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", out.display()))?;
    write_manifest(out, Producer::Train, &train_files())?;
    outdir::sync_dir(&outdir::parent_of(out))
}

/// The settings beyond the trainer's own that a `--resume` must match, by their flag names.
pub fn settings(args: &TrainArgs) -> Vec<(String, String)> {
    let data = if args.data.is_empty() {
        match (args.dpo, args.pairs.is_empty()) {
            (false, _) => format!("the database's {} records", args.status()),
            (true, true) => format!("the database's {} pairs", args.status()),
            (true, false) => format!(
                "the database's {} pairs of {}",
                args.status(),
                args.pairs.join(", ")
            ),
        }
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
