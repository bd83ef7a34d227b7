//! `instill pairs`: preference pairs for DPO. The instructions in scope (single-turn records
//! without a row in the set), the sampling and judging backends, the rubric, a progress bar
//! and signals; the run itself is `instill_generator::run_pairs`. Prints what the set holds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use instill_core::NoPair;
use instill_generator::{
    Backend, GenerateError, PairsConfig, PairsEnding, PairsItem, PairsProgress, RequestParams,
    StageProgress, run_pairs,
};
use instill_storage::{Db, PairSet, StatusFilter};
use serde::Serialize;

use crate::cli::{ApiArg, GlobalArgs, PairsArgs};
use crate::cmd::score::Rubrics;
use crate::cmd::{backend, scope, stage};
use crate::signals::Seen;
use crate::{Outcome, progress};

/// Instructions per chunk: a chunk's samples are all sent before its grades, and its rows are
/// written together (at most K judge prompts per instruction are held at once).
const CHUNK: usize = 2_000;

#[derive(Debug, Serialize)]
struct Summary<'a> {
    name: &'a str,
    model: &'a str,
    judge: &'a str,
    k: u32,
    min_margin: f64,
    rubric: &'a str,
    scale: [f64; 2],
    ending: &'static str,
    instructions: u64,
    skipped_conversations: u64,
    pairs_now: u64,
    no_pair_now: BTreeMap<NoPair, u64>,
    waiting: u64,
    answers_without_grade: u64,
    samples: Requests<'a>,
    grades: Requests<'a>,
    set: Option<SetSummary>,
    seconds: f64,
}

/// A stage's requests, as the summary shows them.
#[derive(Debug, Serialize)]
struct Requests<'a> {
    sent_now: u64,
    stored_before: u64,
    failed: u64,
    retried_attempts: u64,
    errors_by_kind: &'a BTreeMap<String, u64>,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl<'a> From<&'a StageProgress> for Requests<'a> {
    fn from(p: &'a StageProgress) -> Self {
        Requests {
            sent_now: p.sent_now,
            stored_before: p.answered_before,
            failed: p.failed_now,
            retried_attempts: p.retries,
            errors_by_kind: &p.errors,
            prompt_tokens: p.prompt_tokens,
            completion_tokens: p.completion_tokens,
        }
    }
}

/// The whole set after this invocation.
#[derive(Debug, Serialize)]
struct SetSummary {
    pairs: i64,
    no_pair: BTreeMap<NoPair, i64>,
    mean_margin: Option<f64>,
}

impl From<&PairSet> for SetSummary {
    fn from(s: &PairSet) -> Self {
        SetSummary {
            pairs: s.pairs,
            no_pair: s.no_pair.iter().copied().collect(),
            mean_margin: s.mean_margin,
        }
    }
}

