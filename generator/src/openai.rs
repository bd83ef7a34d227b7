//! The OpenAI-compatible HTTP backend: `/chat/completions` and `/completions` on reqwest, with
//! errors classified (rate limits with `Retry-After`, server errors, timeouts, context length,
//! and the fatal ones: bad key, unknown model or endpoint).

use std::time::Duration;

use instill_core::{redact_secrets, redact_url, url_secrets};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::completion::{Api, BackendError, Choice, Completion, CompletionRequest};
use crate::endpoint::Contact;

/// The default cap on a reply body: far more than any completion a server sends (a million
/// tokens of text), far less than what would hurt the process.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 16 << 20;

/// The most tokens one reply's `usage` may count (more is clamped): no model reads or writes
/// 4 billion tokens in one request, and sums over 2^31 requests of this size still fit the
/// database's 64-bit columns, so an absurd report cannot overflow a counter or the limiter.
pub const MAX_REPORTED_TOKENS: u64 = u32::MAX as u64;

/// Connection settings of an OpenAI-compatible server.
#[derive(Clone)]
pub struct OpenAiConfig {
    /// Base URL including the version, like `https://api.openai.com/v1`.
    pub base_url: String,
    /// The API key (sent as a bearer token; never logged, printed or stored). Not together with
    /// a user or password in `base_url` (sent as Basic auth): a request carries one
    /// `Authorization` header, so [`OpenAiBackend::new`] refuses both.
    pub api_key: Option<String>,
    /// Model name.
    pub model: String,
    /// Chat or completion endpoint.
    pub api: Api,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Connections kept open (the run's concurrency).
    pub max_connections: usize,
    /// How long failures to connect may go on, before any answer came, until they are fatal
    /// ([`crate::CONNECT_GRACE`] by default).
    pub connect_grace: Duration,
    /// The largest reply body read; a longer one fails the attempt with
    /// [`BackendError::TooLarge`] (retryable) without being read further.
    pub max_body_bytes: u64,
}

impl std::fmt::Debug for OpenAiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiConfig")
            .field("base_url", &redact_url(&self.base_url))
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("model", &self.model)
            .field("api", &self.api)
            .field("timeout", &self.timeout)
            .field("max_connections", &self.max_connections)
            .field("connect_grace", &self.connect_grace)
            .field("max_body_bytes", &self.max_body_bytes)
            .finish()
    }
}

/// A client for one OpenAI-compatible server and model.
#[derive(Clone)]
pub struct OpenAiBackend {
    client: reqwest::Client,
    url: String,
    /// The base URL as messages show it (password redacted).
    base_url: String,
    api_key: Option<String>,
    /// The key and the URL's password: hidden from every message built from a reply.
    secrets: Vec<String>,
    model: String,
    api: Api,
    timeout: Duration,
    max_body_bytes: u64,
    contact: Contact,
}

impl std::fmt::Debug for OpenAiBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiBackend")
            .field("url", &redact_url(&self.url))
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .finish()
    }
}

#[derive(Serialize)]
struct ChatBody<'a> {
    model: &'a str,
    messages: [Message<'a>; 1],
    max_tokens: u32,
    temperature: f32,
    top_p: f32,
    n: u32,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize)]
struct CompletionBody<'a> {
    model: &'a str,
    prompt: &'a str,
    max_tokens: u32,
    temperature: f32,
    top_p: f32,
    n: u32,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
}

#[derive(Deserialize)]
struct Reply {
    choices: Vec<ReplyChoice>,
    /// Read leniently (see [`token_count`]): a strange `usage` never makes a reply unreadable.
    usage: Option<Value>,
}

#[derive(Deserialize)]
struct ReplyChoice {
    message: Option<ReplyMessage>,
    text: Option<String>,
    finish_reason: Option<String>,
}

/// The assistant's message. `content` may be null (a reasoning model cut off while thinking);
/// the reasoning comes as `reasoning_content` (DeepSeek, vLLM's reasoning parsers) or
/// `reasoning` (newer vLLM, OpenRouter), either null or absent when there is none.
#[derive(Deserialize)]
struct ReplyMessage {
    content: Option<String>,
    reasoning_content: Option<String>,
    reasoning: Option<String>,
}

