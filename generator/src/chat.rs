//! Multi-turn self-chat (`generate --mode chat`): a user simulator and an assistant alternate
//! for K exchanges per conversation, each conversation stored as one record (the earlier
//! exchanges its history, the last one its instruction and output).
//!
//! Turn `t` (0-based; even: the user simulator, odd: the assistant) of conversation `c` is
//! request `c·2K + t` of the run. Conversations go in batches; a batch goes turn by turn, each
//! turn one [`run_stage`] over the batch's conversations that have every earlier turn (so the
//! requests of a conversation are sequential, conversations concurrent, and sending, retries,
//! limits and accounting are the stage's). Every reply is stored as it arrives; each prompt is
//! rendered from the stored replies before it, so a conversation cut off anywhere resumes from
//! its stored turns, sending only what is missing. Complete conversations are judged in
//! conversation order (rules on the opening exchange, ROUGE-L on the first user turn) and
//! stored with the same batched writes as generation, so a killed and resumed run ends with
//! the records of an uninterrupted one. On Postgres a chat run is shared by any number of
//! processes instead (`chain_workers.rs`): each claims the turns whose earlier turns are
//! stored, and whichever holds the run's acceptor lock judges complete conversations in order.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use instill_core::{Exchange, Record, RunKind, RunStatus, SplitMix, now_ms};
use instill_dedup::{RougeConfig, Rules};
use instill_prompts::{ChatPrompts, Example, clean_turn};
use instill_storage::Db;
use rustc_hash::FxHashMap;

use crate::accept::{Acceptor, Key, key, storable_text};
use crate::backend::Backend;
use crate::chain_workers::{Chain, Shared, run_chain_worker};
use crate::driven::{first_choice, with_stage};
use crate::retry::RetryPolicy;
use crate::run::{
    Batch, Ending, GenerateError, Progress, RequestParams, RunReport, flush, judge_item,
    restore_with, seeds_hash, to_example,
};
use crate::sampling::choose;
use crate::stage::{StageConfig, StageEnding, StageItem, StageProgress, open_stage, run_stage};

/// Everything a chat run is told.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// The run's unique name (resuming = running the same name again).
    pub name: String,
    /// Stop when this many conversations are accepted.
    pub target: u64,
    /// Exchanges per conversation (at least 1).
    pub turns: u32,
    /// The user simulator's and the assistant's prompts.
    pub prompts: ChatPrompts,
    /// The seed tasks a conversation's opening is inspired by.
    pub seeds: Vec<Record>,
    /// Seed tasks shown in each opening prompt.
    pub seeds_per_prompt: usize,
    /// The run's random seed: conversation c always draws the same seeds.
    pub seed: u64,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Stop once this many requests are stored in all, before the target; a conversation is
    /// begun only when all its requests fit.
    pub max_requests: Option<u64>,
    /// Sampling settings sent with each request (`n` must be 1).
    pub request: RequestParams,
    /// How failed requests are retried.
    pub retry: RetryPolicy,
    /// Requests per minute at most.
    pub rpm: Option<u32>,
    /// Tokens per minute at most.
    pub tpm: Option<u64>,
    /// The quality rules (on each conversation's opening exchange).
    pub rules: Rules,
    /// The ROUGE-L rule (on each conversation's first user turn).
    pub rouge: RougeConfig,
    /// This process's name in the requests table.
    pub worker: String,
    /// Postgres: how long this process's claim on a turn lives without a heartbeat (a killed
    /// process's turns go to the others after this).
    pub lease: Duration,
}

impl ChatConfig {
    /// Requests per conversation: a user turn and an answer per exchange.
    fn per_conversation(&self) -> i64 {
        2 * i64::from(self.turns)
    }

