//! Output directories and the one rule for replacing them: a command writes into a missing or
//! empty directory, or replaces its own earlier output — a directory whose `manifest.json`
//! proves instill wrote it (`"tool": "instill"` and the command, or the exact shape of an
//! instill 0.1 export) and lists every file in it — and nothing else. Its `--out` never is,
//! holds or lies inside one of its inputs (the database and its -wal, -shm and -journal files,
//! the model, the adapter, the data).

use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;

/// The file in every instill output directory that lists what the command wrote there.
pub const MANIFEST: &str = "manifest.json";

/// The `tool` field of every manifest instill writes.
const TOOL: &str = "instill";

/// The commands that write output directories: each replaces only its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Producer {
    #[serde(rename = "export")]
    Export,
    #[serde(rename = "train")]
    Train,
    #[serde(rename = "merge-lora")]
    MergeLora,
}

impl Producer {
    /// The command's name, as typed after `instill`.
    pub fn name(self) -> &'static str {
        match self {
            Producer::Export => "export",
            Producer::Train => "train",
            Producer::MergeLora => "merge-lora",
        }
    }

    fn parse(name: &str) -> Option<Producer> {
        [Producer::Export, Producer::Train, Producer::MergeLora]
            .into_iter()
            .find(|p| p.name() == name)
    }
}

/// The fields that prove a manifest is instill's, flattened into each command's manifest.
#[derive(Debug, Serialize)]
pub struct Stamp {
    tool: &'static str,
    instill_version: &'static str,
    command: Producer,
}

impl Stamp {
    pub fn new(command: Producer) -> Stamp {
        Stamp {
            tool: TOOL,
            instill_version: env!("CARGO_PKG_VERSION"),
            command,
        }
    }
}

/// What an `--out` path holds before a command writes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing yet.
    Missing,
    /// An empty directory.
    Empty,
    /// instill's earlier output, written by `command`: its manifest lists every file in it.
    Ours { command: Producer },
}

/// What `dir` holds: an error naming the first file in it that instill did not write, unless it
/// is missing, empty or instill's earlier output.
pub fn inspect(dir: &Path) -> anyhow::Result<Found> {
    let shown = dir.display();
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Missing),
        Err(e) => return Err(e).with_context(|| format!("{shown}: cannot read")),
    };
    if !meta.is_dir() {
        bail!("{shown}: exists and is not a directory");
    }
    let files = walk(dir)?;
    let Some(first) = files.first() else {
        return Ok(Found::Empty);
    };
    let manifest = std::fs::read(dir.join(MANIFEST))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok());
    let Some(manifest) = manifest else {
        bail!(
            "{shown}: not empty and not an earlier instill output (no readable {MANIFEST}); it \
             holds {}; instill replaces only what it wrote: choose another --out",
            dir.join(first).display()
        );
    };
    let Some((command, owned)) = ownership(&manifest) else {
        bail!(
            "{shown}: not empty, and its {MANIFEST} was not written by instill (no \
             \"tool\": \"instill\" with the command and the files it wrote); it holds {}; \
             instill replaces only what it wrote: choose another --out",
            dir.join(first).display()
        );
    };
    if let Some(stranger) = files.iter().find(|f| **f != MANIFEST && !owned.contains(f)) {
        bail!(
            "{shown}: holds {}, which is not part of instill's earlier output there ({MANIFEST} \
             does not list it); instill replaces only what it wrote: move it away or choose \
             another --out",
            dir.join(stranger).display()
        );
    }
    Ok(Found::Ours { command })
}

/// The command that wrote `manifest` and the files it lists, when the manifest proves it is
/// instill's: stamped with [`Stamp`], or exactly what an instill 0.1 export wrote.
fn ownership(manifest: &Value) -> Option<(Producer, Vec<String>)> {
    if manifest.get("tool").is_none() {
        return legacy_export(manifest).map(|files| (Producer::Export, files));
    }
    if manifest["tool"] != TOOL || manifest["instill_version"].as_str().is_none() {
        return None;
    }
    let command = Producer::parse(manifest["command"].as_str()?)?;
    let files = manifest["files"].as_array()?;
    let files: Option<Vec<String>> = files.iter().map(|f| relative(f.as_str()?)).collect();
    Some((command, files?))
}

