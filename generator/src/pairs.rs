//! `instill pairs`: K answers sampled for each instruction, every answer graded by a judge with
//! a rubric, and the best and worst kept as a preference pair when their grades are far enough
//! apart (core's `pick_pair`), else the reason stored.
//!
//! Two stage runs hold the requests: `NAME` (kind `pairs_sample`) and `NAME/judge` (kind
//! `pairs_judge`). Sample `k` of record `r` is request `r·K + k` of both: the sample, then its
//! grade. Each sample request carries its own seed drawn from `(seed, idx)`, so the K prompts,
//! all the same text, are sampled differently and alike on every rerun. The records go in
//! chunks: a chunk's samples, then their grades, then one transaction of preference rows for
//! the instructions whose every sample is answered and graded. A rerun skips what is stored
//! and finishes the rest, so a kill anywhere gives the rows an uninterrupted run writes.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::pin;

use instill_core::{Answer, Lang, NoPair, Record, RunKind, RunStatus, now_ms, pick_pair};
use instill_prompts::{Rubric, parse_score};
use instill_storage::{Db, NewPreference, StoredRequest};

use crate::driven::first_reply;
use crate::run::GenerateError;
use crate::stage::{StageConfig, StageEnding, StageItem, StageProgress, open_stage, run_stage};
use crate::{Backend, Sending};

/// One instruction to make a pair for.
#[derive(Debug, Clone)]
pub struct PairsItem {
    /// `records.id`.
    pub record_id: i64,
    /// The record (its instruction and input are the prompt; its output is not used).
    pub record: Record,
    /// Its language (the judge's rubric follows it).
    pub lang: Lang,
}

/// What a pairs run needs.
#[derive(Debug, Clone)]
pub struct PairsConfig {
    /// The run's name: the pair set's name and its sampling run's; the judge's run is
    /// `NAME/judge`.
    pub name: String,
    /// Answers sampled per instruction (2 or more).
    pub k: u32,
    /// The smallest best-minus-worst grade that makes a pair.
    pub min_margin: f64,
    /// The judge's rubric for Chinese instructions.
    pub rubric_zh: Rubric,
    /// The judge's rubric for the others.
    pub rubric_en: Rubric,
    /// The instructions, in id order, none with a row in the set yet.
    pub items: Vec<PairsItem>,
    /// How samples are sent (temperature, top-p, max tokens, concurrency…).
    pub sample: Sending,
    /// How grades are sent.
    pub judge: Sending,
    /// The run's seed: each sample's own seed is drawn from it and the request's index.
    pub seed: u64,
    /// The caller's settings that decide the prompts and the pairs (fingerprints of both runs).
    pub settings: serde_json::Value,
    /// Instructions per chunk.
    pub chunk: usize,
}

/// A pairs run's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PairsProgress {
    /// Instructions asked for.
    pub total: u64,
    /// Instructions given a row by this invocation.
    pub decided: u64,
    /// Of those, pairs.
    pub pairs: u64,
    /// Of those, instructions without a pair, by why.
    pub no_pair: BTreeMap<NoPair, u64>,
    /// Instructions left without a row because a sample or grade failed (a rerun sends it
    /// again).
    pub waiting: u64,
    /// Samples graded by this invocation's reading whose reply held no grade.
    pub ungraded: u64,
    /// The sampling stage's counters, over every chunk.
    pub samples: StageProgress,
    /// The judge's counters, over every chunk.
    pub grades: StageProgress,
}

/// Why a pairs run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairsEnding {
    /// Every instruction has a row.
    Done,
    /// Requests failed for good: some instructions wait for a rerun.
    Incomplete,
    /// The shutdown signal came; what arrived is stored.
    Interrupted,
}

/// What a pairs run did.
#[derive(Debug, Clone)]
pub struct PairsReport {
    /// The sampling run.
    pub run_id: i64,
    /// The counters.
    pub progress: PairsProgress,
    /// Why it stopped.
    pub ending: PairsEnding,
}

impl PairsConfig {
    fn sample_stage(&self) -> StageConfig {
        StageConfig {
            name: self.name.clone(),
            kind: RunKind::PairsSample,
            settings: self.settings.clone(),
            send: self.sample.clone(),
            seed: Some(self.seed),
        }
    }

    fn judge_stage(&self) -> StageConfig {
        StageConfig {
            name: format!("{}/judge", self.name),
            kind: RunKind::PairsJudge,
            settings: self.settings.clone(),
            send: self.judge.clone(),
            seed: None,
        }
    }

    fn rubric(&self, lang: Lang) -> &Rubric {
        if lang == Lang::Zh {
            &self.rubric_zh
        } else {
            &self.rubric_en
        }
    }

