//! The Hub's HTTP side, on reqwest: a revision's file list
//! (`GET /api/models/ORG/NAME/revision/REV?blobs=true`: the commit, each file's size, git blob
//! id and, for LFS files, sha256) and one file's download (`GET /ORG/NAME/resolve/COMMIT/FILE`,
//! redirects followed). A download goes to `blobs/ETAG.incomplete`, is checked (size, and
//! sha256 for LFS files) and only then renamed to `blobs/ETAG` and linked from the snapshot.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cache::{Repo, is_commit};
use super::error::HubError;

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

/// What a download reports as it goes.
pub trait Progress {
    /// Downloads of `files` files, `bytes` in all, begin.
    fn start(&mut self, bytes: u64, files: usize);
    /// `bytes` more arrived.
    fn advance(&mut self, bytes: u64);
    /// The downloads are over (done or failed).
    fn finish(&mut self);
}

/// One file of a revision.
#[derive(Debug, Clone)]
pub(super) struct Sibling {
    /// Its path in the repository.
    pub name: String,
    /// Its blob name in the cache: the sha256 of an LFS file, else the git blob id.
    pub etag: String,
    /// Its size in bytes.
    pub size: u64,
    /// The sha256 to check (LFS files).
    pub sha256: Option<String>,
}

/// A revision's commit and files.
#[derive(Debug)]
pub(super) struct Listing {
    pub commit: String,
    pub files: Vec<Sibling>,
}

impl Listing {
    /// The file `name`.
    pub fn get(&self, name: &str) -> Option<&Sibling> {
        self.files.iter().find(|s| s.name == name)
    }
}

/// An HTTP client for one endpoint and token.
#[derive(Debug)]
pub(super) struct Client {
    http: reqwest::Client,
    endpoint: String,
    token: Option<String>,
}

