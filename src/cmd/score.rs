//! `instill score`: a judge's rubric over stored records through the stage engine, every reply
//! stored before its score is read; then the scores read from the stored replies, in pages,
//! into the `scores` table under the scorer's name. `--metric` scores with a local model
//! instead (`score_metric.rs`).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use anyhow::Context;
use instill_core::{Lang, RunKind, ScoreMethod, ScoreSummary, now_ms, summarize};
use instill_generator::{Backend, GenerateError, StageEnding, StageItem, StageReport};
use instill_prompts::{NoScore, Rubric, Scale, parse_score};
use instill_storage::{Db, NewScore, Scorer, StatusFilter, StoredRecord};
use serde::Serialize;

use crate::cli::{GlobalArgs, ScoreArgs};
use crate::cmd::{backend, scope, stage};
use crate::signals::Stop;
use crate::{Outcome, progress};

/// The rubrics a scorer applies: one file for every record, or the built-in pair (Chinese
/// records get the Chinese rubric, the rest the English one). Both built-ins share a scale.
pub struct Rubrics {
    /// `builtin` or the file's path, as given.
    pub spec: String,
    zh: Rubric,
    en: Rubric,
}

impl Rubrics {
    /// The rubrics `--rubric` names.
    pub fn load(spec: &str) -> anyhow::Result<Rubrics> {
        if spec == "builtin" {
            return Ok(Rubrics {
                spec: spec.into(),
                zh: Rubric::builtin(Lang::Zh)?,
                en: Rubric::builtin(Lang::En)?,
            });
        }
        let text = std::fs::read_to_string(spec)
            .with_context(|| format!("--rubric {spec}: cannot read the rubric"))?;
        let rubric = Rubric::parse(spec, &text).map_err(|e| anyhow::anyhow!("--rubric {e}"))?;
        Ok(Rubrics {
            spec: spec.into(),
            zh: rubric.clone(),
            en: rubric,
        })
    }

    /// The rubric for a record in `lang`.
    pub fn for_lang(&self, lang: Lang) -> &Rubric {
        if lang == Lang::Zh { &self.zh } else { &self.en }
    }

    /// The Chinese and the English rubric.
    pub fn pair(&self) -> (&Rubric, &Rubric) {
        (&self.zh, &self.en)
    }

    /// The scale every score of these rubrics is on.
    pub fn scale(&self) -> Scale {
        self.en.scale()
    }

    /// One hash of the rubrics' contents: the scorer's identity.
    pub fn hash(&self) -> String {
        if self.zh.hash() == self.en.hash() {
            self.en.hash().to_string()
        } else {
            format!("{}+{}", self.zh.hash(), self.en.hash())
        }
    }
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    scorer: &'a str,
    method: &'static str,
    model: &'a str,
    rubric: &'a str,
    rubric_hash: &'a str,
    scale: [f64; 2],
    ending: &'static str,
    records: u64,
    requests_sent_now: u64,
    requests_replayed: u64,
    requests_failed: u64,
    requests_retried_attempts: u64,
    errors_by_kind: &'a BTreeMap<String, u64>,
    scored_now: u64,
    no_score_now: u64,
    no_score_by_reason: BTreeMap<String, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost: Option<f64>,
    scores: ScoreSummary,
    seconds: f64,
}

pub async fn run(global: &GlobalArgs, args: &ScoreArgs) -> anyhow::Result<Outcome> {
    match args.metric {
        Some(metric) => crate::cmd::score_metric::run(global, args, metric.into()).await,
        None => judge(global, args).await,
    }
}

