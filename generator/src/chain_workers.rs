//! One worker of a chained run shared by many processes (Postgres): a [`Script`]'s run, whose
//! items (units) each take several requests in order (a self-chat's turns, magpie's instruction
//! and answer), each prompt rendered from the unit's earlier replies. As for generation's workers (`workers.rs`), requests are claimed under a lease (a
//! step only once the step before it has its reply: [`Claim::chain`]), sent, and stored as they
//! arrive; whichever worker holds the run's acceptor lock judges complete units in unit order
//! from the frontier, with the same acceptor and the same writes as one process, proving the
//! run's epoch in every flush. So any number of workers, and kills of any of them, give the
//! records of one uninterrupted process.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use instill_core::{RunStatus, now_ms};
use instill_storage::{AcceptorLock, Claim, Db};
use rustc_hash::FxHashMap;

use crate::accept::{Acceptor, Key};
use crate::backend::Backend;
use crate::driven::{Reply, first_reply, with_stage};
use crate::run::{Batch, Ending, GenerateError, Progress, RunReport, restore_with};
use crate::stage::{Stage, StageConfig, StageItem, Woke, open_stage};
use crate::turns::{Limits, Script, complete, judge_complete_item};
use crate::workers::write_fenced;

/// Runs this process as one worker of the chained run until its target (reached by any
/// worker's replies), `max_requests`, or `shutdown`.
pub(crate) async fn run_chain_worker<C: Script>(
    db: &Db,
    backend: &Backend,
    chain: &C,
    stage: StageConfig,
    shared: Limits,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    let run_id = open_stage(db, &stage, backend.model()).await?;
    let base = restore_with(db, run_id, shared.target, chain.acceptor(), false)
        .await?
        .progress;
    let concurrency = stage.send.concurrency.max(1);
    let me = stage.send.worker.clone();
    let mut w = Worker {
        db,
        chain,
        shared,
        sender: Stage::new(db, run_id, backend, stage),
        me,
        window: 2 * concurrency as i64 + 8,
        judging: None,
        frontier: 0,
        accepted: base.accepted,
        base,
        last_lock_try: Instant::now() - Duration::from_secs(1),
        last_beat: Instant::now() - Duration::from_secs(60),
        last_count: Instant::now() - Duration::from_secs(60),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let ending = match w.drive(&mut shutdown, &mut on_progress).await {
        Ok(ending) => ending,
        Err(e) => {
            w.stop().await?;
            return Err(e);
        }
    };
    w.stop().await?;
    let progress = w.progress();
    on_progress(&progress);
    if let Some(e) = w.sender.fatal.take() {
        return Err(GenerateError::Fatal(e));
    }
    Ok(RunReport {
        run_id,
        progress,
        ending,
    })
}

/// The acceptor's state while this worker holds the run.
struct Judging {
    _lock: AcceptorLock,
    /// The run's epoch this worker set when it took the run over: every flush proves it.
    epoch: i64,
    acceptor: Acceptor,
    key_ids: FxHashMap<Key, i64>,
    progress: Progress,
    /// The first unit not judged yet.
    next: i64,
}

/// One worker's part of a chained run.
struct Worker<'a, C> {
    db: &'a Db,
    chain: &'a C,
    shared: Limits,
    sender: Stage<'a>,
    me: String,
    /// Units ahead of the frontier a worker claims in.
    window: i64,
    judging: Option<Judging>,
    /// The first unit not judged, as last seen.
    frontier: i64,
    /// Units accepted in the run, as last seen.
    accepted: u64,
    /// The run's counters when this process began.
    base: Progress,
    last_lock_try: Instant,
    last_beat: Instant,
    /// When the run's accepted records were last counted (not accepting: for progress only).
    last_count: Instant,
}

/// Bookkeeping (the lock, acceptance, leases, progress) at most this often.
const TICK: Duration = Duration::from_millis(100);

