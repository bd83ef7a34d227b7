//! The staging directory of an export or a merged model: files are written into a hidden
//! directory beside the target (`.NAME.instill-tmp-PID`), which becomes the target only when
//! everything is complete. One left by a process that died is removed by the next run into the
//! same target.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::outdir::{self, Producer};

/// A directory that becomes `target` only through [`Staging::commit`]; dropped uncommitted, it
/// is removed, so a failed export leaves no partial shard behind.
#[derive(Debug)]
pub struct Staging {
    /// Where files are written until commit.
    pub dir: PathBuf,
    target: PathBuf,
    old: PathBuf,
    producer: Producer,
    committed: bool,
}

/// The name prefix of the staging directories of the target named `name`.
fn tmp_prefix(name: &str) -> String {
    format!(".{name}.instill-tmp-")
}

impl Staging {
    /// Prepares `producer`'s write of `target`: refuses anything but a missing or empty
    /// directory, or (with `overwrite`) its own earlier output; removes staging directories of
    /// dead processes that hold only files `stages` names; creates a hidden staging directory
    /// beside it.
    pub fn new(
        target: &Path,
        overwrite: bool,
        producer: Producer,
        stages: fn(&str) -> bool,
    ) -> anyhow::Result<Staging> {
        let shown = target.display();
        outdir::check(target, producer, overwrite)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != ".." && n != ".")
            .ok_or_else(|| anyhow::anyhow!("{shown}: name a directory to create"))?;
        let parent = outdir::parent_of(target);
        if !parent.is_dir() {
            std::fs::create_dir_all(&parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        remove_stale(&parent, &name, stages);
        let dir = parent.join(format!("{}{}", tmp_prefix(&name), std::process::id()));
        let old = parent.join(format!(".{name}.instill-old-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot clear {}", dir.display()))?;
        }
        std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging {
            dir,
            target: target.to_path_buf(),
            old,
            producer,
            committed: false,
        })
    }

    /// Moves the staged directory into place, synced; the old one, if any, is checked again to
    /// hold only this command's output and removed only after.
    pub fn commit(mut self) -> anyhow::Result<()> {
        let shown = self.target.display().to_string();
        let old = self.old.clone();
        outdir::sync_dir(&self.dir)?;
        let found = outdir::inspect(&self.target)?;
        outdir::own_output(&self.target, &found, self.producer)?;
        let had_old = found != outdir::Found::Missing;
        if had_old {
            std::fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move aside {shown}"))?;
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(e).with_context(|| format!("cannot move the output into {shown}"));
        }
        self.committed = true;
        outdir::sync_dir(&outdir::parent_of(&self.target))?;
        if had_old {
            outdir::remove(&old, self.producer).with_context(|| {
                format!(
                    "{shown} is complete, but the previous one stays in {}",
                    old.display()
                )
            })?;
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Removes the staging directories of `name` in `parent` that a dead process left (a SIGKILL,
/// a power cut): exactly `.NAME.instill-tmp-PID`, no process PID alive, holding only plain
/// files that `stages` names (by their paths inside it). Anything else is left alone; so is everything where there is no
/// `/proc` to tell which processes live.
fn remove_stale(parent: &Path, name: &str, stages: fn(&str) -> bool) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = tmp_prefix(name);
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let entry = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = entry.strip_prefix(&prefix).filter(|p| {
            !p.is_empty() && !p.starts_with('0') && p.bytes().all(|b| b.is_ascii_digit())
        }) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        let dir = e.path();
        if !alive && e.file_type().is_ok_and(|t| t.is_dir()) && holds_only(&dir, stages) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!("removed {}, left by a process that died", dir.display()),
                Err(err) => tracing::warn!("cannot remove {}: {err}", dir.display()),
            }
        }
    }
}

/// Whether `dir` holds only plain files (in subdirectories or not), each of whose paths
/// relative to `dir` (`/`-separated) `stages` names.
fn holds_only(dir: &Path, stages: fn(&str) -> bool) -> bool {
    holds_only_under(dir, "", stages)
}

fn holds_only_under(dir: &Path, prefix: &str, stages: fn(&str) -> bool) -> bool {
    let Ok(mut entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.all(|e| {
        let Ok(e) = e else { return false };
        let Some(name) = e.file_name().to_str().map(|n| format!("{prefix}{n}")) else {
            return false;
        };
        match e.file_type() {
            Ok(t) if t.is_dir() => holds_only_under(&e.path(), &format!("{name}/"), stages),
            Ok(t) => t.is_file() && stages(&name),
            Err(_) => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(_: &str) -> bool {
        true
    }

    #[test]
    fn staging_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let staging = Staging::new(&target, false, Producer::Export, any).unwrap();
        std::fs::write(staging.dir.join("x"), "1").unwrap();
        drop(staging);
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let staging = Staging::new(&target, false, Producer::Export, any).unwrap();
        std::fs::write(staging.dir.join("x"), "1").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("x")).unwrap(), "1");

        assert!(Staging::new(&target, false, Producer::Export, any).is_err());
        assert!(
            Staging::new(&target, true, Producer::Export, any).is_err(),
            "x is listed in no manifest"
        );
        #[derive(serde::Serialize)]
        struct M {
            #[serde(flatten)]
            stamp: outdir::Stamp,
            files: [&'static str; 1],
        }
        let m = M {
            stamp: outdir::Stamp::new(Producer::Export),
            files: ["x"],
        };
        outdir::write_manifest(&target, &m).unwrap();
        assert!(Staging::new(&target, true, Producer::MergeLora, any).is_err());
        let staging = Staging::new(&target, true, Producer::Export, any).unwrap();
        std::fs::write(staging.dir.join("y"), "2").unwrap();
        staging.commit().unwrap();
        assert!(!target.join("x").exists() && target.join("y").exists());
        assert!(!target.join(outdir::MANIFEST).exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
