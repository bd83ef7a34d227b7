//! Models by Hugging Face id (`ORG/NAME`, `ORG/NAME:FILE.gguf`), resolved to a local path
//! through the standard Hugging Face cache, in the layout `huggingface_hub` writes
//! (`models--ORG--NAME/refs/REV` → `snapshots/COMMIT/FILE`, symlinks into `blobs/`).
//!
//! - [`cache`]: that layout, read and written (blobs, snapshot links, refs, `.no_exist` marks).
//! - [`fetch`]: the Hub's HTTP endpoints: the file list of a revision and one file's download
//!   (to a temporary file, its size and sha256 checked, then renamed into place).
//! - [`need`]: which files a model, an adapter or a GGUF file needs, and whether the snapshot
//!   holds them.
//!
//! A model whose files are all in the cache is used without any network request. The
//! configuration ([`HubConfig`]) is passed in: this module reads no environment variable.

mod cache;
mod fetch;
mod need;

use std::fmt;
use std::path::{Path, PathBuf};

pub use need::Want;

/// Where the cache is and how the Hub is reached.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The hub cache directory (`HF_HUB_CACHE`, `HF_HOME/hub`, `~/.cache/huggingface/hub`).
    pub cache: PathBuf,
    /// The Hub's base URL (`https://huggingface.co`).
    pub endpoint: String,
    /// A bearer token for gated and private repositories.
    pub token: Option<String>,
    /// Never touch the network: what the cache lacks is an error.
    pub offline: bool,
}

/// A model on the Hub: a repository and, for GGUF repositories, one file in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    repo: String,
    file: Option<String>,
}

impl HubId {
    /// `ORG/NAME` or `ORG/NAME:FILE.gguf`, or None when `text` does not look like one (a path
    /// starting with `.`, `/` or `~`, more or fewer than one slash in the repository part,
    /// characters the Hub does not allow in names).
    pub fn parse(text: &str) -> Option<HubId> {
        let (repo, file) = match text.split_once(':') {
            Some((repo, file)) => (repo, Some(file)),
            None => (text, None),
        };
        let (org, name) = repo.split_once('/')?;
        if !valid_name(org) || !valid_name(name) {
            return None;
        }
        if let Some(f) = file {
            let plain = f.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
            if !plain || !f.ends_with(".gguf") || f.contains('\\') {
                return None;
            }
        }
        Some(HubId {
            repo: repo.to_string(),
            file: file.map(String::from),
        })
    }

    /// `ORG/NAME`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The GGUF file named after the colon.
    pub fn file(&self) -> Option<&str> {
        self.file.as_deref()
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{file}", self.repo),
            None => f.write_str(&self.repo),
        }
    }
}

/// A Hub user, organisation or repository name: letters, digits, `-`, `_`, `.`; not starting
/// or ending with `-` or `.`, no `--` or `..`, at most 96 characters.
fn valid_name(s: &str) -> bool {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    let edge = |c: char| c == '-' || c == '.';
    ok_chars
        && !s.is_empty()
        && s.len() <= 96
        && !s.starts_with(edge)
        && !s.ends_with(edge)
        && !s.contains("--")
        && !s.contains("..")
}

/// A revision: a branch, a tag or a 40-hex commit; no empty parts, no `.` or `..`.
fn valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'))
}

/// What a download reports as it goes.
pub trait Progress {
    /// Downloads of `files` files, `bytes` in all, begin.
    fn start(&mut self, bytes: u64, files: usize);
    /// `bytes` more arrived.
    fn advance(&mut self, bytes: u64);
    /// The downloads are over (done or failed).
    fn finish(&mut self);
}

/// A model found (or put) in the cache.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The snapshot directory (models, adapters) or the GGUF file inside it.
    pub path: PathBuf,
    /// The commit the revision names.
    pub commit: String,
    /// Files downloaded now (0 when the cache held everything).
    pub downloaded_files: usize,
    /// Their bytes.
    pub downloaded_bytes: u64,
}