/// `text` percent-encoded for a URL path; `/` kept when `keep_slash`.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(config: &HubConfig) -> Result<Client, HubError> {
        let endpoint = config.endpoint.trim_end_matches('/').to_string();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("instill/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HubError::Network {
                url: endpoint.clone(),
                message: format!("cannot start the HTTP client: {e}"),
            })?;
        Ok(Client {
            http,
            endpoint,
            token: config.token.clone(),
        })
    }

    /// GET `url` with the token; a status other than 2xx is an error.
    async fn get(&self, url: &str) -> Result<reqwest::Response, HubError> {
        let mut request = self.http.get(url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| HubError::Network {
            url: url.to_string(),
            message: network_message(&e),
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(HubError::Http {
                url: url.to_string(),
                status: status.as_u16(),
                token_sent: self.token.is_some(),
            });
        }
        Ok(response)
    }

    /// The commit and files of `repo` at `revision`.
    pub async fn listing(&self, repo: &str, revision: &str) -> Result<Listing, HubError> {
        let url = format!(
            "{}/api/models/{repo}/revision/{}?blobs=true",
            self.endpoint,
            encode(revision, false)
        );
        let response = self.get(&url).await?;
        let body = response.bytes().await.map_err(|e| HubError::Network {
            url: url.clone(),
            message: network_message(&e),
        })?;
        parse_listing(&body).map_err(|message| HubError::Protocol { url, message })
    }

    /// Puts `file` of `repo` at `commit` into the cache (unless its snapshot link is there),
    /// reporting bytes to `progress`.
    pub async fn fetch(
        &self,
        cache: &Repo,
        repo: &str,
        commit: &str,
        file: &Sibling,
        mut progress: Option<&mut dyn Progress>,
    ) -> Result<(), HubError> {
        if cache.snapshot(commit).join(&file.name).is_file() {
            return Ok(());
        }
        let blob = cache.blob(&file.etag);
        let _lock = cache.lock(&file.etag)?;
        let have = std::fs::metadata(&blob).is_ok_and(|m| m.is_file() && m.len() == file.size);
        if !have {
            let url = format!(
                "{}/{repo}/resolve/{commit}/{}",
                self.endpoint,
                encode(&file.name, true)
            );
            let mut part = blob.clone().into_os_string();
            part.push(".incomplete");
            let part = PathBuf::from(part);
            let got = self.download(&url, &part, file, &mut progress).await;
            if let Err(e) = got {
                let _ = std::fs::remove_file(&part);
                return Err(e);
            }
            std::fs::rename(&part, &blob).map_err(|e| HubError::io(&blob, e))?;
        } else if let Some(p) = progress.as_mut() {
            p.advance(file.size);
        }
        cache.link(commit, &file.name, &file.etag)
    }

    /// Streams `url` into `part`, hashing as it goes; checks size and sha256; syncs it.
    async fn download(
        &self,
        url: &str,
        part: &std::path::Path,
        file: &Sibling,
        progress: &mut Option<&mut dyn Progress>,
    ) -> Result<(), HubError> {
        if let Some(dir) = part.parent() {
            std::fs::create_dir_all(dir).map_err(|e| HubError::io(dir, e))?;
        }
        let mut response = self.get(url).await?;
        let mut out = std::fs::File::create(part).map_err(|e| HubError::io(part, e))?;
        let mut hasher = Sha256::new();
        let mut written: u64 = 0;
        loop {
            let chunk = response.chunk().await.map_err(|e| HubError::Network {
                url: url.to_string(),
                message: network_message(&e),
            })?;
            let Some(chunk) = chunk else { break };
            written += chunk.len() as u64;
            if written > file.size {
                break;
            }
            hasher.update(&chunk);
            out.write_all(&chunk).map_err(|e| HubError::io(part, e))?;
            if let Some(p) = progress.as_mut() {
                p.advance(chunk.len() as u64);
            }
        }
        let corrupt = |message: String| HubError::Corrupt {
            file: file.name.clone(),
            message,
        };
        if written != file.size {
            return Err(corrupt(format!(
                "{written}{} bytes, the Hub lists {}",
                if written > file.size { "+" } else { "" },
                file.size
            )));
        }
        if let Some(want) = &file.sha256 {
            let got = hex(&hasher.finalize());
            if &got != want {
                return Err(corrupt(format!("sha256 {got}, the Hub lists {want}")));
            }
        }
        out.sync_all().map_err(|e| HubError::io(part, e))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A reqwest error as one line, its causes included (connection refused, timed out); the URL
/// is left out (the error names it already).
fn network_message(e: &reqwest::Error) -> String {
    let mut message = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the transfer broke off"
    } else {
        "the request failed"
    }
    .to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    message
}

/// The listing's JSON: `sha` and `siblings[]` (`rfilename`, `size`, `blobId`, `lfs.sha256`).
/// File names and blob ids become cache paths: both are checked here.
fn parse_listing(body: &[u8]) -> Result<Listing, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let commit = v
        .get("sha")
        .and_then(Value::as_str)
        .filter(|s| is_commit(s))
        .ok_or("no commit hash (sha)")?
        .to_string();
    let siblings = v
        .get("siblings")
        .and_then(Value::as_array)
        .ok_or("no file list (siblings)")?;
    let mut files = Vec::with_capacity(siblings.len());
    for s in siblings {
        let Some(name) = s.get("rfilename").and_then(Value::as_str) else {
            return Err(format!("a file without rfilename: {s}"));
        };
        let safe = name
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != ".." && !p.contains('\\'));
        if !safe {
            return Err(format!("file name {name:?} is not a relative path"));
        }
        let lfs = s.get("lfs");
        let sha256 = lfs
            .and_then(|l| l.get("sha256"))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let etag = match &sha256 {
            Some(h) => h.clone(),
            None => s
                .get("blobId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase(),
        };
        let hexlen = etag.len() == 40 || etag.len() == 64;
        if !hexlen || !etag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{name}: no usable blobId or lfs.sha256 (got {etag:?})"
            ));
        }
        let size = lfs
            .and_then(|l| l.get("size"))
            .or_else(|| s.get("size"))
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{name}: no size"))?;
        files.push(Sibling {
            name: name.to_string(),
            etag,
            size,
            sha256,
        });
    }
    Ok(Listing { commit, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_blob_names_and_refuses_paths_out_of_the_snapshot() {
        let sha = "a".repeat(40);
        let body = serde_json::json!({"sha": sha, "siblings": [
            {"rfilename": "config.json", "size": 10, "blobId": "B".repeat(40)},
            {"rfilename": "model.safetensors", "size": 5, "blobId": "c".repeat(40),
             "lfs": {"sha256": "d".repeat(64), "size": 99, "pointerSize": 130}},
        ]});
        let l = parse_listing(body.to_string().as_bytes()).expect("listing");
        assert_eq!(l.commit, sha);
        let c = l.get("config.json").expect("config");
        assert_eq!(
            (c.etag.as_str(), c.size, c.sha256.is_none()),
            ("b".repeat(40).as_str(), 10, true)
        );
        let m = l.get("model.safetensors").expect("weights");
        assert_eq!((m.etag.len(), m.size), (64, 99));
        for bad in [
            serde_json::json!({"sha": sha, "siblings": [{"rfilename": "../x", "size": 1, "blobId": "b".repeat(40)}]}),
            serde_json::json!({"sha": sha, "siblings": [{"rfilename": "x", "size": 1, "blobId": "../../etc"}]}),
            serde_json::json!({"sha": "main", "siblings": []}),
        ] {
            assert!(parse_listing(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(encode("refs/pr/1", false), "refs%2Fpr%2F1");
        assert_eq!(encode("sub dir/a.gguf", true), "sub%20dir/a.gguf");
    }
}
