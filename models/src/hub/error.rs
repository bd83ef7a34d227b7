//! Why a Hub id could not be resolved.

use std::path::{Path, PathBuf};

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
        (401 | 403, false) => {
            " (no token was sent: the repository does not exist, or is gated or private)"
        }
        (401 | 403, true) => " (the token was refused or has no access to the repository)",
        (404, _) => " (no such repository, revision or file)",
        _ => "",
    }
}

impl HubError {
    pub(super) fn io(path: &Path, source: std::io::Error) -> HubError {
        HubError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
