//! Items made of requests sent one after another (a self-chat's turns, magpie's instruction and
//! answer): turn `t` of item `c` is request `c·P + t` of the run, where `P` is the most turns an
//! item takes. A [`Script`] says what an item's turns are: each one's prompt from the replies
//! before it, when the item is done, and what it comes to. [`run_script`] runs one:
//!
//! - on SQLite (one process), in batches of items, turn by turn: each turn one [`run_stage`]
//!   pass over the items that have every earlier turn (so an item's requests are sequential,
//!   items concurrent, and sending, retries, limits and accounting are the stage's); then the
//!   complete items are judged in order and written;
//! - on Postgres, as one of any number of workers (`chain_workers.rs`).
//!
//! Every reply is stored as it arrives, and each prompt is rendered from the stored replies
//! before it, so an item cut off anywhere resumes from its stored turns, and a killed and
//! resumed run ends with the records of an uninterrupted one.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::time::Duration;

use instill_core::{Reason, Record, RunStatus, now_ms};
use instill_storage::{Db, NewRecord};
use rustc_hash::FxHashMap;

use crate::accept::{Acceptor, Key, key};
use crate::backend::Backend;
use crate::chain_workers::run_chain_worker;
pub(crate) use crate::driven::Reply;
use crate::driven::{first_reply, with_stage};
use crate::run::{
    Batch, Ending, GenerateError, Progress, RunReport, eliminated_row, flush, judge_item,
    restore_with,
};
use crate::stage::{StageConfig, StageEnding, StageItem, StageProgress, open_stage, run_stage};

/// What becomes of an item once it has every turn it takes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// A record for the acceptor to judge (rules, exact dedup, ROUGE-L).
    Judge(Record),
    /// A record rejected for this reason before any rule saw it (magpie's instruction cut off).
    Refused(Record, Reason),
}

/// What an item's turns are.
pub(crate) trait Script {
    /// The run's name (the records' source).
    fn name(&self) -> &str;

    /// The most requests an item takes.
    fn per_item(&self) -> i64;

    /// The prompt of item `c`'s turn `said.len()`, given the replies of its turns before it;
    /// `None` when the item takes no more turns (what it said so far already decides it).
    fn prompt(&self, c: i64, said: &[Reply]) -> Result<Option<String>, GenerateError>;

    /// What a complete item comes to.
    fn outcome(&self, said: &[Reply]) -> Outcome;

    /// An acceptor with the run's rules and nothing accepted yet.
    fn acceptor(&self) -> Acceptor;
}

/// When a script's run stops, besides the stage's own settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Records to accept.
    pub(crate) target: u64,
    /// Requests stored in all at most (one process: an item is begun only when all its
    /// requests fit; a worker: requests it sends).
    pub(crate) max_requests: Option<u64>,
    /// Postgres: how long a worker's claim lives without a heartbeat.
    pub(crate) lease: Duration,
}

/// The replies of an item's turns so far (`None`: not stored yet).
pub(crate) type Turns = Vec<Option<Reply>>;

/// Runs (or resumes) the script's run until the target, the request budget or `shutdown`: one
/// process on SQLite, one worker of many on Postgres.
pub(crate) async fn run_script(
    db: &Db,
    backend: &Backend,
    script: &impl Script,
    stage: StageConfig,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
    on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    if db.backend() == instill_storage::Backend::Postgres {
        return run_chain_worker(db, backend, script, stage, limits, shutdown, on_progress).await;
    }
    let run_id = open_stage(db, &stage, backend.model()).await?;
    let restored = restore_with(db, run_id, limits.target, script.acceptor(), false).await?;
    let turned = Turned {
        db,
        backend,
        run_id,
        stage,
        progress: restored.progress,
        acceptor: restored.acceptor,
        key_ids: restored.key_ids,
    };
    drive(turned, script, limits, shutdown, on_progress).await
}

/// An item's replies when it is complete: every turn stored, or the turns stored so far when
/// the script asks for no more. None while a turn it takes is missing.
pub(crate) fn complete(
    script: &impl Script,
    c: i64,
    turns: &[Option<Reply>],
) -> Result<Option<Vec<Reply>>, GenerateError> {
    let mut said = Vec::with_capacity(turns.len());
    for turn in turns {
        match turn {
            Some(reply) => said.push(reply.clone()),
            None => return Ok(script.prompt(c, &said)?.is_none().then_some(said)),
        }
    }
    Ok(Some(said))
}