    /// The stage every turn runs on: its settings are the run's fingerprint (with the model and
    /// the request parameters), which a resumed run must match.
    fn stage(&self) -> StageConfig {
        StageConfig {
            name: self.name.clone(),
            kind: RunKind::Generate,
            settings: serde_json::json!({
                "mode": "chat",
                "turns": self.turns,
                "prompts": self.prompts.name(),
                "prompts_hash": self.prompts.hash(),
                "seeds_hash": seeds_hash(&self.seeds),
                "seeds": self.seeds.len(),
                "seeds_per_prompt": self.seeds_per_prompt,
                "seed": self.seed,
                "rouge_threshold": self.rouge.threshold,
                "tokenizer": self.rouge.tokenizer.name(),
                "rules": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(self.rules.to_toml().as_bytes())),
            }),
            request: self.request.clone(),
            retry: self.retry,
            concurrency: self.concurrency,
            rpm: self.rpm,
            tpm: self.tpm,
            worker: self.worker.clone(),
        }
    }

    /// The seed tasks conversation `c`'s opening shows.
    fn examples(&self, c: i64) -> Vec<Example> {
        let mut rng = SplitMix::for_request(self.seed, c as u64);
        choose(&mut rng, self.seeds.len(), self.seeds_per_prompt)
            .into_iter()
            .map(|i| to_example(&self.seeds[i]))
            .collect()
    }
}

impl Chain for ChatConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn steps(&self) -> i64 {
        self.per_conversation()
    }

    /// Turn `t` of conversation `c`, rendered from the turns before it as they were stored
    /// (what no database stores, NUL, never reaches a prompt; the record keeps the reply as it
    /// came, and is rejected as unstorable).
    fn prompt(&self, c: i64, t: i64, earlier: &[String]) -> Result<String, GenerateError> {
        let said: Vec<String> = earlier
            .iter()
            .map(|s| clean_turn(&storable_text(s)))
            .collect();
        let exchanges = pairs(&said);
        let rendered = if t % 2 == 0 {
            self.prompts.user(&self.examples(c), &exchanges)
        } else {
            let question = said.last().map_or("", String::as_str);
            self.prompts.assistant(&exchanges, question)
        };
        rendered.map_err(|e| GenerateError::Config(e.to_string()))
    }

    fn record(&self, replies: &[String]) -> Record {
        let said: Vec<String> = replies.iter().map(|s| clean_turn(s)).collect();
        conversation(&said)
    }

    fn acceptor(&self) -> Acceptor {
        Acceptor::new(self.rules.clone(), self.rouge, &self.seeds)
    }
}

/// Conversations per batch at most, besides a few per request in flight.
const BATCH_MIN: u64 = 256;

/// Runs (or resumes) a chat run until the target, `max_requests`, or `shutdown`.
pub async fn run_chat(
    db: &Db,
    backend: &Backend,
    cfg: ChatConfig,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    check(&cfg)?;
    let stage = cfg.stage();
    if db.backend() == instill_storage::Backend::Postgres {
        let shared = Shared {
            target: cfg.target,
            max_requests: cfg.max_requests,
            lease: cfg.lease,
        };
        return run_chain_worker(db, backend, &cfg, stage, shared, shutdown, on_progress).await;
    }
    let run_id = open_stage(db, &stage, backend.model()).await?;
    let restored = restore_with(db, run_id, cfg.target, cfg.acceptor(), false).await?;
    let per = cfg.per_conversation();
    let mut chat = Chat {
        db,
        backend,
        run_id,
        stage,
        acceptor: restored.acceptor,
        key_ids: restored.key_ids,
        progress: restored.progress,
        next: db
            .run_position(run_id)
            .await?
            .map_or(0, |(idx, _)| idx / per + 1),
        cfg,
    };
    let mut shutdown = pin!(shutdown);
    let ending = loop {
        if chat.progress.accepted >= chat.cfg.target {
            break Ending::Target;
        }
        let Some(size) = chat.batch_size() else {
            break Ending::MaxRequests;
        };
        let from = chat.next;
        match chat
            .converse(from..from + size, shutdown.as_mut(), &mut on_progress)
            .await?
        {
            Some(conversations) => chat.accept(conversations).await?,
            None => break Ending::Interrupted,
        }
        chat.next = from + size;
        on_progress(&chat.progress);
    };
    let status = match ending {
        Ending::Target => RunStatus::Done,
        _ => RunStatus::Stopped,
    };
    db.set_run_status(run_id, status, now_ms()).await?;
    on_progress(&chat.progress);
    Ok(RunReport {
        run_id,
        progress: chat.progress,
        ending,
    })
}