impl<C: Script> Worker<'_, C> {
    async fn drive<S: Future<Output = ()>>(
        &mut self,
        shutdown: &mut Pin<&mut S>,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<Ending, GenerateError> {
        let mut last_tick = Instant::now() - TICK;
        loop {
            if last_tick.elapsed() >= TICK {
                last_tick = Instant::now();
                if self.bookkeeping().await? {
                    return Ok(Ending::Target);
                }
                on_progress(&self.progress());
            }
            if self.sender.fatal.is_some() {
                return Ok(Ending::Interrupted);
            }
            let (sent, budget) = (self.sent(), self.shared.max_requests);
            if budget.is_some_and(|b| sent >= b) && self.sender.in_flight == 0 {
                return Ok(Ending::MaxRequests);
            }
            self.claim_and_send().await?;
            match self
                .sender
                .wait(shutdown, TICK.saturating_sub(last_tick.elapsed()))
                .await
            {
                Woke::Shutdown => return Ok(Ending::Interrupted),
                // Stored at once: the unit's next step becomes claimable.
                Woke::Reply => self.sender.flush().await?,
                Woke::Idle => {}
            }
        }
    }

    /// Requests this process has sent or has in flight.
    fn sent(&self) -> u64 {
        self.sender.progress.sent_now
    }

    /// The lock, acceptance, the target, heartbeats; stores what arrived. Returns whether the
    /// run reached its target.
    async fn bookkeeping(&mut self) -> Result<bool, GenerateError> {
        let (db, run_id) = (self.db, self.sender.run_id);
        self.sender.flush().await?;
        if self.judging.is_none() && self.last_lock_try.elapsed() >= Duration::from_millis(250) {
            self.last_lock_try = Instant::now();
            if let Some(lock) = db.try_acceptor_lock(run_id).await? {
                self.judging = Some(take_over(db, run_id, self.chain, self.shared, lock).await?);
            }
        }
        let reached = match self.judging.as_mut() {
            Some(j) => {
                match judge_complete(db, run_id, self.chain, self.shared, j, self.window).await? {
                    None => {
                        self.judging = None;
                        tracing::warn!("another worker took over acceptance of run {run_id}");
                        false
                    }
                    Some(reached) => {
                        (self.frontier, self.accepted) = (j.next, j.progress.accepted);
                        reached
                    }
                }
            }
            None => {
                let (status, f) = db.run_frontier(run_id).await?;
                self.frontier = f / self.chain.per_item();
                // The acceptor marks the run done at the target and moves its frontier (a key
                // lookup); the count, a scan, is refreshed for progress once a second.
                if self.last_count.elapsed() >= Duration::from_secs(1) {
                    self.last_count = Instant::now();
                    self.accepted = db.run_accepted(run_id).await? as u64;
                }
                status == RunStatus::Done
            }
        };
        if reached {
            db.set_run_status(run_id, RunStatus::Done, now_ms()).await?;
            return Ok(true);
        }
        let lease_ms = self.shared.lease.as_millis().max(1000) as i64;
        if self.last_beat.elapsed() >= Duration::from_millis((lease_ms / 3) as u64) {
            self.last_beat = Instant::now();
            db.extend_leases(run_id, &self.me, now_ms() + lease_ms)
                .await?;
            let p = &self.sender.progress;
            let (sent, stored) = (p.sent_now as i64, p.answered_now as i64);
            db.worker_heartbeat(
                run_id,
                &self.me,
                self.judging.is_some(),
                sent,
                stored,
                now_ms(),
            )
            .await?;
        }
        Ok(false)
    }

    /// Claims the steps whose turn it is, up to the concurrency and the budget, in the window
    /// above the frontier, renders their prompts from the stored replies before them, sends.
    async fn claim_and_send(&mut self) -> Result<(), GenerateError> {
        let concurrency = self.sender.concurrency();
        let room = concurrency.saturating_sub(self.sender.in_flight) as u64;
        let left = self
            .shared
            .max_requests
            .map_or(room, |b| b.saturating_sub(self.sent()).min(room));
        if left == 0 || room < (concurrency as u64 / 4).max(1) {
            return Ok(());
        }
        let per = self.chain.per_item();
        let lease_ms = self.shared.lease.as_millis().max(1000) as i64;
        let claim = Claim {
            worker: &self.me,
            n: left as i64,
            lease_until: now_ms() + lease_ms,
            range: self.frontier * per..(self.frontier + self.window) * per,
            chain: per,
        };
        let claimed = self
            .db
            .claim_requests(self.sender.run_id, &claim, now_ms())
            .await?;
        let (Some(&lo), Some(&hi)) = (claimed.first(), claimed.last()) else {
            return Ok(());
        };
        let stored = self
            .db
            .requests_in(self.sender.run_id, lo / per * per..hi)
            .await?;
        let replies: FxHashMap<i64, Reply> = stored
            .iter()
            .filter_map(|r| first_reply(r).map(|t| (r.idx, t)))
            .collect();
        for idx in claimed {
            let unit = idx / per;
            let earlier = (unit * per..idx)
                .map(|i| replies.get(&i).cloned())
                .collect::<Option<Vec<Reply>>>()
                .ok_or_else(|| GenerateError::Inconsistent {
                    run: self.chain.name().to_string(),
                    message: format!("request {idx} was claimed before the replies it follows"),
                })?;
            // An item that takes no more turns keeps its claim unsent until the acceptor has
            // judged it and the frontier moved past it (the claim goes when this worker stops).
            if let Some(prompt) = self.chain.prompt(unit, &earlier)? {
                self.sender.dispatch(StageItem { idx, prompt });
            }
        }
        Ok(())
    }

    /// Stores what arrived, judges it while still holding the run, gives the claims back.
    async fn stop(&mut self) -> Result<(), GenerateError> {
        for f in self.sender.stop_sending() {
            self.sender.take(f);
        }
        self.sender.flush().await?;
        let (db, run_id) = (self.db, self.sender.run_id);
        if let Some(j) = self.judging.as_mut()
            && let Some(reached) =
                judge_complete(db, run_id, self.chain, self.shared, j, self.window).await?
        {
            self.accepted = j.progress.accepted;
            if reached {
                db.set_run_status(run_id, RunStatus::Done, now_ms()).await?;
            }
        }
        if self.judging.is_none() {
            self.accepted = db.run_accepted(run_id).await? as u64;
        }
        db.release_claims(run_id, &self.me).await?;
        let p = &self.sender.progress;
        let (sent, stored) = (p.sent_now as i64, p.answered_now as i64);
        db.worker_heartbeat(run_id, &self.me, false, sent, stored, now_ms())
            .await?;
        Ok(())
    }

    /// The run's counters as this worker knows them.
    fn progress(&self) -> Progress {
        let mut p = with_stage(&self.base, &self.sender.progress);
        p.accepted = self.accepted;
        if let Some(j) = &self.judging {
            p.rejected = j.progress.rejected.clone();
        }
        p
    }
}

