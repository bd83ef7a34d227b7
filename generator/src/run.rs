//! What a generation run is made of, whichever process drives it: its settings, counters and
//! errors; finding or creating it and restoring its acceptance state; request `idx` →
//! deterministic examples → prompt → model with retries; judging a reply's tasks; the rows and
//! the batched, reserved-id writes. The drivers are `single.rs` (one process) and `workers.rs`
//! (many, on Postgres), around the shared `run_loop::Loop`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use instill_core::{
    Origin, Reason, Record, RequestStatus, RunKind, RunStatus, SplitMix, Status, now_ms,
};
use instill_dedup::{RougeConfig, Rules};
use instill_prompts::{Example, Template, parse_reply};
use instill_storage::{Db, NewRecord, NewRequest, StorageError, StoredRequest, Writer};
use rustc_hash::FxHashMap;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use xxhash_rust::xxh3::xxh3_128;

use crate::accept::{Acceptor, Judged, Key, SEED, key, storable, storable_text};
use crate::backend::Backend;
use crate::completion::{BackendError, Choice, Completion, CompletionRequest};
use crate::limiter::RateLimiter;
use crate::retry::{Jitter, RetryPolicy};
use crate::sampling::choose;

/// Everything a run is told.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The run's unique name (resuming = running the same name again).
    pub name: String,
    /// Stop when this many tasks are accepted.
    pub target: u64,
    /// The prompt template.
    pub template: Template,
    /// The seed tasks, in the order examples are drawn from.
    pub seeds: Vec<Record>,
    /// Seed examples per prompt.
    pub seeds_per_prompt: usize,
    /// Examples per prompt drawn from the run's own accepted tasks (relaxes determinism).
    pub generated_per_prompt: usize,
    /// The run's random seed.
    pub seed: u64,
    /// How its requests are sent.
    pub send: Sending,
    /// Stop after this many requests in all (stored ones included) if the target is not reached.
    pub max_requests: Option<u64>,
    /// The quality rules.
    pub rules: Rules,
    /// The ROUGE-L rule.
    pub rouge: RougeConfig,
}

/// How a run's requests are sent: what generation, chat, magpie, evolve and every stage are
/// told alike.
#[derive(Debug, Clone)]
pub struct Sending {
    /// Sampling settings sent with each request.
    pub request: RequestParams,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Requests per minute at most.
    pub rpm: Option<u32>,
    /// Tokens per minute at most.
    pub tpm: Option<u64>,
    /// This process's name in the requests table.
    pub worker: String,
}

/// Sampling settings of each request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestParams {
    /// Upper bound on generated tokens.
    pub max_tokens: u32,
    /// Temperature.
    pub temperature: f32,
    /// Nucleus mass.
    pub top_p: f32,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Choices per request.
    pub n: u32,
}

