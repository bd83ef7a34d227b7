//! `instill stats`: what the database holds, as a table or as JSON: records, runs, lengths,
//! workers, evolve runs round by round and per operation, every scorer's score distribution and
//! every evaluation's per-class means, every preference pair set.

use std::collections::BTreeMap;

use instill_core::{ClassMeans, ScoreSummary};
use instill_storage::{Db, EvolveCount, LengthHistogram, PairSet, Stats};
use serde::Serialize;

use crate::Outcome;
use crate::cli::GlobalArgs;
use crate::evolution::{self, RunBreakdown};
use crate::scoreboard::{self, EvalBoard, Scoreboard, ScorerBoard, short, short_or_dash};

#[derive(Debug, Serialize)]
struct StatsOut {
    records: Counts,
    seeds: i64,
    imports: i64,
    by_reason: BTreeMap<String, i64>,
    by_source: BTreeMap<String, i64>,
    by_run: BTreeMap<String, i64>,
    by_lang: BTreeMap<String, i64>,
    by_origin: BTreeMap<String, i64>,
    lengths: BTreeMap<&'static str, Lengths>,
    /// Records that carry reasoning beside their answer.
    with_reasoning: i64,
    requests: i64,
    tokens: Tokens,
    /// Generate workers seen in the last minute (Postgres runs).
    workers: Vec<WorkerOut>,
    /// Every scorer by name: its settings and the distribution of its scores.
    scorers: BTreeMap<String, ScorerOut>,
    /// Every evaluation by label: its models and per-class means.
    evaluations: BTreeMap<String, EvalOut>,
    /// Every evolve run by name: evolved, kept, eliminated by rule, rejected, per round and
    /// per operation.
    evolve: BTreeMap<String, RunBreakdown>,
    /// Every preference pair set by name (`instill pairs` runs and imported pairs).
    pair_sets: BTreeMap<String, PairSetOut>,
}

/// A pair set: where its pairs came from, how many, and why instructions have none.
#[derive(Debug, Serialize)]
struct PairSetOut {
    imported: bool,
    pairs: i64,
    no_pair: BTreeMap<String, i64>,
    mean_margin: Option<f64>,
}

fn pair_set_out(s: &PairSet) -> (String, PairSetOut) {
    let out = PairSetOut {
        imported: s.imported,
        pairs: s.pairs,
        no_pair: s
            .no_pair
            .iter()
            .map(|(w, n)| (w.as_str().to_string(), *n))
            .collect(),
        mean_margin: s.mean_margin,
    };
    (s.name.clone(), out)
}

/// A scorer: what scored, on what scale, and its scores summarised (`n`, `unscored`, `mean`,
/// `median`, `min`, `max`, `bins`).
#[derive(Debug, Serialize)]
struct ScorerOut {
    method: &'static str,
    model: String,
    rubric: Option<String>,
    rubric_hash: Option<String>,
    scale: Option<[f64; 2]>,
    #[serde(flatten)]
    summary: ScoreSummary,
    /// Replies that held no score, by why.
    unscored_by_reason: BTreeMap<String, i64>,
}

/// An evaluation: the candidate, the judge, and its means (`classes`: `{CLASS: {n, mean}}`,
/// `overall`, `n` graded questions, `ungraded`).
#[derive(Debug, Serialize)]
struct EvalOut {
    model: String,
    judge_model: String,
    eval_set: String,
    questions: i64,
    #[serde(flatten)]
    means: ClassMeans,
}

#[derive(Debug, Serialize)]
struct Counts {
    total: i64,
    pending: i64,
    accepted: i64,
    rejected: i64,
}

/// Length percentiles of one field, in characters.
#[derive(Debug, Serialize)]
struct Lengths {
    mean: Option<f64>,
    p50: Option<i64>,
    p90: Option<i64>,
    p99: Option<i64>,
    max: Option<i64>,
}

#[derive(Debug, Serialize)]
struct Tokens {
    prompt: i64,
    completion: i64,
}

fn lengths(h: &LengthHistogram) -> Lengths {
    Lengths {
        mean: h.mean().map(|m| (m * 10.0).round() / 10.0),
        p50: h.percentile(0.5),
        p90: h.percentile(0.9),
        p99: h.percentile(0.99),
        max: h.percentile(1.0),
    }
}