/// Why a Hub id could not be resolved. Messages name the id, the revision and the cache path
/// looked in, and never the token.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The revision is not a branch, tag or commit name.
    #[error("revision {0:?} is not a branch, tag or commit name")]
    BadRevision(String),
    /// Offline, and the cache has no ref for the revision.
    #[error("{id} (revision {revision}) is not in the Hugging Face cache: {} does not exist", path.display())]
    NotCached {
        /// The id.
        id: String,
        /// The revision.
        revision: String,
        /// The ref file (or snapshot) looked for.
        path: PathBuf,
    },
    /// Offline, and a file the model needs is not in the snapshot.
    #[error("{id} (revision {revision}): {file} is missing from the cached snapshot {}", path.display())]
    Missing {
        /// The id.
        id: String,
        /// The revision.
        revision: String,
        /// The snapshot directory.
        path: PathBuf,
        /// The missing file.
        file: String,
    },
    /// The repository (at this revision) lacks what instill needs.
    #[error("{id} (revision {revision}): {message}")]
    Unusable {
        /// The id.
        id: String,
        /// The revision.
        revision: String,
        /// What is missing, what was found.
        message: String,
    },
    /// The Hub refused or failed a request.
    #[error("{url}: {status}{}", hint(*status, *token_sent))]
    Http {
        /// The URL (no credentials).
        url: String,
        /// The HTTP status.
        status: u16,
        /// Whether a token was sent.
        token_sent: bool,
    },
    /// The Hub could not be reached, or a transfer broke off.
    #[error("{url}: {message}")]
    Network {
        /// The URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The Hub answered with something that is not what it documents.
    #[error("{url}: {message}")]
    Protocol {
        /// The URL.
        url: String,
        /// What was wrong.
        message: String,
    },
    /// A downloaded file is not the file the Hub listed (size or sha256 differ).
    #[error("{file}: downloaded {message}; nothing was kept")]
    Corrupt {
        /// The file in the repository.
        file: String,
        /// Expected and found.
        message: String,
    },
    /// A cache file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A model file read to plan the download (the index) is bad.
    #[error(transparent)]
    Model(#[from] crate::ModelFileError),
}

fn hint(status: u16, token_sent: bool) -> &'static str {
    match (status, token_sent) {
        (401 | 403, false) => " (no token was sent: the repository may be gated or private)",
        (401 | 403, true) => " (the token was refused or has no access to the repository)",
        (404, _) => " (no such repository, revision or file)",
        _ => "",
    }
}