impl RequestParams {
    /// The settings as JSON fields: stored with every request, and part of the fingerprint of
    /// every run that sends them (generation's and a stage's).
    pub fn json_fields(&self) -> serde_json::Map<String, serde_json::Value> {
        [
            ("max_tokens", serde_json::json!(self.max_tokens)),
            ("temperature", serde_json::json!(self.temperature)),
            ("top_p", serde_json::json!(self.top_p)),
            ("stop", serde_json::json!(self.stop)),
            ("n", serde_json::json!(self.n)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// `fields` with the settings' fields added (a fingerprint).
    pub fn fingerprint_with(&self, fields: serde_json::Value) -> serde_json::Value {
        let mut out = match fields {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        out.extend(self.json_fields());
        serde_json::Value::Object(out)
    }
}

/// Counters of a run, shown while it goes and in its summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// Tasks accepted (over the whole run, earlier invocations included).
    pub accepted: u64,
    /// The target.
    pub target: u64,
    /// Tasks rejected, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// Requests with a stored reply.
    pub requests_ok: u64,
    /// Requests that failed for good.
    pub requests_failed: u64,
    /// Extra attempts.
    pub retries: u64,
    /// Failed attempts by kind (rate_limited, server_error, timeout, …).
    pub errors: BTreeMap<String, u64>,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Reply blocks that could not be read.
    pub parse_issues: u64,
    /// Replies cut off at max_tokens (their last task dropped).
    pub truncated: u64,
    /// Replies that held reasoning but no answer (a reasoning model cut off at max_tokens
    /// while thinking): no tasks.
    pub no_answer: u64,
    /// Requests sent by this invocation.
    pub sent_now: u64,
    /// Requests answered from the stored cache on resume.
    pub replayed: u64,
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The target was reached.
    Target,
    /// `max_requests` was reached first.
    MaxRequests,
    /// The shutdown signal came (Ctrl-C).
    Interrupted,
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run's id.
    pub run_id: i64,
    /// Its counters.
    pub progress: Progress,
    /// Why it stopped.
    pub ending: Ending,
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// The database failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The model server refused in a way retrying cannot fix (bad key, unknown model…).
    #[error("{0}")]
    Fatal(BackendError),
    /// The run cannot start as asked.
    #[error("{0}")]
    Config(String),
    /// There are no seed tasks to draw examples from.
    #[error("no seed tasks in this language")]
    NoSeeds,
    /// A shared run (many workers) was asked for examples from its own accepted tasks, which
    /// only the acceptor holds.
    #[error(
        "examples from the run's accepted tasks need the acceptor's pool in every prompt: on Postgres (shared runs) ask for none"
    )]
    GeneratedExamplesShared,
    /// The run exists with other settings than these.
    #[error("run `{run}` was started with other settings ({}); resume it with the same ones, or start a new run under another name", differences.join("; "))]
    SettingsChanged {
        /// The run's name.
        run: String,
        /// Each setting that differs, as `field: old → new`.
        differences: Vec<String>,
    },
    /// The run's stored requests contradict each other (rows changed by hand?).
    #[error("run `{run}`'s stored requests are inconsistent: {message}")]
    Inconsistent {
        /// The run's name.
        run: String,
        /// What does not fit.
        message: String,
    },
    /// Another process is driving this run, and it takes one (evolve on Postgres).
    #[error(
        "run `{0}` is being driven by another process: an evolve run takes one process (each round waits for the one before it); wait for it, or start another run under another name"
    )]
    OneProcess(String),
}

/// The settings that decide a run's prompts and verdicts: a resumed run must use the same ones.
pub fn fingerprint(cfg: &RunConfig, model: &str) -> serde_json::Value {
    cfg.send.request.fingerprint_with(serde_json::json!({
        "kind": "generate",
        "template": cfg.template.name(),
        "template_hash": format!("{:032x}", xxh3_128(cfg.template.render(&[]).unwrap_or_default().as_bytes())),
        "seeds_hash": seeds_hash(&cfg.seeds),
        "seeds": cfg.seeds.len(),
        "seeds_per_prompt": cfg.seeds_per_prompt,
        "generated_per_prompt": cfg.generated_per_prompt,
        "seed": cfg.seed,
        "model": model,
        "rouge_threshold": cfg.rouge.threshold,
        "tokenizer": cfg.rouge.tokenizer.name(),
        "rules": format!("{:032x}", xxh3_128(cfg.rules.to_toml().as_bytes())),
    }))
}

/// A hash of the seed tasks, in order (a run's fingerprint holds it).
pub(crate) fn seeds_hash(seeds: &[Record]) -> String {
    let each: Vec<String> = seeds
        .iter()
        .map(|s| {
            format!(
                "{:032x}",
                xxh3_128(
                    format!("{}\u{1f}{}\u{1f}{}", s.instruction, s.input, s.output).as_bytes()
                )
            )
        })
        .collect();
    format!("{:032x}", xxh3_128(each.join(",").as_bytes()))
}

/// A request's outcome, from the network or from the stored cache.
pub(crate) struct Finished {
    pub(crate) idx: i64,
    /// The kind of each failed attempt before the outcome.
    pub(crate) failures: Vec<&'static str>,
    /// The stored request's id when it came from the cache.
    pub(crate) stored_id: Option<i64>,
    pub(crate) outcome: Result<Completion, BackendError>,
    pub(crate) attempts: u32,
    pub(crate) latency_ms: i64,
    pub(crate) prompt: String,
    pub(crate) payload_hash: String,
    pub(crate) created_at: i64,
    /// Items of this request already stored (on resume of a partly accepted request).
    pub(crate) skip_items: usize,
}

/// Writes waiting for the next flush.
#[derive(Default)]
pub(crate) struct Batch {
    /// New request rows, by idx.
    pub(crate) requests: Vec<NewRequest>,
    /// Records: (key, record fields, request idx, dup_of key).
    pub(crate) records: Vec<(Key, NewRecord, i64, Option<Key>)>,
}

