//! The staging directory of an export: shards and manifest are written into a hidden directory
//! beside the target, which becomes the target only when everything is complete.

use std::path::{Path, PathBuf};

use anyhow::Context;

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
    /// Prepares to write `target`: refuses an existing non-empty directory (or a file) unless
    /// `overwrite`, and creates a hidden staging directory beside it.
    pub fn new(target: &Path, overwrite: bool) -> anyhow::Result<Staging> {
        let shown = target.display();
        if target.exists() {
            if !target.is_dir() {
                anyhow::bail!("{shown}: exists and is not a directory");
            }
            let non_empty = std::fs::read_dir(target)
                .with_context(|| format!("{shown}: cannot read"))?
                .next()
                .is_some();
            if non_empty && !overwrite {
                anyhow::bail!("{shown}: exists and is not empty; pass --overwrite to replace it");
            }
        }
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n != ".." && n != ".")
            .ok_or_else(|| anyhow::anyhow!("{shown}: name a directory to create"))?;
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
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

    /// Moves the staged directory into place (the old one, if any, is removed only after).
    pub fn commit(mut self) -> anyhow::Result<()> {
        let shown = self.target.display().to_string();
        let old = self.old.clone();
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old)
                .with_context(|| format!("cannot move aside {shown}"))?;
        }
        if let Err(e) = std::fs::rename(&self.dir, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(e).with_context(|| format!("cannot move the export into {shown}"));
        }
        self.committed = true;
        if had_old {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the previous {shown}"))?;
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
        let staging = Staging::new(&target, true).unwrap();
        std::fs::write(staging.dir.join("y"), "2").unwrap();
        staging.commit().unwrap();
        assert!(!target.join("x").exists() && target.join("y").exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
