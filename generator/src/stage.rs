//! A stage: one prompt per item (a stored record, an eval question, an answer to grade) sent
//! through generate's engine (any [`Backend`], bounded concurrency, RPM/TPM limits, retries with
//! backoff, token accounting), each reply stored in `requests` under the item's index before
//! anyone reads it. The run is found by name and its settings checked like a generation run's,
//! so a rerun sends only the items without a stored reply, and what callers derive from the
//! stored replies ([`Db::replies_page`]) is the same however often the stage was interrupted.
//! Items are independent: there is no acceptance order, so a reply is written as it arrives.

use std::cell::Cell;
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use instill_core::{RunKind, RunStatus, SplitMix, now_ms};
use instill_storage::{Db, NewRequest};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backend::Backend;
use crate::completion::BackendError;
use crate::limiter::RateLimiter;
use crate::run::{
    Finished, GenerateError, Sending, failed_row, find_or_create_run, request_row, send,
};
use crate::run_loop::Ticker;

/// What a stage is told.
#[derive(Debug, Clone)]
pub struct StageConfig {
    /// The run's unique name: running the same name again resumes it.
    pub name: String,
    /// What the run does.
    pub kind: RunKind,
    /// The caller's settings that decide the prompts and what is made of the replies (a
    /// rubric's hash, a template…): with the model and the request parameters, the run's
    /// fingerprint, which a resumed run must match.
    pub settings: serde_json::Value,
    /// How its requests are sent.
    pub send: Sending,
    /// When given, each request is sampled with a seed of its own, drawn by the `(seed, idx)`
    /// generator: the same prompt sent for different items is sampled differently, and the
    /// same item alike on every run (magpie's instruction step, whose prompts are all one text).
    pub seed: Option<u64>,
}

/// One item: its index in the run (unique within it) and its prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct StageItem {
    /// The item's index: a record id, a question's number.
    pub idx: i64,
    /// The prompt sent for it.
    pub prompt: String,
}

/// A stage's counters, shown while it goes and in its summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageProgress {
    /// Items asked for.
    pub total: u64,
    /// Items of this invocation's list whose reply was stored before it (not sent again),
    /// counted as the list is walked.
    pub answered_before: u64,
    /// Requests sent by this invocation.
    pub sent_now: u64,
    /// Replies stored by this invocation.
    pub answered_now: u64,
    /// Requests that failed for good in this invocation (a rerun sends them again).
    pub failed_now: u64,
    /// Extra attempts in this invocation.
    pub retries: u64,
    /// Failed attempts by kind (rate_limited, server_error, timeout, …).
    pub errors: BTreeMap<String, u64>,
    /// Prompt tokens of this invocation's replies.
    pub prompt_tokens: u64,
    /// Completion tokens of this invocation's replies.
    pub completion_tokens: u64,
}

impl StageProgress {
    /// Items with a stored reply, earlier invocations included.
    pub fn answered(&self) -> u64 {
        self.answered_before + self.answered_now
    }
}

/// Why a stage stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageEnding {
    /// Every item was sent (some may have failed for good: see `failed_now`).
    Done,
    /// The shutdown signal came; what was answered is stored.
    Interrupted,
}

/// What a stage did.
#[derive(Debug, Clone)]
pub struct StageReport {
    /// The run's id (its replies are read back by it).
    pub run_id: i64,
    /// The counters.
    pub progress: StageProgress,
    /// Why it stopped.
    pub ending: StageEnding,
}

/// The sampling seed of request `idx` of a run seeded `seed`: 31 bits, which every server's
/// `seed` takes (vLLM refuses values above `i64::MAX`, llama.cpp's is a 32-bit integer).
pub(crate) fn request_seed(seed: u64, idx: i64) -> u64 {
    SplitMix::for_request(seed, idx as u64).next_u64() >> 33
}

/// How often replies are written and progress shown when nothing else makes it due.
const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// Replies written per transaction at most.
const FLUSH_ROWS: usize = 256;

