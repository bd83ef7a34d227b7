//! Output directories and the one rule for replacing them: a command writes into a missing or
//! empty directory, or replaces instill's own earlier output — a directory whose `manifest.json`
//! lists every file in it — and nothing else. Its `--out` never is, holds or lies inside one of
//! its inputs (the database, the model, the adapter, the data).

use std::fs::File;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, bail};

/// The file in every instill output directory that lists what the command wrote there.
pub const MANIFEST: &str = "manifest.json";

/// What an `--out` path holds before a command writes there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// Nothing yet.
    Missing,
    /// An empty directory.
    Empty,
    /// instill's earlier output: its manifest lists every file in it. `command` is the command
    /// that wrote it (`export` for exports written before the manifest named it).
    Ours { command: String },
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
    let manifest_path = dir.join(MANIFEST);
    let listed = match std::fs::read(&manifest_path) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes).ok(),
        Err(_) => None,
    };
    let Some(manifest) = listed else {
        bail!(
            "{shown}: not empty and not an earlier instill output (no readable {MANIFEST}); it \
             holds {}; instill replaces only what it wrote: choose another --out",
            dir.join(first).display()
        );
    };
    let owned = owned_files(&manifest);
    if let Some(stranger) = files.iter().find(|f| !owned.contains(f)) {
        bail!(
            "{shown}: holds {}, which is not part of instill's earlier output there ({MANIFEST} \
             does not list it); instill replaces only what it wrote: move it away or choose \
             another --out",
            dir.join(stranger).display()
        );
    }
    let command = manifest["command"].as_str().unwrap_or("export").to_string();
    Ok(Found::Ours { command })
}

/// The files a manifest names as written by instill: `files`, the shards of an export, and
/// the manifest itself.
fn owned_files(manifest: &serde_json::Value) -> Vec<String> {
    let mut owned = vec![MANIFEST.to_string()];
    let listed = manifest["files"].as_array().into_iter().flatten();
    let shards = manifest["shards"].as_array().into_iter().flatten();
    owned.extend(listed.chain(shards.map(|s| &s["file"])).filter_map(|f| {
        f.as_str()
            .filter(|f| {
                Path::new(f)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)))
            })
            .map(String::from)
    }));
    owned
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

/// Refuses `dir` unless a command may write it: missing, empty, or (with `overwrite`) instill's
/// earlier output.
pub fn check(dir: &Path, overwrite: bool) -> anyhow::Result<Found> {
    let found = inspect(dir)?;
    if matches!(found, Found::Ours { .. }) && !overwrite {
        bail!(
            "{}: exists and is not empty (an earlier instill output); pass --overwrite to \
             replace it",
            dir.display()
        );
    }
    Ok(found)
}

/// Removes `dir` after checking, at this moment, that it holds only what instill wrote.
pub fn remove(dir: &Path) -> anyhow::Result<()> {
    if let Found::Ours { .. } = inspect(dir)? {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    } else {
        std::fs::remove_dir(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    Ok(())
}

/// Empties `dir` (which stays) after checking that it holds only what instill wrote.
pub fn clear(dir: &Path) -> anyhow::Result<()> {
    if let Found::Ours { .. } = inspect(dir)? {
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

/// Refuses an `--out` that is, or lies inside, one of `inputs` (`(flag, path)`), or holds one.
pub fn keep_apart(out: &Path, inputs: &[(&str, &Path)]) -> anyhow::Result<()> {
    let o = resolved(out);
    for &(flag, input) in inputs {
        let i = resolved(input);
        if o.starts_with(&i) {
            bail!(
                "--out {} {} {flag} {}: writing there would destroy it; choose another --out",
                out.display(),
                if o == i { "is" } else { "lies inside" },
                input.display()
            );
        }
        if i.starts_with(&o) {
            bail!(
                "--out {} holds {flag} {}: instill never replaces its inputs; choose another --out",
                out.display(),
                input.display()
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
pub fn write_manifest(dir: &Path, manifest: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(manifest)?;
    text.push('\n');
    write_synced(&dir.join(MANIFEST), text.as_bytes())?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_directory_whose_manifest_lists_every_file_is_ours() {
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
        let m = serde_json::json!({"command": "train", "files": ["data/a.jsonl", "../x", "b"]});
        write_manifest(&dir, &m).unwrap();
        assert_eq!(
            inspect(&dir).unwrap(),
            Found::Ours {
                command: "train".into()
            }
        );
        std::fs::create_dir(dir.join("empty")).unwrap();
        let err = inspect(&dir).unwrap_err().to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::remove_dir(dir.join("empty")).unwrap();
        // An export manifest of 0.1 lists its shards only.
        let m = serde_json::json!({"shards": [{"file": "data/a.jsonl"}]});
        write_manifest(&dir, &m).unwrap();
        assert!(check(&dir, false).is_err());
        assert_eq!(
            check(&dir, true).unwrap(),
            Found::Ours {
                command: "export".into()
            }
        );
        clear(&dir).unwrap();
        assert_eq!(inspect(&dir).unwrap(), Found::Empty);
    }

    #[test]
    fn an_out_stays_apart_from_the_inputs() {
        let root = tempfile::tempdir().unwrap();
        let model = root.path().join("m");
        std::fs::create_dir(&model).unwrap();
        let db = root.path().join("out/instill.db");
        for out in [
            model.clone(),
            model.join("new/x"),
            root.path().join("new/../m"),
        ] {
            let err = keep_apart(&out, &[("--model", &model)]).unwrap_err();
            assert!(err.to_string().contains("--model"), "{err}");
        }
        let err = keep_apart(&root.path().join("out"), &[("--db", &db)]).unwrap_err();
        assert!(err.to_string().contains("holds --db"), "{err}");
        keep_apart(
            &root.path().join("m2"),
            &[("--model", &model), ("--db", &db)],
        )
        .unwrap();
    }
}