/// The shards of an export manifest written by instill 0.1 (0460483): all of its fields and
/// only those, each shard with its split, counts and SHA-256, the totals counting the shards.
fn legacy_export(manifest: &Value) -> Option<Vec<String>> {
    const FIELDS: [&str; 11] = [
        "instill_version",
        "created_at_ms",
        "format",
        "compression",
        "filters",
        "val_fraction",
        "seed",
        "shard_rows",
        "shard_bytes",
        "shards",
        "totals",
    ];
    let fields = manifest.as_object()?;
    if fields.len() != FIELDS.len() || !FIELDS.iter().all(|f| fields.contains_key(*f)) {
        return None;
    }
    let texts = ["instill_version", "format", "compression"];
    if texts.iter().any(|f| !manifest[*f].is_string()) || !manifest["filters"]["status"].is_string()
    {
        return None;
    }
    let shards = manifest["shards"].as_array()?;
    if manifest["totals"]["shards"].as_u64()? != shards.len() as u64 {
        return None;
    }
    shards
        .iter()
        .map(|s| {
            let sha = s["sha256"].as_str()?;
            let counts = ["rows", "bytes", "uncompressed_bytes"];
            let whole = sha.len() == 64
                && sha.bytes().all(|b| b.is_ascii_hexdigit())
                && s["split"].is_string()
                && counts.iter().all(|c| s[*c].is_u64());
            let file = s["file"].as_str().filter(|f| !f.contains('/'))?;
            whole.then(|| relative(file))?
        })
        .collect()
}

/// `path` when it names a place inside the directory (no `..`, not absolute).
fn relative(path: &str) -> Option<String> {
    let inside = !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    inside.then(|| path.to_string())
}

/// Every entry under `dir` that is not a non-empty directory, as `/`-separated relative paths,
/// in sorted order.
fn walk(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    walk_into(dir, "", &mut out)?;
    Ok(out)
}

fn walk_into(dir: &Path, prefix: &str, out: &mut Vec<String>) -> anyhow::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot read", dir.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: cannot read", dir.display()))?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for e in entries {
        let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
        let before = out.len();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk_into(&e.path(), &format!("{rel}/"), out)?;
        }
        if out.len() == before {
            out.push(rel);
        }
    }
    Ok(())
}

/// Refuses `found` (what `dir` holds) when it is another command's output: `producer` replaces
/// only its own. Returns whether it is `producer`'s earlier output.
pub fn own_output(dir: &Path, found: &Found, producer: Producer) -> anyhow::Result<bool> {
    match found {
        Found::Ours { command } if *command != producer => bail!(
            "{}: an earlier `instill {}` output; `instill {}` replaces only its own earlier \
             output: choose another --out",
            dir.display(),
            command.name(),
            producer.name()
        ),
        Found::Ours { .. } => Ok(true),
        Found::Missing | Found::Empty => Ok(false),
    }
}

/// Refuses `dir` unless `producer` may write it: missing, empty, or (with `overwrite`) its own
/// earlier output.
pub fn check(dir: &Path, producer: Producer, overwrite: bool) -> anyhow::Result<Found> {
    let found = inspect(dir)?;
    if own_output(dir, &found, producer)? && !overwrite {
        bail!(
            "{}: exists and is not empty (an earlier `instill {}` output); pass --overwrite to \
             replace it",
            dir.display(),
            producer.name()
        );
    }
    Ok(found)
}

