//! Running a stage from a command: a progress bar (or log lines), SIGINT/SIGTERM caught so that
//! what arrived is stored before the command stops, and the pieces every stage command shares
//! (the stage's settings from the sending flags, a stored reply's text).

use std::time::{Duration, Instant};

use anyhow::Context;

use instill_core::RunKind;
use instill_generator::{
    Backend, GenerateError, RequestParams, RetryPolicy, Sending, StageConfig, StageItem,
    StageProgress, StageReport, run_stage,
};
use instill_storage::Db;

use crate::cli::{GlobalArgs, SendArgs};
use crate::cmd::backend;
use crate::progress;
use crate::signals::{Signals, Stop};

/// A stage's settings: its run's name and kind, the caller's fingerprint, and one reply per
/// prompt at `temperature` up to `max_tokens`, sent as the flags say.
pub fn config(
    name: String,
    kind: RunKind,
    settings: serde_json::Value,
    send: &SendArgs,
    temperature: f32,
    max_tokens: u32,
) -> StageConfig {
    let request = RequestParams {
        max_tokens,
        temperature,
        top_p: 1.0,
        stop: Vec::new(),
        n: 1,
    };
    StageConfig {
        name,
        kind,
        settings,
        send: sending(send, request),
        seed: None,
    }
}

/// How requests are sent, as the flags say: `request` with the flags' retries, concurrency,
/// rate limits, and this process's worker name.
pub fn sending(send: &SendArgs, request: RequestParams) -> Sending {
    Sending {
        request,
        retry: RetryPolicy {
            max_attempts: send.max_retries,
            ..RetryPolicy::default()
        },
        concurrency: send.concurrency as usize,
        rpm: send.rpm,
        tpm: send.tpm,
        worker: instill_generator::worker_name(&backend::hostname()),
    }
}

/// Runs a stage over `items` (`total` of them) with a progress bar titled `what`, until every
/// item is answered or SIGINT/SIGTERM comes (returned, for the exit code).
pub async fn drive<I>(
    global: &GlobalArgs,
    db: &Db,
    backend: &Backend,
    config: StageConfig,
    total: u64,
    items: I,
    what: &str,
) -> (Result<StageReport, GenerateError>, Option<Stop>)
where
    I: IntoIterator<Item = Result<StageItem, String>>,
{
    let bar = progress::rows(progress::enabled(global.no_progress), total, what.into());
    let started = Instant::now();
    let tick = |p: &StageProgress| {
        bar.set_position(p.answered_before + p.answered_now + p.failed_now);
        bar.set_message(line(what, p, started.elapsed(), backend));
    };
    let mut signals = match Signals::listen() {
        Ok(s) => s,
        Err(e) => return (Err(GenerateError::Config(e.to_string())), None),
    };
    let stop = std::cell::Cell::new(None);
    let shutdown = async {
        stop.set(Some(signals.recv().await));
    };
    let report = run_stage(db, backend, config, total, items, shutdown, tick).await;
    bar.finish_and_clear();
    (report, stop.get())
}

/// The progress bar's message: what, rates, tokens, failed attempts.
fn line(what: &str, p: &StageProgress, elapsed: Duration, backend: &Backend) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let failed: Vec<String> = backend
        .failed_attempts()
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    format!(
        "{what} | {} stored before | {:.1} req/s | {:.0} tok/s | {}",
        p.answered_before,
        p.answered_now as f64 / secs,
        p.prompt_tokens.saturating_add(p.completion_tokens) as f64 / secs,
        if failed.is_empty() {
            "no failed attempts".to_string()
        } else {
            format!("failed attempts: {}", failed.join(", "))
        }
    )
}

/// The first choice's text of a stored reply (a JSON array of texts).
pub fn first_choice(response: Option<&str>) -> String {
    response
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        .and_then(|v| v.into_iter().next())
        .unwrap_or_default()
}

/// The stage's error as the command line says it: `what` names the thing whose settings
/// changed and `flag` the flag that starts another one.
pub fn message(e: &GenerateError, what: &str, flag: &str) -> String {
    match e {
        GenerateError::SettingsChanged { differences, .. } => format!(
            "{what} was started with other settings ({}); resume it with the same ones, or start another with {flag}",
            differences.join("; ")
        ),
        e => e.to_string(),
    }
}

/// An exclusive lock on `FILE.KIND-lock` beside a SQLite database, held while `command` runs:
/// a second one on the same file stops at once with a message instead of sending the same
/// requests twice and interleaving its writes. On Postgres (where generate takes many workers,
/// and a stage command takes [`postgres_lock`] on what it writes) returns None.
pub fn sqlite_lock(url: &str, command: &str, kind: &str) -> anyhow::Result<Option<std::fs::File>> {
    let Some(path) = instill_storage::sqlite_path(url) else {
        return Ok(None);
    };
    let lock_path = format!("{path}.{command}-lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("{lock_path}: cannot create the writer lock"))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "{path}: another `instill {command}` is writing to this SQLite database; SQLite takes one {kind} at a time{}",
            if command == "generate" {
                " (use --db postgres://… to run several workers on one run)"
            } else {
                ""
            }
        ),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("{lock_path}: cannot lock"))
        }
    }
}

/// On Postgres, the lock on `command`'s output `name` (a scorer, an evaluation), held while the
/// command runs: a second process writing the same output stops at once with a message instead
/// of sending the same requests twice. SQLite needs none (see [`sqlite_lock`]): returns None.
pub async fn postgres_lock(
    db: &Db,
    command: &str,
    name: &str,
) -> anyhow::Result<Option<instill_storage::AcceptorLock>> {
    if db.backend() != instill_storage::Backend::Postgres {
        return Ok(None);
    }
    match db.try_named_lock(&format!("{command}/{name}")).await? {
        Some(lock) => Ok(Some(lock)),
        None => anyhow::bail!(
            "another `instill {command}` is writing `{name}` to this database; wait for it to finish, or write under another name"
        ),
    }
}

/// How a stage command ends: the signal that stopped it, else partial when requests failed for
/// good (a rerun sends them again), else done.
pub fn outcome(stop: Option<Stop>, failed_now: u64) -> crate::Outcome {
    match stop {
        Some(s) => s.outcome(),
        None if failed_now > 0 => crate::Outcome::Partial,
        None => crate::Outcome::Done,
    }
}
