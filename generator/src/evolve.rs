//! Evol-Instruct (`instill evolve`): the tasks of a pool frozen at the run's start (seed tasks
//! or accepted records) are rewritten round after round, in depth or in breadth, each rewrite
//! answered, and the paper's elimination applied before the survivors go through the
//! generation acceptor (rules, exact, ROUGE-L).
//!
//! Round `r` (1-based) of pool item `i` (of `P`) is request `((r−1)·P + i)·2` of the run (the
//! rewrite) and `… + 1` (its answer); the judge's comparison of the rewrite with its original is
//! request `(r−1)·P + i` of the run `NAME/judge` (its own model and sampling). A round goes step
//! by step (rewrites, answers, comparisons), each step one [`run_stage`] over the items that
//! need it, its prompts rendered from the stored replies before it, so a run killed anywhere
//! resumes sending only what is missing. The round is judged in item order once every item has
//! its replies, and stored in one transaction: an eliminated rewrite as a rejected record with
//! its reason, a survivor judged like a generated task; an accepted one replaces its item in
//! the next round's pool, any other leaves the item as it was. Each record carries its
//! provenance (the task it rewrites, the round, the operation).

use std::future::Future;
use std::pin::pin;

use instill_core::{
    Evolution, EvolveOp, EvolvedFrom, Lang, Reason, Record, RunKind, RunStatus, SplitMix, Status,
    now_ms,
};
use instill_dedup::{RougeConfig, Rules};
use instill_prompts::{
    EvolvePrompts, answer_elimination, clean_rewrite, given_text, parse_equality,
    rewrite_elimination,
};
use instill_storage::Db;
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_128;

use crate::accept::{Acceptor, Key, key, storable_text};
use crate::backend::Backend;
use crate::driven::{driver_lock, first_reply, with_stage};
use crate::run::{
    Batch, GenerateError, Progress, RequestParams, Sending, differences, eliminated_row, flush,
    judge_item, restore_with,
};
use crate::stage::{StageConfig, StageEnding, StageItem, StageProgress, open_stage, run_stage};

/// A task of the pool: what it is, where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolItem {
    /// The seed or record it is (an evolved record's parent once rewritten).
    pub from: EvolvedFrom,
    /// Its text.
    pub record: Record,
    /// Its language (the rewrite prompts' language: Chinese for `zh`, English otherwise).
    pub lang: Lang,
}

/// Everything an evolve run is told.
#[derive(Debug, Clone)]
pub struct EvolveConfig {
    /// The run's unique name (resuming = running the same name again).
    pub name: String,
    /// Rounds of rewriting (a finished run given more goes on from where it stopped).
    pub rounds: u32,
    /// The operations drawn from, each equally likely.
    pub ops: Vec<EvolveOp>,
    /// What the pool is (`seeds`, `records`), for the fingerprint and messages.
    pub from: String,
    /// Round 0's pool, in id order: the run's fingerprint holds its ids.
    pub pool: Vec<PoolItem>,
    /// The rewrite, judge and answering prompts.
    pub prompts: EvolvePrompts,
    /// Ask for step-by-step reasoning before each answer (kept as the record's reasoning).
    pub cot: bool,
    /// The run's random seed: item `i` of round `r` always draws the same operation.
    pub seed: u64,
    /// How its requests are sent (the rewrites' and answers' sampling; `n` must be 1).
    pub send: Sending,
    /// Sampling of the judge's comparisons (`n` must be 1).
    pub judge_request: RequestParams,
    /// The quality rules (on the survivors).
    pub rules: Rules,
    /// The ROUGE-L rule (survivors against the pool's tasks and everything accepted).
    pub rouge: RougeConfig,
}

/// Why an evolve run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvolveEnding {
    /// Every round is judged.
    Done,
    /// A request of the round under way failed for good (twice): the round is not judged; a
    /// rerun sends what is missing.
    Incomplete,
    /// The shutdown signal came; what arrived is stored.
    Interrupted,
}

