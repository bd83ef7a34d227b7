//! A fake Hugging Face Hub for tests: in-process, loopback, port 0. It serves what
//! `instill_models::hub` asks for: a revision's file list
//! (`GET /api/models/ORG/NAME/revision/REV`, with sizes, git blob ids and LFS sha256) and
//! files (`GET /ORG/NAME/resolve/REV/FILE`, with `x-repo-commit`, `etag`, `x-linked-etag`,
//! `x-linked-size`; LFS files answered with a redirect to a CDN path, as the Hub does).
//! It logs every request with its `Authorization` header; it can demand a token, and serve
//! one file with a flipped byte.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

/// One revision of one repository.
#[derive(Debug, Clone)]
pub struct Revision {
    pub repo: String,
    pub revision: String,
    pub commit: String,
    pub files: Vec<(String, Vec<u8>)>,
}

/// How the fake hub behaves.
#[derive(Debug, Clone, Default)]
pub struct HubConfig {
    pub revisions: Vec<Revision>,
    /// Every request but the CDN's must carry `Authorization: Bearer TOKEN`, else 401.
    pub token: Option<String>,
    /// This file is served with its first byte flipped (its listed size and sha256 unchanged).
    pub corrupt: Option<String>,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What the Hub stores as LFS (and names by sha256 in the cache).
pub fn is_lfs(name: &str) -> bool {
    name.ends_with(".safetensors") || name.ends_with(".gguf")
}

/// A stand-in for a git blob id: 40 hex digits that depend on the content.
pub fn blob_id(bytes: &[u8]) -> String {
    sha256_hex(&[b"blob ", bytes].concat())[..40].to_string()
}

struct Shared {
    config: HubConfig,
    /// Path (and query) and `Authorization` header of every request.
    log: Mutex<Vec<(String, Option<String>)>>,
}

pub struct FakeHub {
    pub endpoint: String,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeHub {
    pub fn start(config: HubConfig) -> FakeHub {
        let shared = Arc::new(Shared {
            config,
            log: Mutex::new(Vec::new()),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let app = axum::Router::new().fallback(serve).with_state(state);
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("addr"))
                    .expect("send addr");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        let addr = addr_rx.recv().expect("server address");
        FakeHub {
            endpoint: format!("http://{addr}"),
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// Every request so far: path (with query) and `Authorization` header.
    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.shared.log.lock().expect("log").clone()
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn status(code: StatusCode, message: &str) -> Response {
    (code, axum::Json(json!({ "error": message }))).into_response()
}

async fn serve(State(shared): State<Arc<Shared>>, uri: Uri, headers: HeaderMap) -> Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let path = uri.path().to_string();
    shared.log.lock().expect("log").push((
        uri.path_and_query().map_or(path.clone(), |p| p.to_string()),
        auth.clone(),
    ));
    if let Some(rest) = path.strip_prefix("/cdn/") {
        return cdn(&shared.config, rest);
    }
    if let Some(token) = &shared.config.token
        && auth.as_deref() != Some(format!("Bearer {token}").as_str())
    {
        return status(
            StatusCode::UNAUTHORIZED,
            "Invalid credentials in Authorization header",
        );
    }
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let Some((repo, rev)) = rest.split_once("/revision/") else {
            return status(StatusCode::NOT_FOUND, "no route");
        };
        return listing(&shared.config, repo, &rev.replace("%2F", "/"));
    }
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    match parts.as_slice() {
        [org, name, "resolve", rev, file] => {
            resolve(&shared.config, &format!("{org}/{name}"), rev, file)
        }
        _ => status(StatusCode::NOT_FOUND, "no route"),
    }
}

/// The revision `rev` (a branch or a commit) of `repo`.
fn find<'c>(config: &'c HubConfig, repo: &str, rev: &str) -> Option<&'c Revision> {
    config
        .revisions
        .iter()
        .find(|r| r.repo == repo && (r.revision == rev || r.commit == rev))
}

fn listing(config: &HubConfig, repo: &str, rev: &str) -> Response {
    let Some(r) = find(config, repo, rev) else {
        return status(StatusCode::NOT_FOUND, "Repository not found");
    };
    let siblings: Vec<_> = r
        .files
        .iter()
        .map(|(name, bytes)| {
            let mut s = json!({"rfilename": name, "size": bytes.len(), "blobId": blob_id(bytes)});
            if is_lfs(name) {
                s["lfs"] =
                    json!({"sha256": sha256_hex(bytes), "size": bytes.len(), "pointerSize": 134});
            }
            s
        })
        .collect();
    axum::Json(json!({"id": repo, "sha": r.commit, "siblings": siblings})).into_response()
}

fn resolve(config: &HubConfig, repo: &str, rev: &str, file: &str) -> Response {
    let Some(r) = find(config, repo, rev) else {
        return status(StatusCode::NOT_FOUND, "Revision not found");
    };
    let Some((name, bytes)) = r.files.iter().find(|(n, _)| n == file) else {
        return status(StatusCode::NOT_FOUND, "Entry not found");
    };
    let mut response = if is_lfs(name) {
        let mut res = StatusCode::FOUND.into_response();
        let cdn = format!("/cdn/{repo}/{}/{name}", r.commit);
        res.headers_mut()
            .insert("location", cdn.parse().expect("location"));
        res.headers_mut().insert(
            "x-linked-etag",
            format!("\"{}\"", sha256_hex(bytes)).parse().expect("etag"),
        );
        res.headers_mut()
            .insert("x-linked-size", bytes.len().into());
        res
    } else {
        let mut res = served(config, name, bytes).into_response();
        res.headers_mut().insert(
            "etag",
            format!("\"{}\"", blob_id(bytes)).parse().expect("etag"),
        );
        res
    };
    response
        .headers_mut()
        .insert("x-repo-commit", r.commit.parse().expect("commit"));
    response
}

/// An LFS file's bytes: `/cdn/ORG/NAME/COMMIT/FILE`.
fn cdn(config: &HubConfig, rest: &str) -> Response {
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    let [org, name, commit, file] = parts.as_slice() else {
        return status(StatusCode::NOT_FOUND, "no route");
    };
    let repo = format!("{org}/{name}");
    match find(config, &repo, commit).and_then(|r| r.files.iter().find(|(n, _)| n == file)) {
        Some((name, bytes)) => served(config, name, bytes),
        None => status(StatusCode::NOT_FOUND, "no such object"),
    }
}

/// The bytes of `name`, corrupted when the config says so.
fn served(config: &HubConfig, name: &str, bytes: &[u8]) -> Response {
    let mut body = bytes.to_vec();
    if config.corrupt.as_deref() == Some(name)
        && let Some(b) = body.first_mut()
    {
        *b ^= 0xff;
    }
    (StatusCode::OK, Body::from(body)).into_response()
}