pub async fn run(global: &GlobalArgs, args: &PairsArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    if args.server.api == ApiArg::Completion {
        anyhow::bail!(
            "--api completion: pairs sends each instruction as a chat message (the answers must follow the model's chat rendering); use --api chat"
        );
    }
    let rubrics = Rubrics::load(&args.rubric)?;
    let scale = rubrics.scale();
    let min_margin = match args.min_margin {
        Some(m) if !m.is_finite() || m < 0.0 => {
            anyhow::bail!("--min-margin {m}: must be a number ≥ 0")
        }
        Some(m) if m > scale.max - scale.min => anyhow::bail!(
            "--min-margin {m}: larger than the rubric's whole scale ({scale}), so no answer could ever be preferred"
        ),
        Some(m) => m,
        None => (scale.max - scale.min) / 9.0,
    };
    let model =
        backend::resolve_model(global, &args.server, args.model.as_deref(), "--model").await?;
    let judge_server = args.judge_server.over(&args.server, args.server.backend);
    let judge_model = backend::resolve_model(
        global,
        &judge_server,
        Some(args.judge_model.as_str()),
        "--judge-model",
    )
    .await?;
    let access = backend::access(&args.server)?;
    let judge_access = backend::access(&judge_server)?;
    let _lock = stage::sqlite_lock(&global.db, "pairs", "pairs process")?;
    let db = Db::open(&global.db).await?;
    let _owner = stage::postgres_lock(&db, "pairs", &args.name).await?;
    let (items, skipped) = instructions(&db, global, args).await?;
    if !global.quiet {
        eprintln!(
            "pairs {}: {} instructions to pair ({skipped} conversations skipped), {} answers each from {model} ({}), judge {judge_model} ({}), rubric {} ({scale}), min margin {min_margin}, database {}",
            args.name,
            items.len(),
            args.k,
            backend::describe(&args.server),
            backend::describe(&judge_server),
            rubrics.spec,
            instill_core::redact_url(&global.db)
        );
    }
    let sampler = backend::open(&args.server, &args.send, model.clone(), access, args.seed).await?;
    let same_server = backend::describe(&judge_server) == backend::describe(&args.server);
    let judge = if judge_model == model && same_server {
        sampler.clone()
    } else {
        backend::open(
            &judge_server,
            &args.send,
            judge_model.clone(),
            judge_access,
            args.seed,
        )
        .await?
    };
    let n = items.len() as u64;
    let cfg = config(args, &rubrics, min_margin, items);
    let seen = Seen::default();
    let report = drive(global, &db, &sampler, &judge, cfg, n, &seen)
        .await?
        .map_err(|e| anyhow::anyhow!(message(&e)))
        .with_context(|| format!("pair set {}", args.name))?;
    let set = db
        .pair_sets()
        .await?
        .into_iter()
        .find(|s| s.name == args.name);
    db.close().await;
    let p = &report.progress;
    let summary = Summary {
        name: &args.name,
        model: &model,
        judge: &judge_model,
        k: args.k,
        min_margin,
        rubric: &rubrics.spec,
        scale: [scale.min, scale.max],
        ending: match report.ending {
            PairsEnding::Done => "done",
            PairsEnding::Incomplete => "failed_requests",
            PairsEnding::Interrupted => "interrupted",
        },
        instructions: n,
        skipped_conversations: skipped,
        pairs_now: p.pairs,
        no_pair_now: p.no_pair.clone(),
        waiting: p.waiting,
        answers_without_grade: p.ungraded,
        samples: (&p.samples).into(),
        grades: (&p.grades).into(),
        set: set.as_ref().map(SetSummary::from),
        seconds: started.elapsed().as_secs_f64(),
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary, args);
    }
    Ok(match report.ending {
        PairsEnding::Done => Outcome::Done,
        PairsEnding::Incomplete => Outcome::Partial,
        PairsEnding::Interrupted => seen.outcome(),
    })
}

/// The single-turn records in scope without a row in the set, in id order (the first
/// `--limit`), and how many conversations were left out: an answer is sampled to one user
/// message, so a record with earlier turns or a system prompt would be paired on a prompt
/// other than its own.
async fn instructions(
    db: &Db,
    global: &GlobalArgs,
    args: &PairsArgs,
) -> anyhow::Result<(Vec<PairsItem>, u64)> {
    let done: std::collections::HashSet<i64> = db
        .preference_records(&args.name)
        .await?
        .into_iter()
        .collect();
    let records = scope::load_records(
        db,
        StatusFilter::from(args.status),
        progress::enabled(global.no_progress),
    )
    .await?;
    let mut skipped = 0;
    let mut items = Vec::new();
    for r in records {
        if done.contains(&r.id) {
            continue;
        }
        if !r.record.history.is_empty() || !r.record.system.is_empty() {
            skipped += 1;
            continue;
        }
        items.push(PairsItem {
            record_id: r.id,
            record: r.record,
            lang: r.lang,
        });
    }
    if let Some(limit) = args.limit {
        items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    }
    Ok((items, skipped))
}

fn config(
    args: &PairsArgs,
    rubrics: &Rubrics,
    min_margin: f64,
    items: Vec<PairsItem>,
) -> PairsConfig {
    let sample = RequestParams {
        max_tokens: args.max_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        stop: Vec::new(),
        n: 1,
    };
    let judge = RequestParams {
        max_tokens: args.judge_max_tokens,
        temperature: 0.0,
        top_p: 1.0,
        stop: Vec::new(),
        n: 1,
    };
    let (zh, en) = rubrics.pair();
    PairsConfig {
        name: args.name.clone(),
        k: args.k,
        min_margin,
        rubric_zh: zh.clone(),
        rubric_en: en.clone(),
        items,
        sample: stage::sending(&args.send, sample),
        judge: stage::sending(&args.send, judge),
        seed: args.seed,
        settings: serde_json::json!({
            "k": args.k,
            "min_margin": min_margin,
            "rubric_hash": rubrics.hash(),
            "seed": args.seed,
        }),
        chunk: CHUNK,
    }
}

/// Runs the set with a progress bar until done or SIGINT/SIGTERM.
async fn drive(
    global: &GlobalArgs,
    db: &Db,
    sampler: &Backend,
    judge: &Backend,
    cfg: PairsConfig,
    total: u64,
    seen: &Seen,
) -> anyhow::Result<Result<instill_generator::PairsReport, GenerateError>> {
    let k = u64::from(cfg.k);
    let bar = progress::rows(
        progress::enabled(global.no_progress),
        total,
        "pairing".into(),
    );
    let started = Instant::now();
    let tick = |p: &PairsProgress| {
        bar.set_position(p.decided + p.waiting);
        bar.set_message(progress_line(p, k, started.elapsed()));
    };
    let shutdown = crate::signals::Signals::listen()?.shutdown(seen);
    let result = run_pairs(db, sampler, judge, cfg, shutdown, tick).await;
    bar.finish_and_clear();
    Ok(result)
}