impl OpenAiBackend {
    /// A client for `config` (connections are opened lazily).
    pub fn new(config: OpenAiConfig) -> Result<OpenAiBackend, BackendError> {
        if config.api_key.is_some() && url_has_credentials(&config.base_url) {
            return Err(BackendError::Fatal {
                status: 0,
                message: format!(
                    "{} carries a user or password (sent as Basic auth) and an API key is given (sent as a Bearer token): a request carries one Authorization header; give one of them",
                    redact_url(&config.base_url)
                ),
            });
        }
        let mut secrets = url_secrets(&config.base_url);
        secrets.extend(config.api_key.clone());
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(config.max_connections.max(1))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| BackendError::Fatal {
                status: 0,
                message: format!("cannot start the HTTP client: {e}"),
            })?;
        let base_url = config.base_url.trim_end_matches('/').to_string();
        let url = match config.api {
            Api::Chat => format!("{base_url}/chat/completions"),
            Api::Completion => format!("{base_url}/completions"),
        };
        Ok(OpenAiBackend {
            client,
            url,
            base_url: redact_url(&base_url),
            api_key: config.api_key,
            secrets,
            model: config.model,
            api: config.api,
            timeout: config.timeout,
            max_body_bytes: config.max_body_bytes,
            contact: Contact::new(config.connect_grace),
        })
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// What this client saw of the server (shared by its clones).
    pub(crate) fn contact(&self) -> &Contact {
        &self.contact
    }

    /// Sends one request and reads the answer. An error's text, which may quote the server (and
    /// a server may repeat the request's credentials), has the key, the URL's password and any
    /// `Bearer`/`Basic` credential hidden before anyone sees, logs or stores it.
    pub async fn complete(&self, req: &CompletionRequest) -> Result<Completion, BackendError> {
        self.send(req).await.map_err(|e| self.redact(e))
    }

    /// The request's JSON body for this backend's endpoint.
    fn body(&self, req: &CompletionRequest) -> Result<Vec<u8>, BackendError> {
        match self.api {
            Api::Chat => serde_json::to_vec(&ChatBody {
                model: &self.model,
                messages: [Message {
                    role: "user",
                    content: &req.prompt,
                }],
                max_tokens: req.max_tokens,
                temperature: req.temperature,
                top_p: req.top_p,
                n: req.n,
                stop: &req.stop,
                seed: req.seed,
            }),
            Api::Completion => serde_json::to_vec(&CompletionBody {
                model: &self.model,
                prompt: &req.prompt,
                max_tokens: req.max_tokens,
                temperature: req.temperature,
                top_p: req.top_p,
                n: req.n,
                stop: &req.stop,
                seed: req.seed,
            }),
        }
        .map_err(|e| BackendError::Fatal {
            status: 0,
            message: format!("cannot encode the request: {e}"),
        })
    }

    /// [`OpenAiBackend::complete`] before the redaction of its errors.
    async fn send(&self, req: &CompletionRequest) -> Result<Completion, BackendError> {
        let body = self.body(req)?;
        let mut http = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(key) = &self.api_key {
            http = http.bearer_auth(key);
        }
        let response = http.send().await.map_err(|e| self.transport_error(e))?;
        self.contact.reached();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        if !status.is_success() {
            // The start of an error body is all its message needs.
            let cap = self.max_body_bytes.min(ERROR_BODY_BYTES);
            let (bytes, _) = self.read_capped(response, cap).await?;
            return Err(self.status_error(status.as_u16(), &bytes, retry_after));
        }
        let (bytes, complete) = self.read_capped(response, self.max_body_bytes).await?;
        if !complete {
            return Err(BackendError::TooLarge {
                limit: self.max_body_bytes,
            });
        }
        let reply: Reply = serde_json::from_slice(&bytes).map_err(|e| {
            BackendError::BadBody(format!("{e} (body starts {:?})", preview(&bytes)))
        })?;
        if reply.choices.is_empty() {
            return Err(BackendError::BadBody("no choices in the response".into()));
        }
        let choices = reply.choices.into_iter().map(choice).collect();
        let usage = |field: &str| {
            reply
                .usage
                .as_ref()
                .and_then(|u| token_count(u.get(field)?))
        };
        Ok(Completion {
            choices,
            prompt_tokens: usage("prompt_tokens"),
            completion_tokens: usage("completion_tokens"),
        })
    }