/// What an evolve run did.
#[derive(Debug, Clone)]
pub struct EvolveReport {
    /// The run's id.
    pub run_id: i64,
    /// Its counters (judged records: accepted, rejected by reason, eliminations included).
    pub progress: Progress,
    /// Rounds judged (earlier invocations included).
    pub rounds_done: u32,
    /// Why it stopped.
    pub ending: EvolveEnding,
}

/// The steps of a round, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Rewrite,
    Answer,
    Judge,
}

/// One item's stored replies in the round under way.
#[derive(Debug, Clone, Default)]
struct Replies {
    /// The rewrite reply, cleaned into the new instruction.
    rewrite: Option<String>,
    /// The answer and its reasoning.
    answer: Option<(String, String)>,
    /// The judge's reply.
    verdict: Option<String>,
}

impl Replies {
    /// Whether `step` still has to be sent for this item.
    fn needs(&self, step: Step) -> bool {
        match (step, &self.rewrite, &self.answer) {
            (Step::Rewrite, None, _) => true,
            (Step::Answer, Some(rw), None) => rewrite_elimination(rw).is_none(),
            (Step::Judge, Some(rw), Some((answer, _))) => {
                self.verdict.is_none()
                    && rewrite_elimination(rw).is_none()
                    && answer_elimination(answer).is_none()
            }
            _ => false,
        }
    }

    fn complete(&self) -> bool {
        [Step::Rewrite, Step::Answer, Step::Judge]
            .iter()
            .all(|&s| !self.needs(s))
    }
}

impl EvolveConfig {
    fn pool_len(&self) -> i64 {
        self.pool.len() as i64
    }

    /// The fingerprint's account of the pool: what it is, how many, a hash of their ids.
    fn pool_print(&self) -> serde_json::Value {
        let ids: Vec<String> = self
            .pool
            .iter()
            .map(|p| match p.from {
                EvolvedFrom::Seed(id) => format!("s{id}"),
                EvolvedFrom::Record(id) => format!("r{id}"),
            })
            .collect();
        serde_json::json!({
            "from": self.from,
            "items": self.pool.len(),
            "ids_hash": format!("{:032x}", xxh3_128(ids.join(",").as_bytes())),
        })
    }

    /// The stage of rewrites and answers: its settings are the run's fingerprint.
    fn stage(&self) -> StageConfig {
        let ops: Vec<&str> = self.ops.iter().map(|o| o.as_str()).collect();
        self.stage_config(
            self.name.clone(),
            RunKind::Evolve,
            self.send.request.clone(),
            serde_json::json!({
                "mode": "evolve",
                "pool": self.pool_print(),
                "ops": ops,
                "cot": self.cot,
                "prompts_hash": self.prompts.hash(),
                "seed": self.seed,
                "rouge_threshold": self.rouge.threshold,
                "tokenizer": self.rouge.tokenizer.name(),
                "rules": format!("{:032x}", xxh3_128(self.rules.to_toml().as_bytes())),
            }),
        )
    }

    /// The judge's stage, `NAME/judge`.
    fn judge_stage(&self) -> StageConfig {
        self.stage_config(
            format!("{}/judge", self.name),
            RunKind::EvolveJudge,
            self.judge_request.clone(),
            serde_json::json!({ "prompts_hash": self.prompts.hash(), "pool": self.pool_print() }),
        )
    }

    fn stage_config(
        &self,
        name: String,
        kind: RunKind,
        request: RequestParams,
        settings: serde_json::Value,
    ) -> StageConfig {
        StageConfig {
            name,
            kind,
            settings,
            send: Sending {
                request,
                ..self.send.clone()
            },
            seed: None,
        }
    }

    /// The operation item `i` of round `r` is rewritten by.
    pub fn op_for(&self, r: u32, i: usize) -> EvolveOp {
        let mut rng =
            SplitMix::for_request(self.seed ^ u64::from(r).wrapping_mul(0x9E37_79B9), i as u64);
        self.ops[rng.below(self.ops.len())]
    }
}

