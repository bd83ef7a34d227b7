//! One worker of a run shared by many processes (Postgres): it claims request indices under a
//! lease, sends them and stores each reply at once; whichever worker holds the run's advisory
//! lock also accepts the stored replies in `(idx, item)` order, exactly as a single process
//! would, so the records are the same however many workers there are and whichever die. The
//! acceptor proves in every flush that the run is still its own (the run's epoch), and moves the
//! run's frontier, from which every worker claims: a stopped worker's released indices, and
//! any index below the window with no claim and no reply, are claimed again at once.

use std::future::Future;
use std::time::{Duration, Instant};

use instill_core::{RequestStatus, RunStatus, now_ms};
use instill_storage::{AcceptorLock, Claim, Db};
use rustc_hash::FxHashMap;

use crate::accept::{Acceptor, Key};
use crate::backend::Backend;
use crate::completion::BackendError;
use crate::run::{
    Batch, Ending, Finished, GenerateError, Progress, Restored, RunConfig, RunReport, accept_one,
    add_usage, failed_row, from_stored, request_row, restore, write_batch,
};
use crate::run_loop::{Event, Loop, Sharing, Ticker};

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
    let held = write_fenced(db, run_id, (a.epoch, a.frontier), batch, &mut a.key_ids).await?;
    if held {
        a.written = Some(a.frontier);
    }
    Ok(held)
}

/// Writes the batch and moves the run's frontier, in one transaction that first proves the run
/// is still at `epoch` (`fence`: the epoch, the new frontier); returns false, writing nothing,
/// when another acceptor took it over. The new records' ids join `key_ids`.
pub(crate) async fn write_fenced(
    db: &Db,
    run_id: i64,
    (epoch, frontier): (i64, i64),
    batch: &mut Batch,
    key_ids: &mut FxHashMap<Key, i64>,
) -> Result<bool, GenerateError> {
    let mut w = db.writer().await?;
    if !w.hold_run(run_id, epoch, frontier).await? {
        return Ok(false);
    }
    let new_ids = write_batch(db, &mut w, run_id, batch, key_ids).await?;
    w.commit().await?;
    key_ids.extend(new_ids);
    batch.requests.clear();
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
    on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    // Bookkeeping at most every 100 ms, whatever the reply rate.
    let ticker = Ticker::due_now(Duration::from_millis(100));
    let (lp, _) = Loop::open(
        db,
        backend,
        cfg,
        Sharing::Shared,
        shutdown,
        on_progress,
        ticker,
    )
    .await?;
    let mut worker = Worker {
        lease_ms: lease.as_millis().max(1000) as i64,
        me: lp.cfg.send.worker.clone(),
        lp,
        accepting: None,
        sent: 0,
        stored: 0,
        last_lock_try: Instant::now() - Duration::from_secs(1),
        last_beat: Instant::now() - Duration::from_secs(60),
        frontier: 0,
        ticks: 0,
    };
    while worker.lp.ending.is_none() {
        worker.step().await?;
    }
    worker.finish().await
}

/// One worker's part of a shared run: claims, replies stored at once, and acceptance while it
/// holds the run's lock.
struct Worker<'a, S, P> {
    lp: Loop<'a, S, P>,
    /// How long a claim lives without a heartbeat.
    lease_ms: i64,
    /// This worker's name.
    me: String,
    accepting: Option<Accepting>,
    /// Requests this worker sent, and replies it stored.
    sent: i64,
    stored: i64,
    last_lock_try: Instant,
    last_beat: Instant,
    /// The run's frontier as last seen: claims go from there.
    frontier: i64,
    ticks: u64,
}

