//! The single-process run: request `idx` → deterministic examples → prompt → model → parse →
//! judge → store, in `(idx, item)` order through a reorder buffer, with bounded concurrency, rate
//! limits and retries; resumable because every stored reply is reused and acceptance restarts
//! right after the last stored record.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use instill_core::{Record, RequestStatus};
use instill_storage::Db;
use rustc_hash::FxHashMap;

use crate::accept::{Acceptor, Key};
use crate::backend::Backend;
use crate::run::{
    Batch, Ending, Finished, GenerateError, Progress, Restored, RunConfig, RunReport, accept_one,
    add_usage, flush, from_stored, request_row,
};
use crate::run_loop::{Event, Loop, Sharing, Ticker};

/// Runs (or resumes) generation until the target, `max_requests`, or `shutdown`.
pub async fn run(
    db: &Db,
    backend: &Backend,
    cfg: RunConfig,
    shutdown: impl Future<Output = ()>,
    on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    let ticker = Ticker::new(FLUSH_EVERY);
    let (lp, restored) = Loop::open(
        db,
        backend,
        cfg,
        Sharing::Alone,
        shutdown,
        on_progress,
        ticker,
    )
    .await?;
    let mut ordered = Ordered::resume(lp, restored).await?;
    while ordered.lp.ending.is_none() {
        ordered.step().await?;
    }
    ordered.finish().await
}

/// How often the batch is written (and progress shown) when nothing else makes it due.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The single process's acceptance: replies judged in `(idx, item)` order through a reorder
/// buffer, batched writes.
struct Ordered<'a, S, P> {
    lp: Loop<'a, S, P>,
    acceptor: Acceptor,
    key_ids: FxHashMap<Key, i64>,
    generated_examples: Vec<Record>,
    /// Requests to send before new ones: those that failed, and the gaps between stored replies
    /// (replies that arrived out of order were stored; the ones before them may not have been).
    resend: VecDeque<i64>,
    /// Finished requests waiting for their turn.
    buffer: BTreeMap<i64, Finished>,
    /// The next new request.
    next_idx: i64,
    /// The next request to accept.
    next_accept: i64,
    batch: Batch,
    /// Requests stored before this invocation (`max_requests` counts them).
    requests_at_start: u64,
}