fn to_out(s: &Stats, board: &Scoreboard, evolve: &[EvolveCount], sets: &[PairSet]) -> StatsOut {
    let map = |v: &[(String, i64)]| v.iter().cloned().collect::<BTreeMap<_, _>>();
    StatsOut {
        records: Counts {
            total: s.records.total,
            pending: s.records.pending,
            accepted: s.records.accepted,
            rejected: s.records.rejected,
        },
        seeds: s.seeds,
        imports: s.imports,
        by_reason: map(&s.by_reason),
        by_source: map(&s.by_source),
        by_run: map(&s.by_run),
        by_lang: map(&s.by_lang),
        by_origin: map(&s.by_origin),
        lengths: BTreeMap::from([
            ("instruction", lengths(&s.instruction_len)),
            ("input", lengths(&s.input_len)),
            ("output", lengths(&s.output_len)),
        ]),
        with_reasoning: s.with_reasoning,
        requests: s.requests,
        tokens: Tokens {
            prompt: s.prompt_tokens,
            completion: s.completion_tokens,
        },
        workers: Vec::new(),
        scorers: board.scorers.iter().map(scorer_out).collect(),
        evaluations: board.evaluations.iter().map(eval_out).collect(),
        evolve: evolution::by_run(evolve),
        pair_sets: sets.iter().map(pair_set_out).collect(),
    }
}

fn scorer_out(b: &ScorerBoard) -> (String, ScorerOut) {
    let s = &b.scorer;
    let out = ScorerOut {
        method: s.method.as_str(),
        model: s.model.clone(),
        rubric: scoreboard::rubric(s),
        rubric_hash: s.rubric_hash.clone(),
        scale: s.scale.map(|(lo, hi)| [lo, hi]),
        summary: b.summary.clone(),
        unscored_by_reason: b.no_score.iter().cloned().collect(),
    };
    (s.name.clone(), out)
}

fn eval_out(b: &EvalBoard) -> (String, EvalOut) {
    let e = &b.eval;
    let out = EvalOut {
        model: e.model.clone(),
        judge_model: e.judge_model.clone(),
        eval_set: e.eval_set.clone(),
        questions: e.questions,
        means: b.means.clone(),
    };
    (e.label.clone(), out)
}

/// `instill stats --json`'s document, which the report shows and is tested against.
pub async fn to_json(db: &Db, board: &Scoreboard) -> anyhow::Result<serde_json::Value> {
    let out = to_out(
        &db.stats().await?,
        board,
        &db.evolve_counts(None).await?,
        &db.pair_sets().await?,
    );
    Ok(serde_json::to_value(out)?)
}

/// A generate worker seen in the last minute, as `stats` shows it.
#[derive(Debug, Serialize)]
struct WorkerOut {
    run: String,
    worker: String,
    acceptor: bool,
    live: bool,
    leases: i64,
    sent: i64,
    stored: i64,
    replies_per_s: f64,
    seconds_since_heartbeat: f64,
}

/// Workers whose heartbeat is at most a minute old (`live`: at most 15 s).
async fn workers(db: &Db) -> anyhow::Result<Vec<WorkerOut>> {
    let now = instill_core::now_ms();
    Ok(db
        .live_workers(now - 60_000, now)
        .await?
        .into_iter()
        .map(|w| WorkerOut {
            replies_per_s: w.stored as f64
                / ((w.heartbeat_at - w.started_at).max(1) as f64 / 1000.0),
            seconds_since_heartbeat: (now - w.heartbeat_at) as f64 / 1000.0,
            live: now - w.heartbeat_at <= 15_000,
            run: w.run,
            worker: w.worker,
            acceptor: w.acceptor,
            leases: w.leases,
            sent: w.sent,
            stored: w.stored,
        })
        .collect())
}

pub async fn run(global: &GlobalArgs) -> anyhow::Result<Outcome> {
    let db = Db::open(&global.db).await?;
    let stats = db.stats().await?;
    let workers = workers(&db).await?;
    let board = Scoreboard::load(&db).await?;
    let evolve = db.evolve_counts(None).await?;
    let sets = db.pair_sets().await?;
    db.close().await;
    let mut out = to_out(&stats, &board, &evolve, &sets);
    out.workers = workers;
    if global.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(Outcome::Done);
    }
    print_table(db.url(), &stats, &out);
    print_scorers(&board);
    print_evaluations(&board);
    print_pair_sets(&out.pair_sets);
    Ok(Outcome::Done)
}

fn print_pair_sets(sets: &BTreeMap<String, PairSetOut>) {
    if sets.is_empty() {
        return;
    }
    println!("preference pair sets:");
    for (name, s) in sets {
        let without: Vec<String> = s.no_pair.iter().map(|(w, n)| format!("{w} {n}")).collect();
        println!(
            "  {name:<20} {:>8} pairs{}{}{}",
            s.pairs,
            if s.imported { " (imported)" } else { "" },
            s.mean_margin
                .map(|m| format!(", mean margin {m:.2}"))
                .unwrap_or_default(),
            if without.is_empty() {
                String::new()
            } else {
                format!("; no pair: {}", without.join(", "))
            }
        );
    }
}