/// Runs (or resumes) a stage: every item of `items` whose reply is not stored yet is sent, and
/// its reply stored. `total` is the number of items, for progress. An item that cannot be
/// rendered stops the stage with [`GenerateError::Config`] (what was answered is kept).
pub async fn run_stage<I>(
    db: &Db,
    backend: &Backend,
    cfg: StageConfig,
    total: u64,
    items: I,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&StageProgress),
) -> Result<StageReport, GenerateError>
where
    I: IntoIterator<Item = Result<StageItem, String>>,
{
    let run_id = open_stage(db, &cfg, backend.model()).await?;
    let answered: HashSet<i64> = db.answered(run_id).await?.into_iter().collect();
    let mut stage = Stage::new(db, run_id, backend, cfg);
    let skipped = Cell::new(0u64);
    let mut todo = items.into_iter().filter(|item| match item {
        Ok(i) if answered.contains(&i.idx) => {
            skipped.set(skipped.get() + 1);
            false
        }
        _ => true,
    });
    stage.progress.total = total;
    let mut shutdown = std::pin::pin!(shutdown);
    let result = stage
        .drive(&mut todo, &skipped, &mut shutdown, &mut on_progress)
        .await;
    let ending = match result {
        Ok(ending) => ending,
        Err(e) => {
            // Keep what arrived; the error is the stage's outcome.
            stage.tasks.abort_all();
            stage.flush().await?;
            stage.close(RunStatus::Stopped).await?;
            on_progress(&stage.progress);
            return Err(e);
        }
    };
    for f in stage.stop_sending() {
        stage.take(f);
    }
    stage.flush().await?;
    let status = match (ending, &stage.fatal) {
        (StageEnding::Done, None) if stage.progress.failed_now == 0 => RunStatus::Done,
        _ => RunStatus::Stopped,
    };
    stage.close(status).await?;
    on_progress(&stage.progress);
    if let Some(e) = stage.fatal {
        return Err(GenerateError::Fatal(e));
    }
    Ok(StageReport {
        run_id,
        progress: stage.progress,
        ending,
    })
}

/// Finds the stage's run by name (its settings must be these) or creates it.
pub(crate) async fn open_stage(
    db: &Db,
    cfg: &StageConfig,
    model: &str,
) -> Result<i64, GenerateError> {
    let print = cfg.send.request.fingerprint_with(serde_json::json!({
        "kind": cfg.kind.as_str(),
        "settings": cfg.settings,
        "model": model,
    }));
    find_or_create_run(db, &cfg.name, cfg.kind, &print).await
}

/// A stage's state while it goes: also the sender of a chained run's workers
/// (`chain_workers.rs`), which claim what they send.
pub(crate) struct Stage<'a> {
    db: &'a Db,
    pub(crate) run_id: i64,
    cfg: Arc<StageConfig>,
    backend: Arc<Backend>,
    limiter: Arc<RateLimiter>,
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
    tasks: JoinSet<()>,
    pub(crate) in_flight: usize,
    /// Rows waiting for the next write.
    rows: Vec<NewRequest>,
    pub(crate) progress: StageProgress,
    pub(crate) fatal: Option<BackendError>,
    ticker: Ticker,
}

/// What woke a stage that waited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// The shutdown signal came.
    Shutdown,
    /// A reply (or a failure) came and was taken.
    Reply,
    /// The time was up.
    Idle,
}

