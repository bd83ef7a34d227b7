//! `instill stats`: what the database holds, as a table or as JSON.

use std::collections::BTreeMap;

use instill_storage::{Db, LengthHistogram, Stats};
use serde::Serialize;

use crate::Outcome;
use crate::cli::GlobalArgs;

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
    requests: i64,
    tokens: Tokens,
    /// Generate workers seen in the last minute (Postgres runs).
    workers: Vec<WorkerOut>,
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

fn to_out(s: &Stats) -> StatsOut {
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
        requests: s.requests,
        tokens: Tokens {
            prompt: s.prompt_tokens,
            completion: s.completion_tokens,
        },
        workers: Vec::new(),
    }
}

/// `instill stats --json`'s document, which the report shows and is tested against.
pub fn to_json(stats: &Stats) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::to_value(to_out(stats))?)
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
    db.close().await;
    let mut out = to_out(&stats);
    out.workers = workers;
    if global.json {
        println!("{}", serde_json::to_string(&out)?);
        return Ok(Outcome::Done);
    }
    print_table(db.url(), &stats, &out);
    Ok(Outcome::Done)
}

/// The human-readable table of `out` (`stats` for the ranked lists, in the database's order).
fn print_table(url: &str, stats: &Stats, out: &StatsOut) {
    let r = &out.records;
    println!("database   {url}");
    println!(
        "records    {} total: {} pending, {} accepted, {} rejected",
        r.total, r.pending, r.accepted, r.rejected
    );
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