/// The human-readable table of `out` (`stats` for the ranked lists, in the database's order).
fn print_table(url: &str, stats: &Stats, out: &StatsOut) {
    let r = &out.records;
    println!("database   {url}");
    println!(
        "records    {} total: {} pending, {} accepted, {} rejected",
        r.total, r.pending, r.accepted, r.rejected
    );
    if out.with_reasoning > 0 {
        println!("reasoning  {} records carry it", out.with_reasoning);
    }
    println!("seeds      {}", out.seeds);
    println!("imports    {}", out.imports);
    for (title, list) in [
        ("by language", &stats.by_lang),
        ("by origin", &stats.by_origin),
        ("by source", &stats.by_source),
        ("by run", &stats.by_run),
        ("rejected by reason", &stats.by_reason),
    ] {
        if list.is_empty() {
            continue;
        }
        println!("{title}:");
        for (name, n) in list.iter().take(20) {
            println!("  {name:<24} {n:>10}");
        }
        if list.len() > 20 {
            println!("  … and {} more", list.len() - 20);
        }
    }
    if r.total > 0 {
        println!("lengths (characters):     mean      p50      p90      p99      max");
        for (field, l) in &out.lengths {
            let f = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
            println!(
                "  {field:<18} {:>10.1} {:>8} {:>8} {:>8} {:>8}",
                l.mean.unwrap_or(0.0),
                f(l.p50),
                f(l.p90),
                f(l.p99),
                f(l.max)
            );
        }
    }
    if out.requests > 0 {
        println!(
            "requests   {} ({} prompt tokens, {} completion tokens)",
            out.requests, out.tokens.prompt, out.tokens.completion
        );
    }
    print_workers(&out.workers);
    if !out.evolve.is_empty() {
        println!("evolve runs (rewrites judged per round and operation):");
        for line in evolution::run_lines(&out.evolve) {
            println!("{line}");
        }
    }
}

/// The generate workers seen in the last minute, when there are any.
fn print_workers(workers: &[WorkerOut]) {
    if !workers.is_empty() {
        println!("generate workers (last minute):");
        for w in workers {
            println!(
                "  {:<16} {:<28} {:<9} {:>5} leases {:>8} sent {:>8} stored {:>8.1} replies/s  {:.0} s ago",
                w.run,
                w.worker,
                if w.acceptor {
                    "acceptor"
                } else if w.live {
                    "worker"
                } else {
                    "gone"
                },
                w.leases,
                w.sent,
                w.stored,
                w.replies_per_s,
                w.seconds_since_heartbeat
            );
        }
    }
}

/// Each scorer: what it is, its distribution, and why replies held no score.
fn print_scorers(board: &Scoreboard) {
    if board.scorers.is_empty() {
        return;
    }
    println!("scorers:");
    for b in &board.scorers {
        println!(
            "  {}: {}",
            b.scorer.name,
            scoreboard::describe(&b.scorer).replace('`', "")
        );
        for line in scoreboard::distribution_lines(&b.summary, b.scorer.scale) {
            println!("    {line}");
        }
        if !b.no_score.is_empty() {
            let why: Vec<String> = b
                .no_score
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            println!("    without a score: {}", why.join(", "));
        }
    }
}

/// Each evaluation's models and overall mean, then a table of classes by evaluation.
fn print_evaluations(board: &Scoreboard) {
    if board.evaluations.is_empty() {
        return;
    }
    println!("evaluations:");
    for b in &board.evaluations {
        let (e, m) = (&b.eval, &b.means);
        println!(
            "  {:<16} model {}, judge {}, {} questions: overall {} ({} graded, {} ungraded)",
            e.label,
            e.model,
            e.judge_model,
            e.questions,
            short_or_dash(m.overall),
            m.n,
            m.ungraded
        );
    }
    let mut header = format!("  {:<24}", "class (n, mean)");
    for b in &board.evaluations {
        header.push_str(&format!(" {:>18}", b.eval.label));
    }
    println!("{header}");
    for class in board.classes() {
        let mut row = format!("  {class:<24}");
        for b in &board.evaluations {
            let cell = b
                .means
                .classes
                .get(class)
                .map_or_else(|| "—".to_string(), |c| format!("{} {}", c.n, short(c.mean)));
            row.push_str(&format!(" {cell:>18}"));
        }
        println!("{row}");
    }
}
