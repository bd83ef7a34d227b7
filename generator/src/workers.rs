//! One worker of a run shared by many processes (Postgres): it claims request indices under a
//! lease, sends them and stores each reply at once; whichever worker holds the run's advisory
//! lock also accepts the stored replies in `(idx, item)` order, exactly as a single process
//! would, so the records are the same however many workers there are and whichever die. The
//! acceptor proves in every flush that the run is still its own (the run's epoch), and moves the
//! run's frontier, from which every worker claims: a stopped worker's released indices, and
//! any index below the window with no claim and no reply, are claimed again at once.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instill_core::{RequestStatus, RunStatus, now_ms};
use instill_storage::{AcceptorLock, Db};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::accept::{Acceptor, Key};
use crate::backend::{Backend, BackendError};
use crate::limiter::RateLimiter;
use crate::run::{
    Batch, Ending, Finished, GenerateError, Progress, Restored, RunConfig, RunReport, accept_one,
    add_usage, dispatch, failed_row, from_stored, open_run, request_row, restore, write_batch,
};

/// The acceptor's state while this worker holds the run.
struct Accepting {
    _lock: AcceptorLock,
    /// The run's epoch this worker set when it took the run over: every flush proves it.
    epoch: i64,
    acceptor: Acceptor,
    key_ids: FxHashMap<Key, i64>,
    progress: Progress,
    next_idx: i64,
    skip: usize,
    /// The first request not finished (all of its tasks judged): the run's frontier.
    frontier: i64,
    /// The frontier last written to the run.
    written: Option<i64>,
}

/// What a round of acceptance came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Going,
    Target,
    /// Another worker took the run over: this one accepts no more.
    Fenced,
}

async fn become_acceptor(
    db: &Db,
    run_id: i64,
    cfg: &RunConfig,
    lock: AcceptorLock,
) -> Result<Accepting, GenerateError> {
    // Take the run first, then read it: whatever an earlier acceptor flushed is committed by
    // now, and nothing it flushes later can commit.
    let epoch = db.take_run(run_id).await?;
    let Restored {
        progress,
        acceptor,
        key_ids,
        ..
    } = restore(db, run_id, cfg).await?;
    let position = db.run_position(run_id).await?;
    let (_, frontier) = db.run_frontier(run_id).await?;
    // Acceptance goes on at the frontier, or inside the request whose tasks were judged in part
    // (where the target was reached, or a run written before the frontier existed).
    let (next_idx, skip) = match position {
        Some((idx, item)) if idx >= frontier => (idx, item as usize + 1),
        _ => (frontier, 0),
    };
    Ok(Accepting {
        _lock: lock,
        epoch,
        acceptor,
        key_ids,
        progress,
        next_idx,
        skip,
        frontier: next_idx,
        written: None,
    })
}

/// Accepts the stored replies that come next in order.
async fn accept_stored(
    db: &Db,
    run_id: i64,
    cfg: &RunConfig,
    a: &mut Accepting,
) -> Result<Round, GenerateError> {
    let mut batch = Batch::default();
    let mut generated = Vec::new();
    let mut done = a.progress.accepted >= cfg.target;
    for r in db.requests_from(run_id, a.next_idx).await? {
        if done || r.idx != a.next_idx || r.status != RequestStatus::Done {
            break;
        }
        let skip = std::mem::take(&mut a.skip);
        let f = from_stored(&r, skip);
        a.next_idx += 1;
        done = accept_one(
            cfg,
            f,
            &mut a.acceptor,
            &mut batch,
            &mut a.progress,
            &mut generated,
        )
        .map_err(GenerateError::Fatal)?;
        // At the target the request may hold tasks not judged yet: the frontier stays on it.
        if !done {
            a.frontier = a.next_idx;
        }
        if batch.records.len() >= 2048 && !write_held(db, run_id, a, &mut batch).await? {
            return Ok(Round::Fenced);
        }
    }
    if !write_held(db, run_id, a, &mut batch).await? {
        return Ok(Round::Fenced);
    }
    Ok(if done { Round::Target } else { Round::Going })
}

/// Writes the batch and the frontier in one transaction that first proves this worker still
/// holds the run; returns false (and writes nothing) when it does not.
async fn write_held(
    db: &Db,
    run_id: i64,
    a: &mut Accepting,
    batch: &mut Batch,
) -> Result<bool, GenerateError> {
    if batch.records.is_empty() && batch.requests.is_empty() && a.written == Some(a.frontier) {
        return Ok(true);
    }
    let mut w = db.writer().await?;
    if !w.hold_run(run_id, a.epoch, a.frontier).await? {
        return Ok(false);
    }
    let new_ids = write_batch(db, &mut w, run_id, batch, &a.key_ids).await?;
    w.commit().await?;
    a.key_ids.extend(new_ids);
    batch.requests.clear();
    a.written = Some(a.frontier);
    Ok(true)
}