impl<S, P> Worker<'_, S, P>
where
    S: Future<Output = ()>,
    P: FnMut(&Progress),
{
    /// One turn: bookkeeping when due, claims, then wait for replies, the ticker or the
    /// shutdown signal.
    async fn step(&mut self) -> Result<(), GenerateError> {
        let tick = self.lp.ticker.due();
        if tick {
            self.lp.ticker.mark();
            if self.bookkeeping().await? {
                self.lp.ending = Some(Ending::Target);
                return Ok(());
            }
        }
        let budget = self.lp.cfg.max_requests.map(|m| m as i64);
        let total = self.lp.progress.requests_ok as i64 + self.lp.progress.requests_failed as i64;
        self.claim_and_send(tick, budget, total).await?;
        if tick && self.lp.in_flight == 0 && budget.is_some_and(|b| total >= b) {
            self.lp.ending = Some(Ending::MaxRequests);
            return Ok(());
        }
        match self.lp.next_event().await {
            Event::Shutdown => self.lp.ending = Some(Ending::Interrupted),
            Event::Arrived(f) => {
                // Store whatever has arrived, in one transaction.
                let mut arrived = vec![f];
                arrived.extend(self.lp.arrived());
                self.lp.in_flight -= arrived.len();
                self.store(arrived).await?;
                if self.lp.fatal.is_some() {
                    self.lp.ending = Some(Ending::Interrupted);
                }
            }
            Event::Idle => {}
        }
        Ok(())
    }

    /// The lock, acceptance, the target, how far acceptance got, heartbeats, progress. Returns
    /// whether the run reached its target.
    async fn bookkeeping(&mut self) -> Result<bool, GenerateError> {
        let (db, run_id) = (self.lp.db, self.lp.run_id);
        // The acceptor lock: whoever holds it judges; the others keep trying (a dead
        // acceptor's connection closes and frees it).
        if self.accepting.is_none() && self.last_lock_try.elapsed() >= Duration::from_millis(250) {
            self.last_lock_try = Instant::now();
            if let Some(lock) = db.try_acceptor_lock(run_id).await? {
                self.accepting = Some(become_acceptor(db, run_id, &self.lp.cfg, lock).await?);
            }
        }
        self.ticks += 1;
        let round = match self.accepting.as_mut() {
            Some(a) => Some(accept_stored(db, run_id, &self.lp.cfg, a).await?),
            None => None,
        };
        if round == Some(Round::Fenced) {
            self.accepting = None;
            tracing::warn!("another worker took over acceptance of run {run_id}");
        }
        let reached = match self.accepting.as_ref() {
            Some(a) => {
                self.lp.progress.accepted = a.progress.accepted;
                self.frontier = a.next_idx;
                round == Some(Round::Target)
            }
            // Not accepting: the acceptor marks the run done at the target and moves its
            // frontier (a key lookup); the count, a scan, is refreshed for the progress bar
            // once a second.
            None => {
                if self.ticks % 10 == 1 {
                    self.lp.progress.accepted = db.run_accepted(run_id).await? as u64;
                }
                let (status, f) = db.run_frontier(run_id).await?;
                self.frontier = f;
                status == RunStatus::Done
            }
        };
        if reached {
            return Ok(true);
        }
        if self.last_beat.elapsed() >= Duration::from_millis((self.lease_ms / 3) as u64) {
            self.last_beat = Instant::now();
            let me = &self.me;
            db.extend_leases(run_id, me, now_ms() + self.lease_ms)
                .await?;
            db.worker_heartbeat(
                run_id,
                me,
                self.accepting.is_some(),
                self.sent,
                self.stored,
                now_ms(),
            )
            .await?;
        }
        self.lp.show_progress();
        Ok(false)
    }

    /// Claims and sends, up to the concurrency, not too far ahead of acceptance (the frontier
    /// moves with every judged reply, tasks or none); in batches (a quarter of the concurrency)
    /// between ticks.
    async fn claim_and_send(
        &mut self,
        tick: bool,
        budget: Option<i64>,
        total: i64,
    ) -> Result<(), GenerateError> {
        let concurrency = self.lp.concurrency;
        let in_flight = self.lp.in_flight as i64;
        let room = (concurrency - self.lp.in_flight) as i64;
        let worth = tick || room >= (concurrency as i64 / 4).max(1);
        if room == 0 || !worth || budget.is_some_and(|b| total + in_flight >= b) {
            return Ok(());
        }
        let n = match budget {
            Some(b) => room.min(b - total - in_flight),
            None => room,
        };
        let claimed = self
            .lp
            .db
            .claim_requests(
                self.lp.run_id,
                &Claim {
                    worker: &self.me,
                    n,
                    lease_until: now_ms() + self.lease_ms,
                    range: self.frontier..self.frontier + self.lp.window,
                    chain: 1,
                },
                now_ms(),
            )
            .await?;
        for idx in claimed {
            self.lp.dispatch(idx, &[])?;
            self.sent += 1;
        }
        Ok(())
    }

    /// Stores replies and counts them.
    async fn store(&mut self, arrived: Vec<Finished>) -> Result<(), GenerateError> {
        let (db, run_id) = (self.lp.db, self.lp.run_id);
        self.stored += store_replies(
            db,
            run_id,
            &self.lp.cfg,
            arrived,
            &mut self.lp.progress,
            &mut self.lp.fatal,
        )
        .await?;
        Ok(())
    }

    /// Stores what arrived, accepts it while still holding the run, gives the claims back and
    /// ends the run.
    async fn finish(mut self) -> Result<RunReport, GenerateError> {
        let (db, run_id) = (self.lp.db, self.lp.run_id);
        let arrived = self.lp.stop_sending();
        self.store(arrived).await?;
        let mut still_accepting = false;
        if let Some(a) = self.accepting.as_mut() {
            still_accepting = accept_stored(db, run_id, &self.lp.cfg, a).await? != Round::Fenced;
        }
        let progress = &mut self.lp.progress;
        if let Some(a) = self.accepting.as_ref().filter(|_| still_accepting) {
            progress.accepted = a.progress.accepted;
            progress.rejected = a.progress.rejected.clone();
            progress.parse_issues = a.progress.parse_issues;
            progress.truncated = a.progress.truncated;
        } else {
            progress.accepted = db.run_accepted(run_id).await? as u64;
        }
        db.release_claims(run_id, &self.me).await?;
        db.worker_heartbeat(run_id, &self.me, false, self.sent, self.stored, now_ms())
            .await?;
        self.lp.finish().await
    }
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
            request_row(&cfg.send.request, &cfg.send.worker, f, c)
        }
        Err(e) => {
            if !e.retryable() {
                *fatal = Some(e.clone());
            }
            *progress.errors.entry(e.kind().to_string()).or_default() += 1;
            progress.requests_failed += 1;
            failed_row(&cfg.send.request, &cfg.send.worker, f, e)
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