impl<'a> Stage<'a> {
    pub(crate) fn new(db: &'a Db, run_id: i64, backend: &Backend, cfg: StageConfig) -> Stage<'a> {
        let concurrency = cfg.send.concurrency.max(1);
        let (tx, rx) = mpsc::channel(concurrency * 2);
        Stage {
            db,
            run_id,
            limiter: Arc::new(RateLimiter::new(cfg.send.rpm, cfg.send.tpm)),
            cfg: Arc::new(cfg),
            backend: Arc::new(backend.clone()),
            tx,
            rx,
            tasks: JoinSet::new(),
            in_flight: 0,
            rows: Vec::new(),
            progress: StageProgress::default(),
            fatal: None,
            ticker: Ticker::new(FLUSH_EVERY),
        }
    }

    /// Sends items up to the concurrency, stores replies as they come, until the items run
    /// out and nothing is in flight, a fatal reply, or the shutdown signal.
    async fn drive<I, S>(
        &mut self,
        todo: &mut I,
        skipped: &Cell<u64>,
        shutdown: &mut std::pin::Pin<&mut S>,
        on_progress: &mut impl FnMut(&StageProgress),
    ) -> Result<StageEnding, GenerateError>
    where
        I: Iterator<Item = Result<StageItem, String>>,
        S: Future<Output = ()>,
    {
        let mut exhausted = false;
        loop {
            self.progress.answered_before = skipped.get();
            while !exhausted
                && self.fatal.is_none()
                && self.in_flight < self.cfg.send.concurrency.max(1)
            {
                match todo.next() {
                    Some(Ok(item)) => self.dispatch(item),
                    Some(Err(e)) => return Err(GenerateError::Config(e)),
                    None => exhausted = true,
                }
            }
            self.progress.answered_before = skipped.get();
            if self.fatal.is_some() || (exhausted && self.in_flight == 0) {
                return Ok(StageEnding::Done);
            }
            if self.rows.len() >= FLUSH_ROWS || self.ticker.due() {
                self.flush().await?;
                self.ticker.mark();
                on_progress(&self.progress);
            }
            let until = self.ticker.until_due();
            if self.wait(shutdown, until).await == Woke::Shutdown {
                return Ok(StageEnding::Interrupted);
            }
        }
    }

    /// Requests in flight at most.
    pub(crate) fn concurrency(&self) -> usize {
        self.cfg.send.concurrency.max(1)
    }

    /// Waits up to `until` for a reply (taken when one comes) or the shutdown signal.
    pub(crate) async fn wait<S: Future<Output = ()>>(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut S>,
        until: Duration,
    ) -> Woke {
        tokio::select! {
            biased;
            () = shutdown.as_mut() => Woke::Shutdown,
            f = self.rx.recv() => match f {
                Some(f) => {
                    self.take(f);
                    Woke::Reply
                }
                None => Woke::Idle,
            },
            () = tokio::time::sleep(until) => Woke::Idle,
        }
    }

    /// Sends one item on a task; its outcome comes back on the channel.
    pub(crate) fn dispatch(&mut self, item: StageItem) {
        let (tx, backend, limiter, cfg) = (
            self.tx.clone(),
            self.backend.clone(),
            self.limiter.clone(),
            self.cfg.clone(),
        );
        let seed = self.cfg.seed.map(|s| request_seed(s, item.idx));
        self.tasks.spawn(async move {
            let f = send(
                &backend,
                &limiter,
                &cfg.send.request,
                &cfg.send.retry,
                item.idx,
                item.prompt,
                seed,
            )
            .await;
            let _ = tx.send(f).await;
        });
        self.in_flight += 1;
        self.progress.sent_now += 1;
    }

    /// Counts a finished request and queues its row (a reply, or a failure a rerun resends).
    pub(crate) fn take(&mut self, f: Finished) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let p = &mut self.progress;
        for kind in &f.failures {
            *p.errors.entry((*kind).to_string()).or_default() += 1;
        }
        p.retries += u64::from(f.attempts.saturating_sub(1));
        match &f.outcome {
            Ok(c) => {
                p.answered_now += 1;
                p.prompt_tokens = p.prompt_tokens.saturating_add(c.prompt_tokens.unwrap_or(0));
                p.completion_tokens = p
                    .completion_tokens
                    .saturating_add(c.completion_tokens.unwrap_or(0));
                self.rows.push(request_row(
                    &self.cfg.send.request,
                    &self.cfg.send.worker,
                    &f,
                    c,
                ));
            }
            Err(e) => {
                *p.errors.entry(e.kind().to_string()).or_default() += 1;
                if !e.retryable() {
                    // A bad key or an unknown model: nothing else will do better.
                    self.fatal.get_or_insert_with(|| e.clone());
                    return;
                }
                p.failed_now += 1;
                self.rows.push(failed_row(
                    &self.cfg.send.request,
                    &self.cfg.send.worker,
                    &f,
                    e,
                ));
            }
        }
    }

    /// Abandons the requests in flight (never stored: a rerun sends them) and returns those
    /// that finished meanwhile.
    pub(crate) fn stop_sending(&mut self) -> Vec<Finished> {
        self.tasks.abort_all();
        let mut out = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            out.push(f);
        }
        out
    }

    /// Writes the queued rows in one transaction.
    pub(crate) async fn flush(&mut self) -> Result<(), GenerateError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        for r in &mut self.rows {
            r.run_id = self.run_id;
        }
        let mut w = self.db.writer().await?;
        w.store_requests(&self.rows).await?;
        w.commit().await?;
        self.rows.clear();
        Ok(())
    }

    async fn close(&self, status: RunStatus) -> Result<(), GenerateError> {
        Ok(self
            .db
            .set_run_status(self.run_id, status, now_ms())
            .await?)
    }
}