/// Runs (or resumes) an evolve run until every round is judged, a request fails for good, or
/// `shutdown`.
pub async fn run_evolve(
    db: &Db,
    backend: &Backend,
    judge: &Backend,
    cfg: EvolveConfig,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&Progress),
) -> Result<EvolveReport, GenerateError> {
    check(&cfg)?;
    check_pool(db, &cfg).await?;
    let stage = cfg.stage();
    let judge_stage = cfg.judge_stage();
    let run_id = open_stage(db, &stage, backend.model()).await?;
    let _driver = driver_lock(db, run_id, &cfg.name).await?;
    let judge_run_id = open_stage(db, &judge_stage, judge.model()).await?;
    let originals: Vec<Record> = cfg.pool.iter().map(|p| p.record.clone()).collect();
    let acceptor = Acceptor::new(cfg.rules.clone(), cfg.rouge, &originals);
    let target = cfg.pool.len() as u64 * u64::from(cfg.rounds);
    let restored = restore_with(db, run_id, target, acceptor, false).await?;
    let mut progress = restored.progress;
    add_judge_totals(db, judge_run_id, &mut progress).await?;
    let mut ev = Evolve {
        db,
        backend,
        judge,
        run_id,
        judge_run_id,
        stage,
        judge_stage,
        acceptor: restored.acceptor,
        key_ids: restored.key_ids,
        progress,
        pool: cfg.pool.clone(),
        cfg,
    };
    let done = ev.restore_pool().await?;
    let mut shutdown = pin!(shutdown);
    let mut ending = EvolveEnding::Done;
    let mut rounds_done = done;
    for r in done + 1..=ev.cfg.rounds {
        match ev.round(r, shutdown.as_mut(), &mut on_progress).await? {
            Some(Some(replies)) => ev.judge_round(r, replies).await?,
            Some(None) => {
                ending = EvolveEnding::Incomplete;
                break;
            }
            None => {
                ending = EvolveEnding::Interrupted;
                break;
            }
        }
        rounds_done = r;
        on_progress(&ev.progress);
    }
    let status = match ending {
        EvolveEnding::Done => RunStatus::Done,
        _ => RunStatus::Stopped,
    };
    db.set_run_status(run_id, status, now_ms()).await?;
    on_progress(&ev.progress);
    Ok(EvolveReport {
        run_id,
        progress: ev.progress,
        rounds_done,
        ending,
    })
}

/// Refuses settings an evolve run cannot work with.
fn check(cfg: &EvolveConfig) -> Result<(), GenerateError> {
    let refuse = |m: &str| Err(GenerateError::Config(m.to_string()));
    if cfg.pool.is_empty() {
        return refuse("the pool to evolve is empty");
    }
    if cfg.ops.is_empty() {
        return refuse("no evolution operation is enabled");
    }
    if cfg.rounds == 0 {
        return refuse("an evolve run needs at least one round");
    }
    if cfg.send.request.n != 1 || cfg.judge_request.n != 1 {
        return refuse("each step goes on from one reply: n must be 1");
    }
    Ok(())
}

/// A resumed run must evolve the pool it started with: refused, saying how it changed.
async fn check_pool(db: &Db, cfg: &EvolveConfig) -> Result<(), GenerateError> {
    let Some(run) = db.find_run(&cfg.name).await? else {
        return Ok(());
    };
    let stored: serde_json::Value = serde_json::from_str(&run.config_json).unwrap_or_default();
    let was = &stored["settings"]["pool"];
    let now = cfg.pool_print();
    if run.kind != RunKind::Evolve || was.is_null() || *was == now {
        return Ok(()); // another kind, or settings: the fingerprint check names it
    }
    Err(GenerateError::Config(format!(
        "run `{}` evolves the pool frozen when it started ({} {}), and the {} to evolve are now {} ({}): resume it with the same pool, or start another run under another name",
        cfg.name,
        was["items"],
        was["from"].as_str().unwrap_or("items"),
        cfg.from,
        cfg.pool.len(),
        differences(was, &now).join("; ")
    )))
}

/// Adds the judge run's stored requests and tokens to the counters.
async fn add_judge_totals(db: &Db, run_id: i64, p: &mut Progress) -> Result<(), GenerateError> {
    let t = db.run_totals(run_id).await?;
    p.requests_ok += t.requests_done as u64;
    p.requests_failed += t.requests_failed as u64;
    p.retries += t.retries as u64;
    p.prompt_tokens = p
        .prompt_tokens
        .saturating_add(u64::try_from(t.prompt_tokens).unwrap_or(0));
    p.completion_tokens = p
        .completion_tokens
        .saturating_add(u64::try_from(t.completion_tokens).unwrap_or(0));
    Ok(())
}