/// A name for this worker that no other has: `host-pid-random` (containers repeat host names
/// and run as PID 1).
pub fn worker_name(host: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS once per thread and moves on with every value.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{host}-{}-{:08x}", std::process::id(), h.finish() as u32)
}

/// Runs this process as one worker of the run until the target is reached (by any worker's
/// replies), `max_requests`, or `shutdown`. `lease` is how long a claim lives without a
/// heartbeat: a dead worker's requests go to others after it.
pub async fn run_worker(
    db: &Db,
    backend: &Backend,
    cfg: RunConfig,
    lease: Duration,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    if cfg.seeds.is_empty() {
        return Err(GenerateError::Config("no seed tasks in this language: import some with `instill seeds import` (or --builtin)".into()));
    }
    if cfg.generated_per_prompt > 0 {
        return Err(GenerateError::Config(
            "--generated-per-prompt needs the acceptor's pool in every prompt: on Postgres (shared runs) keep it at 0".into(),
        ));
    }
    // Several workers may start the same run at once: one creates it, the others find it.
    let run_id = match open_run(db, &cfg, backend.model()).await {
        Ok(id) => id,
        Err(GenerateError::Storage(_)) => open_run(db, &cfg, backend.model()).await?,
        Err(e) => return Err(e),
    };
    let Restored { mut progress, .. } = restore(db, run_id, &cfg).await?;
    let lease_ms = lease.as_millis().max(1000) as i64;
    let me = cfg.worker.clone();
    let limiter = Arc::new(RateLimiter::new(cfg.rpm, cfg.tpm));
    let backend = Arc::new(backend.clone());
    let cfg = Arc::new(cfg);
    let concurrency = cfg.concurrency.max(1);
    let window = (concurrency as i64 * 4).max(64);
    let (tx, mut rx) = mpsc::channel::<Finished>(concurrency * 2);
    let mut tasks = JoinSet::new();
    let mut in_flight = 0usize;
    let mut accepting: Option<Accepting> = None;
    let (mut sent, mut stored) = (0i64, 0i64);
    let mut last_lock_try = Instant::now() - Duration::from_secs(1);
    let mut last_beat = Instant::now() - Duration::from_secs(60);
    let mut fatal: Option<BackendError> = None;
    let mut ending: Option<Ending> = None;
    tokio::pin!(shutdown);

    let mut last_tick = Instant::now() - Duration::from_secs(1);
    let mut frontier = 0i64;
    let mut ticks = 0u64;
    let tick_every = Duration::from_millis(100);
    while ending.is_none() {
        // Bookkeeping at most every 100 ms, whatever the reply rate: the lock, acceptance, the
        // target, how far acceptance got, heartbeats.
        let tick = last_tick.elapsed() >= tick_every;
        if tick {
            last_tick = Instant::now();
            // The acceptor lock: whoever holds it judges; the others keep trying (a dead
            // acceptor's connection closes and frees it).
            if accepting.is_none() && last_lock_try.elapsed() >= Duration::from_millis(250) {
                last_lock_try = Instant::now();
                if let Some(lock) = db.try_acceptor_lock(run_id).await? {
                    accepting = Some(become_acceptor(db, run_id, &cfg, lock).await?);
                }
            }
            ticks += 1;
            let round = match accepting.as_mut() {
                Some(a) => Some(accept_stored(db, run_id, &cfg, a).await?),
                None => None,
            };
            if round == Some(Round::Fenced) {
                accepting = None;
                tracing::warn!("another worker took over acceptance of run {run_id}");
            }
            let reached = match accepting.as_ref() {
                Some(a) => {
                    progress.accepted = a.progress.accepted;
                    frontier = a.next_idx;
                    round == Some(Round::Target)
                }
                // Not accepting: the acceptor marks the run done at the target and moves its
                // frontier (a key lookup); the count, a scan, is refreshed for the progress bar
                // once a second.
                None => {
                    if ticks % 10 == 1 {
                        progress.accepted = db.run_accepted(run_id).await? as u64;
                    }
                    let (status, f) = db.run_frontier(run_id).await?;
                    frontier = f;
                    status == RunStatus::Done
                }
            };
            if reached {
                ending = Some(Ending::Target);
                break;
            }
            if last_beat.elapsed() >= Duration::from_millis((lease_ms / 3) as u64) {
                last_beat = Instant::now();
                db.extend_leases(run_id, &me, now_ms() + lease_ms).await?;
                db.worker_heartbeat(run_id, &me, accepting.is_some(), sent, stored, now_ms())
                    .await?;
            }
            on_progress(&progress);
        }
        // Claim and send, up to the concurrency, not too far ahead of acceptance (the frontier
        // moves with every judged reply, tasks or none); in batches (a quarter of the
        // concurrency) between ticks.
        let budget = cfg.max_requests.map(|m| m as i64);
        let total = progress.requests_ok as i64 + progress.requests_failed as i64;
        let room = (concurrency - in_flight) as i64;
        let worth = tick || room >= (concurrency as i64 / 4).max(1);
        if room > 0 && worth && budget.is_none_or(|b| total + (in_flight as i64) < b) {
            let n = match budget {
                Some(b) => room.min(b - total - in_flight as i64),
                None => room,
            };
            let claimed = db
                .claim_requests(
                    run_id,
                    &me,
                    n,
                    now_ms() + lease_ms,
                    frontier..frontier + window,
                    now_ms(),
                )
                .await?;
            for idx in claimed {
                dispatch(&mut tasks, &tx, &backend, &limiter, &cfg, idx, &[])?;
                in_flight += 1;
                sent += 1;
                progress.sent_now += 1;
            }
        }
        if tick && in_flight == 0 && budget.is_some_and(|b| total >= b) {
            ending = Some(Ending::MaxRequests);
            break;
        }
        let until_tick = tick_every.saturating_sub(last_tick.elapsed());
        tokio::select! {
            biased;
            () = &mut shutdown => ending = Some(Ending::Interrupted),
            f = rx.recv() => {
                let Some(f) = f else { continue };
                // Store whatever has arrived, in one transaction.
                let mut arrived = vec![f];
                while let Ok(f) = rx.try_recv() {
                    arrived.push(f);
                }
                in_flight -= arrived.len();
                stored += store_replies(db, run_id, &cfg, arrived, &mut progress, &mut fatal).await?;
                if fatal.is_some() {
                    ending = Some(Ending::Interrupted);
                }
            }
            () = tokio::time::sleep(until_tick) => {}
        }
    }
    tasks.abort_all();
    let mut arrived = Vec::new();
    while let Ok(f) = rx.try_recv() {
        arrived.push(f);
    }
    stored += store_replies(db, run_id, &cfg, arrived, &mut progress, &mut fatal).await?;
    let mut still_accepting = false;
    if let Some(a) = accepting.as_mut() {
        still_accepting = accept_stored(db, run_id, &cfg, a).await? != Round::Fenced;
    }
    if let Some(a) = accepting.as_ref().filter(|_| still_accepting) {
        progress.accepted = a.progress.accepted;
        progress.rejected = a.progress.rejected.clone();
        progress.parse_issues = a.progress.parse_issues;
        progress.truncated = a.progress.truncated;
    } else {
        progress.accepted = db.run_accepted(run_id).await? as u64;
    }
    db.release_claims(run_id, &me).await?;
    db.worker_heartbeat(run_id, &me, false, sent, stored, now_ms())
        .await?;
    let ending = ending.unwrap_or(Ending::MaxRequests);
    if ending == Ending::Target {
        db.set_run_status(run_id, RunStatus::Done, now_ms()).await?;
    }
    on_progress(&progress);
    if let Some(e) = fatal {
        return Err(GenerateError::Fatal(e));
    }
    Ok(RunReport {
        run_id,
        progress,
        ending,
    })
}

