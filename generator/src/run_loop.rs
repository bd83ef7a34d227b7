//! The loop both ways of running share, in the style of mini-redis's `Listener`: one struct
//! holds what a run needs while it goes (the database, the backend, the settings, the channel
//! replies come back on, the requests in flight, the counters, the shutdown signal, the
//! progress callback and its clock), with the steps both drivers take: [`Loop::open`] (checks,
//! the run found or created, its counters restored), [`Loop::dispatch`], [`Loop::next_event`],
//! and [`Loop::finish`] (status, last progress, the report). What differs is acceptance: in
//! order in this process (`run.rs`), or by whichever worker holds the run (`workers.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use instill_core::{RunStatus, now_ms};
use instill_storage::Db;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::backend::Backend;
use crate::completion::BackendError;
use crate::limiter::RateLimiter;
use crate::run::{
    Ending, Finished, GenerateError, Progress, Restored, RunConfig, RunReport, dispatch, open_run,
    restore,
};

/// Whether this process is the run's only one (SQLite) or one worker of many (Postgres).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// One process sends, accepts and writes.
    Alone,
    /// Many workers claim requests; one of them accepts.
    Shared,
}

/// A period, for what a loop does every so often whatever the reply rate.
pub(crate) struct Ticker {
    every: Duration,
    last: Instant,
}

impl Ticker {
    /// A ticker first due one period from now.
    pub(crate) fn new(every: Duration) -> Ticker {
        Ticker {
            every,
            last: Instant::now(),
        }
    }

    /// A ticker due at once.
    pub(crate) fn due_now(every: Duration) -> Ticker {
        Ticker {
            every,
            last: Instant::now() - every,
        }
    }

    /// Whether a period has gone by since the last [`Ticker::mark`].
    pub(crate) fn due(&self) -> bool {
        self.last.elapsed() >= self.every
    }

    /// Starts the next period now.
    pub(crate) fn mark(&mut self) {
        self.last = Instant::now();
    }

    /// How long until the next period is due.
    pub(crate) fn until_due(&self) -> Duration {
        self.every.saturating_sub(self.last.elapsed())
    }
}

/// What woke the loop.
pub(crate) enum Event {
    /// The shutdown signal came.
    Shutdown,
    /// A request finished.
    Arrived(Finished),
    /// The ticker is due (or the channel closed): nothing arrived.
    Idle,
}

/// A run's state while it goes, shared by [`crate::run`] and [`crate::run_worker`].
pub(crate) struct Loop<'a, S, P> {
    pub(crate) db: &'a Db,
    pub(crate) run_id: i64,
    pub(crate) cfg: Arc<RunConfig>,
    sharing: Sharing,
    backend: Arc<Backend>,
    limiter: Arc<RateLimiter>,
    /// Requests in flight at most.
    pub(crate) concurrency: usize,
    /// How far dispatch may run ahead of acceptance (bounds the reorder buffer and claims).
    pub(crate) window: i64,
    tx: mpsc::Sender<Finished>,
    rx: mpsc::Receiver<Finished>,
    tasks: JoinSet<()>,
    pub(crate) in_flight: usize,
    pub(crate) progress: Progress,
    /// A reply retrying cannot fix (bad key, unknown model): the run stops with it.
    pub(crate) fatal: Option<BackendError>,
    /// Why the loop stops, once it is to stop.
    pub(crate) ending: Option<Ending>,
    shutdown: Pin<Box<S>>,
    on_progress: P,
    /// When progress is shown (and, alone, the batch flushed; shared, the bookkeeping done).
    pub(crate) ticker: Ticker,
}