/// Refuses settings a chat run cannot work with.
fn check(cfg: &ChatConfig) -> Result<(), GenerateError> {
    if cfg.seeds.is_empty() {
        return Err(GenerateError::NoSeeds);
    }
    if cfg.turns == 0 {
        return Err(GenerateError::Config(
            "a conversation needs at least one exchange (turns ≥ 1)".into(),
        ));
    }
    if cfg.request.n != 1 {
        return Err(GenerateError::Config(format!(
            "a conversation goes on from one reply per turn: n must be 1, not {}",
            cfg.request.n
        )));
    }
    Ok(())
}

/// A chat run's state while it goes.
struct Chat<'a> {
    db: &'a Db,
    backend: &'a Backend,
    run_id: i64,
    cfg: ChatConfig,
    stage: StageConfig,
    acceptor: Acceptor,
    key_ids: FxHashMap<Key, i64>,
    progress: Progress,
    /// The first conversation not judged yet.
    next: i64,
}

/// The replies of a conversation's turns so far (`None`: not stored yet).
type Turns = Vec<Option<String>>;

impl Chat<'_> {
    /// How many conversations the next batch holds: enough for the target at a fair accept
    /// rate, and all of whose requests fit in the request budget (None: none fit).
    fn batch_size(&self) -> Option<i64> {
        let p = &self.progress;
        let remaining = self.cfg.target.saturating_sub(p.accepted);
        let cap = BATCH_MIN.max(8 * self.cfg.concurrency as u64);
        let mut size = (remaining + remaining / 4 + 1).min(cap);
        if let Some(max) = self.cfg.max_requests {
            let left = max.saturating_sub(p.requests_ok + p.requests_failed);
            size = size.min(left / self.cfg.per_conversation() as u64);
        }
        (size > 0).then_some(size as i64)
    }

    /// Takes the conversations `range` turn by turn until each has every turn (a pass over the
    /// turns, and a second one for the conversations a turn that failed for good held up: then
    /// they are left incomplete and get no record). Returns
    /// their turns, or None when the shutdown signal came (what arrived is stored).
    async fn converse<S: Future<Output = ()>>(
        &mut self,
        range: std::ops::Range<i64>,
        mut shutdown: std::pin::Pin<&mut S>,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<Option<Vec<Turns>>, GenerateError> {
        let mut convs = self.stored_turns(&range).await?;
        self.progress.replayed += convs.iter().flatten().flatten().count() as u64;
        for _pass in 0..2 {
            for t in 0..self.cfg.per_conversation() {
                let items = self.items(&range, &convs, t)?;
                if items.is_empty() {
                    continue;
                }
                let base = self.progress.clone();
                let report = run_stage(
                    self.db,
                    self.backend,
                    self.stage.clone(),
                    items.len() as u64,
                    items.into_iter().map(Ok),
                    shutdown.as_mut(),
                    |s: &StageProgress| on_progress(&with_stage(&base, s)),
                )
                .await?;
                self.progress = with_stage(&base, &report.progress);
                if report.ending == StageEnding::Interrupted {
                    return Ok(None);
                }
                convs = self.stored_turns(&range).await?;
            }
            if convs.iter().all(|c| c.iter().all(Option::is_some)) {
                break;
            }
        }
        Ok(Some(convs))
    }

    /// The stored replies of the conversations `range`.
    async fn stored_turns(
        &self,
        range: &std::ops::Range<i64>,
    ) -> Result<Vec<Turns>, GenerateError> {
        let per = self.cfg.per_conversation();
        let (lo, hi) = (range.start * per, range.end * per);
        let mut convs: Vec<Turns> =
            vec![vec![None; per as usize]; (range.end - range.start) as usize];
        for r in self.db.requests_from(self.run_id, lo).await? {
            if r.idx >= hi {
                break;
            }
            if let Some((text, _)) = first_choice(&r) {
                let (c, t) = ((r.idx - lo) / per, (r.idx - lo) % per);
                convs[c as usize][t as usize] = Some(text);
            }
        }
        Ok(convs)
    }

    /// Turn `t`'s requests: one per conversation of `range` that has every turn before `t` and
    /// not `t` itself, its prompt rendered from those turns.
    fn items(
        &self,
        range: &std::ops::Range<i64>,
        convs: &[Turns],
        t: i64,
    ) -> Result<Vec<StageItem>, GenerateError> {
        let per = self.cfg.per_conversation();
        let mut items = Vec::new();
        for (c, turns) in range.clone().zip(convs) {
            let (before, this) = turns.split_at(t as usize);
            if this[0].is_some() {
                continue;
            }
            let Some(earlier) = before.iter().cloned().collect::<Option<Vec<String>>>() else {
                continue;
            };
            items.push(StageItem {
                idx: c * per + t,
                prompt: self.cfg.prompt(c, t, &earlier)?,
            });
        }
        Ok(items)
    }

    /// Judges the complete conversations in order (until the target) and stores them in one
    /// transaction.
    async fn accept(&mut self, convs: Vec<Turns>) -> Result<(), GenerateError> {
        let per = self.cfg.per_conversation();
        let mut batch = Batch::default();
        for (c, turns) in (self.next..).zip(convs) {
            if self.progress.accepted >= self.cfg.target {
                break;
            }
            let Some(said) = turns.into_iter().collect::<Option<Vec<String>>>() else {
                continue; // a turn failed for good: no record
            };
            let last = c * per + per - 1;
            let k = key(last, 0);
            let (row, dup_of) = judge_item(
                &self.cfg.name,
                &mut self.acceptor,
                &mut self.progress,
                None,
                k,
                0,
                self.cfg.record(&said),
            );
            batch.records.push((k, row, last, dup_of));
        }
        flush(self.db, self.run_id, &mut batch, &mut self.key_ids).await
    }
}

