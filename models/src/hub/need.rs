//! Which files of a repository instill needs: for a model, `config.json`, `tokenizer.json`,
//! `tokenizer_config.json` (unless the repository has none) and the weights
//! (`model.safetensors`, or the index and every shard it names), plus the optional tokenizer
//! files of [`crate::save::TOKENIZER_FILES`] when the repository has them; for an adapter, its
//! config and weights; for a GGUF id, that file.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::cache::Repo;
use super::error::HubError;
use super::fetch::{Listing, Sibling};
use super::id::HubId;
use crate::files::{INDEX, index_shards};
use crate::save::{TOKENIZER_FILES, WEIGHTS_FILE};

/// What the id is loaded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// A base model: a Hugging Face directory, or a GGUF file (`ORG/NAME:FILE.gguf`).
    Model,
    /// A PEFT adapter directory.
    Adapter,
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

/// Files a model needs whatever else it has.
const REQUIRED: [&str; 2] = ["config.json", "tokenizer.json"];
/// Needed when the repository has it; its absence is remembered (`.no_exist`), as
/// `huggingface_hub` does, so that a later run knows the snapshot is whole.
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";
/// An adapter's files.
const ADAPTER: [&str; 2] = ["adapter_config.json", "adapter_model.safetensors"];

/// The files of one id, as wanted.
#[derive(Debug)]
pub(super) struct Needs<'a> {
    id: &'a HubId,
    want: Want,
}

/// What to download for a revision.
#[derive(Debug)]
pub(super) struct Plan<'l> {
    /// The shard index, to fetch first when its shards are not known yet.
    pub index: Option<&'l Sibling>,
    /// The files to have in the snapshot.
    pub files: Vec<&'l Sibling>,
    /// Files the repository does not have, to mark as such.
    pub absent: Vec<&'static str>,
}

impl<'a> Needs<'a> {
    /// The needs of `id` loaded as `want`; an adapter named with a file is refused.
    pub fn new(id: &'a HubId, want: Want) -> Result<Needs<'a>, String> {
        if want == Want::Adapter && id.file().is_some() {
            return Err("an adapter is a repository (ORG/NAME), not a file in one".into());
        }
        Ok(Needs { id, want })
    }

    /// The first needed file the snapshot of `commit` lacks, or None when it is whole.
    pub fn missing(&self, repo: &Repo, commit: &str) -> Result<Option<String>, HubError> {
        let snap = repo.snapshot(commit);
        let lacks = |f: &str| !snap.join(f).is_file();
        let first = |files: &[&str]| files.iter().find(|f| lacks(f)).map(|f| f.to_string());
        if let Some(file) = self.id.file() {
            return Ok(lacks(file).then(|| file.to_string()));
        }
        if self.want == Want::Adapter {
            return Ok(first(&ADAPTER));
        }
        if let Some(f) = first(&REQUIRED) {
            return Ok(Some(f));
        }
        if lacks(TOKENIZER_CONFIG) && !repo.no_exist(commit, TOKENIZER_CONFIG) {
            return Ok(Some(TOKENIZER_CONFIG.into()));
        }
        if lacks(INDEX) {
            return Ok(lacks(WEIGHTS_FILE).then(|| WEIGHTS_FILE.to_string()));
        }
        let shards = index_shards(&snap.join(INDEX))?;
        Ok(shards.into_iter().find(|s| lacks(s)))
    }

    /// The local path of a whole snapshot.
    pub fn resolved(&self, repo: &Repo, commit: &str, files: usize, bytes: u64) -> Resolved {
        let snap = repo.snapshot(commit);
        Resolved {
            path: self
                .id
                .file()
                .map_or_else(|| snap.clone(), |f| snap.join(f)),
            commit: commit.to_string(),
            downloaded_files: files,
            downloaded_bytes: bytes,
        }
    }

    /// The files to have from `listing`; `shards` are those the index names, once read.
    /// An error says what the repository lacks and what it has instead.
    pub fn plan<'l>(
        &self,
        listing: &'l Listing,
        shards: Option<&BTreeSet<String>>,
    ) -> Result<Plan<'l>, String> {
        let mut plan = Plan {
            index: None,
            files: Vec::new(),
            absent: Vec::new(),
        };
        let require = |name: &str| {
            listing
                .get(name)
                .ok_or_else(|| format!("the repository has no {name}{}", self.found(listing)))
        };
        if let Some(file) = self.id.file() {
            plan.files.push(require(file)?);
            return Ok(plan);
        }
        if self.want == Want::Adapter {
            for f in ADAPTER {
                plan.files.push(require(f)?);
            }
            return Ok(plan);
        }
        for f in REQUIRED {
            plan.files.push(require(f)?);
        }
        match listing.get(TOKENIZER_CONFIG) {
            Some(s) => plan.files.push(s),
            None => plan.absent.push(TOKENIZER_CONFIG),
        }
        let optional = TOKENIZER_FILES
            .iter()
            .filter(|f| !REQUIRED.contains(f) && **f != TOKENIZER_CONFIG);
        plan.files.extend(optional.filter_map(|f| listing.get(f)));
        match (listing.get(INDEX), shards) {
            (Some(index), Some(shards)) => {
                plan.files.push(index);
                for s in shards {
                    plan.files.push(require(s)?);
                }
            }
            (Some(index), None) => plan.index = Some(index),
            (None, _) => plan.files.push(
                listing
                    .get(WEIGHTS_FILE)
                    .ok_or_else(|| format!("the repository has no {WEIGHTS_FILE} or {INDEX} (instill reads safetensors weights){}", self.found(listing)))?,
            ),
        }
        Ok(plan)
    }

    /// `; it has: a, b, c` (GGUF files first, with how to name one), for errors.
    fn found(&self, listing: &Listing) -> String {
        let gguf: Vec<&str> = listing
            .files
            .iter()
            .map(|s| s.name.as_str())
            .filter(|n| n.ends_with(".gguf"))
            .collect();
        if self.id.file().is_none() && !gguf.is_empty() {
            let shown: Vec<&str> = gguf.iter().take(5).copied().collect();
            return format!(
                "; it holds GGUF files, name one as {}:FILE (e.g. {})",
                self.id.repo(),
                shown.join(", ")
            );
        }
        let names: Vec<&str> = listing
            .files
            .iter()
            .take(12)
            .map(|s| s.name.as_str())
            .collect();
        format!("; it has: {}", names.join(", "))
    }
}