/// Takes the run over as its acceptor: the epoch first, then the state, so nothing an earlier
/// acceptor flushes later can commit.
async fn take_over<C: Script>(
    db: &Db,
    run_id: i64,
    chain: &C,
    shared: Limits,
    lock: AcceptorLock,
) -> Result<Judging, GenerateError> {
    let epoch = db.take_run(run_id).await?;
    let restored = restore_with(db, run_id, shared.target, chain.acceptor(), false).await?;
    let per = chain.per_item();
    let (_, frontier) = db.run_frontier(run_id).await?;
    let after_last = db
        .run_position(run_id)
        .await?
        .map_or(0, |(idx, _)| idx / per + 1);
    Ok(Judging {
        _lock: lock,
        epoch,
        acceptor: restored.acceptor,
        key_ids: restored.key_ids,
        progress: restored.progress,
        next: after_last.max(frontier / per),
    })
}

/// Judges the complete units that come next, in order, until one is incomplete or the target,
/// and writes them with the new frontier. `window` is how far above the frontier units are
/// claimed: the units read at a time. Returns whether the target is reached, or None when
/// another acceptor took the run over (nothing was written).
async fn judge_complete<C: Script>(
    db: &Db,
    run_id: i64,
    chain: &C,
    shared: Limits,
    j: &mut Judging,
    window: i64,
) -> Result<Option<bool>, GenerateError> {
    let per = chain.per_item();
    let page = 2 * window;
    let mut batch = Batch::default();
    let mut reached = j.progress.accepted >= shared.target;
    let mut next = j.next;
    'pages: while !reached {
        let rows = db
            .requests_in(run_id, next * per..(next + page) * per)
            .await?;
        let replies: FxHashMap<i64, Reply> = rows
            .iter()
            .filter_map(|r| first_reply(r).map(|t| (r.idx, t)))
            .collect();
        let from = next;
        for unit in from..from + page {
            let turns: Vec<Option<Reply>> = (unit * per..unit * per + per)
                .map(|i| replies.get(&i).cloned())
                .collect();
            let Some(said) = complete(chain, unit, &turns)? else {
                break 'pages;
            };
            let judged = judge_complete_item(chain, &mut j.acceptor, &mut j.progress, unit, &said);
            batch.records.push(judged);
            next = unit + 1;
            reached = j.progress.accepted >= shared.target;
            if reached {
                break 'pages;
            }
        }
    }
    if batch.records.is_empty() {
        return Ok(Some(reached));
    }
    let held = write_fenced(
        db,
        run_id,
        (j.epoch, next * per),
        &mut batch,
        &mut j.key_ids,
    )
    .await?;
    j.next = next;
    Ok(held.then_some(reached))
}