/// Judges complete item `c` (its replies `said`), counting it into `progress`: the record's
/// key, row, request index (its last turn's) and the key it duplicates.
pub(crate) fn judge_complete_item(
    script: &impl Script,
    acceptor: &mut Acceptor,
    progress: &mut Progress,
    c: i64,
    said: &[Reply],
) -> (Key, NewRecord, i64, Option<Key>) {
    let idx = c * script.per_item() + said.len().max(1) as i64 - 1;
    let k = key(idx, 0);
    match script.outcome(said) {
        Outcome::Judge(record) => {
            let (row, dup_of) = judge_item(script.name(), acceptor, progress, None, k, 0, record);
            (k, row, idx, dup_of)
        }
        Outcome::Refused(record, reason) => {
            *progress.rejected.entry(reason.to_string()).or_default() += 1;
            (
                k,
                eliminated_row(script.name(), record, reason, 0),
                idx,
                None,
            )
        }
    }
}

/// Runs a script's run in batches of items until the target, the request budget or
/// `shutdown`, then sets the run's status.
async fn drive(
    mut turned: Turned<'_>,
    script: &impl Script,
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
    let concurrency = turned.stage.send.concurrency;
    let ending = loop {
        let p = &turned.progress;
        if p.accepted >= limits.target {
            break Ending::Target;
        }
        let Some(size) = batch_size(p, limits, concurrency, per) else {
            break Ending::MaxRequests;
        };
        let range = next..next + size;
        match turned
            .converse(script, range, shutdown.as_mut(), &mut on_progress)
            .await?
        {
            Some(items) => turned.accept(script, limits.target, next, items).await?,
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

/// A script's run in one process: the stage it sends on, its counters and its acceptor.
struct Turned<'a> {
    db: &'a Db,
    backend: &'a Backend,
    run_id: i64,
    stage: StageConfig,
    progress: Progress,
    acceptor: Acceptor,
    key_ids: FxHashMap<Key, i64>,
}

impl Turned<'_> {
    /// Takes the items `range` turn by turn until each has every turn it takes (a pass over the
    /// turns, and a second one for the items a turn that failed for good held up: then they are
    /// left incomplete). Returns their turns, or None when the shutdown signal came (what
    /// arrived is stored).
    async fn converse<S: Future<Output = ()>>(
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
                let report = run_stage(
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
        for r in self.db.requests_in(self.run_id, lo..hi).await? {
            if let Some(reply) = first_reply(&r) {
                let (c, t) = ((r.idx - lo) / per, (r.idx - lo) % per);
                items[c as usize][t as usize] = Some(reply);
            }
        }
        Ok(items)
    }

    /// Judges the complete items from `first` on, in order, until the target, and stores them
    /// in one transaction; an item a turn that failed for good left incomplete gets no record.
    async fn accept(
        &mut self,
        script: &impl Script,
        target: u64,
        first: i64,
        items: Vec<Turns>,
    ) -> Result<(), GenerateError> {
        let mut batch = Batch::default();
        for (c, turns) in (first..).zip(items) {
            if self.progress.accepted >= target {
                break;
            }
            let Some(said) = complete(script, c, &turns)? else {
                continue;
            };
            let judged =
                judge_complete_item(script, &mut self.acceptor, &mut self.progress, c, &said);
            batch.records.push(judged);
        }
        flush(self.db, self.run_id, &mut batch, &mut self.key_ids).await
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
fn batch_size(p: &Progress, limits: Limits, concurrency: usize, per: i64) -> Option<i64> {
    let remaining = limits.target.saturating_sub(p.accepted);
    let cap = BATCH_MIN.max(8 * concurrency as u64);
    let mut size = (remaining + remaining / 4 + 1).min(cap);
    if let Some(max) = limits.max_requests {
        let left = max.saturating_sub(p.requests_ok + p.requests_failed);
        size = size.min(left / per.max(1) as u64);
    }
    (size > 0).then_some(size as i64)
}

/// Items per batch at most, besides a few per request in flight.
const BATCH_MIN: u64 = 256;