/// The judge's run: check, send what is not answered, read scores, summarise.
async fn judge(global: &GlobalArgs, args: &ScoreArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let rubrics = Rubrics::load(&args.rubric)?;
    let name = args.name.clone().unwrap_or_else(|| "judge".into());
    let model = backend::resolve_model(
        global,
        &args.server,
        args.judge_model.as_deref(),
        "--judge-model",
    )
    .await?;
    let api_key = backend::access(&args.server)?;
    let _lock = stage::sqlite_lock(&global.db, "score", "scoring process")?;
    let db = Db::open(&global.db).await?;
    let _owner = stage::postgres_lock(&db, "score", &name).await?;
    let scorer = check_scorer(&db, &name, &model, &rubrics).await?;
    let records = records_to_score(&db, global, args, &name).await?;
    if !global.quiet {
        eprintln!(
            "score {name}: {}, judge {model}, rubric {} ({}), {} records to score, database {}",
            backend::describe(&args.server),
            rubrics.spec,
            rubrics.scale(),
            records.len(),
            instill_core::redact_url(&global.db)
        );
    }
    let backend =
        backend::open(&args.server, &args.send, model.clone(), api_key, args.seed).await?;
    let (report, stop) = send_all(global, args, &db, &backend, &name, &rubrics, &records).await;
    // Whatever happened, the replies stored so far become scores.
    let run = db.find_run(&stage_name(&name)).await?;
    let mut read = ReadCounts::default();
    if let Some(run) = &run {
        if scorer.is_none() {
            db.create_scorer(&new_scorer(&name, &model, &rubrics, run.id))
                .await?;
        }
        read = read_scores(&db, &name, run.id, rubrics.scale()).await?;
    }
    let report = report
        .map_err(|e| anyhow::anyhow!(stage::message(&e, &format!("scorer `{name}`"), "--name")))?;
    let all = db.scores(&name).await?;
    let summary = Summary {
        scorer: &name,
        method: ScoreMethod::Judge.as_str(),
        model: &model,
        rubric: &rubrics.spec,
        rubric_hash: &rubrics.hash(),
        scale: [rubrics.scale().min, rubrics.scale().max],
        ending: match report.ending {
            StageEnding::Done if report.progress.failed_now == 0 => "done",
            StageEnding::Done => "failed_requests",
            StageEnding::Interrupted => "interrupted",
        },
        records: records.len() as u64,
        requests_sent_now: report.progress.sent_now,
        requests_replayed: report.progress.answered_before,
        requests_failed: report.progress.failed_now,
        requests_retried_attempts: report.progress.retries,
        errors_by_kind: &report.progress.errors,
        scored_now: read.scored,
        no_score_now: read.no_score.values().sum(),
        no_score_by_reason: read.no_score,
        prompt_tokens: report.progress.prompt_tokens,
        completion_tokens: report.progress.completion_tokens,
        cost: backend::cost(
            &args.send,
            report.progress.prompt_tokens,
            report.progress.completion_tokens,
        ),
        scores: summarize(
            all.iter().map(|s| s.score),
            Some((rubrics.scale().min, rubrics.scale().max)),
        ),
        seconds: started.elapsed().as_secs_f64(),
    };
    db.close().await;
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    let stop = match (report.ending, stop) {
        (StageEnding::Interrupted, None) => Some(Stop::Interrupt),
        (_, stop) => stop,
    };
    Ok(stage::outcome(stop, report.progress.failed_now))
}

/// The stage run that holds a judge scorer's replies.
fn stage_name(scorer: &str) -> String {
    format!("score/{scorer}")
}

/// The stored scorer named `name`, if any, after checking it is this judge with this rubric: a
/// scorer's scores all come from one judge and one rubric.
async fn check_scorer(
    db: &Db,
    name: &str,
    model: &str,
    rubrics: &Rubrics,
) -> anyhow::Result<Option<Scorer>> {
    let Some(s) = db.scorer(name).await? else {
        return Ok(None);
    };
    let mut diffs = Vec::new();
    if s.method != ScoreMethod::Judge {
        diffs.push(format!("method: {} → judge", s.method));
    }
    if s.model != model {
        diffs.push(format!("judge: {} → {model}", s.model));
    }
    if s.rubric_hash.as_deref() != Some(rubrics.hash().as_str()) {
        diffs.push(format!(
            "rubric: {} → {}",
            s.rubric_hash.as_deref().unwrap_or("none"),
            rubrics.hash()
        ));
    }
    if !diffs.is_empty() {
        anyhow::bail!(
            "scorer `{name}` was made with other settings ({}); score under another --name to keep both (a second scorer lives beside the first)",
            diffs.join("; ")
        );
    }
    Ok(Some(s))
}

/// The scorer row of a judge.
fn new_scorer(name: &str, model: &str, rubrics: &Rubrics, run_id: i64) -> Scorer {
    let scale = rubrics.scale();
    Scorer {
        name: name.into(),
        method: ScoreMethod::Judge,
        model: model.into(),
        rubric_hash: Some(rubrics.hash()),
        scale: Some((scale.min, scale.max)),
        run_id: Some(run_id),
        settings_json:
            serde_json::json!({ "rubric": rubrics.spec, "scale": [scale.min, scale.max] })
                .to_string(),
        created_at: now_ms(),
    }
}

