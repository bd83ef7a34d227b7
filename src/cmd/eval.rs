//! `instill eval`: BELLE's protocol on any model. Two stages: the candidate answers every
//! question (`eval/LABEL/answers`), then the judge grades every stored answer against the
//! reference with its class's prompt (`eval/LABEL/judge`, `--judge-repeat` times each). The
//! grades read from the judge's stored replies go to `eval_grades`; per-class means come from
//! there. `--compare` is in `eval_compare.rs`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use instill_core::{ClassMeans, RunKind, class_means, now_ms};
use instill_generator::{Backend, StageEnding, StageItem, StageReport};
use instill_prompts::{EvalItem, JudgePrompts, parse_eval_set, parse_score};
use instill_storage::{Db, Evaluation, Grade};
use serde::Serialize;

use crate::Outcome;
use crate::cli::{BackendArg, EvalArgs, GlobalArgs, ModelArgs};
use crate::cmd::{backend, stage};
use crate::signals::Stop;

/// The eval set as read: its questions (the first `--limit`), file name and SHA-256.
pub struct EvalSet {
    pub items: Vec<EvalItem>,
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    label: &'a str,
    model: &'a str,
    judge_model: &'a str,
    eval_set: &'a str,
    judge_prompts: &'a str,
    questions: usize,
    answered: usize,
    classes: &'a BTreeMap<String, instill_core::ClassMean>,
    overall: Option<f64>,
    graded: u64,
    ungraded: u64,
    skipped_classes: &'a BTreeMap<String, usize>,
    judge_repeat: u32,
    judge_agreement: Option<f64>,
    requests_sent_now: u64,
    requests_failed: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cost: Option<f64>,
    ending: &'static str,
    seconds: f64,
}

pub async fn run(global: &GlobalArgs, args: &EvalArgs) -> anyhow::Result<Outcome> {
    if let Some(labels) = &args.compare {
        return crate::cmd::eval_compare::run(global, args, labels).await;
    }
    let started = Instant::now();
    let set = read_eval_set(args)?;
    let prompts = read_prompts(&args.judge_prompts)?;
    let (items, skipped) = check_classes(set.items.clone(), &prompts, args)?;
    let model =
        backend::resolve_model(global, &args.server, args.model.as_deref(), "--model").await?;
    let label = args.name.clone().unwrap_or_else(|| model.clone());
    let judge_server = judge_server(args);
    let judge_model = backend::resolve_model(
        global,
        &judge_server,
        Some(&args.judge_model),
        "--judge-model",
    )
    .await?;
    let (key, judge_key) = (
        backend::access(&args.server)?,
        backend::access(&judge_server)?,
    );
    let _lock = stage::sqlite_lock(&global.db, "eval", "evaluating process")?;
    let db = Db::open(&global.db).await?;
    let _owner = stage::postgres_lock(&db, "eval", &label).await?;
    check_evaluation(&db, &label, &model, &judge_model, &set, &prompts, args).await?;
    if !global.quiet {
        eprintln!(
            "eval {label}: model {model} ({}), judge {judge_model} ({}), {} questions of {}, database {}",
            backend::describe(&args.server),
            backend::describe(&judge_server),
            items.len(),
            set.name,
            instill_core::redact_url(&global.db)
        );
    }
    let candidate = backend::open(&args.server, &args.send, model.clone(), key, args.seed).await?;
    let (answered, stop) = answer(global, args, &db, &candidate, &label, &set, &items).await;
    let answered = answered?;
    let answers = stored_answers(&db, &label).await?;
    let positions = position_of(&set.items);
    let mut report = answered.clone();
    let mut stop = stop;
    if stop.is_none() {
        let judge = backend::open(
            &judge_server,
            &args.send,
            judge_model.clone(),
            judge_key,
            args.seed,
        )
        .await?;
        let (graded, s) = grade(
            global, args, &db, &judge, &label, &prompts, &items, &positions, &answers,
        )
        .await;
        stop = s;
        report = add(report, &graded);
        // Whatever happened, the judge's stored replies become grades.
        let judge_run = db.find_run(&format!("eval/{label}/judge")).await?;
        if let Some(run) = judge_run {
            if db.evaluation(&label).await?.is_none() {
                let e = evaluation(
                    &label,
                    &model,
                    &judge_model,
                    &set,
                    &prompts,
                    args,
                    &db,
                    run.id,
                )
                .await?;
                db.create_evaluation(&e).await?;
            }
            read_grades(&db, &label, run.id, args.judge_repeat, &set.items, &prompts).await?;
        }
        graded.map_err(|e| {
            anyhow::anyhow!(stage::message(
                &e,
                &format!("evaluation `{label}`"),
                "--name"
            ))
        })?;
    }
    let grades = db.grades(&label).await?;
    db.close().await;
    let means = means_of(&grades, &items, &positions);
    let summary = Summary {
        label: &label,
        model: &model,
        judge_model: &judge_model,
        eval_set: &set.name,
        judge_prompts: prompts.name(),
        questions: items.len(),
        answered: answers.len(),
        classes: &means.classes,
        overall: means.overall,
        graded: means.n,
        ungraded: means.ungraded,
        skipped_classes: &skipped,
        judge_repeat: args.judge_repeat,
        judge_agreement: agreement(&grades, args.judge_repeat),
        requests_sent_now: report.progress.sent_now,
        requests_failed: report.progress.failed_now,
        prompt_tokens: report.progress.prompt_tokens,
        completion_tokens: report.progress.completion_tokens,
        cost: backend::cost(
            &args.send,
            report.progress.prompt_tokens,
            report.progress.completion_tokens,
        ),
        ending: match (stop, report.progress.failed_now) {
            (Some(_), _) => "interrupted",
            (None, 0) => "done",
            (None, _) => "failed_requests",
        },
        seconds: started.elapsed().as_secs_f64(),
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(stage::outcome(stop, report.progress.failed_now))
}

/// The eval set `--eval-set` names, its first `--limit` questions.
fn read_eval_set(args: &EvalArgs) -> anyhow::Result<EvalSet> {
    let path = args
        .eval_set
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("--eval-set FILE is required"))?;
    let bytes = std::fs::read(path)
        .with_context(|| format!("--eval-set {}: cannot read it", path.display()))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| anyhow::anyhow!("--eval-set {}: not UTF-8 ({e})", path.display()))?;
    let mut items =
        parse_eval_set(text).map_err(|e| anyhow::anyhow!("--eval-set {}: {e}", path.display()))?;
    if let Some(n) = args.limit {
        items.truncate(usize::try_from(n).unwrap_or(usize::MAX));
    }
    use sha2::Digest;
    Ok(EvalSet {
        items,
        name: path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        sha256: crate::ingest::hex(&sha2::Sha256::digest(&bytes)),
    })
}