impl<'a, S, P> Loop<'a, S, P>
where
    S: Future<Output = ()>,
    P: FnMut(&Progress),
{
    /// Checks the settings, finds the run (or creates it) and restores its acceptance state,
    /// whose counters the loop keeps; the rest (pool, ids) is returned for the driver.
    pub(crate) async fn open(
        db: &'a Db,
        backend: &Backend,
        cfg: RunConfig,
        sharing: Sharing,
        shutdown: S,
        on_progress: P,
        ticker: Ticker,
    ) -> Result<(Self, Restored), GenerateError> {
        if cfg.seeds.is_empty() {
            return Err(GenerateError::NoSeeds);
        }
        if sharing == Sharing::Shared && cfg.generated_per_prompt > 0 {
            return Err(GenerateError::GeneratedExamplesShared);
        }
        let run_id = match sharing {
            Sharing::Alone => open_run(db, &cfg, backend.model()).await?,
            // Several workers may start the same run at once: one creates it, the others find it.
            Sharing::Shared => match open_run(db, &cfg, backend.model()).await {
                Ok(id) => id,
                Err(GenerateError::Storage(_)) => open_run(db, &cfg, backend.model()).await?,
                Err(e) => return Err(e),
            },
        };
        let mut restored = restore(db, run_id, &cfg).await?;
        let progress = std::mem::take(&mut restored.progress);
        let limiter = Arc::new(RateLimiter::new(cfg.send.rpm, cfg.send.tpm));
        let concurrency = cfg.send.concurrency.max(1);
        let (tx, rx) = mpsc::channel::<Finished>(concurrency * 2);
        let lp = Loop {
            db,
            run_id,
            cfg: Arc::new(cfg),
            sharing,
            backend: Arc::new(backend.clone()),
            limiter,
            concurrency,
            window: (concurrency as i64 * 4).max(64),
            tx,
            rx,
            tasks: JoinSet::new(),
            in_flight: 0,
            progress,
            fatal: None,
            ending: None,
            shutdown: Box::pin(shutdown),
            on_progress,
            ticker,
        };
        Ok((lp, restored))
    }

    /// Renders request `idx`'s prompt (seeds and, optionally, `generated` examples) and sends it.
    pub(crate) fn dispatch(
        &mut self,
        idx: i64,
        generated: &[instill_core::Record],
    ) -> Result<(), GenerateError> {
        dispatch(
            &mut self.tasks,
            &self.tx,
            &self.backend,
            &self.limiter,
            &self.cfg,
            idx,
            generated,
        )?;
        self.in_flight += 1;
        self.progress.sent_now += 1;
        Ok(())
    }

    /// Waits for the shutdown signal, a finished request or the ticker, whichever comes first
    /// (the ticker wakes the loop even with no reply, so progress goes on being reported while
    /// requests are retried).
    pub(crate) async fn next_event(&mut self) -> Event {
        let until = self.ticker.until_due();
        tokio::select! {
            biased;
            () = self.shutdown.as_mut() => Event::Shutdown,
            f = self.rx.recv() => f.map_or(Event::Idle, Event::Arrived),
            () = tokio::time::sleep(until) => Event::Idle,
        }
    }

    /// The finished requests already waiting, without waiting for more.
    pub(crate) fn arrived(&mut self) -> Vec<Finished> {
        let mut out = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            out.push(f);
        }
        out
    }

    /// Abandons the requests in flight (their replies were never stored, so they are sent
    /// again later) and returns those that finished meanwhile.
    pub(crate) fn stop_sending(&mut self) -> Vec<Finished> {
        self.tasks.abort_all();
        self.arrived()
    }

    /// Shows the counters.
    pub(crate) fn show_progress(&mut self) {
        (self.on_progress)(&self.progress);
    }

    /// Ends the run: its status (`done` at the target; alone, `stopped` otherwise, while a
    /// shared run goes on with other workers), the last progress, and the report, or the fatal
    /// error that stopped it.
    pub(crate) async fn finish(mut self) -> Result<RunReport, GenerateError> {
        let ending = self.ending.unwrap_or(Ending::MaxRequests);
        let status = match (ending, self.sharing) {
            (Ending::Target, _) => Some(RunStatus::Done),
            (_, Sharing::Alone) => Some(RunStatus::Stopped),
            (_, Sharing::Shared) => None,
        };
        if let Some(status) = status {
            self.db
                .set_run_status(self.run_id, status, now_ms())
                .await?;
        }
        self.show_progress();
        if let Some(e) = self.fatal {
            return Err(GenerateError::Fatal(e));
        }
        Ok(RunReport {
            run_id: self.run_id,
            progress: self.progress,
            ending,
        })
    }
}
