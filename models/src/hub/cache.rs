//! The Hugging Face cache as `huggingface_hub` lays it out, read and written:
//!
//! ```text
//! CACHE/models--ORG--NAME/refs/REV                  the commit REV names (no newline)
//! CACHE/models--ORG--NAME/blobs/ETAG                a file's bytes (ETAG: sha256 for LFS
//!                                                   files, the git blob id otherwise)
//! CACHE/models--ORG--NAME/snapshots/COMMIT/FILE     symlink → ../../blobs/ETAG
//! CACHE/models--ORG--NAME/.no_exist/COMMIT/FILE     empty: FILE is not in the repository
//! CACHE/.locks/models--ORG--NAME/ETAG.lock          held while ETAG is downloaded
//! ```

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::HubError;

/// One repository's folder in the cache.
#[derive(Debug, Clone)]
pub(super) struct Repo {
    cache: PathBuf,
    folder: String,
}

/// A full commit hash: 40 lowercase hex digits.
pub(super) fn is_commit(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Repo {
    /// The folder of `repo` (`ORG/NAME`) in `cache`.
    pub fn new(cache: &Path, repo: &str) -> Repo {
        Repo {
            cache: cache.to_path_buf(),
            folder: format!("models--{}", repo.replace('/', "--")),
        }
    }

    fn root(&self) -> PathBuf {
        self.cache.join(&self.folder)
    }

    /// The ref file of `revision`.
    pub fn ref_path(&self, revision: &str) -> PathBuf {
        self.root().join("refs").join(revision)
    }

    /// The snapshot directory of `commit`.
    pub fn snapshot(&self, commit: &str) -> PathBuf {
        self.root().join("snapshots").join(commit)
    }

    /// The commit `revision` names in the cache: a commit with a snapshot is itself, else the
    /// content of `refs/REVISION`; None when neither is there.
    pub fn commit(&self, revision: &str) -> Result<Option<String>, HubError> {
        if is_commit(revision) && self.snapshot(revision).is_dir() {
            return Ok(Some(revision.to_string()));
        }
        let path = self.ref_path(revision);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let commit = text.trim();
                if !is_commit(commit) {
                    return Err(HubError::io(
                        &path,
                        std::io::Error::other(format!("{commit:?} is not a commit hash")),
                    ));
                }
                Ok(Some(commit.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(HubError::io(&path, e)),
        }
    }

    /// Whether `file` is marked as not in the repository at `commit`.
    pub fn no_exist(&self, commit: &str, file: &str) -> bool {
        self.root()
            .join(".no_exist")
            .join(commit)
            .join(file)
            .is_file()
    }

    /// Marks `file` as not in the repository at `commit`.
    pub fn mark_no_exist(&self, commit: &str, file: &str) -> Result<(), HubError> {
        let path = self.root().join(".no_exist").join(commit).join(file);
        create_parent(&path)?;
        File::create(&path).map_err(|e| HubError::io(&path, e))?;
        Ok(())
    }

    /// The blob of `etag`.
    pub fn blob(&self, etag: &str) -> PathBuf {
        self.root().join("blobs").join(etag)
    }

    /// Holds the download lock of `etag` (the file `huggingface_hub` locks) until dropped.
    pub fn lock(&self, etag: &str) -> Result<File, HubError> {
        let path = self
            .cache
            .join(".locks")
            .join(&self.folder)
            .join(format!("{etag}.lock"));
        create_parent(&path)?;
        let file = File::create(&path).map_err(|e| HubError::io(&path, e))?;
        file.lock().map_err(|e| HubError::io(&path, e))?;
        Ok(file)
    }

    /// Points `snapshots/COMMIT/FILE` at the blob `etag` with a relative symlink.
    pub fn link(&self, commit: &str, file: &str, etag: &str) -> Result<(), HubError> {
        let pointer = self.snapshot(commit).join(file);
        create_parent(&pointer)?;
        let depth = file.split('/').count();
        let mut target = PathBuf::new();
        for _ in 0..depth + 1 {
            target.push("..");
        }
        target.push("blobs");
        target.push(etag);
        match std::fs::symlink_metadata(&pointer) {
            Ok(_) => std::fs::remove_file(&pointer).map_err(|e| HubError::io(&pointer, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(HubError::io(&pointer, e)),
        }
        symlink(&target, &pointer).map_err(|e| HubError::io(&pointer, e))
    }

    /// Writes `refs/REVISION` = `commit`, atomically.
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        let path = self.ref_path(revision);
        create_parent(&path)?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".instill-tmp");
        let tmp = PathBuf::from(tmp);
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(commit.as_bytes()))
            .and_then(|()| std::fs::rename(&tmp, &path));
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            HubError::io(&path, e)
        })
    }
}

fn create_parent(path: &Path) -> Result<(), HubError> {
    match path.parent() {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e)),
        None => Ok(()),
    }
}

#[cfg(unix)]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Where symlinks are not available, the blob is copied (as `huggingface_hub` does).
#[cfg(not(unix))]
fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    let blob = link.parent().map(|d| d.join(target)).unwrap_or_default();
    std::fs::copy(blob, link).map(|_| ())
}