/// The judge prompts `--judge-prompts` names.
pub fn read_prompts(spec: &str) -> anyhow::Result<JudgePrompts> {
    if spec == "builtin" {
        return Ok(JudgePrompts::builtin()?);
    }
    let text = std::fs::read_to_string(spec)
        .with_context(|| format!("--judge-prompts {spec}: cannot read it"))?;
    JudgePrompts::parse(spec, &text).map_err(|e| anyhow::anyhow!("--judge-prompts {spec}: {e}"))
}

/// The questions whose class has a prompt, and the classes without one (refused unless
/// `--skip-missing-classes`: a class without a prompt is reported, never guessed).
fn check_classes(
    items: Vec<EvalItem>,
    prompts: &JudgePrompts,
    args: &EvalArgs,
) -> anyhow::Result<(Vec<EvalItem>, BTreeMap<String, usize>)> {
    let missing = prompts.missing(&items);
    if !missing.is_empty() && !args.skip_missing_classes {
        let list: Vec<String> = missing
            .iter()
            .map(|(c, n)| format!("`{c}` ({n} questions)"))
            .collect();
        anyhow::bail!(
            "--judge-prompts {}: no prompt for class {}; add one (a line {{\"class\": …, \"prompt\": …}}), or pass --skip-missing-classes to evaluate the other classes",
            prompts.name(),
            list.join(", ")
        );
    }
    let items = items
        .into_iter()
        .filter(|i| prompts.prompt(&i.class).is_ok())
        .collect();
    Ok((items, missing))
}

/// The judge's server flags: the candidate's, with the judge's backend, URL and key variable.
pub fn judge_server(args: &EvalArgs) -> ModelArgs {
    args.judge_server.over(&args.server, BackendArg::Openai)
}

/// A stored evaluation of this label must be of this model, judge, eval set and prompts.
async fn check_evaluation(
    db: &Db,
    label: &str,
    model: &str,
    judge: &str,
    set: &EvalSet,
    prompts: &JudgePrompts,
    args: &EvalArgs,
) -> anyhow::Result<()> {
    let Some(e) = db.evaluation(label).await? else {
        return Ok(());
    };
    let mut diffs = Vec::new();
    for (what, old, new) in [
        ("model", e.model.as_str(), model),
        ("judge", e.judge_model.as_str(), judge),
        (
            "eval set sha256",
            e.eval_set_sha256.as_str(),
            set.sha256.as_str(),
        ),
        ("judge prompts", e.prompts_hash.as_str(), prompts.hash()),
    ] {
        if old != new {
            diffs.push(format!("{what}: {old} → {new}"));
        }
    }
    let repeat: serde_json::Value = serde_json::from_str(&e.settings_json).unwrap_or_default();
    if repeat["judge_repeat"]
        .as_u64()
        .is_some_and(|k| k != u64::from(args.judge_repeat))
    {
        diffs.push(format!(
            "judge repeat: {} → {}",
            repeat["judge_repeat"], args.judge_repeat
        ));
    }
    if !diffs.is_empty() {
        anyhow::bail!(
            "evaluation `{label}` was made with other settings ({}); evaluate under another --name to keep both",
            diffs.join("; ")
        );
    }
    Ok(())
}