/// The progress line: pairs so far, samples and grades stored, rates.
fn progress_line(p: &PairsProgress, k: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let tokens = [&p.samples, &p.grades]
        .iter()
        .map(|s| s.prompt_tokens.saturating_add(s.completion_tokens))
        .sum::<u64>();
    format!(
        "{} pairs, {} without | answers {}/{} | grades {} | {:.1} req/s | {:.0} tok/s",
        p.pairs,
        p.no_pair.values().sum::<u64>(),
        p.samples.answered(),
        p.total * k,
        p.grades.answered(),
        (p.samples.answered_now + p.grades.answered_now) as f64 / secs,
        tokens as f64 / secs,
    )
}

/// The library's error as the command line says it.
fn message(e: &GenerateError) -> String {
    match e {
        GenerateError::SettingsChanged { .. } => {
            stage::message(e, "this pair set", "--name NAME")
                + " (--model, --judge-model, --k, --min-margin, --rubric, --seed and the sampling flags decide a set)"
        }
        e => e.to_string(),
    }
}

/// Why a run had no instruction to pair, and what to do about it.
fn nothing_hint(s: &Summary, args: &PairsArgs) -> String {
    let rows = s
        .set
        .as_ref()
        .map_or(0, |set| set.pairs + set.no_pair.values().sum::<i64>());
    if rows > 0 {
        format!(
            "every record in scope already has a row in set {} ({rows} rows); a new --name starts another set",
            s.name
        )
    } else if s.skipped_conversations > 0 {
        "every record in scope is a conversation; pairs answers single-turn instructions".into()
    } else {
        let status = clap::ValueEnum::to_possible_value(&args.status)
            .map_or_else(String::new, |v| v.get_name().to_string());
        format!(
            "no record in scope (--status {status}); import or generate records first, or choose --status all"
        )
    }
}

fn print_summary(s: &Summary, args: &PairsArgs) {
    let verb = match s.ending {
        "done" => "done",
        "failed_requests" => "some requests failed (run the same command to send them again)",
        _ => "interrupted (run the same command to resume)",
    };
    println!(
        "pairs {} ({} answers each from {}, judge {}, rubric {} {}–{}, min margin {}): {verb}",
        s.name, s.k, s.model, s.judge, s.rubric, s.scale[0], s.scale[1], s.min_margin
    );
    println!(
        "instructions: {} to pair; {} pairs now, {} without a pair, {} waiting for failed requests{}",
        s.instructions,
        s.pairs_now,
        s.no_pair_now.values().sum::<u64>(),
        s.waiting,
        if s.skipped_conversations > 0 {
            format!(
                "; {} conversations skipped (pairs answers one user message: records with earlier turns or a system prompt are left out)",
                s.skipped_conversations
            )
        } else {
            String::new()
        }
    );
    if s.instructions == 0 {
        println!("  nothing to pair: {}", nothing_hint(s, args));
    }
    for (why, n) in &s.no_pair_now {
        println!("  no pair: {why:<20} {n:>8}");
    }
    if s.answers_without_grade > 0 {
        println!(
            "  {} answers got no grade from the judge (their replies held no score)",
            s.answers_without_grade
        );
    }
    for (what, r) in [("answers", &s.samples), ("grades", &s.grades)] {
        println!(
            "{what}: {} sent now, {} stored before, {} failed, {} extra attempts; tokens {} in, {} out",
            r.sent_now,
            r.stored_before,
            r.failed,
            r.retried_attempts,
            r.prompt_tokens,
            r.completion_tokens
        );
        for (k, n) in r.errors_by_kind {
            println!("  failed attempts {k:<16} {n:>8}");
        }
    }
    let tokens = |r: &Requests| (r.prompt_tokens, r.completion_tokens);
    let (si, so) = tokens(&s.samples);
    let (gi, go) = tokens(&s.grades);
    if let Some(c) = backend::cost(&args.send, si + gi, so + go) {
        println!("cost {c:.4}");
    }
    if let Some(set) = &s.set {
        println!(
            "set {}: {} pairs, {} instructions without one{}",
            s.name,
            set.pairs,
            set.no_pair.values().sum::<i64>(),
            set.mean_margin
                .map(|m| format!(", mean margin {m:.2}"))
                .unwrap_or_default()
        );
    }
    println!("{:.1} s", s.seconds);
}