/// A stored reply as a finished request (`skip` items of it were accepted already).
pub(crate) fn from_stored(r: &StoredRequest, skip: usize) -> Finished {
    let texts: Vec<String> = r
        .response
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let reasons: Vec<String> = r
        .finish_reason
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    let reasoning: Vec<String> = r
        .reasoning
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_default();
    // Stored as the backend split them: the text is the answer, never split again.
    let choices = texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| Choice {
            text,
            reasoning: reasoning.get(i).cloned().unwrap_or_default(),
            finish_reason: reasons.get(i).cloned().unwrap_or_else(|| "stop".into()),
        })
        .collect();
    Finished {
        idx: r.idx,
        stored_id: Some(r.id),
        outcome: Ok(Completion {
            choices,
            prompt_tokens: None,
            completion_tokens: None,
        }),
        attempts: 0,
        latency_ms: 0,
        prompt: String::new(),
        payload_hash: r.payload_hash.clone(),
        created_at: 0,
        skip_items: skip,
        failures: Vec::new(),
    }
}

/// Finds the run by name (checking that its settings are these) or creates it.
pub(crate) async fn open_run(db: &Db, cfg: &RunConfig, model: &str) -> Result<i64, GenerateError> {
    find_or_create_run(db, &cfg.name, RunKind::Generate, &fingerprint(cfg, model)).await
}

/// The run named `name`, marked running again, if its kind and fingerprint are these (else
/// [`GenerateError::SettingsChanged`], naming each difference); or a new run with them. Workers
/// started together race to create it: the losers find the winner's.
pub(crate) async fn find_or_create_run(
    db: &Db,
    name: &str,
    kind: RunKind,
    print: &serde_json::Value,
) -> Result<i64, GenerateError> {
    let run = match db.find_run(name).await? {
        Some(run) => run,
        None => {
            let created = db
                .create_run(name, kind, &print.to_string(), now_ms())
                .await?;
            if let Some(id) = created {
                return Ok(id);
            }
            db.find_run(name)
                .await?
                .ok_or_else(|| GenerateError::Inconsistent {
                    run: name.to_string(),
                    message: "the run was there when created and gone when read".into(),
                })?
        }
    };
    let stored: serde_json::Value = serde_json::from_str(&run.config_json).unwrap_or_default();
    let mut diffs = differences(&stored, print);
    if run.kind != kind {
        diffs.insert(0, format!("kind: {} → {kind}", run.kind));
    }
    if !diffs.is_empty() {
        return Err(GenerateError::SettingsChanged {
            run: name.to_string(),
            differences: diffs,
        });
    }
    db.set_run_status(run.id, RunStatus::Running, now_ms())
        .await?;
    Ok(run.id)
}

/// What acceptance resumes from: counters, the ROUGE pool, ids of accepted records by key.
pub(crate) struct Restored {
    pub(crate) progress: Progress,
    pub(crate) acceptor: Acceptor,
    pub(crate) key_ids: FxHashMap<Key, i64>,
    pub(crate) generated_examples: Vec<Record>,
}

/// Rebuilds the acceptance state of a run from the database.
pub(crate) async fn restore(
    db: &Db,
    run_id: i64,
    cfg: &RunConfig,
) -> Result<Restored, GenerateError> {
    let acceptor = Acceptor::new(cfg.rules.clone(), cfg.rouge, &cfg.seeds);
    restore_with(
        db,
        run_id,
        cfg.target,
        acceptor,
        cfg.generated_per_prompt > 0,
    )
    .await
}

