//! `instill evolve`: wiring Evol-Instruct to the command line: the pool (seed tasks or accepted
//! records), the operations, the model and the judge, progress, signals, the summary per round.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use instill_core::{EvolveOp, EvolvedFrom, Lang};
use instill_generator::{
    Backend, EvolveConfig, EvolveEnding, EvolveReport, GenerateError, PoolItem, Progress,
    RequestParams,
};
use instill_prompts::EvolvePrompts;
use instill_storage::{Db, EvolveCount};
use serde::Serialize;

use crate::cli::{EvolveArgs, EvolveFromArg, EvolveLangArg, GlobalArgs};
use crate::cmd::filter::load_rules;
use crate::cmd::sent::Sent;
use crate::cmd::{backend, stage};
use crate::evolution::{self, Round};
use crate::signals::Seen;
use crate::{Outcome, progress};

#[derive(Debug, Serialize)]
struct Summary<'a> {
    run: &'a str,
    from: &'static str,
    pool: usize,
    rounds: u32,
    rounds_done: u32,
    ending: &'static str,
    accepted: u64,
    eliminated: i64,
    rejected: i64,
    /// Round by round (1 = the first rewrite), each also per operation.
    per_round: BTreeMap<i64, Round>,
    #[serde(flatten)]
    sent: Sent<'a>,
    seconds: f64,
}

pub async fn run(global: &GlobalArgs, args: &EvolveArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let ops = parse_ops(&args.ops)?;
    let prompts = EvolvePrompts::builtin()?;
    let rules = load_rules(&args.accept.rules)?;
    let model =
        backend::resolve_model(global, &args.server, args.model.as_deref(), "--model").await?;
    let judge_model = match &args.judge_model {
        Some(m) => {
            backend::resolve_model(global, &args.server, Some(m.as_str()), "--judge-model").await?
        }
        None => model.clone(),
    };
    let access = backend::access(&args.server)?;
    let name = args.name.clone().unwrap_or_else(|| default_name(args));
    let _lock = stage::sqlite_lock(&global.db, "evolve", "evolving process")?;
    let db = Db::open(&global.db).await?;
    let pool = load_pool(&db, args, &name).await?;
    if !global.quiet {
        eprintln!(
            "evolve {name}: {} {} over {} rounds ({}), {}, model {model}, judge {judge_model}, database {}",
            pool.len(),
            from_name(args.from),
            args.rounds,
            ops.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(","),
            backend::describe(&args.server),
            instill_core::redact_url(&global.db)
        );
    }
    let backend = backend::open(
        &args.server,
        &args.send,
        model.clone(),
        access.clone(),
        args.seed,
    )
    .await?;
    let judge = if judge_model == model {
        backend.clone()
    } else {
        backend::open(&args.server, &args.send, judge_model, access, args.seed).await?
    };
    let pool_len = pool.len();
    let config = evolve_config(args, name.clone(), ops, pool, prompts, rules);
    let seen = Seen::default();
    let result = drive(global, args, &db, &backend, &judge, config, &seen).await?;
    let report = result
        .map_err(|e| anyhow::anyhow!(message(&e)))
        .context(format!("run {name}"))?;
    let counts = db.evolve_counts(Some(report.run_id)).await?;
    db.close().await;
    let summary = Summary::new(&name, args, pool_len, &report, &counts, started.elapsed());
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(match report.ending {
        EvolveEnding::Done => Outcome::Done,
        EvolveEnding::Incomplete => Outcome::Partial,
        EvolveEnding::Interrupted => seen.outcome(),
    })
}

/// `--ops`: groups (`depth`, `breadth`) and single operations, each once, in declaration order.
fn parse_ops(specs: &[String]) -> anyhow::Result<Vec<EvolveOp>> {
    let mut ops = Vec::new();
    for spec in specs {
        let spec = spec.trim();
        match spec {
            "depth" => ops.extend_from_slice(EvolveOp::DEPTH),
            "breadth" => ops.push(EvolveOp::Breadth),
            _ => ops.push(spec.parse().map_err(|_| {
                anyhow::anyhow!(
                    "--ops {spec}: unknown operation; expected depth, breadth, add_constraints, deepen, concretize, increase_reasoning or complicate_input"
                )
            })?),
        }
    }
    ops.sort();
    ops.dedup();
    if ops.is_empty() {
        anyhow::bail!("--ops: name at least one operation (depth, breadth, or single ones)");
    }
    Ok(ops)
}