/// The evaluation's row, once its judge run exists.
#[allow(clippy::too_many_arguments)]
async fn evaluation(
    label: &str,
    model: &str,
    judge: &str,
    set: &EvalSet,
    prompts: &JudgePrompts,
    args: &EvalArgs,
    db: &Db,
    judge_run: i64,
) -> anyhow::Result<Evaluation> {
    let answers = db.find_run(&format!("eval/{label}/answers")).await?;
    Ok(Evaluation {
        label: label.into(),
        model: model.into(),
        judge_model: judge.into(),
        eval_set: set.name.clone(),
        eval_set_sha256: set.sha256.clone(),
        prompts_hash: prompts.hash().into(),
        questions: set.items.len() as i64,
        answer_run_id: answers.map(|r| r.id),
        judge_run_id: Some(judge_run),
        settings_json: serde_json::json!({
            "judge_prompts": prompts.name(),
            "judge_repeat": args.judge_repeat,
            "limit": args.limit,
            "temperature": args.temperature,
            "judge_temperature": args.judge_temperature,
        })
        .to_string(),
        created_at: now_ms(),
    })
}

/// The candidate answers every question (idx: the question's position in the set).
async fn answer(
    global: &GlobalArgs,
    args: &EvalArgs,
    db: &Db,
    candidate: &Backend,
    label: &str,
    set: &EvalSet,
    items: &[EvalItem],
) -> (anyhow::Result<StageReport>, Option<Stop>) {
    let config = stage::config(
        format!("eval/{label}/answers"),
        RunKind::EvalAnswer,
        serde_json::json!({ "label": label, "eval_set_sha256": set.sha256 }),
        &args.send,
        args.temperature,
        args.max_tokens,
    );
    let positions = position_of(&set.items);
    let prompts = items.iter().map(|i| {
        Ok(StageItem {
            idx: positions[&i.line],
            prompt: i.question.clone(),
        })
    });
    let (r, stop) = stage::drive(
        global,
        db,
        candidate,
        config,
        items.len() as u64,
        prompts,
        "answering",
    )
    .await;
    let r = r.map_err(|e| {
        anyhow::anyhow!(stage::message(
            &e,
            &format!("evaluation `{label}`"),
            "--name"
        ))
    });
    (r, stop)
}

/// Each question's position in the whole set, by its line: the stage index of its answer.
fn position_of(all: &[EvalItem]) -> BTreeMap<usize, i64> {
    all.iter()
        .enumerate()
        .map(|(i, q)| (q.line, i as i64))
        .collect()
}