/// Rebuilds the acceptance state of a run towards `target` from the database: `acceptor`
/// (holding the seeds) gets the run's accepted records; `keep_generated` keeps them as examples
/// too.
pub(crate) async fn restore_with(
    db: &Db,
    run_id: i64,
    target: u64,
    mut acceptor: Acceptor,
    keep_generated: bool,
) -> Result<Restored, GenerateError> {
    // The run so far: counters, pool, where acceptance stopped, stored replies after it.
    let totals = db.run_totals(run_id).await?;
    let progress = Progress {
        accepted: totals.accepted as u64,
        target,
        rejected: totals
            .rejected
            .iter()
            .map(|(r, n)| (r.clone(), *n as u64))
            .collect(),
        requests_ok: totals.requests_done as u64,
        requests_failed: totals.requests_failed as u64,
        retries: totals.retries as u64,
        prompt_tokens: u64::try_from(totals.prompt_tokens).unwrap_or(0),
        completion_tokens: u64::try_from(totals.completion_tokens).unwrap_or(0),
        ..Progress::default()
    };
    let mut key_ids: FxHashMap<Key, i64> = FxHashMap::default();
    let mut generated_examples: Vec<Record> = Vec::new();
    for m in db.run_pool(run_id).await? {
        let k = SEED >> 1 | m.id as u64; // restored members: any key unique to them
        key_ids.insert(k, m.id);
        if keep_generated {
            generated_examples.push(Record::new(m.instruction.clone(), "", ""));
        }
        acceptor.restore(k, &m.instruction, m.norm_hash);
    }
    Ok(Restored {
        progress,
        acceptor,
        key_ids,
        generated_examples,
    })
}

/// The examples for request `idx`: seeds drawn by the (seed, idx) generator, then (optionally)
/// tasks the run accepted.
pub(crate) fn examples_for(cfg: &RunConfig, idx: i64, generated: &[Record]) -> Vec<Example> {
    let mut rng = SplitMix::for_request(cfg.seed, idx as u64);
    let mut out: Vec<Example> = choose(&mut rng, cfg.seeds.len(), cfg.seeds_per_prompt)
        .into_iter()
        .map(|i| to_example(&cfg.seeds[i]))
        .collect();
    if cfg.generated_per_prompt > 0 && !generated.is_empty() {
        out.extend(
            choose(&mut rng, generated.len(), cfg.generated_per_prompt)
                .into_iter()
                .map(|i| to_example(&generated[i])),
        );
    }
    out
}

/// A seed (or accepted task) as a prompt's example.
pub(crate) fn to_example(r: &Record) -> Example {
    Example {
        instruction: r.instruction.clone(),
        input: r.input.clone(),
        output: r.output.clone(),
    }
}

/// Renders request `idx`'s prompt and sends it on a task of `tasks`; the outcome comes on `tx`.
pub(crate) fn dispatch(
    tasks: &mut JoinSet<()>,
    tx: &mpsc::Sender<Finished>,
    backend: &Arc<Backend>,
    limiter: &Arc<RateLimiter>,
    cfg: &Arc<RunConfig>,
    idx: i64,
    generated: &[Record],
) -> Result<(), GenerateError> {
    let examples = examples_for(cfg, idx, generated);
    let prompt = cfg
        .template
        .render(&examples)
        .map_err(|e| GenerateError::Config(e.to_string()))?;
    let (tx, backend, limiter, cfg) = (tx.clone(), backend.clone(), limiter.clone(), cfg.clone());
    tasks.spawn(async move {
        let f = send(
            &backend,
            &limiter,
            &cfg.send.request,
            &cfg.send.retry,
            idx,
            prompt,
            None,
        )
        .await;
        let _ = tx.send(f).await;
    });
    Ok(())
}

/// Sends request `idx` with retries; never fails: the outcome carries the last error.
pub(crate) async fn send(
    backend: &Backend,
    limiter: &RateLimiter,
    params: &RequestParams,
    policy: &RetryPolicy,
    idx: i64,
    prompt: String,
    seed: Option<u64>,
) -> Finished {
    let created_at = now_ms();
    let seeded = seed.map(|s| format!("\u{1f}seed {s}")).unwrap_or_default();
    let payload_hash = format!(
        "{:032x}",
        xxh3_128(
            format!(
                "{}\u{1f}{}\u{1f}{:?}{seeded}",
                backend.model(),
                prompt,
                params
            )
            .as_bytes()
        )
    );
    let mut request = CompletionRequest {
        prompt,
        max_tokens: params.max_tokens,
        temperature: params.temperature,
        top_p: params.top_p,
        stop: params.stop.clone(),
        n: params.n,
        seed,
    };
    let mut jitter = Jitter::new(idx as u64 ^ created_at as u64);
    let mut attempts = 0;
    let mut failures = Vec::new();
    loop {
        attempts += 1;
        let estimate = (request.prompt.len() / 3) as u64
            + u64::from(request.max_tokens) * u64::from(request.n);
        limiter.acquire(estimate).await;
        let started = Instant::now();
        let result = backend.complete(&request).await;
        let latency_ms = started.elapsed().as_millis() as i64;
        if let Ok(c) = &result {
            limiter.settle(
                estimate,
                c.prompt_tokens
                    .unwrap_or(0)
                    .saturating_add(c.completion_tokens.unwrap_or(0)),
            );
        }
        let retry = match &result {
            Ok(_) => false,
            Err(e) => e.retryable() && attempts < policy.max_attempts,
        };
        if !retry {
            let prompt = request.prompt;
            return Finished {
                idx,
                failures,
                stored_id: None,
                outcome: result,
                attempts,
                latency_ms,
                prompt,
                payload_hash,
                created_at,
                skip_items: 0,
            };
        }
        let mut retry_after = None;
        if let Err(e) = &result {
            tracing::debug!(idx, attempts, "retrying: {e}");
            failures.push(e.kind());
            match e {
                BackendError::RateLimited { retry_after: r, .. } => retry_after = *r,
                // The prompt plus max_tokens do not fit: ask for fewer tokens.
                BackendError::ContextLength(_) => {
                    request.max_tokens = (request.max_tokens / 2).max(16)
                }
                _ => {}
            }
        }
        tokio::time::sleep(policy.delay(attempts, retry_after, jitter.unit())).await;
    }
}

