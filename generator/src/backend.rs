//! The backend every model sits behind: one variant per kind of model server, dispatching to
//! it; the types they share (request, reply, errors) live in the leaf module `completion`.

use std::collections::BTreeMap;

use crate::completion::{BackendError, Completion, CompletionRequest};
use crate::local::LocalBackend;
use crate::openai::OpenAiBackend;

/// A model to complete prompts with. One variant per kind of model server; the run loop knows
/// only this type.
#[derive(Debug, Clone)]
pub enum Backend {
    /// Any OpenAI-compatible HTTP API (OpenAI, DeepSeek, vLLM, Ollama, llama.cpp's server…).
    OpenAi(OpenAiBackend),
    /// A local model run in-process (candle or llama.cpp).
    Local(LocalBackend),
}

impl Backend {
    /// Completes one request.
    pub async fn complete(&self, request: &CompletionRequest) -> Result<Completion, BackendError> {
        match self {
            Backend::OpenAi(b) => {
                let result = b.complete(request).await;
                if let Err(e) = &result {
                    b.contact().failed(e.kind());
                }
                result
            }
            Backend::Local(b) => b.complete(request).await,
        }
    }

    /// Failed attempts so far by kind, as they happen (retries included), over every clone of
    /// this backend: for progress output while requests are still being retried.
    pub fn failed_attempts(&self) -> BTreeMap<&'static str, u64> {
        match self {
            Backend::OpenAi(b) => b.contact().failures(),
            Backend::Local(_) => BTreeMap::new(),
        }
    }

    /// The model name, as recorded with each request.
    pub fn model(&self) -> &str {
        match self {
            Backend::OpenAi(b) => b.model(),
            Backend::Local(b) => b.model(),
        }
    }
}