fn from_name(from: EvolveFromArg) -> &'static str {
    match from {
        EvolveFromArg::Seeds => "seeds",
        EvolveFromArg::Records => "records",
    }
}

/// The run's name without `--name`: `evolve-FROM-sSEED`, with the language when one is asked
/// for (`evolve-seeds-zh-s42`), so that runs over other pools do not meet.
fn default_name(args: &EvolveArgs) -> String {
    let lang = match args.lang {
        EvolveLangArg::Auto => String::new(),
        EvolveLangArg::Zh => "-zh".into(),
        EvolveLangArg::En => "-en".into(),
    };
    format!("evolve-{}{lang}-s{}", from_name(args.from), args.seed)
}

/// Round 0's pool: the seed tasks, or the accepted single-turn records that are not this run's
/// own, of the language asked for, in id order. An empty pool is refused.
async fn load_pool(db: &Db, args: &EvolveArgs, name: &str) -> anyhow::Result<Vec<PoolItem>> {
    let lang = match args.lang {
        EvolveLangArg::Auto => None,
        EvolveLangArg::Zh => Some(Lang::Zh),
        EvolveLangArg::En => Some(Lang::En),
    };
    let which = lang.map_or(String::new(), |l| format!(" ({})", l.as_str()));
    let pool: Vec<PoolItem> = match args.from {
        EvolveFromArg::Seeds => {
            if args.limit.is_some() {
                anyhow::bail!("--limit is for --from records");
            }
            db.list_seeds(lang)
                .await?
                .into_iter()
                .map(|s| PoolItem {
                    from: EvolvedFrom::Seed(s.id),
                    record: s.seed.record,
                    lang: s.lang,
                })
                .collect()
        }
        EvolveFromArg::Records => {
            let own = db.find_run(name).await?.map(|r| r.id);
            let limit = args.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
            db.evolve_pool_records(own, lang, limit)
                .await?
                .into_iter()
                .map(|r| PoolItem {
                    from: EvolvedFrom::Record(r.id),
                    record: r.record,
                    lang: r.lang,
                })
                .collect()
        }
    };
    if pool.is_empty() {
        match args.from {
            EvolveFromArg::Seeds => anyhow::bail!(
                "--from seeds: the database holds no seed tasks{which} to evolve: import some with `instill seeds import` (or --builtin)"
            ),
            EvolveFromArg::Records => anyhow::bail!(
                "--from records: the database holds no accepted single-turn records{which} to evolve (pending ones count once `instill filter`/`dedup` or a run accepted them)"
            ),
        }
    }
    Ok(pool)
}

/// The library's settings from the flags.
fn evolve_config(
    args: &EvolveArgs,
    name: String,
    ops: Vec<EvolveOp>,
    pool: Vec<PoolItem>,
    prompts: EvolvePrompts,
    rules: instill_dedup::Rules,
) -> EvolveConfig {
    let s = &args.sampling;
    let request = RequestParams {
        max_tokens: s.max_tokens,
        temperature: s.temperature,
        top_p: s.top_p,
        stop: s.stop.clone(),
        n: 1,
    };
    let judge_request = RequestParams {
        temperature: 0.0,
        top_p: 1.0,
        stop: Vec::new(),
        ..request.clone()
    };
    EvolveConfig {
        name,
        rounds: args.rounds,
        ops,
        from: from_name(args.from).to_string(),
        pool,
        prompts,
        cot: args.template == "cot",
        seed: args.seed,
        send: stage::sending(&args.send, request),
        judge_request,
        rules,
        rouge: args.accept.rouge(),
    }
}

