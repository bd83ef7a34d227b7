//! The lock on an output directory that a command writes in place (train's checkpoints, loss
//! log and final files): a second command into the same directory stops at once instead of
//! sharing the first one's checkpoint or, with `--overwrite`, emptying the directory under it.
//! The lock is the kernel's (`flock` on the directory itself), so nothing is written for it and
//! a killed process holds it no longer.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// Held while a command writes into its output directory; released when dropped (or when the
/// process ends, however it ends).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    /// The directory, when taking the lock created it: removed on drop if it is still empty
    /// (the command failed before writing anything), so a refused run leaves no trace.
    created: Option<PathBuf>,
}

/// Locks `dir` for `command` (as typed after `instill`), creating it when it is missing; an
/// error naming the directory when another process holds it.
pub fn lock(dir: &Path, command: &str) -> anyhow::Result<DirLock> {
    let shown = dir.display();
    let created = match std::fs::symlink_metadata(dir) {
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).with_context(|| format!("{shown}: cannot create"))?;
            Some(dir.to_path_buf())
        }
        Err(e) => return Err(e).with_context(|| format!("{shown}: cannot read")),
    };
    let file = File::open(dir).with_context(|| format!("{shown}: cannot open"))?;
    let held = DirLock {
        _file: file,
        created,
    };
    match held._file.try_lock() {
        Ok(()) => Ok(held),
        Err(std::fs::TryLockError::WouldBlock) => bail!(
            "{shown}: another `instill {command}` is writing into this directory; wait for it to \
             finish (or stop it: its checkpoint stays), or choose another --out"
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{shown}: cannot lock"))
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        if let Some(dir) = &self.created {
            // Fails, as it should, once the command has written anything there.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/out");
        let first = lock(&dir, "train").unwrap();
        assert!(dir.is_dir());
        let refused = lock(&dir, "train").unwrap_err().to_string();
        assert!(
            refused.contains("another `instill train`") && refused.contains("a/out"),
            "{refused}"
        );
        drop(first);
        assert!(!dir.exists(), "an empty directory the lock created stays");
        let again = lock(&dir, "train").unwrap();
        std::fs::write(dir.join("manifest.json"), "{}").unwrap();
        drop(again);
        assert!(dir.join("manifest.json").exists());
        let _third = lock(&dir, "train").unwrap();
    }
}