/// Accepts one finished request (the next in order). Returns whether the target is reached.
pub(crate) fn accept_one(
    cfg: &RunConfig,
    f: Finished,
    acceptor: &mut Acceptor,
    batch: &mut Batch,
    progress: &mut Progress,
    generated: &mut Vec<Record>,
) -> Result<bool, BackendError> {
    for kind in &f.failures {
        *progress.errors.entry((*kind).to_string()).or_default() += 1;
    }
    let completion = match &f.outcome {
        Ok(c) => c,
        Err(e) if !e.retryable() => return Err(e.clone()),
        Err(e) => {
            // Failed for good: stored as failed (resent by a later invocation), no tasks.
            *progress.errors.entry(e.kind().to_string()).or_default() += 1;
            progress.requests_failed += 1;
            progress.retries += u64::from(f.attempts.saturating_sub(1));
            batch
                .requests
                .push(failed_row(&cfg.send.request, &cfg.send.worker, &f, e));
            return Ok(false);
        }
    };
    if f.stored_id.is_none() {
        progress.requests_ok += 1;
        progress.retries += u64::from(f.attempts.saturating_sub(1));
        add_usage(progress, completion);
        batch.requests.push(request_row(
            &cfg.send.request,
            &cfg.send.worker,
            &f,
            completion,
        ));
    }
    let examples = cfg.seeds_per_prompt.min(cfg.seeds.len())
        + if cfg.generated_per_prompt > 0 {
            cfg.generated_per_prompt
        } else {
            0
        };
    let prefix = cfg.template.reply_prefix(examples);
    let one_task = asks_for_one_task(&cfg.template, examples);
    let mut item = 0usize;
    for choice in &completion.choices {
        let cut_off = choice.finish_reason == "length";
        let parsed = parse_reply(&choice.text, cfg.template.format, &prefix, cut_off);
        if f.stored_id.is_none() {
            progress.parse_issues += parsed.issues as u64;
            progress.truncated += u64::from(parsed.truncated);
            progress.no_answer += u64::from(choice.reasoned_without_answer());
        }
        let reply_reasoning = if one_task {
            choice.reasoning.as_str()
        } else {
            ""
        };
        for record in parsed.items {
            let record = with_reasoning(record, reply_reasoning);
            let this = item;
            item += 1;
            if this < f.skip_items {
                continue;
            }
            if progress.accepted >= cfg.target {
                return Ok(true);
            }
            let k = key(f.idx, this);
            let keep = (cfg.generated_per_prompt > 0).then_some(&mut *generated);
            let (record, dup_of) = judge_item(&cfg.name, acceptor, progress, keep, k, this, record);
            batch.records.push((k, record, f.idx, dup_of));
        }
    }
    Ok(progress.accepted >= cfg.target)
}

/// Whether a prompt of `template` with `examples` examples asks for one new task: then the
/// reply's reasoning (a reasoning model's thinking) is about that task and goes with its record.
/// A list of many tasks is thought about as a whole: that reasoning stays on the request row.
fn asks_for_one_task(template: &Template, examples: usize) -> bool {
    template.tasks.max(examples + 1) == examples + 1
}

