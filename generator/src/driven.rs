//! What the runs built from stage passes share (`chat.rs`, `evolve.rs`, `chain_workers.rs`):
//! the lock of a run one process drives ([`driver_lock`] on Postgres: evolve, whose rounds
//! wait for each other), its stored replies read back ([`first_reply`]) and each pass counted
//! into the run's counters ([`with_stage`]).

use std::time::Duration;

use instill_core::RequestStatus;
use instill_storage::{AcceptorLock, Db, StoredRequest};

use crate::run::{GenerateError, Progress};
use crate::stage::StageProgress;

/// Attempts at the driver lock, 250 ms apart.
const LOCK_TRIES: u32 = 4;

/// One process per run on Postgres (evolve: a round's pool is what the round before it
/// accepted, in order, so claims by many workers would not help, and two drivers would judge
/// the same items). A lock still held a moment
/// after its process was killed (until the server notices the closed connection) is waited
/// for, briefly. SQLite needs none (the command holds the file's writer lock).
pub(crate) async fn driver_lock(
    db: &Db,
    run_id: i64,
    name: &str,
) -> Result<Option<AcceptorLock>, GenerateError> {
    if db.backend() != instill_storage::Backend::Postgres {
        return Ok(None);
    }
    for _ in 0..LOCK_TRIES {
        if let Some(lock) = db.try_driver_lock(run_id).await? {
            return Ok(Some(lock));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(GenerateError::OneProcess(name.to_string()))
}

/// One stored reply (its first choice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The answer's text.
    pub(crate) text: String,
    /// The reasoning before it ('' when none).
    pub(crate) reasoning: String,
    /// Why it ended (`stop`, `length`, …; '' when the server did not say).
    pub(crate) finish_reason: String,
}

impl Reply {
    /// Whether it was cut off at the token limit.
    pub(crate) fn cut_off(&self) -> bool {
        self.finish_reason == "length"
    }
}

/// The first choice of a stored request, when it has a reply.
pub(crate) fn first_reply(r: &StoredRequest) -> Option<Reply> {
    if r.status != RequestStatus::Done {
        return None;
    }
    let first = |json: Option<&str>| -> String {
        json.and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default()
    };
    let texts: Vec<String> = serde_json::from_str(r.response.as_deref()?).ok()?;
    Some(Reply {
        text: texts.into_iter().next()?,
        reasoning: first(r.reasoning.as_deref()),
        finish_reason: first(r.finish_reason.as_deref()),
    })
}

/// The run's counters before a stage, plus what the stage did so far.
pub(crate) fn with_stage(base: &Progress, s: &StageProgress) -> Progress {
    let mut p = base.clone();
    p.requests_ok += s.answered_now;
    p.requests_failed += s.failed_now;
    p.retries += s.retries;
    p.sent_now += s.sent_now;
    p.prompt_tokens = p.prompt_tokens.saturating_add(s.prompt_tokens);
    p.completion_tokens = p.completion_tokens.saturating_add(s.completion_tokens);
    for (k, n) in &s.errors {
        *p.errors.entry(k.clone()).or_default() += n;
    }
    p
}
