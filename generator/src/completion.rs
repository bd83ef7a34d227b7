//! What every backend speaks, and nothing else: the request, the reply (choices and token
//! usage), the endpoint shape, and the errors classified by what to do next. A leaf: it imports
//! no backend, so `local/` and `openai.rs` depend on it and `backend.rs` on all three.

use std::time::Duration;

/// Which endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// `POST {base}/chat/completions`, the prompt as one user message.
    Chat,
    /// `POST {base}/completions`, the prompt as text to continue.
    Completion,
}

/// What is sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    /// The prompt: the user message (chat) or the text to continue (completion).
    pub prompt: String,
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Sampling temperature.
    pub temperature: f32,
    /// Nucleus sampling mass.
    pub top_p: f32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Choices to generate.
    pub n: u32,
    /// The request's own sampling seed (magpie's identical prompts need one each): the local
    /// backend mixes it into each choice's seed, an HTTP server is sent it as `seed`. `None`:
    /// the local backend seeds by the prompt, a server as it likes.
    pub seed: Option<u64>,
}

/// One generated choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    /// The answer: the text, without the reasoning before it.
    pub text: String,
    /// The reasoning the model wrote before its answer (`reasoning_content`, `reasoning`, or a
    /// leading `<think>…</think>` block); empty when there was none.
    pub reasoning: String,
    /// `stop`, `length`, … as the server reports it.
    pub finish_reason: String,
}

impl Choice {
    /// A choice from what a model wrote: `reasoning` as a server reported it apart (empty when
    /// none) and `text`, whose leading `<think>` block, if any, joins the reasoning
    /// ([`instill_core::split_reply`]), so that nothing downstream judges the thinking as the
    /// answer.
    pub fn new(text: &str, reasoning: &str, finish_reason: String) -> Choice {
        let mut reasoning = reasoning.trim().to_string();
        let text = match instill_core::split_reply(text) {
            Some((thought, answer)) => {
                instill_core::append_reasoning(&mut reasoning, thought);
                answer.to_string()
            }
            None => text.to_string(),
        };
        Choice {
            text,
            reasoning,
            finish_reason,
        }
    }

    /// Whether the model reasoned but gave no answer (most often: cut off at `max_tokens`
    /// while still thinking).
    pub fn reasoned_without_answer(&self) -> bool {
        self.text.trim().is_empty() && !self.reasoning.is_empty()
    }
}

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The choices, in order.
    pub choices: Vec<Choice>,
    /// Prompt tokens, when reported.
    pub prompt_tokens: Option<u64>,
    /// Completion tokens, when reported.
    pub completion_tokens: Option<u64>,
}

/// Why a completion failed, classified by what the caller should do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// 429: slow down; retry after the given delay when the server sent one.
    #[error("rate limited (429){}: {message}", retry_after.map(|d| format!(", retry after {:.1} s", d.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        /// `Retry-After`, when present.
        retry_after: Option<Duration>,
        /// The server's message.
        message: String,
    },
    /// 5xx: the server failed; retry.
    #[error("server error {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's message.
        message: String,
    },
    /// No answer in time; retry.
    #[error("timed out after {0:.0?}")]
    Timeout(Duration),
    /// The connection failed or broke; retry.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The answer could not be read (truncated or garbage body); retry.
    #[error("unreadable response: {0}")]
    BadBody(String),
    /// The reply body went past the cap (left unread from there on); retry.
    #[error("the reply body is larger than the cap of {limit} bytes")]
    TooLarge {
        /// The cap, in bytes.
        limit: u64,
    },
    /// The prompt plus `max_tokens` exceed the model's context; retry with fewer tokens.
    #[error("context length exceeded: {0}")]
    ContextLength(String),
    /// No request has reached the server in the grace given to a first answer (refused, no
    /// route, no such host): it is not there, or not at this address; stop the run.
    #[error("cannot connect to {url}: {cause}; no request has reached it in {:.0} s of trying (is the server running, and is its base URL right?)", grace.as_secs_f64())]
    Unreachable {
        /// The base URL (password redacted).
        url: String,
        /// The last failure's cause.
        cause: String,
        /// How long connecting was tried.
        grace: Duration,
    },
    /// 400/401/403/404, or an unknown model: retrying cannot help; stop the run.
    #[error("{message}")]
    Fatal {
        /// HTTP status (0 when not from HTTP).
        status: u16,
        /// What went wrong, naming the base URL (never the key).
        message: String,
    },
}

impl BackendError {
    /// Whether the request may succeed if sent again.
    pub fn retryable(&self) -> bool {
        !matches!(
            self,
            BackendError::Fatal { .. } | BackendError::Unreachable { .. }
        )
    }

    /// A short label for counting failures by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendError::RateLimited { .. } => "rate_limited",
            BackendError::Server { .. } => "server_error",
            BackendError::Timeout(_) => "timeout",
            BackendError::Connection(_) => "connection",
            BackendError::BadBody(_) => "bad_body",
            BackendError::TooLarge { .. } => "too_large",
            BackendError::ContextLength(_) => "context_length",
            BackendError::Fatal { .. } | BackendError::Unreachable { .. } => "fatal",
        }
    }
}