    /// Reads the body chunk by chunk, at most `cap` bytes: `(bytes, complete)`, where
    /// `complete` is false when the body (or its declared length) goes past the cap and the rest
    /// was left unread.
    async fn read_capped(
        &self,
        mut response: reqwest::Response,
        cap: u64,
    ) -> Result<(Vec<u8>, bool), BackendError> {
        if response.content_length().is_some_and(|n| n > cap) {
            return Ok((Vec::new(), false));
        }
        let cap = usize::try_from(cap).unwrap_or(usize::MAX);
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e))?
        {
            if chunk.len() > cap - bytes.len() {
                bytes.extend_from_slice(&chunk[..cap - bytes.len()]);
                return Ok((bytes, false));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok((bytes, true))
    }

    /// `e` with every text in it passed through [`redact_secrets`].
    fn redact(&self, e: BackendError) -> BackendError {
        let clean = |text: String| redact_secrets(&text, &self.secrets);
        match e {
            BackendError::RateLimited {
                retry_after,
                message,
            } => BackendError::RateLimited {
                retry_after,
                message: clean(message),
            },
            BackendError::Server { status, message } => BackendError::Server {
                status,
                message: clean(message),
            },
            BackendError::Connection(m) => BackendError::Connection(clean(m)),
            BackendError::BadBody(m) => BackendError::BadBody(clean(m)),
            BackendError::ContextLength(m) => BackendError::ContextLength(clean(m)),
            BackendError::Fatal { status, message } => BackendError::Fatal {
                status,
                message: clean(message),
            },
            BackendError::Unreachable { url, cause, grace } => BackendError::Unreachable {
                url,
                cause: clean(cause),
                grace,
            },
            e @ (BackendError::Timeout(_) | BackendError::TooLarge { .. }) => e,
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> BackendError {
        // Without the request URL (the base URL is added; `base_url` is stored redacted) and
        // without the key (never in it).
        let url = &self.base_url;
        let (connect, timeout, builder) = (e.is_connect(), e.is_timeout(), e.is_builder());
        let cause = causes(&e.without_url());
        if connect {
            // DNS, refused, TLS, connect timeout: fatal when the server never answered.
            if self.contact.give_up() {
                return BackendError::Unreachable {
                    url: url.clone(),
                    cause,
                    grace: self.contact.grace(),
                };
            }
            BackendError::Connection(format!("{cause} ({url})"))
        } else if timeout {
            BackendError::Timeout(self.timeout)
        } else if builder {
            BackendError::Fatal {
                status: 0,
                message: format!("invalid base URL {url}: {cause}"),
            }
        } else {
            BackendError::Connection(format!("{cause} ({url})"))
        }
    }

    fn status_error(
        &self,
        status: u16,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> BackendError {
        let message = error_message(body);
        let lower = message.to_lowercase();
        match status {
            429 => BackendError::RateLimited {
                retry_after,
                message,
            },
            500..=599 => BackendError::Server { status, message },
            400 | 413 | 422
                if lower.contains("context length")
                    || lower.contains("context_length")
                    || lower.contains("maximum context")
                    || lower.contains("too many tokens") =>
            {
                BackendError::ContextLength(message)
            }
            401 | 403 => BackendError::Fatal {
                status,
                message: format!(
                    "{} rejected the API key ({status}): {message}",
                    self.base_url
                ),
            },
            404 => BackendError::Fatal {
                status,
                message: format!(
                    "{} answered 404 for model `{}` at {}: {message} (is the base URL right, including /v1, and does the server serve this model?)",
                    self.base_url,
                    self.model,
                    redact_url(&self.url)
                ),
            },
            _ if lower.contains("model")
                && (lower.contains("not found") || lower.contains("does not exist")) =>
            {
                BackendError::Fatal {
                    status,
                    message: format!(
                        "{} does not know model `{}` ({status}): {message}",
                        self.base_url, self.model
                    ),
                }
            }
            400..=499 => BackendError::Fatal {
                status,
                message: format!(
                    "{} refused the request ({status}): {message}",
                    self.base_url
                ),
            },
            _ => BackendError::Server { status, message },
        }
    }
}

/// A reply's choice as the run reads it: the answer (the message's content, or a completion's
/// text; a null content is an empty answer) and the reasoning, from its field or from a
/// `<think>` block at the start of the text.
fn choice(c: ReplyChoice) -> Choice {
    let (content, reasoning) = match c.message {
        Some(m) => (m.content, m.reasoning_content.or(m.reasoning)),
        None => (None, None),
    };
    Choice::new(
        content.or(c.text).as_deref().unwrap_or_default(),
        reasoning.as_deref().unwrap_or_default(),
        c.finish_reason.unwrap_or_else(|| "stop".into()),
    )
}

/// Whether `url` has a user or a password before its host: the HTTP client sends them as an
/// `Authorization: Basic` header.
pub fn url_has_credentials(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| !u.username().is_empty() || u.password().is_some())
}

/// An error and its causes, joined by `: ` (reqwest's own message names only the step that
/// failed; the reason, such as "Connection refused", is in its sources).
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// The `error.message` of an OpenAI error body, or the start of the body.
fn error_message(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct ErrBody {
        error: Option<ErrInner>,
    }
    #[derive(Deserialize)]
    struct ErrInner {
        message: Option<String>,
    }
    serde_json::from_slice::<ErrBody>(body)
        .ok()
        .and_then(|b| b.error)
        .and_then(|e| e.message)
        .unwrap_or_else(|| preview(body))
}

/// How much of an error reply is read for its message.
const ERROR_BODY_BYTES: u64 = 64 << 10;

/// A token count the server reported, as a number of tokens: negative, fractional-negative,
/// non-numeric or missing values count as not reported; anything above
/// [`MAX_REPORTED_TOKENS`] is clamped to it.
fn token_count(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(u.min(MAX_REPORTED_TOKENS));
    }
    let f = n.as_f64()?;
    (f.is_finite() && f >= 0.0).then(|| f.min(MAX_REPORTED_TOKENS as f64) as u64)
}

fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.replace('\n', " ")
}