/// A task parsed from a reply with its reasoning: the reply's (when it is about this task
/// alone), then the `<think>` block at the start of the task's own output (how the `cot`
/// templates ask for it). A NUL in the reasoning, which no database stores, becomes U+FFFD:
/// the reasoning is not judged, so it is cleaned rather than rejected.
fn with_reasoning(mut record: Record, reply_reasoning: &str) -> Record {
    let mut reasoning = reply_reasoning.to_string();
    instill_core::take_think(&mut record);
    instill_core::append_reasoning(&mut reasoning, &record.reasoning);
    record.reasoning = storable_text(&reasoning);
    record
}

/// Judges task `this` of a reply (under key `k`) for run `name`, counting it into `progress`
/// (and, accepted, into `generated` when given): the record to store, and the key of the task it
/// duplicates.
pub(crate) fn judge_item(
    name: &str,
    acceptor: &mut Acceptor,
    progress: &mut Progress,
    generated: Option<&mut Vec<Record>>,
    k: Key,
    this: usize,
    mut record: Record,
) -> (NewRecord, Option<Key>) {
    let j = acceptor.judge(k, &record);
    if j.reason == Some(Reason::Unstorable) {
        record = storable(record);
    }
    if j.accepted {
        progress.accepted += 1;
        if let Some(generated) = generated {
            generated.push(record.clone());
        }
    } else if let Some(r) = j.reason {
        *progress.rejected.entry(r.to_string()).or_default() += 1;
    }
    let dup_of = j.dup_of;
    (judged_row(name, record, j, this), dup_of)
}

/// The row of a generated record rejected for `reason` before any rule or dedup saw it (an
/// evolution eliminated, magpie's instruction cut off): rejected, its text made storable.
pub(crate) fn eliminated_row(name: &str, record: Record, reason: Reason, this: usize) -> NewRecord {
    let record = storable(record);
    let j = Judged::refused(&record, reason);
    judged_row(name, record, j, this)
}

/// A generated record's row with its verdict (its id, run and request are set when the
/// batch is written).
fn judged_row(name: &str, record: Record, j: Judged, this: usize) -> NewRecord {
    NewRecord {
        id: None,
        record,
        lang: j.lang,
        origin: Origin::Generated,
        source: Arc::from(name),
        import_id: None,
        run_id: None,
        request_id: None,
        item_idx: Some(this as i64),
        status: if j.accepted {
            Status::Accepted
        } else {
            Status::Rejected
        },
        reason: j.reason,
        dup_of: None,
        score: j.score,
        norm_hash: j.norm_hash,
        created_at: now_ms(),
        evolution: None,
    }
}

/// Adds a reply's reported usage to the run's token counters (saturating: no report overflows
/// them).
pub(crate) fn add_usage(progress: &mut Progress, c: &Completion) {
    progress.prompt_tokens = progress
        .prompt_tokens
        .saturating_add(c.prompt_tokens.unwrap_or(0));
    progress.completion_tokens = progress
        .completion_tokens
        .saturating_add(c.completion_tokens.unwrap_or(0));
}

pub(crate) fn params_json(params: &RequestParams) -> String {
    serde_json::Value::Object(params.json_fields()).to_string()
}

/// The row of a request that failed for good (a later claim or invocation sends it again).
pub(crate) fn failed_row(
    params: &RequestParams,
    worker: &str,
    f: &Finished,
    e: &BackendError,
) -> NewRequest {
    NewRequest {
        run_id: 0,
        idx: f.idx,
        payload_hash: f.payload_hash.clone(),
        prompt: f.prompt.clone(),
        params_json: params_json(params),
        status: RequestStatus::Failed,
        error: Some(storable_text(&e.to_string())),
        attempts: i64::from(f.attempts),
        worker: Some(worker.to_string()),
        created_at: f.created_at,
        finished_at: now_ms(),
        ..NewRequest::default()
    }
}