/// Runs the evolution with a progress bar until every round is judged or SIGINT/SIGTERM.
async fn drive(
    global: &GlobalArgs,
    args: &EvolveArgs,
    db: &Db,
    backend: &Backend,
    judge: &Backend,
    config: EvolveConfig,
    seen: &Seen,
) -> anyhow::Result<Result<EvolveReport, GenerateError>> {
    let total = config.pool.len() as u64 * u64::from(args.rounds);
    let bar = progress::accepted(progress::enabled(global.no_progress), total, String::new());
    let started = Instant::now();
    let tick = |p: &Progress| {
        let judged = p.accepted + p.rejected.values().sum::<u64>();
        bar.set_position(judged.min(total));
        bar.set_message(progress_line(p, started.elapsed()));
    };
    let shutdown = crate::signals::Signals::listen()?.shutdown(seen);
    let result = instill_generator::run_evolve(db, backend, judge, config, shutdown, tick).await;
    bar.finish_and_clear();
    Ok(result)
}

/// The progress line: judged rewrites, kept, eliminations and rejections by reason, rates.
fn progress_line(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let reasons: Vec<String> = p.rejected.iter().map(|(r, n)| format!("{r} {n}")).collect();
    format!(
        "kept {} | {} | {:.1} req/s | {:.0} tok/s",
        p.accepted,
        if reasons.is_empty() {
            "nothing eliminated".to_string()
        } else {
            reasons.join(", ")
        },
        p.sent_now as f64 / secs,
        p.prompt_tokens.saturating_add(p.completion_tokens) as f64 / secs,
    )
}

/// The library's error as the command line says it, naming the flags that change the outcome.
fn message(e: &GenerateError) -> String {
    match e {
        GenerateError::OneProcess(run) => format!(
            "run `{run}` is being evolved by another process: an evolve run takes one process (each step waits for the one before it); wait for it, or start another run with --name NAME"
        ),
        GenerateError::SettingsChanged { differences, .. } => {
            stage::message(e, "this run", "--name NAME")
                + if differences.iter().any(|d| d.starts_with("model")) {
                    " (--model, --judge-model)"
                } else {
                    ""
                }
        }
        GenerateError::Config(m) if m.contains("frozen") => format!("{m} (--name NAME)"),
        e => e.to_string(),
    }
}

impl<'a> Summary<'a> {
    fn new(
        run: &'a str,
        args: &EvolveArgs,
        pool: usize,
        report: &'a EvolveReport,
        counts: &[EvolveCount],
        elapsed: Duration,
    ) -> Summary<'a> {
        let p = &report.progress;
        let per_round = evolution::rounds(counts);
        Summary {
            run,
            from: from_name(args.from),
            pool,
            rounds: args.rounds,
            rounds_done: report.rounds_done,
            ending: match report.ending {
                EvolveEnding::Done => "done",
                EvolveEnding::Incomplete => "incomplete",
                EvolveEnding::Interrupted => "interrupted",
            },
            accepted: p.accepted,
            eliminated: per_round.values().map(|r| r.tally.eliminated_total()).sum(),
            rejected: per_round.values().map(|r| r.tally.rejected_total()).sum(),
            per_round,
            sent: Sent::new(p, &args.send),
            seconds: elapsed.as_secs_f64(),
        }
    }
}

fn print_summary(s: &Summary) {
    let verb = match s.ending {
        "done" => "evolved",
        "incomplete" => {
            "stopped: requests failed for good (run the same command to send them again)"
        }
        _ => "was interrupted (run the same command to resume)",
    };
    println!(
        "run {}: {verb}: {} of {} rounds over {} {}; {} kept, {} eliminated, {} rejected",
        s.run,
        s.rounds_done,
        s.rounds.max(s.rounds_done),
        s.pool,
        s.from,
        s.accepted,
        s.eliminated,
        s.rejected
    );
    for line in evolution::round_lines(&s.per_round, "  ") {
        println!("{line}");
    }
    s.sent.print_requests();
    s.sent.print_tokens("");
    println!("{:.1} s", s.seconds);
}
