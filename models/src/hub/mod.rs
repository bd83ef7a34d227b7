//! Models by Hugging Face id (`ORG/NAME`, `ORG/NAME:FILE.gguf`), resolved to a local path
//! through the standard Hugging Face cache, in the layout `huggingface_hub` writes
//! (`models--ORG--NAME/refs/REV` → `snapshots/COMMIT/FILE`, symlinks into `blobs/`).
//!
//! - [`id`]: ids told from paths; revision names. [`error`]: [`HubError`].
//! - [`cache`]: that layout, read and written (blobs, snapshot links, refs, `.no_exist` marks).
//! - [`fetch`]: the Hub's HTTP endpoints: the file list of a revision and one file's download
//!   (to a temporary file, its size and sha256 checked, then renamed into place).
//! - [`need`]: which files a model, an adapter or a GGUF file needs, and whether the snapshot
//!   holds them.
//!
//! A model whose files are all in the cache is used without any network request. The
//! configuration ([`HubConfig`]) is passed in: this module reads no environment variable.

mod cache;
mod error;
mod fetch;
mod id;
mod need;

pub use error::HubError;
pub use fetch::{HubConfig, Progress};
pub use id::HubId;
pub use need::{Resolved, Want};

/// Resolves `id` at `revision` to a local path: from the cache when it holds every file `want`
/// needs (no network), else (unless offline) by downloading what is missing into the cache.
pub async fn resolve(
    id: &HubId,
    revision: &str,
    want: Want,
    config: &HubConfig,
    progress: &mut dyn Progress,
) -> Result<Resolved, HubError> {
    if !id::valid_revision(revision) {
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
            path: if cache::is_commit(revision) {
                repo.snapshot(revision)
            } else {
                repo.ref_path(revision)
            },
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
    use std::path::Path;

    use super::*;

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
        let other = "f".repeat(40);
        let e = offline("org/m-GGUF:m.gguf", &other, Want::Model, d.path())
            .expect_err("no snapshot")
            .to_string();
        assert!(
            e.contains(&format!("snapshots/{other} does not exist")),
            "{e}"
        );
        let e = offline("org/m-GGUF:m.gguf", "main", Want::Adapter, d.path())
            .expect_err("adapter file")
            .to_string();
        assert!(e.contains("an adapter is a repository"), "{e}");
    }
}