/// Alternating turns (user, assistant, user, …) as exchanges; a trailing user turn is left out.
fn pairs(said: &[String]) -> Vec<Exchange> {
    said.chunks_exact(2)
        .map(|p| Exchange(p[0].clone(), p[1].clone()))
        .collect()
}

/// A whole conversation (an even number of turns) as a record: the last exchange its
/// instruction and output, the earlier ones its history.
fn conversation(said: &[String]) -> Record {
    let mut history = pairs(said);
    let last = history
        .pop()
        .unwrap_or_else(|| Exchange(String::new(), String::new()));
    Record {
        instruction: last.0,
        output: last.1,
        history,
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_become_one_record_with_the_earlier_exchanges_as_history() {
        let said: Vec<String> = ["u1", "a1", "u2", "a2", "u3", "a3"]
            .map(String::from)
            .to_vec();
        let r = conversation(&said);
        assert_eq!((r.instruction.as_str(), r.output.as_str()), ("u3", "a3"));
        assert_eq!(
            r.history,
            vec![
                Exchange("u1".into(), "a1".into()),
                Exchange("u2".into(), "a2".into())
            ]
        );
        let one = conversation(&said[..2]);
        assert_eq!((one.instruction.as_str(), one.history.len()), ("u1", 0));
        // Before an answer: the exchanges so far, the pending question left out.
        assert_eq!(pairs(&said[..3]).len(), 1);
    }
}
