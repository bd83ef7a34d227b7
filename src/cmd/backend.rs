//! The model a command sends prompts to, from the flags every such command shares
//! ([`ModelArgs`], [`SendArgs`]): the model named (a server's model, or a local path or Hugging
//! Face id for candle and llama-cpp), the API key, and the backend opened. `generate`, `score` and `eval` all
//! go through here.

use std::time::Duration;

use anyhow::Context;
use instill_generator::local::{Engine, LocalError};
use instill_generator::{Backend, LocalBackend, LocalConfig, OpenAiBackend, OpenAiConfig};

use crate::cli::{BackendArg, GlobalArgs, ModelArgs, SendArgs};
use crate::cmd::flags;
use crate::progress;

/// The model `flag` names, checked: required, and for candle a local path (a Hugging Face id is
/// found in the cache, or downloaded into it).
pub async fn resolve_model(
    global: &GlobalArgs,
    server: &ModelArgs,
    model: Option<&str>,
    flag: &str,
) -> anyhow::Result<String> {
    let model = model.map(str::to_string).ok_or_else(|| match server.backend {
        BackendArg::Openai => anyhow::anyhow!("{flag} NAME is required: the model your server serves (e.g. gpt-4o-mini, deepseek-chat, qwen2.5:7b)"),
        BackendArg::Candle => anyhow::anyhow!("{flag} PATH is required: a Hugging Face model directory or a .gguf file"),
        BackendArg::LlamaCpp => anyhow::anyhow!("{flag} PATH is required: a .gguf file"),
    })?;
    match server.backend {
        BackendArg::Candle | BackendArg::LlamaCpp => {
            let path = crate::hub::locate(
                &std::path::PathBuf::from(model),
                flag,
                server.revision.as_deref(),
                instill_models::hub::Want::Model,
                global,
            )
            .await?;
            path.into_os_string()
                .into_string()
                .map_err(|p| anyhow::anyhow!("{flag} {}: the path is not UTF-8", p.display()))
        }
        BackendArg::Openai => match &server.revision {
            Some(rev) => anyhow::bail!(
                "--revision {rev}: only for a local backend, candle or llama-cpp (a Hugging Face id as {flag})"
            ),
            None => Ok(model),
        },
    }
}

/// How a backend reaches its server: the API key, and how long connection failures may go on
/// before a first answer. Read (and checked) before a command prints anything.
#[derive(Debug, Clone)]
pub struct Access {
    key: Option<String>,
    grace: Duration,
}

/// The API key (see [`api_key`]) and the connection grace (`INSTILL_CONNECT_GRACE`).
pub fn access(server: &ModelArgs) -> anyhow::Result<Access> {
    Ok(Access {
        key: api_key(server)?,
        grace: connect_grace()?,
    })
}

/// The API key from the variable `--api-key-env` names (None for candle). None is fine for a
/// server on this machine or a URL with a user:password; for any other, a run would only
/// collect 401s (or, with no route, connection errors), so it stops here, saying what to do. A
/// key beside a user:password in the URL is refused: each would be an Authorization header.
fn api_key(server: &ModelArgs) -> anyhow::Result<Option<String>> {
    if server.backend != BackendArg::Openai {
        return Ok(None);
    }
    let key = std::env::var(&server.api_key_env)
        .ok()
        .filter(|k| !k.is_empty());
    let basic = instill_generator::url_has_credentials(&server.base_url);
    if key.is_some() && basic {
        anyhow::bail!(
            "--base-url {url} carries a user:password (sent as Basic auth) and {var} is set (sent as a Bearer token), but a request carries one Authorization header: remove the user:password from the URL, or unset {var} (or set it empty) to authenticate with the URL's",
            var = server.api_key_env,
            url = instill_core::redact_url(&server.base_url),
        );
    }
    if key.is_none() && !basic && !instill_generator::is_loopback(&server.base_url) {
        anyhow::bail!(
            "no API key: {var} is not set, and {url} is not a server on this machine. Export {var}=YOUR_KEY (any value for a remote server that takes no key; or name another variable with --api-key-env NAME), or point --base-url (or OPENAI_BASE_URL) at a local server, which needs no key: http://localhost:11434/v1 (Ollama), http://localhost:8000/v1 (vLLM), http://localhost:8080/v1 (llama.cpp)",
            var = server.api_key_env,
            url = instill_core::redact_url(&server.base_url),
        );
    }
    Ok(key)
}

