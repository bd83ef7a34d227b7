//! Items made of requests sent one after another (a self-chat's turns, magpie's instruction and
//! answer), on the stage engine: turn `t` of item `c` is request `c·P + t` of the run, where `P`
//! is the item's turns. A batch of items goes turn by turn, each turn one [`run_stage`] pass
//! over the items that have every earlier turn (so an item's requests are sequential, items
//! concurrent, and sending, retries, limits and accounting are the stage's). Every reply is
//! stored as it arrives, and each prompt is rendered from the stored replies before it by the
//! item's [`Script`], so an item cut off anywhere resumes from its stored turns.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use instill_core::{RequestStatus, RunStatus, now_ms};
use instill_storage::{Db, StoredRequest};

use crate::backend::Backend;
use crate::run::{Ending, GenerateError, Progress, RunReport};
use crate::stage::{StageConfig, StageEnding, StageItem, StageProgress, run_stage_seeded};

/// One stored reply of an item's turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    /// The reply's (first choice's) text.
    pub(crate) text: String,
    /// Its finish reason (`stop`, `length`, …).
    pub(crate) finish_reason: String,
}

/// The replies of an item's turns so far (`None`: not stored yet).
pub(crate) type Turns = Vec<Option<Reply>>;

/// What an item's turns say: how many, and each one's prompt from the replies before it.
pub(crate) trait Script {
    /// Requests per item.
    fn per_item(&self) -> i64;

    /// The prompt of item `c`'s turn `said.len()`, given the replies of its turns before it;
    /// `None` when the item takes no more turns (what it said so far already decides it).
    fn prompt(&self, c: i64, said: &[Reply]) -> Result<Option<String>, GenerateError>;
}

/// How a turn-by-turn run judges its items once they have their turns.
pub(crate) trait Judge {
    /// Judges the items from `first` on (their turns, in order) until the target, and stores
    /// their records in one transaction.
    fn accept(
        &mut self,
        turned: &mut Turned<'_>,
        first: i64,
        items: Vec<Turns>,
    ) -> impl Future<Output = Result<(), GenerateError>>;
}

/// When a turn-by-turn run stops sending.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Records to accept.
    pub(crate) target: u64,
    /// Requests in flight at most.
    pub(crate) concurrency: usize,
    /// Requests stored in all at most; an item is begun only when all its requests fit.
    pub(crate) max_requests: Option<u64>,
}

/// Runs (or resumes, after the last judged item) a turn-by-turn run in batches of items until
/// the target, the request budget or `shutdown`, then sets the run's status.
pub(crate) async fn drive(
    mut turned: Turned<'_>,
    script: &impl Script,
    judge: &mut impl Judge,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    let per = script.per_item();
    let (db, run_id) = (turned.db, turned.run_id);
    let mut next = db
        .run_position(run_id)
        .await?
        .map_or(0, |(idx, _)| idx / per + 1);
    let mut shutdown = std::pin::pin!(shutdown);
    let ending = loop {
        let p = &turned.progress;
        if p.accepted >= limits.target {
            break Ending::Target;
        }
        let l = limits;
        let Some(size) = batch_size(p, l.target, l.concurrency, l.max_requests, per) else {
            break Ending::MaxRequests;
        };
        let range = next..next + size;
        match turned
            .converse(script, range, shutdown.as_mut(), &mut on_progress)
            .await?
        {
            Some(items) => judge.accept(&mut turned, next, items).await?,
            None => break Ending::Interrupted,
        }
        next += size;
        on_progress(&turned.progress);
    };
    let status = match ending {
        Ending::Target => RunStatus::Done,
        _ => RunStatus::Stopped,
    };
    db.set_run_status(run_id, status, now_ms()).await?;
    on_progress(&turned.progress);
    Ok(RunReport {
        run_id,
        progress: turned.progress,
        ending,
    })
}

/// The stage a turn-by-turn run sends on, and its counters.
pub(crate) struct Turned<'a> {
    pub(crate) db: &'a Db,
    pub(crate) backend: &'a Backend,
    pub(crate) run_id: i64,
    /// The stage every turn runs on, with the run's seed when each request gets its own.
    pub(crate) stage: (StageConfig, Option<u64>),
    pub(crate) progress: Progress,
}