/// The records `--status` selects that `name` has not scored, the first `--limit` of them.
pub async fn records_to_score(
    db: &Db,
    global: &GlobalArgs,
    args: &ScoreArgs,
    name: &str,
) -> anyhow::Result<Vec<StoredRecord>> {
    let filter = StatusFilter::from(args.status);
    let scored: HashSet<i64> = db.scores(name).await?.iter().map(|s| s.record_id).collect();
    let mut records =
        scope::load_records(db, filter, progress::enabled(global.no_progress)).await?;
    records.retain(|r| !scored.contains(&r.id));
    if let Some(limit) = args.limit {
        records.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok(records)
}

/// Sends every record's prompt through the stage, with a progress bar, until done or a signal.
async fn send_all(
    global: &GlobalArgs,
    args: &ScoreArgs,
    db: &Db,
    backend: &Backend,
    name: &str,
    rubrics: &Rubrics,
    records: &[StoredRecord],
) -> (Result<StageReport, GenerateError>, Option<Stop>) {
    let config = stage::config(
        stage_name(name),
        RunKind::Score,
        serde_json::json!({ "scorer": name, "rubric_hash": rubrics.hash() }),
        &args.send,
        args.temperature,
        args.max_tokens,
    );
    let items = records.iter().map(|r| {
        rubrics
            .for_lang(r.lang)
            .render(
                &r.record.instruction,
                &r.record.input,
                &r.record.output,
                &r.record.history,
            )
            .map(|prompt| StageItem { idx: r.id, prompt })
            .map_err(|e| format!("the rubric cannot render record {}: {e}", r.id))
    });
    stage::drive(
        global,
        db,
        backend,
        config,
        records.len() as u64,
        items,
        "judging",
    )
    .await
}

/// What reading scores from the stored replies found.
#[derive(Debug, Default)]
struct ReadCounts {
    scored: u64,
    no_score: BTreeMap<String, u64>,
}

/// Replies read per transaction.
const READ_PAGE: i64 = 1000;

/// Reads a score from every stored reply of the run that has none yet, a page per transaction.
async fn read_scores(db: &Db, name: &str, run_id: i64, scale: Scale) -> anyhow::Result<ReadCounts> {
    let mut counts = ReadCounts::default();
    let mut after = i64::MIN;
    loop {
        let page = db.unscored_replies(name, run_id, after, READ_PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.idx;
        let rows: Vec<NewScore> = page
            .iter()
            .map(|r| {
                let text = stage::first_choice(r.response.as_deref());
                let (score, rationale, reason) = match parse_score(&text, scale) {
                    Ok(v) => {
                        counts.scored += 1;
                        (Some(v.score), v.rationale, None)
                    }
                    Err(e) => {
                        *counts.no_score.entry(reason_code(&e)).or_default() += 1;
                        (None, text, Some(e.to_string()))
                    }
                };
                NewScore {
                    record_id: r.idx,
                    score,
                    rationale,
                    reason,
                    request_id: Some(r.id),
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.completion_tokens,
                    created_at: now_ms(),
                }
            })
            .collect();
        let mut w = db.writer().await?;
        w.insert_scores(name, &rows).await?;
        w.commit().await?;
    }
    Ok(counts)
}

/// A short key for counting replies without a score by why.
fn reason_code(e: &NoScore) -> String {
    match e {
        NoScore::Empty => "empty reply",
        NoScore::NotFound => "no score in the reply",
        NoScore::OutOfScale { .. } => "score outside the scale",
        NoScore::Ambiguous { .. } => "not one score",
    }
    .to_string()
}

fn print_summary(s: &Summary) {
    let verb = match s.ending {
        "done" => "done",
        "failed_requests" => "some requests failed (run the same command to send them again)",
        _ => "interrupted (run the same command to resume)",
    };
    println!(
        "scorer {} ({} {}, rubric {}, scale {}–{}): {verb}",
        s.scorer, s.method, s.model, s.rubric, s.scale[0], s.scale[1]
    );
    println!(
        "records: {} to score; {} scored now, {} replies without a score",
        s.records, s.scored_now, s.no_score_now
    );
    for (r, n) in &s.no_score_by_reason {
        println!("  no score: {r:<40} {n:>8}");
    }
    println!(
        "requests: {} sent now, {} answered before, {} failed, {} extra attempts",
        s.requests_sent_now, s.requests_replayed, s.requests_failed, s.requests_retried_attempts
    );
    for (k, n) in s.errors_by_kind {
        println!("  failed attempts {k:<16} {n:>8}");
    }
    println!(
        "tokens: {} in, {} out{}",
        s.prompt_tokens,
        s.completion_tokens,
        s.cost.map(|c| format!("; cost {c:.4}")).unwrap_or_default()
    );
    crate::scoreboard::print_distribution(&s.scores, Some((s.scale[0], s.scale[1])));
    println!("{:.1} s", s.seconds);
}