    /// The request index of sample `k` of `record_id`.
    fn idx(&self, record_id: i64, k: u32) -> i64 {
        record_id * i64::from(self.k) + i64::from(k)
    }
}

/// Runs (or resumes) a pairs run until every instruction has a row, a request fails for good,
/// or `shutdown`.
pub async fn run_pairs(
    db: &Db,
    sampler: &Backend,
    judge: &Backend,
    cfg: PairsConfig,
    shutdown: impl Future<Output = ()>,
    mut on_progress: impl FnMut(&PairsProgress),
) -> Result<PairsReport, GenerateError> {
    check(&cfg)?;
    let run_id = open_stage(db, &cfg.sample_stage(), sampler.model()).await?;
    let judge_run_id = open_stage(db, &cfg.judge_stage(), judge.model()).await?;
    let mut progress = PairsProgress {
        total: cfg.items.len() as u64,
        ..PairsProgress::default()
    };
    let pass = Pass {
        db,
        sampler,
        judge,
        cfg: &cfg,
        run_id,
        judge_run_id,
    };
    let mut shutdown = pin!(shutdown);
    let mut ending = PairsEnding::Done;
    for chunk in cfg.items.chunks(cfg.chunk.max(1)) {
        let stopped = pass
            .chunk(chunk, &mut progress, shutdown.as_mut(), &mut on_progress)
            .await?;
        on_progress(&progress);
        if stopped {
            ending = PairsEnding::Interrupted;
            break;
        }
    }
    if ending == PairsEnding::Done && progress.waiting > 0 {
        ending = PairsEnding::Incomplete;
    }
    let status = match ending {
        PairsEnding::Done => RunStatus::Done,
        _ => RunStatus::Stopped,
    };
    db.set_run_status(run_id, status, now_ms()).await?;
    db.set_run_status(judge_run_id, status, now_ms()).await?;
    Ok(PairsReport {
        run_id,
        progress,
        ending,
    })
}

/// Refuses settings a pairs run cannot work with.
fn check(cfg: &PairsConfig) -> Result<(), GenerateError> {
    if cfg.k < 2 {
        return Err(GenerateError::Config(
            "a pair needs at least 2 sampled answers per instruction".into(),
        ));
    }
    if !cfg.min_margin.is_finite() || cfg.min_margin < 0.0 {
        return Err(GenerateError::Config(format!(
            "the minimum margin must be a number ≥ 0, not {}",
            cfg.min_margin
        )));
    }
    if let Some(last) = cfg.items.last()
        && last.record_id.checked_mul(i64::from(cfg.k)).is_none()
    {
        return Err(GenerateError::Config(format!(
            "record id {} is too large to number its {} samples",
            last.record_id, cfg.k
        )));
    }
    Ok(())
}

/// What every chunk of a run shares.
struct Pass<'a> {
    db: &'a Db,
    sampler: &'a Backend,
    judge: &'a Backend,
    cfg: &'a PairsConfig,
    run_id: i64,
    judge_run_id: i64,
}

impl Pass<'_> {
    /// One chunk: samples, grades, rows. Returns whether the shutdown signal stopped it.
    async fn chunk<S: Future<Output = ()>>(
        &self,
        chunk: &[PairsItem],
        progress: &mut PairsProgress,
        mut shutdown: std::pin::Pin<&mut S>,
        on_progress: &mut impl FnMut(&PairsProgress),
    ) -> Result<bool, GenerateError> {
        let cfg = self.cfg;
        let items = chunk.iter().flat_map(|it| {
            (0..cfg.k).map(|k| {
                Ok(StageItem {
                    idx: cfg.idx(it.record_id, k),
                    prompt: it.record.user_turn(),
                })
            })
        });
        let total = chunk.len() as u64 * u64::from(cfg.k);
        let base = progress.clone();
        let report = run_stage(
            self.db,
            self.sampler,
            cfg.sample_stage(),
            total,
            items,
            shutdown.as_mut(),
            |s| {
                let mut p = base.clone();
                add(&mut p.samples, s);
                on_progress(&p);
            },
        )
        .await?;
        add(&mut progress.samples, &report.progress);
        if report.ending == StageEnding::Interrupted {
            return Ok(true);
        }
        let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
            return Ok(false);
        };
        let range = cfg.idx(first.record_id, 0)..cfg.idx(last.record_id, cfg.k);
        let samples = by_idx(self.db.requests_in(self.run_id, range.clone()).await?);
        let prompts = judge_prompts(cfg, chunk, &samples)?;
        let base = progress.clone();
        let report = run_stage(
            self.db,
            self.judge,
            cfg.judge_stage(),
            prompts.len() as u64,
            prompts.into_iter().map(Ok),
            shutdown.as_mut(),
            |s| {
                let mut p = base.clone();
                add(&mut p.grades, s);
                on_progress(&p);
            },
        )
        .await?;
        add(&mut progress.grades, &report.progress);
        let grades = by_idx(self.db.requests_in(self.judge_run_id, range).await?);
        let rows = decide(cfg, chunk, &samples, &grades, self.run_id, progress);
        let mut w = self.db.writer().await?;
        w.insert_preferences(&cfg.name, &rows).await?;
        w.commit().await?;
        Ok(report.ending == StageEnding::Interrupted)
    }
}