impl HubError {
    fn io(path: &Path, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Resolves `id` at `revision` to a local path: from the cache when it holds every file `want`
/// needs (no network), else (unless offline) by downloading what is missing into the cache.
pub async fn resolve(
    id: &HubId,
    revision: &str,
    want: Want,
    config: &HubConfig,
    progress: &mut dyn Progress,
) -> Result<Resolved, HubError> {
    if !valid_revision(revision) {
        return Err(HubError::BadRevision(revision.to_string()));
    }
    let repo = cache::Repo::new(&config.cache, id.repo());
    let needs = need::Needs::new(id, want).map_err(|message| HubError::Unusable {
        id: id.to_string(),
        revision: revision.to_string(),
        message,
    })?;
    let cached = repo.commit(revision)?;
    if let Some(commit) = &cached {
        let missing = needs.missing(&repo, commit)?;
        match missing {
            None => return Ok(needs.resolved(&repo, commit, 0, 0)),
            Some(file) if config.offline => {
                return Err(HubError::Missing {
                    id: id.to_string(),
                    revision: revision.to_string(),
                    path: repo.snapshot(commit),
                    file,
                });
            }
            Some(_) => {}
        }
    } else if config.offline {
        return Err(HubError::NotCached {
            id: id.to_string(),
            revision: revision.to_string(),
            path: repo.ref_path(revision),
        });
    }
    download(id, revision, &needs, &repo, config, progress).await
}

/// The online path: the revision's file list, then every needed file the snapshot lacks.
async fn download(
    id: &HubId,
    revision: &str,
    needs: &need::Needs<'_>,
    repo: &cache::Repo,
    config: &HubConfig,
    progress: &mut dyn Progress,
) -> Result<Resolved, HubError> {
    let client = fetch::Client::new(config)?;
    let listing = client.listing(id.repo(), revision).await?;
    let commit = listing.commit.clone();
    let unusable = |message: String| HubError::Unusable {
        id: id.to_string(),
        revision: revision.to_string(),
        message,
    };
    // The index names the shards: it comes first, outside the progress bar (it is small).
    let mut plan = needs.plan(&listing, None).map_err(unusable)?;
    if let Some(index) = plan.index.take() {
        client.fetch(repo, id.repo(), &commit, index, None).await?;
        let shards = crate::files::index_shards(&repo.snapshot(&commit).join(&index.name))?;
        plan = needs.plan(&listing, Some(&shards)).map_err(unusable)?;
    }
    let todo: Vec<&fetch::Sibling> = plan
        .files
        .into_iter()
        .filter(|f| !repo.snapshot(&commit).join(&f.name).is_file())
        .collect();
    let bytes: u64 = todo.iter().map(|f| f.size).sum();
    progress.start(bytes, todo.len());
    let mut result = Ok(());
    for file in &todo {
        result = client
            .fetch(repo, id.repo(), &commit, file, Some(&mut *progress))
            .await;
        if result.is_err() {
            break;
        }
    }
    progress.finish();
    result?;
    for absent in plan.absent {
        repo.mark_no_exist(&commit, absent)?;
    }
    if revision != commit {
        repo.write_ref(revision, &commit)?;
    }
    match needs.missing(repo, &commit)? {
        None => Ok(needs.resolved(repo, &commit, todo.len(), bytes)),
        Some(file) => Err(unusable(format!(
            "{file} is still missing from {} after the download",
            repo.snapshot(&commit).display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_from_paths() {
        let id = HubId::parse("Qwen/Qwen2.5-0.5B-Instruct").expect("id");
        assert_eq!((id.repo(), id.file()), ("Qwen/Qwen2.5-0.5B-Instruct", None));
        let id = HubId::parse("TheBloke/X-GGUF:x.Q4_0.gguf").expect("gguf id");
        assert_eq!(id.file(), Some("x.Q4_0.gguf"));
        assert_eq!(id.to_string(), "TheBloke/X-GGUF:x.Q4_0.gguf");
        for path in [
            "./org/name",
            "/org/name",
            "~/name",
            "model",
            "a/b/c",
            "org/",
            "../name",
            "org/na me",
            "org/name:weights.bin",
            "org/name:../x.gguf",
            "org/-name",
            "org/a--b",
        ] {
            assert_eq!(HubId::parse(path), None, "{path}");
        }
    }

    struct Silent;
    impl Progress for Silent {
        fn start(&mut self, _: u64, _: usize) {}
        fn advance(&mut self, _: u64) {}
        fn finish(&mut self) {}
    }

    fn offline(id: &str, revision: &str, want: Want, cache: &Path) -> Result<Resolved, HubError> {
        let config = HubConfig {
            cache: cache.to_path_buf(),
            endpoint: "http://127.0.0.1:9".into(),
            token: None,
            offline: true,
        };
        let id = HubId::parse(id).expect("id");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(resolve(&id, revision, want, &config, &mut Silent))
    }

    #[test]
    fn a_cached_gguf_file_resolves_offline_and_what_is_missing_is_named() {
        let d = tempfile::tempdir().expect("tempdir");
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let repo = cache::Repo::new(d.path(), "org/m-GGUF");
        std::fs::create_dir_all(d.path().join("models--org--m-GGUF/blobs")).expect("mkdir");
        std::fs::write(repo.blob("ab"), b"GGUF").expect("blob");
        repo.link(commit, "sub/m.Q4_0.gguf", "ab").expect("link");
        repo.write_ref("main", commit).expect("ref");
        let got =
            offline("org/m-GGUF:sub/m.Q4_0.gguf", "main", Want::Model, d.path()).expect("resolved");
        assert_eq!(got.path, repo.snapshot(commit).join("sub/m.Q4_0.gguf"));
        assert_eq!(std::fs::read(&got.path).expect("read"), b"GGUF");
        let by_commit = offline("org/m-GGUF:sub/m.Q4_0.gguf", commit, Want::Model, d.path())
            .expect("by commit");
        assert_eq!(by_commit.path, got.path);
        let e = offline("org/m-GGUF:other.gguf", "main", Want::Model, d.path())
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("other.gguf is missing from") && e.contains(commit),
            "{e}"
        );
        let e = offline("org/m-GGUF", "main", Want::Model, d.path())
            .expect_err("no config")
            .to_string();
        assert!(e.contains("config.json"), "{e}");
        let e = offline("org/m-GGUF:m.gguf", "v9", Want::Model, d.path())
            .expect_err("no ref")
            .to_string();
        assert!(e.contains("refs/v9"), "{e}");
        let e = offline("org/m-GGUF:m.gguf", "main", Want::Adapter, d.path())
            .expect_err("adapter file")
            .to_string();
        assert!(e.contains("an adapter is a repository"), "{e}");
    }

    #[test]
    fn revisions_stay_inside_refs() {
        assert!(valid_revision("main") && valid_revision("refs/pr/1") && valid_revision("v1.0"));
        for bad in ["", "..", "a/../b", "/main", "main/", "a\\b"] {
            assert!(!valid_revision(bad), "{bad}");
        }
    }
}
