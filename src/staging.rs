//! The staging directory of an export or a merged model: files are written into a hidden
//! directory beside the target, which becomes the target only when everything is complete.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::outdir;

/// A directory that becomes `target` only through [`Staging::commit`]; dropped uncommitted, it
/// is removed, so a failed export leaves no partial shard behind.
pub struct Staging {
    /// Where files are written until commit.
    pub dir: PathBuf,
    target: PathBuf,
    old: PathBuf,
    committed: bool,
}

impl Staging {
    /// Prepares to write `target`: refuses anything but a missing or empty directory, or (with
    /// `overwrite`) instill's own earlier output, and creates a hidden staging directory beside it.
    pub fn new(target: &Path, overwrite: bool) -> anyhow::Result<Staging> {
        let shown = target.display();
        outdir::check(target, overwrite)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != ".." && n != ".")
            .ok_or_else(|| anyhow::anyhow!("{shown}: name a directory to create"))?;
        let parent = outdir::parent_of(target);
        if !parent.is_dir() {
            anyhow::bail!("{}: the parent directory does not exist", parent.display());
        }
        let dir = parent.join(format!(".{name}.instill-tmp-{}", std::process::id()));
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
            committed: false,
        })
    }

    /// Moves the staged directory into place, synced; the old one, if any, is checked again to
    /// hold only instill's output and removed only after.
    pub fn commit(mut self) -> anyhow::Result<()> {
        let shown = self.target.display().to_string();
        let old = self.old.clone();
        outdir::sync_dir(&self.dir)?;
        let had_old = match outdir::inspect(&self.target)? {
            outdir::Found::Missing => false,
            outdir::Found::Empty | outdir::Found::Ours { .. } => true,
        };
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
            outdir::remove(&old).with_context(|| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_appears_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out");
        let staging = Staging::new(&target, false).unwrap();
        std::fs::write(staging.dir.join("x"), "1").unwrap();
        drop(staging);
        assert!(!target.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let staging = Staging::new(&target, false).unwrap();
        std::fs::write(staging.dir.join("x"), "1").unwrap();
        staging.commit().unwrap();
        assert_eq!(std::fs::read_to_string(target.join("x")).unwrap(), "1");

        assert!(Staging::new(&target, false).is_err());
        assert!(
            Staging::new(&target, true).is_err(),
            "x is listed in no manifest"
        );
        outdir::write_manifest(&target, &serde_json::json!({"files": ["x"]})).unwrap();
        let staging = Staging::new(&target, true).unwrap();
        std::fs::write(staging.dir.join("y"), "2").unwrap();
        staging.commit().unwrap();
        assert!(!target.join("x").exists() && target.join("y").exists());
        assert!(!target.join(outdir::MANIFEST).exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