/// `Retry-After` as seconds (`"2"`, `"0.5"`); HTTP dates are rare from model servers and read
/// as no hint.
fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_and_error_bodies() {
        assert_eq!(parse_retry_after("2"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after(" 0.25 "),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(
            error_message(br#"{"error":{"message":"bad key","type":"x"}}"#),
            "bad key"
        );
        assert_eq!(error_message(b"<html>oops</html>"), "<html>oops</html>");
    }

    #[test]
    fn the_config_debug_shows_neither_key_nor_password() {
        let config = OpenAiConfig {
            base_url: "https://user:pa@ss@api.example.com/v1?api_key=sk-query".into(),
            api_key: Some("sk-live-123".into()),
            model: "m".into(),
            api: Api::Chat,
            timeout: Duration::from_secs(1),
            max_connections: 1,
            connect_grace: crate::CONNECT_GRACE,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        };
        let shown = format!("{config:?} {config:#?}");
        for secret in ["sk-live-123", "pa@ss", "sk-query"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("api.example.com") && shown.contains("\"m\""),
            "{shown}"
        );
        // Credentials in the URL and a key: two Authorization headers, refused.
        let both = OpenAiBackend::new(config.clone()).unwrap_err().to_string();
        assert!(both.contains("user:***@api.example.com"), "{both}");
        let backend = OpenAiBackend::new(OpenAiConfig {
            base_url: "https://api.example.com/v1?api_key=sk-query".into(),
            ..config
        });
        let backend = format!("{:?}", backend.unwrap());
        for secret in ["sk-live-123", "pa@ss", "sk-query"] {
            assert!(!backend.contains(secret), "{secret} in {backend}");
        }
    }

    #[test]
    fn reasoning_is_read_from_every_shape_servers_send() {
        let read = |json: &str| {
            let c = choice(serde_json::from_str(json).unwrap());
            let none = c.reasoned_without_answer();
            (c.text, c.reasoning, none)
        };
        let answer = |text: &str, reasoning: &str, none: bool| {
            (text.to_string(), reasoning.to_string(), none)
        };
        // DeepSeek's reasoner and vLLM's reasoning parsers.
        assert_eq!(
            read(
                r#"{"message":{"role":"assistant","content":"42","reasoning_content":"6*7"},"finish_reason":"stop"}"#
            ),
            answer("42", "6*7", false)
        );
        // Newer vLLM; a null or absent field.
        assert_eq!(
            read(r#"{"message":{"content":"42","reasoning":"6*7"}}"#),
            answer("42", "6*7", false)
        );
        assert_eq!(
            read(r#"{"message":{"content":"42","reasoning_content":null}}"#),
            answer("42", "", false)
        );
        // Inline in the content, with or without the opening tag (R1 distills' templates).
        assert_eq!(
            read(r#"{"message":{"content":"<think>\n6*7\n</think>\n\n42"}}"#),
            answer("42", "6*7", false)
        );
        assert_eq!(
            read(r#"{"message":{"content":"6*7\n</think>\n\n42"}}"#),
            answer("42", "6*7", false)
        );
        assert_eq!(
            read(r#"{"text":"<think>6*7</think>42","finish_reason":"stop"}"#),
            answer("42", "6*7", false)
        );
        // Cut off while thinking: reasoning and no answer (a null content).
        assert_eq!(
            read(
                r#"{"message":{"content":null,"reasoning_content":"6*7 is"},"finish_reason":"length"}"#
            ),
            answer("", "6*7 is", true)
        );
        assert_eq!(
            read(r#"{"message":{"content":"plain"}}"#),
            answer("plain", "", false)
        );
    }

    #[test]
    fn reported_usage_is_clamped_or_ignored() {
        let count = |json: &str| token_count(&serde_json::from_str(json).unwrap());
        assert_eq!(count("12"), Some(12));
        assert_eq!(count("0"), Some(0));
        assert_eq!(count("9223372036854775808"), Some(MAX_REPORTED_TOKENS));
        assert_eq!(count("18446744073709551615"), Some(MAX_REPORTED_TOKENS));
        assert_eq!(count("1e300"), Some(MAX_REPORTED_TOKENS));
        assert_eq!(count("12.7"), Some(12));
        assert_eq!(count("-1"), None);
        assert_eq!(count("-9223372036854775808"), None);
        assert_eq!(count("\"12\""), None);
        assert_eq!(count("null"), None);
    }

    #[test]
    fn statuses_are_classified_without_leaking_the_key() {
        let b = OpenAiBackend::new(OpenAiConfig {
            base_url: "http://127.0.0.1:9/v1/".into(),
            api_key: Some("sk-secret".into()),
            model: "m".into(),
            api: Api::Chat,
            timeout: Duration::from_secs(1),
            max_connections: 1,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            connect_grace: crate::CONNECT_GRACE,
        })
        .unwrap();
        assert!(!format!("{b:?}").contains("sk-secret"));
        let ctx = br#"{"error":{"message":"This model's maximum context length is 4096 tokens"}}"#;
        assert!(matches!(
            b.status_error(400, ctx, None),
            BackendError::ContextLength(_)
        ));
        assert!(matches!(
            b.status_error(429, b"{}", Some(Duration::from_secs(1))),
            BackendError::RateLimited { .. }
        ));
        assert!(matches!(
            b.status_error(503, b"{}", None),
            BackendError::Server { .. }
        ));
        let e = b.status_error(401, br#"{"error":{"message":"Incorrect API key"}}"#, None);
        assert!(!e.retryable());
        let text = e.to_string();
        assert!(
            text.contains("http://127.0.0.1:9/v1") && !text.contains("sk-secret"),
            "{text}"
        );
        // A server that repeats the credentials: hidden in every kind of error.
        let echo =
            br#"{"error":{"message":"bad: Bearer sk-secret, Basic dTpLM3lQdw== sk-secret"}}"#;
        for status in [401, 429, 500, 400] {
            let text = b.redact(b.status_error(status, echo, None)).to_string();
            assert!(
                !text.contains("sk-secret") && text.contains("bad: Bearer ***, Basic *** ***"),
                "{text}"
            );
        }
        let e = b.status_error(404, b"{}", None).to_string();
        assert!(e.contains("model `m`"), "{e}");
    }

    #[tokio::test]
    async fn tls_and_refused_connections_turn_fatal_before_a_first_answer() {
        use tokio::io::AsyncWriteExt;
        // A TLS client against a plain-text server: the handshake fails.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let _ = s
                    .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\nplain text")
                    .await;
            }
        });
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let refused_port = closed.local_addr().unwrap().port();
        drop(closed);
        let req = CompletionRequest {
            prompt: "p".into(),
            max_tokens: 8,
            temperature: 0.0,
            top_p: 1.0,
            stop: Vec::new(),
            n: 1,
            seed: None,
        };
        for url in [
            format!("https://127.0.0.1:{tls_port}/v1"),
            format!("http://127.0.0.1:{refused_port}/v1"),
        ] {
            let client = |grace| {
                OpenAiBackend::new(OpenAiConfig {
                    base_url: url.clone(),
                    api_key: None,
                    model: "m".into(),
                    api: Api::Chat,
                    timeout: Duration::from_secs(5),
                    max_connections: 1,
                    connect_grace: grace,
                    max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                })
                .unwrap()
            };
            let e = client(Duration::from_secs(3600))
                .complete(&req)
                .await
                .unwrap_err();
            assert!(matches!(e, BackendError::Connection(_)), "{url}: {e:?}");
            let e = client(Duration::ZERO).complete(&req).await.unwrap_err();
            assert!(!e.retryable(), "{url}: {e:?}");
            assert!(
                e.to_string()
                    .starts_with(&format!("cannot connect to {url}: ")),
                "{e}"
            );
        }
    }
}