/// Stores replies (and failures, which free their requests for a later claim) in one
/// transaction; returns how many replies were stored.
async fn store_replies(
    db: &Db,
    run_id: i64,
    cfg: &RunConfig,
    arrived: Vec<Finished>,
    progress: &mut Progress,
    fatal: &mut Option<BackendError>,
) -> Result<i64, GenerateError> {
    if arrived.is_empty() {
        return Ok(0);
    }
    let mut rows = Vec::with_capacity(arrived.len());
    for f in &arrived {
        let mut row = reply_row(cfg, f, progress, fatal);
        row.run_id = run_id;
        rows.push(row);
    }
    let ok = rows
        .iter()
        .filter(|r| r.status == RequestStatus::Done)
        .count() as i64;
    let mut w = db.writer().await?;
    w.store_requests(&rows).await?;
    w.commit().await?;
    Ok(ok)
}

/// The row of one finished request, counted into `progress`.
fn reply_row(
    cfg: &RunConfig,
    f: &Finished,
    progress: &mut Progress,
    fatal: &mut Option<BackendError>,
) -> instill_storage::NewRequest {
    for kind in &f.failures {
        *progress.errors.entry((*kind).to_string()).or_default() += 1;
    }
    progress.retries += u64::from(f.attempts.saturating_sub(1));
    match &f.outcome {
        Ok(c) => {
            progress.requests_ok += 1;
            add_usage(progress, c);
            request_row(cfg, f, c)
        }
        Err(e) => {
            if !e.retryable() {
                *fatal = Some(e.clone());
            }
            *progress.errors.entry(e.kind().to_string()).or_default() += 1;
            progress.requests_failed += 1;
            failed_row(cfg, f, e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_differ_on_the_same_host_and_pid() {
        let (a, b) = (worker_name("box"), worker_name("box"));
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert!(
                n.starts_with(&format!("box-{}-", std::process::id())),
                "{n}"
            );
        }
    }
}