pub(crate) fn request_row(
    params: &RequestParams,
    worker: &str,
    f: &Finished,
    c: &Completion,
) -> NewRequest {
    let texts: Vec<&str> = c.choices.iter().map(|ch| ch.text.as_str()).collect();
    let reasons: Vec<&str> = c
        .choices
        .iter()
        .map(|ch| ch.finish_reason.as_str())
        .collect();
    let reasoning: Vec<&str> = c.choices.iter().map(|ch| ch.reasoning.as_str()).collect();
    NewRequest {
        run_id: 0,
        idx: f.idx,
        payload_hash: f.payload_hash.clone(),
        prompt: f.prompt.clone(),
        params_json: params_json(params),
        status: RequestStatus::Done,
        response: serde_json::to_string(&texts).ok(),
        finish_reason: serde_json::to_string(&reasons).ok(),
        reasoning: if reasoning.iter().all(|r| r.is_empty()) {
            None
        } else {
            serde_json::to_string(&reasoning).ok()
        },
        error: None,
        attempts: i64::from(f.attempts.max(1)),
        prompt_tokens: c
            .prompt_tokens
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        completion_tokens: c
            .completion_tokens
            .map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        latency_ms: Some(f.latency_ms),
        worker: Some(worker.to_string()),
        created_at: f.created_at,
        finished_at: now_ms(),
    }
}

/// Writes the batch in one transaction: request rows, then records with reserved ids so that a
/// duplicate can point at a record written in the same batch.
pub(crate) async fn flush(
    db: &Db,
    run_id: i64,
    batch: &mut Batch,
    key_ids: &mut FxHashMap<Key, i64>,
) -> Result<(), GenerateError> {
    if batch.requests.is_empty() && batch.records.is_empty() {
        return Ok(());
    }
    let mut w = db.writer().await?;
    let new_ids = write_batch(db, &mut w, run_id, batch, key_ids).await?;
    w.commit().await?;
    key_ids.extend(new_ids);
    batch.requests.clear();
    Ok(())
}

/// Writes the batch into the open transaction `w` (which the caller commits); returns the ids of
/// the new records by key, for `key_ids` once committed.
pub(crate) async fn write_batch(
    db: &Db,
    w: &mut Writer,
    run_id: i64,
    batch: &mut Batch,
    key_ids: &FxHashMap<Key, i64>,
) -> Result<Vec<(Key, i64)>, GenerateError> {
    for r in &mut batch.requests {
        r.run_id = run_id;
    }
    let ids = w.store_requests(&batch.requests).await?;
    let mut request_ids: FxHashMap<i64, i64> =
        batch.requests.iter().map(|r| r.idx).zip(ids).collect();
    // Records of requests replayed from the cache point at their stored rows.
    let missing: Vec<i64> = batch
        .records
        .iter()
        .map(|r| r.2)
        .filter(|idx| !request_ids.contains_key(idx))
        .collect();
    if !missing.is_empty() {
        let from = missing.iter().copied().min().unwrap_or(0);
        for r in db.requests_from(run_id, from).await? {
            request_ids.entry(r.idx).or_insert(r.id);
        }
    }
    let reserved = w.reserve_record_ids(batch.records.len()).await?;
    let mut rows = Vec::with_capacity(batch.records.len());
    let mut new_ids: Vec<(Key, i64)> = Vec::new();
    for ((k, mut rec, idx, dup), id) in std::mem::take(&mut batch.records).into_iter().zip(reserved)
    {
        rec.id = Some(id);
        rec.run_id = Some(run_id);
        rec.request_id = request_ids.get(&idx).copied();
        rec.dup_of = dup.and_then(|d| {
            key_ids
                .get(&d)
                .copied()
                .or_else(|| new_ids.iter().find(|(nk, _)| *nk == d).map(|(_, i)| *i))
        });
        new_ids.push((k, id));
        rows.push(rec);
    }
    w.insert_records(rows).await?;
    Ok(new_ids)
}

/// The fields whose values differ between two fingerprints, as `field: old → new`.
/// Settings nested in an object (a stage's `settings`) are named by their path, as
/// `settings.turns: 2 → 3`.
pub(crate) fn differences(old: &serde_json::Value, new: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    differ("", old, new, &mut out);
    out
}

fn differ(path: &str, old: &serde_json::Value, new: &serde_json::Value, out: &mut Vec<String>) {
    let (Some(a), Some(b)) = (old.as_object(), new.as_object()) else {
        return;
    };
    for (k, v) in b {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        let was = a.get(k).cloned().unwrap_or(serde_json::Value::Null);
        if was.is_object() && v.is_object() {
            differ(&here, &was, v, out);
        } else if &was != v {
            out.push(format!("{here}: {was} → {v}"));
        }
    }
}