/// An evolve run's state while it goes.
struct Evolve<'a> {
    db: &'a Db,
    backend: &'a Backend,
    judge: &'a Backend,
    run_id: i64,
    judge_run_id: i64,
    cfg: EvolveConfig,
    stage: StageConfig,
    judge_stage: StageConfig,
    acceptor: Acceptor,
    key_ids: FxHashMap<Key, i64>,
    progress: Progress,
    /// The pool the next round rewrites.
    pool: Vec<PoolItem>,
}

impl Evolve<'_> {
    /// The request index of step `step` (0 rewrite, 1 answer) of item `i` in round `r`.
    fn idx(&self, r: u32, i: usize, step: i64) -> i64 {
        ((i64::from(r) - 1) * self.cfg.pool_len() + i as i64) * 2 + step
    }

    /// The judge run's request index of item `i` in round `r`.
    fn judge_idx(&self, r: u32, i: usize) -> i64 {
        (i64::from(r) - 1) * self.cfg.pool_len() + i as i64
    }

    /// The pool as the judged rounds left it (their accepted records in place of the items
    /// they rewrote); returns how many rounds are judged.
    async fn restore_pool(&mut self) -> Result<u32, GenerateError> {
        let mut done = 0;
        let p = self.cfg.pool_len();
        for rec in self.db.evolved_records(self.run_id).await? {
            done = done.max(rec.evolution.round);
            let i = ((rec.idx / 2) % p) as usize;
            if rec.status == Status::Accepted
                && let Some(item) = self.pool.get_mut(i)
            {
                *item = PoolItem {
                    from: EvolvedFrom::Record(rec.id),
                    record: rec.record,
                    lang: rec.lang,
                };
            }
        }
        Ok(done)
    }

    /// Sends round `r`'s missing requests step by step (a second pass for what failed for
    /// good). Returns every item's replies; `Some(None)` when some are still missing; `None`
    /// when the shutdown signal came (what arrived is stored).
    async fn round<S: Future<Output = ()>>(
        &mut self,
        r: u32,
        mut shutdown: std::pin::Pin<&mut S>,
        on_progress: &mut impl FnMut(&Progress),
    ) -> Result<Option<Option<Vec<Replies>>>, GenerateError> {
        let mut replies = self.stored(r).await?;
        self.progress.replayed += replies
            .iter()
            .map(|x| {
                u64::from(x.rewrite.is_some())
                    + u64::from(x.answer.is_some())
                    + u64::from(x.verdict.is_some())
            })
            .sum::<u64>();
        for _pass in 0..2 {
            for step in [Step::Rewrite, Step::Answer, Step::Judge] {
                let items = self.items(r, &replies, step)?;
                if items.is_empty() {
                    continue;
                }
                let (backend, stage) = match step {
                    Step::Judge => (self.judge, self.judge_stage.clone()),
                    _ => (self.backend, self.stage.clone()),
                };
                let base = self.progress.clone();
                let report = run_stage(
                    self.db,
                    backend,
                    stage,
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
                replies = self.stored(r).await?;
            }
            if replies.iter().all(Replies::complete) {
                return Ok(Some(Some(replies)));
            }
        }
        Ok(Some(None))
    }

    /// Round `r`'s stored replies, by item.
    async fn stored(&self, r: u32) -> Result<Vec<Replies>, GenerateError> {
        let n = self.pool.len();
        let mut out = vec![Replies::default(); n];
        let (lo, hi) = (self.idx(r, 0, 0), self.idx(r, n, 0));
        for q in self.db.requests_from(self.run_id, lo).await? {
            if q.idx >= hi {
                break;
            }
            if let Some(crate::driven::Reply {
                text, reasoning, ..
            }) = first_reply(&q)
            {
                let item = &mut out[((q.idx - lo) / 2) as usize];
                if (q.idx - lo) % 2 == 0 {
                    item.rewrite = Some(clean_rewrite(&text));
                } else {
                    item.answer = Some((text.trim().to_string(), reasoning));
                }
            }
        }
        let (lo, hi) = (self.judge_idx(r, 0), self.judge_idx(r, n));
        for q in self.db.requests_from(self.judge_run_id, lo).await? {
            if q.idx >= hi {
                break;
            }
            if let Some(crate::driven::Reply { text, .. }) = first_reply(&q) {
                out[(q.idx - lo) as usize].verdict = Some(text);
            }
        }
        Ok(out)
    }

    /// Step `step`'s requests of round `r`: one per item that needs it, its prompt rendered
    /// from the replies before it (what no database stores, NUL, never reaches a prompt).
    fn items(
        &self,
        r: u32,
        replies: &[Replies],
        step: Step,
    ) -> Result<Vec<StageItem>, GenerateError> {
        let mut out = Vec::new();
        for (i, (item, got)) in self.pool.iter().zip(replies).enumerate() {
            if !got.needs(step) {
                continue;
            }
            let given = given_text(&item.record.instruction, &item.record.input);
            let rewrite = storable_text(got.rewrite.as_deref().unwrap_or(""));
            let p = &self.cfg.prompts;
            let (idx, rendered) = match step {
                Step::Rewrite => (
                    self.idx(r, i, 0),
                    p.rewrite(self.cfg.op_for(r, i), item.lang, &given),
                ),
                Step::Answer => (
                    self.idx(r, i, 1),
                    p.answer(item.lang, &rewrite, self.cfg.cot),
                ),
                Step::Judge => (self.judge_idx(r, i), p.judge(item.lang, &given, &rewrite)),
            };
            let prompt = rendered.map_err(|e| GenerateError::Config(e.to_string()))?;
            out.push(StageItem { idx, prompt });
        }
        Ok(out)
    }

    /// Judges round `r` in item order (eliminations, then the acceptor), stores its records in
    /// one transaction, and puts the accepted ones in the pool.
    async fn judge_round(&mut self, r: u32, replies: Vec<Replies>) -> Result<(), GenerateError> {
        let mut batch = Batch::default();
        let mut kept: Vec<(usize, Key, Record, Lang)> = Vec::new();
        for (i, got) in replies.into_iter().enumerate() {
            let op = self.cfg.op_for(r, i);
            let idx = self.idx(r, i, 0);
            let k = key(idx, 0);
            let (answer, reasoning) = got.answer.unwrap_or_default();
            let rewrite = got.rewrite.unwrap_or_default();
            let record = Record {
                instruction: rewrite.clone(),
                output: answer.clone(),
                reasoning: storable_text(&reasoning),
                ..Record::default()
            };
            let evolution = Evolution {
                from: self.pool[i].from,
                round: r,
                op,
            };
            let eliminated = rewrite_elimination(&rewrite)
                .or_else(|| answer_elimination(&answer))
                .or_else(|| match got.verdict.as_deref().map(parse_equality) {
                    Some(Some(false)) => None,
                    Some(Some(true)) => Some(Reason::EvolNoGain),
                    _ => Some(Reason::EvolUnjudged),
                });
            let (mut row, dup_of) = match eliminated {
                Some(reason) => {
                    *self
                        .progress
                        .rejected
                        .entry(reason.to_string())
                        .or_default() += 1;
                    (eliminated_row(&self.cfg.name, record, reason, 0), None)
                }
                None => judge_item(
                    &self.cfg.name,
                    &mut self.acceptor,
                    &mut self.progress,
                    None,
                    k,
                    0,
                    record,
                ),
            };
            row.evolution = Some(evolution);
            if row.status == Status::Accepted {
                kept.push((i, k, row.record.clone(), row.lang));
            }
            batch.records.push((k, row, idx, dup_of));
        }
        flush(self.db, self.run_id, &mut batch, &mut self.key_ids).await?;
        for (i, k, record, lang) in kept {
            if let Some(&id) = self.key_ids.get(&k) {
                self.pool[i] = PoolItem {
                    from: EvolvedFrom::Record(id),
                    record,
                    lang,
                };
            }
        }
        Ok(())
    }
}