/// The model the flags name: an HTTP client, or a local model loaded (on a blocking thread;
/// `seed` seeds its sampling).
pub async fn open(
    server: &ModelArgs,
    send: &SendArgs,
    model: String,
    access: Access,
    seed: u64,
) -> anyhow::Result<Backend> {
    Ok(match server.backend {
        BackendArg::Openai => Backend::OpenAi(
            OpenAiBackend::new(OpenAiConfig {
                base_url: server.base_url.clone(),
                api_key: access.key,
                model,
                api: server.api.into(),
                timeout: Duration::from_secs_f64(server.timeout.max(0.001)),
                max_connections: send.concurrency as usize,
                max_body_bytes: server.max_reply_bytes,
                connect_grace: access.grace,
            })
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        BackendArg::Candle | BackendArg::LlamaCpp => {
            let engine = match server.backend {
                BackendArg::LlamaCpp => local_engine_flags(server)?,
                _ => Engine::Candle,
            };
            let config = LocalConfig {
                engine,
                model: model.into(),
                tokenizer: server.tokenizer.clone(),
                device: server.device.clone(),
                dtype: server.dtype.clone(),
                batch_size: server.batch_size as usize,
                dequantize: server.dequantize,
                api: server.api.into(),
                seed,
            };
            let backend = tokio::task::spawn_blocking(move || LocalBackend::start(config))
                .await
                .context("loading the model")?
                .map_err(|e| match e {
                    LocalError::NoChatTemplate => {
                        anyhow::anyhow!("{e}: use --api completion, or a model that ships one")
                    }
                    LocalError::Device(e) => flags::device_error(e),
                    e => anyhow::anyhow!("{e}"),
                })?;
            Backend::Local(backend)
        }
    })
}

/// What the backend talks to, for a command's first line (no key, no password).
pub fn describe(server: &ModelArgs) -> String {
    match server.backend {
        BackendArg::Openai => format!("openai at {}", instill_core::redact_url(&server.base_url)),
        BackendArg::Candle => format!("candle on {}", server.device),
        BackendArg::LlamaCpp => "llama.cpp on cpu".to_string(),
    }
}

/// The llama.cpp engine, with the candle-only flags refused rather than ignored.
fn local_engine_flags(server: &ModelArgs) -> anyhow::Result<Engine> {
    if server.device != "cpu" {
        anyhow::bail!(
            "--device {}: --backend llama-cpp runs on the CPU; use --backend candle for a GPU",
            server.device
        );
    }
    if server.dequantize {
        anyhow::bail!(
            "--dequantize is for --backend candle (llama.cpp runs quantized weights at full speed)"
        );
    }
    Ok(Engine::LlamaCpp)
}

/// The cost of the tokens at the prices the flags give (per 1M tokens), if any price is given.
pub fn cost(send: &SendArgs, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
    match (send.price_in, send.price_out) {
        (None, None) => None,
        (i, o) => Some(
            (prompt_tokens as f64 * i.unwrap_or(0.0) + completion_tokens as f64 * o.unwrap_or(0.0))
                / 1e6,
        ),
    }
}

/// How long connection failures may go on before a first answer until the run stops:
/// `INSTILL_CONNECT_GRACE` seconds, else [`instill_generator::CONNECT_GRACE`].
fn connect_grace() -> anyhow::Result<Duration> {
    Ok(progress::env_seconds("INSTILL_CONNECT_GRACE", true)?
        .unwrap_or(instill_generator::CONNECT_GRACE))
}

/// This machine's name, for the requests table's `worker` column.
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "local".into())
}