/// The stored answers of `label`, by question position.
async fn stored_answers(db: &Db, label: &str) -> anyhow::Result<BTreeMap<i64, String>> {
    let mut out = BTreeMap::new();
    let Some(run) = db.find_run(&format!("eval/{label}/answers")).await? else {
        return Ok(out);
    };
    let mut after = i64::MIN;
    loop {
        let page = db.replies_page(run.id, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.idx;
        for r in page {
            out.insert(r.idx, stage::first_choice(r.response.as_deref()));
        }
    }
    Ok(out)
}

/// The judge grades every stored answer `--judge-repeat` times (idx: position × K + repeat).
#[allow(clippy::too_many_arguments)]
async fn grade(
    global: &GlobalArgs,
    args: &EvalArgs,
    db: &Db,
    judge: &Backend,
    label: &str,
    prompts: &JudgePrompts,
    items: &[EvalItem],
    positions: &BTreeMap<usize, i64>,
    answers: &BTreeMap<i64, String>,
) -> (
    Result<StageReport, instill_generator::GenerateError>,
    Option<Stop>,
) {
    let k = i64::from(args.judge_repeat);
    let config = stage::config(
        format!("eval/{label}/judge"),
        RunKind::EvalJudge,
        serde_json::json!({ "label": label, "judge_prompts": prompts.hash(), "judge_repeat": k }),
        &args.send,
        args.judge_temperature,
        args.judge_max_tokens,
    );
    let mut requests: Vec<Result<StageItem, String>> = Vec::new();
    for item in items {
        let q = positions[&item.line];
        let Some(answer) = answers.get(&q) else {
            continue;
        };
        let prompt = prompts.request(item, answer).map_err(|e| e.to_string());
        for rep in 0..k {
            requests.push(prompt.clone().map(|prompt| StageItem {
                idx: q * k + rep,
                prompt,
            }));
        }
    }
    let total = requests.len() as u64;
    stage::drive(global, db, judge, config, total, requests, "grading").await
}

/// Reads a grade from every stored judge reply without one, a page per transaction.
async fn read_grades(
    db: &Db,
    label: &str,
    run_id: i64,
    repeat: u32,
    all: &[EvalItem],
    prompts: &JudgePrompts,
) -> anyhow::Result<()> {
    let k = i64::from(repeat);
    let classes: BTreeMap<i64, &str> = all
        .iter()
        .enumerate()
        .map(|(i, q)| (i as i64, q.class.as_str()))
        .collect();
    let mut after = i64::MIN;
    loop {
        let page = db.ungraded_replies(label, run_id, k, after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.idx;
        let rows: Vec<Grade> = page
            .iter()
            .filter_map(|r| {
                let (q, rep) = (r.idx / k, r.idx % k);
                let class = classes.get(&q)?;
                let text = stage::first_choice(r.response.as_deref());
                let (grade, reason) = match parse_score(&text, prompts.scale()) {
                    Ok(v) => (Some(v.score), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                Some(Grade {
                    idx: q,
                    rep,
                    class: (*class).to_string(),
                    grade,
                    reason,
                    request_id: Some(r.id),
                })
            })
            .collect();
        let mut w = db.writer().await?;
        w.insert_grades(label, &rows, now_ms()).await?;
        w.commit().await?;
    }
    Ok(())
}

/// Per-class means of the grades of the questions evaluated now.
fn means_of(grades: &[Grade], items: &[EvalItem], positions: &BTreeMap<usize, i64>) -> ClassMeans {
    let wanted: std::collections::BTreeSet<i64> =
        items.iter().map(|i| positions[&i.line]).collect();
    class_means(
        grades
            .iter()
            .filter(|g| wanted.contains(&g.idx))
            .map(|g| (g.idx, g.class.as_str(), g.grade)),
    )
}

/// With repeats: the share of questions whose grades all agree.
fn agreement(grades: &[Grade], repeat: u32) -> Option<f64> {
    if repeat < 2 {
        return None;
    }
    let mut by_q: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for g in grades {
        if let Some(x) = g.grade {
            by_q.entry(g.idx).or_default().push(x);
        }
    }
    let full: Vec<&Vec<f64>> = by_q.values().filter(|v| v.len() >= 2).collect();
    if full.is_empty() {
        return None;
    }
    let same = full
        .iter()
        .filter(|v| v.iter().all(|x| (x - v[0]).abs() < 1e-9))
        .count();
    Some(same as f64 / full.len() as f64)
}

/// Two stage reports as one (counts added).
fn add(
    mut a: StageReport,
    b: &Result<StageReport, instill_generator::GenerateError>,
) -> StageReport {
    if let Ok(b) = b {
        let (p, q) = (&mut a.progress, &b.progress);
        p.sent_now += q.sent_now;
        p.failed_now += q.failed_now;
        p.prompt_tokens += q.prompt_tokens;
        p.completion_tokens += q.completion_tokens;
        if b.ending == StageEnding::Interrupted {
            a.ending = StageEnding::Interrupted;
        }
    }
    a
}

fn print_summary(s: &Summary) {
    let fmt = |x: Option<f64>| x.map_or("-".into(), |v| format!("{v:.3}"));
    println!(
        "evaluation {}: model {}, judge {}, {} ({} questions, {} answered): {}",
        s.label, s.model, s.judge_model, s.eval_set, s.questions, s.answered, s.ending
    );
    println!("  {:<20} {:>6} {:>8}", "class", "n", "mean");
    for (class, m) in s.classes {
        println!("  {class:<20} {:>6} {:>8.3}", m.n, m.mean);
    }
    println!("  {:<20} {:>6} {:>8}", "overall", s.graded, fmt(s.overall));
    if s.ungraded > 0 {
        println!(
            "  {} answers without a grade in the judge's reply",
            s.ungraded
        );
    }
    for (class, n) in s.skipped_classes {
        println!("  skipped: class `{class}` has no judge prompt ({n} questions)");
    }
    if let Some(a) = s.judge_agreement {
        println!(
            "  the judge agreed with itself on {:.1}% of questions ({} repeats)",
            100.0 * a,
            s.judge_repeat
        );
    }
    println!(
        "requests: {} sent now, {} failed; tokens {} in, {} out{}; {:.1} s",
        s.requests_sent_now,
        s.requests_failed,
        s.prompt_tokens,
        s.completion_tokens,
        s.cost.map(|c| format!("; cost {c:.4}")).unwrap_or_default(),
        s.seconds
    );
}
