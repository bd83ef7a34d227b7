//! What the runs built from stage passes share (`chat.rs`, `evolve.rs`, `chain_workers.rs`):
//! the lock of a run one process drives ([`driver_lock`] on Postgres: evolve, whose rounds
//! wait for each other), its stored replies read back ([`first_choice`]) and each pass counted
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

/// The first choice of a stored request, when it has a reply: its text and its reasoning
/// ('' when none).
pub(crate) fn first_choice(r: &StoredRequest) -> Option<(String, String)> {
    if r.status != RequestStatus::Done {
        return None;
    }
    let texts: Vec<String> = serde_json::from_str(r.response.as_deref()?).ok()?;
    let reasoning: Vec<String> = r
        .reasoning
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let text = texts.into_iter().next()?;
    Some((text, reasoning.into_iter().next().unwrap_or_default()))
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