impl Turned<'_> {
    /// Takes the items `range` turn by turn until each has every turn it takes (a pass over the
    /// turns, and a second one for the items a turn that failed for good held up: then they are
    /// left incomplete). Returns their turns, or None when the shutdown signal came (what
    /// arrived is stored).
    pub(crate) async fn converse<S: Future<Output = ()>>(
        &mut self,
        script: &impl Script,
        range: Range<i64>,
        mut shutdown: Pin<&mut S>,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<Option<Vec<Turns>>, GenerateError> {
        let per = script.per_item();
        let mut items = self.stored_turns(per, &range).await?;
        self.progress.replayed += items.iter().flatten().flatten().count() as u64;
        for _pass in 0..2 {
            let mut complete = true;
            for t in 0..per {
                let todo = turn_items(script, &range, &items, t)?;
                if todo.is_empty() {
                    continue;
                }
                complete = false;
                let base = self.progress.clone();
                let report = run_stage_seeded(
                    self.db,
                    self.backend,
                    self.stage.clone(),
                    todo.len() as u64,
                    todo.into_iter().map(Ok),
                    shutdown.as_mut(),
                    |s: &StageProgress| on_progress(&with_stage(&base, s)),
                )
                .await?;
                self.progress = with_stage(&base, &report.progress);
                if report.ending == StageEnding::Interrupted {
                    return Ok(None);
                }
                items = self.stored_turns(per, &range).await?;
            }
            if complete {
                break;
            }
        }
        Ok(Some(items))
    }

    /// The stored replies of the items `range`.
    async fn stored_turns(
        &self,
        per: i64,
        range: &Range<i64>,
    ) -> Result<Vec<Turns>, GenerateError> {
        let (lo, hi) = (range.start * per, range.end * per);
        let mut items: Vec<Turns> =
            vec![vec![None; per as usize]; (range.end - range.start) as usize];
        for r in self.db.requests_from(self.run_id, lo).await? {
            if r.idx >= hi {
                break;
            }
            if let Some(reply) = first_reply(&r) {
                let (c, t) = ((r.idx - lo) / per, (r.idx - lo) % per);
                items[c as usize][t as usize] = Some(reply);
            }
        }
        Ok(items)
    }
}

/// Turn `t`'s requests: one per item of `range` that has every turn before `t`, not `t` itself,
/// and whose script asks for it.
fn turn_items(
    script: &impl Script,
    range: &Range<i64>,
    items: &[Turns],
    t: i64,
) -> Result<Vec<StageItem>, GenerateError> {
    let per = script.per_item();
    let mut out = Vec::new();
    for (c, turns) in range.clone().zip(items) {
        let (before, this) = turns.split_at(t as usize);
        if this[0].is_some() {
            continue;
        }
        let Some(said) = before.iter().cloned().collect::<Option<Vec<Reply>>>() else {
            continue;
        };
        if let Some(prompt) = script.prompt(c, &said)? {
            out.push(StageItem {
                idx: c * per + t,
                prompt,
            });
        }
    }
    Ok(out)
}

/// How many items the next batch holds: enough for the target at a fair accept rate, and all
/// of whose requests fit in the request budget (None: none fit).
fn batch_size(
    p: &Progress,
    target: u64,
    concurrency: usize,
    max_requests: Option<u64>,
    per: i64,
) -> Option<i64> {
    let remaining = target.saturating_sub(p.accepted);
    let cap = BATCH_MIN.max(8 * concurrency as u64);
    let mut size = (remaining + remaining / 4 + 1).min(cap);
    if let Some(max) = max_requests {
        let left = max.saturating_sub(p.requests_ok + p.requests_failed);
        size = size.min(left / per.max(1) as u64);
    }
    (size > 0).then_some(size as i64)
}

/// Items per batch at most, besides a few per request in flight.
const BATCH_MIN: u64 = 256;

/// One process per turn-by-turn run on Postgres: its turns wait on each other, so claims by many
/// workers would not help, and two acceptors would judge the same items. A lock still held a
/// moment after its process was killed (until the server notices the closed connection) is
/// waited for, briefly. SQLite needs none (the command holds the file's writer lock).
pub(crate) async fn driver_lock(
    db: &Db,
    run_id: i64,
    name: &str,
) -> Result<Option<instill_storage::AcceptorLock>, GenerateError> {
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

/// Attempts at the driver lock, 250 ms apart.
const LOCK_TRIES: u32 = 4;

/// The first reply of a stored request, when it has one.
fn first_reply(r: &StoredRequest) -> Option<Reply> {
    if r.status != RequestStatus::Done {
        return None;
    }
    let texts: Vec<String> = serde_json::from_str(r.response.as_deref()?).ok()?;
    let reasons: Vec<String> = r
        .finish_reason
        .as_deref()
        .and_then(|f| serde_json::from_str(f).ok())
        .unwrap_or_default();
    Some(Reply {
        text: texts.into_iter().next()?,
        finish_reason: reasons.into_iter().next().unwrap_or_default(),
    })
}

/// The run's counters before a stage, plus what the stage did so far.
fn with_stage(base: &Progress, s: &StageProgress) -> Progress {
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
