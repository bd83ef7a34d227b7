//! instill-generator: seed tasks in, curated instruction pairs out.
//!
//! - [`Backend`]: the models a run can use ([`OpenAiBackend`]: any OpenAI-compatible API), with
//!   errors classified by what to do next ([`BackendError`]).
//! - [`run`]: the resumable run loop (deterministic prompts per request index, bounded
//!   concurrency, RPM/TPM limits, retries with full-jitter backoff honouring `Retry-After`,
//!   acceptance in `(idx, item)` order through [`Acceptor`], batched writes).
//!
//! - [`local`]: a candle model in-process (HF directories and GGUF files), batched on its own
//!   thread, behind the same [`Backend`].
//!
//! - [`run_worker`]: the same run shared by many processes on Postgres (claims with leases, one
//!   acceptor under an advisory lock).
//!
//! - [`run_chat`]: multi-turn self-chat (a user simulator and an assistant, K exchanges per
//!   conversation, one record each), turn by turn on the stage engine, resumable mid-conversation.
//!
//! - [`run_magpie`]: Magpie (no seeds: the model continues the text before a user's turn of its
//!   chat template, [`MagpieTemplate`], then answers what it wrote), on the same turn engine.
//!
//! - [`run_stage`]: one prompt per stored item (records to score, questions to answer, answers
//!   to grade) on the same engine, each reply stored before it is used, resumable by name.
//!
//! Layout: `completion.rs` (the leaf every backend speaks: request, reply, errors), `backend.rs`
//! (the enum over them), `openai.rs`, `endpoint.rs` (the server's address: loopback or not, reached
//! or not), `local/` (models); `limiter.rs`, `retry.rs`, `sampling.rs` (the
//! mechanics); `accept.rs` (rules and dedup per task); `run.rs` (a run's settings,
//! counters, errors and steps), `run_loop.rs` (the loop struct both drivers share: setup, dispatch,
//! events, teardown), `single.rs` (one process, in-order acceptance), `workers.rs` (the
//! shared-run worker), `turns.rs` (items of sequential requests on `stage.rs`),
//! `chat.rs` (self-chat on it), `magpie.rs` and
//! `magpie_template.rs` (Magpie on chat's turn engine).

mod accept;
mod backend;
mod chain_workers;
mod chat;
mod completion;
mod driven;
mod endpoint;
mod evolve;
mod limiter;
pub mod local;
mod magpie;
mod magpie_template;
mod openai;
mod pairs;
mod retry;
mod run;
mod run_loop;
mod sampling;
mod single;
mod stage;
mod turns;
mod workers;

pub use accept::{Acceptor, Judged};
pub use backend::Backend;
pub use chat::{ChatConfig, run_chat};
pub use completion::{Api, BackendError, Choice, Completion, CompletionRequest};
pub use endpoint::{CONNECT_GRACE, is_loopback};
pub use evolve::{EvolveConfig, EvolveEnding, EvolveReport, PoolItem, run_evolve};
pub use limiter::RateLimiter;
pub use local::{LocalBackend, LocalConfig, LocalError};
pub use magpie::{MagpieConfig, run_magpie};
pub use magpie_template::{MagpieTemplate, MagpieTemplateError};
pub use openai::{
    DEFAULT_MAX_BODY_BYTES, MAX_REPORTED_TOKENS, OpenAiBackend, OpenAiConfig, url_has_credentials,
};
pub use pairs::{PairsConfig, PairsEnding, PairsItem, PairsProgress, PairsReport, run_pairs};
pub use retry::RetryPolicy;
pub use run::{
    Ending, GenerateError, Progress, RequestParams, RunConfig, RunReport, Sending, fingerprint,
};
pub use single::run;
pub use stage::{StageConfig, StageEnding, StageItem, StageProgress, StageReport, run_stage};
pub use workers::{run_worker, worker_name};