/// Removes `dir` after checking, at this moment, that it is empty or `producer`'s output.
pub fn remove(dir: &Path, producer: Producer) -> anyhow::Result<()> {
    if own_output(dir, &inspect(dir)?, producer)? {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    } else {
        std::fs::remove_dir(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// Empties `dir` (which stays) after checking that it is empty or `producer`'s output.
pub fn clear(dir: &Path, producer: Producer) -> anyhow::Result<()> {
    if own_output(dir, &inspect(dir)?, producer)? {
        for e in
            std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))?
        {
            let path = e?.path();
            let removed = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            removed.with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// Refuses an `--out` that is, or lies inside, one of `inputs` (`(flag, path)`) or the SQLite
/// database `db` (a `--db` URL) or its -wal, -shm and -journal files, or holds one.
pub fn keep_apart(out: &Path, db: &str, inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    let mut named: Vec<(String, PathBuf)> = inputs
        .iter()
        .map(|&(flag, p)| (format!("{flag} {}", p.display()), p.to_path_buf()))
        .collect();
    if let Some(file) = instill_storage::sqlite_path(db).filter(|f| !f.is_empty()) {
        named.push((format!("--db {file}"), PathBuf::from(file)));
        for (suffix, what) in [
            ("-wal", "write-ahead log"),
            ("-shm", "shared-memory file"),
            ("-journal", "rollback journal"),
        ] {
            named.push((
                format!("the {what} of --db {file} ({file}{suffix})"),
                PathBuf::from(format!("{file}{suffix}")),
            ));
        }
    }
    let o = resolved(out);
    for (what, input) in named {
        let i = resolved(&input);
        if o.starts_with(&i) {
            bail!(
                "--out {} {} {what}: writing there would destroy it; choose another --out",
                out.display(),
                if o == i { "is" } else { "lies inside" },
            );
        }
        if i.starts_with(&o) {
            bail!(
                "--out {} holds {what}: instill never replaces its inputs; choose another --out",
                out.display(),
            );
        }
    }
    Ok(())
}

/// `path` made absolute with symbolic links resolved, also where its tail does not exist yet.
pub fn resolved(path: &Path) -> PathBuf {
    let Ok(abs) = std::path::absolute(path) else {
        return path.to_path_buf();
    };
    let parts: Vec<Component> = abs.components().collect();
    for n in (1..=parts.len()).rev() {
        let head: PathBuf = parts[..n].iter().collect();
        if let Ok(mut real) = head.canonicalize() {
            for part in &parts[n..] {
                match part {
                    Component::ParentDir => {
                        real.pop();
                    }
                    Component::Normal(name) => real.push(name),
                    _ => {}
                }
            }
            return real;
        }
    }
    abs
}

/// Writes `bytes` to `path` and forces them to disk.
pub fn write_synced(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = File::create(path).with_context(|| format!("{}: cannot write", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("{}: cannot write", path.display()))
}

/// Forces a directory's entries (files created, renamed or removed in it) to disk.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("{}: cannot sync", dir.display()))
}

/// The directory `path` is in (`.` for a bare name).
pub fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Writes `manifest` (which lists, in `files`, what `command` wrote) into `dir`, synced.
pub fn write_manifest(dir: &Path, manifest: &impl Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(manifest)?;
    text.push('\n');
    write_synced(&dir.join(MANIFEST), text.as_bytes())?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directory_whose_stamped_manifest_lists_every_file_is_ours() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("out");
        assert_eq!(inspect(&dir).unwrap(), Found::Missing);
        std::fs::create_dir(&dir).unwrap();
        assert_eq!(inspect(&dir).unwrap(), Found::Empty);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("data/a.jsonl"), "").unwrap();
        let err = inspect(&dir).unwrap_err().to_string();
        assert!(
            err.contains("data/a.jsonl") && err.contains("no readable"),
            "{err}"
        );
        // Another tool's manifest, however it looks, is not instill's.
        for m in [
            serde_json::json!({"files": ["data/a.jsonl"]}),
            serde_json::json!({"tool": "other", "instill_version": "0", "command": "train",
                               "files": ["data/a.jsonl"]}),
            serde_json::json!({"tool": "instill", "instill_version": "0", "command": "x",
                               "files": ["data/a.jsonl"]}),
        ] {
            write_manifest(&dir, &m).unwrap();
            let err = inspect(&dir).unwrap_err().to_string();
            assert!(err.contains("not written by instill"), "{m}: {err}");
        }
        #[derive(Serialize)]
        struct M<'a> {
            #[serde(flatten)]
            stamp: Stamp,
            files: &'a [&'a str],
        }
        let m = M {
            stamp: Stamp::new(Producer::Train),
            files: &["data/a.jsonl", "../x", "b"],
        };
        write_manifest(&dir, &m).unwrap();
        let err = inspect(&dir).unwrap_err().to_string();
        assert!(err.contains("not written by instill"), "../x: {err}");
        let m = M {
            stamp: Stamp::new(Producer::Train),
            files: &["data/a.jsonl", "b"],
        };
        write_manifest(&dir, &m).unwrap();
        let train = Found::Ours {
            command: Producer::Train,
        };
        assert_eq!(inspect(&dir).unwrap(), train);
        std::fs::create_dir(dir.join("empty")).unwrap();
        let err = inspect(&dir).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::remove_dir(dir.join("empty")).unwrap();
        assert!(check(&dir, Producer::Train, false).is_err());
        let err = check(&dir, Producer::Export, true).unwrap_err().to_string();
        assert!(err.contains("`instill train` output"), "{err}");
        assert!(clear(&dir, Producer::MergeLora).is_err());
        assert_eq!(check(&dir, Producer::Train, true).unwrap(), train);
        clear(&dir, Producer::Train).unwrap();
        assert_eq!(inspect(&dir).unwrap(), Found::Empty);
    }

    #[test]
    fn an_out_stays_apart_from_the_inputs() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("m");
        std::fs::create_dir(&model).unwrap();
        let db = root.path().join("out/instill.db");
        let url = format!("sqlite://{}", db.display());
        for out in [
            model.clone(),
            model.join("new/x"),
            root.path().join("new/../m"),
        ] {
            let err = keep_apart(&out, "", &[("--model", &model)]).unwrap_err();
            assert!(err.to_string().contains("--model"), "{err}");
        }
        let err = keep_apart(&root.path().join("out"), &url, &[]).unwrap_err();
        assert!(err.to_string().contains("holds --db"), "{err}");
        for suffix in ["-wal", "-shm", "-journal"] {
            let out = PathBuf::from(format!("{}{suffix}", db.display()));
            let err = keep_apart(&out, &url, &[]).unwrap_err().to_string();
            assert!(err.contains("--db") && err.contains(suffix), "{err}");
        }
        keep_apart(&root.path().join("m2"), &url, &[("--model", &model)]).unwrap();
        let other_db = "postgres://u@h/db";
        keep_apart(&root.path().join("out"), other_db, &[]).unwrap();
    }
}