/// Stored requests by index.
fn by_idx(rows: Vec<StoredRequest>) -> HashMap<i64, StoredRequest> {
    rows.into_iter().map(|r| (r.idx, r)).collect()
}

/// The judge's prompt for every answered, non-empty sample of the chunk.
fn judge_prompts(
    cfg: &PairsConfig,
    chunk: &[PairsItem],
    samples: &HashMap<i64, StoredRequest>,
) -> Result<Vec<StageItem>, GenerateError> {
    let mut out = Vec::new();
    for it in chunk {
        for k in 0..cfg.k {
            let idx = cfg.idx(it.record_id, k);
            let Some(reply) = samples.get(&idx).and_then(first_reply) else {
                continue;
            };
            if reply.text.trim().is_empty() {
                continue;
            }
            let r = &it.record;
            let prompt = cfg
                .rubric(it.lang)
                .render(&r.instruction, &r.input, &reply.text, &r.history)
                .map_err(|e| {
                    GenerateError::Config(format!(
                        "the rubric cannot render record {}: {e}",
                        it.record_id
                    ))
                })?;
            out.push(StageItem { idx, prompt });
        }
    }
    Ok(out)
}

/// The rows of the chunk's instructions whose every sample is answered and every non-empty
/// answer graded; the others are counted as waiting.
fn decide(
    cfg: &PairsConfig,
    chunk: &[PairsItem],
    samples: &HashMap<i64, StoredRequest>,
    grades: &HashMap<i64, StoredRequest>,
    run_id: i64,
    progress: &mut PairsProgress,
) -> Vec<NewPreference> {
    let scale = cfg.rubric_en.scale();
    let mut rows = Vec::new();
    'items: for it in chunk {
        let mut answers = Vec::new();
        let mut marks = Vec::new();
        for k in 0..cfg.k {
            let idx = cfg.idx(it.record_id, k);
            let Some(reply) = samples.get(&idx).and_then(first_reply) else {
                progress.waiting += 1;
                continue 'items;
            };
            let mark = if reply.text.trim().is_empty() {
                None
            } else {
                let Some(grade) = grades.get(&idx).and_then(first_reply) else {
                    progress.waiting += 1;
                    continue 'items;
                };
                let score = parse_score(&grade.text, scale).ok().map(|v| v.score);
                if score.is_none() {
                    progress.ungraded += 1;
                }
                score
            };
            answers.push(Answer {
                text: reply.text,
                reasoning: reply.reasoning,
                score: mark,
            });
            marks.push(mark);
        }
        let (pick, why) = pick_pair(&marks, cfg.min_margin);
        let side = |i: usize| Some((answers[i].clone(), Some(i as i64)));
        rows.push(NewPreference {
            record_id: it.record_id,
            run_id: Some(run_id),
            import_id: None,
            no_pair: why,
            chosen: pick.and_then(|p| side(p.chosen)),
            rejected: pick.and_then(|p| side(p.rejected)),
            samples: i64::from(cfg.k),
            graded: marks.iter().flatten().count() as i64,
            created_at: now_ms(),
        });
        progress.decided += 1;
        match why {
            None => progress.pairs += 1,
            Some(w) => *progress.no_pair.entry(w).or_default() += 1,
        }
    }
    rows
}

/// Adds a stage's counters to a running total.
fn add(total: &mut StageProgress, s: &StageProgress) {
    total.total += s.total;
    total.answered_before += s.answered_before;
    total.sent_now += s.sent_now;
    total.answered_now += s.answered_now;
    total.failed_now += s.failed_now;
    total.retries += s.retries;
    total.prompt_tokens = total.prompt_tokens.saturating_add(s.prompt_tokens);
    total.completion_tokens = total.completion_tokens.saturating_add(s.completion_tokens);
    for (k, n) in &s.errors {
        *total.errors.entry(k.clone()).or_default() += n;
    }
}