impl<'a, S, P> Ordered<'a, S, P>
where
    S: Future<Output = ()>,
    P: FnMut(&Progress),
{
    /// Picks up where acceptance stopped: the stored replies after it go to the buffer, the
    /// failed requests and the gaps between replies to `resend`.
    async fn resume(mut lp: Loop<'a, S, P>, restored: Restored) -> Result<Self, GenerateError> {
        let position = lp.db.run_position(lp.run_id).await?;
        let first_idx = position.map_or(0, |(idx, _)| idx);
        let stored = lp.db.requests_from(lp.run_id, first_idx).await?;
        let next_idx = stored
            .last()
            .map_or(first_idx, |r| r.idx + 1)
            .max(first_idx);
        let mut resend: VecDeque<i64> = VecDeque::new();
        let mut buffer: BTreeMap<i64, Finished> = BTreeMap::new();
        let mut expected = first_idx;
        for r in stored {
            resend.extend(expected..r.idx);
            expected = r.idx + 1;
            if r.status != RequestStatus::Done {
                resend.push_back(r.idx);
                continue;
            }
            let skip = match position {
                Some((idx, item)) if idx == r.idx => item as usize + 1,
                _ => 0,
            };
            buffer.insert(r.idx, from_stored(&r, skip));
            lp.progress.replayed += 1;
        }
        let requests_at_start = lp.progress.requests_ok + lp.progress.requests_failed;
        lp.ending = (lp.progress.accepted >= lp.cfg.target).then_some(Ending::Target);
        lp.ticker.mark();
        Ok(Ordered {
            lp,
            acceptor: restored.acceptor,
            key_ids: restored.key_ids,
            generated_examples: restored.generated_examples,
            resend,
            buffer,
            next_idx,
            next_accept: first_idx,
            batch: Batch::default(),
            requests_at_start,
        })
    }

    /// The request budget: `max_requests` in all, stored requests included.
    fn budget_spent(&self) -> bool {
        let sent = self.lp.progress.sent_now;
        self.lp
            .cfg
            .max_requests
            .is_some_and(|m| self.requests_at_start + sent >= m)
    }

    /// One turn: accept what is next in order, refill the window, write when due, then wait for
    /// a reply, the ticker or the shutdown signal.
    async fn step(&mut self) -> Result<(), GenerateError> {
        // Accepting first moves the window before dispatch refills it.
        self.accept_ready();
        self.dispatch_more()?;
        // The request budget ends a run only once it is spent and nothing is in flight.
        if self.lp.ending.is_none() && self.lp.in_flight == 0 {
            if !self.budget_spent() {
                // Cannot happen: every index below the window's end was sent and accepted above,
                // so dispatch had room. Stop with a message rather than wait for nothing.
                return Err(GenerateError::Config(format!(
                    "the run stalled at request {} with nothing in flight (a bug in instill: please report it)",
                    self.next_accept
                )));
            }
            self.lp.ending = Some(Ending::MaxRequests);
        }
        if self.batch.requests.len() >= 256
            || self.batch.records.len() >= 2048
            || self.lp.ticker.due()
            || self.lp.ending.is_some()
        {
            flush(
                self.lp.db,
                self.lp.run_id,
                &mut self.batch,
                &mut self.key_ids,
            )
            .await?;
            self.lp.ticker.mark();
            self.lp.show_progress();
        }
        if self.lp.ending.is_some() {
            return Ok(());
        }
        match self.lp.next_event().await {
            Event::Shutdown => self.lp.ending = Some(Ending::Interrupted),
            Event::Arrived(f) => {
                self.lp.in_flight -= 1;
                // A bad key or unknown model stops the run at once, whatever the order.
                if let Err(e) = &f.outcome
                    && !e.retryable()
                {
                    self.lp.fatal = Some(e.clone());
                    self.lp.ending = Some(Ending::Interrupted);
                }
                self.buffer.insert(f.idx, f);
            }
            Event::Idle => {}
        }
        Ok(())
    }

    /// Accepts whatever is next in order, until a gap, the target or a fatal reply.
    fn accept_ready(&mut self) {
        while let Some(f) = self.buffer.remove(&self.next_accept) {
            self.next_accept += 1;
            match accept_one(
                &self.lp.cfg,
                f,
                &mut self.acceptor,
                &mut self.batch,
                &mut self.lp.progress,
                &mut self.generated_examples,
            ) {
                Ok(true) => {
                    self.lp.ending = Some(Ending::Target);
                    break;
                }
                Ok(false) => {}
                Err(e) => {
                    self.lp.fatal = Some(e);
                    self.lp.ending = Some(Ending::Interrupted);
                    break;
                }
            }
        }
    }

    /// Dispatches in idx order (failed requests of an earlier invocation first), up to the
    /// concurrency, the window and the budget.
    fn dispatch_more(&mut self) -> Result<(), GenerateError> {
        while self.lp.ending.is_none()
            && self.lp.in_flight < self.lp.concurrency
            && !self.budget_spent()
        {
            let idx = if let Some(i) = self.resend.pop_front() {
                i
            } else if self.next_idx < self.next_accept + self.lp.window {
                self.next_idx += 1;
                self.next_idx - 1
            } else {
                break;
            };
            self.lp.dispatch(idx, &self.generated_examples)?;
        }
        Ok(())
    }

    /// Replies already here but not accepted (out of order, or after the target) are stored
    /// too: a later run with a larger target uses them instead of asking again. Then the run
    /// ends.
    async fn finish(mut self) -> Result<RunReport, GenerateError> {
        for f in self.lp.stop_sending() {
            self.buffer.insert(f.idx, f);
        }
        for (_, f) in std::mem::take(&mut self.buffer) {
            if f.stored_id.is_none()
                && let Ok(c) = &f.outcome
            {
                self.batch.requests.push(request_row(
                    &self.lp.cfg.send.request,
                    &self.lp.cfg.send.worker,
                    &f,
                    c,
                ));
                self.lp.progress.requests_ok += 1;
                add_usage(&mut self.lp.progress, c);
            }
        }
        flush(
            self.lp.db,
            self.lp.run_id,
            &mut self.batch,
            &mut self.key_ids,
        )
        .await?;
        self.lp.finish().await
    }
}
