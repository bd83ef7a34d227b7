//! `instill eval --compare A B`: the judge sees each question both evaluations answered with
//! the two answers side by side, in both orders (A first, then B first), through a stage
//! (`eval/compare/A/B`, idx = question × 2 + order). Wins, ties, how often the two orders agree,
//! and position bias (how often the answer shown first wins) are read from the stored replies
//! every time, overall and per class: a rerun sends nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use instill_core::RunKind;
use instill_generator::StageItem;
use instill_prompts::{Preference, pairwise_request, parse_preference};
use instill_storage::{Db, Evaluation};
use serde::Serialize;

use crate::Outcome;
use crate::cli::{EvalArgs, GlobalArgs};
use crate::cmd::{backend, stage};

/// What the judge decided for one question over both orders.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq)]
struct Tally {
    questions: u64,
    a_wins: u64,
    b_wins: u64,
    ties: u64,
    /// The two orders disagreed (counted as a tie in the win rates).
    inconsistent: u64,
    /// Verdicts (of both orders) that named the answer shown first.
    first_shown_won: u64,
    /// Verdicts (of both orders) that named either answer.
    decisive: u64,
}

#[derive(Debug, Serialize)]
struct Summary {
    a: String,
    b: String,
    judge_model: String,
    overall: Tally,
    a_win_rate: Option<f64>,
    b_win_rate: Option<f64>,
    agreement: Option<f64>,
    position_bias: Option<f64>,
    classes: BTreeMap<String, Tally>,
    unreadable_verdicts: u64,
    requests_sent_now: u64,
    seconds: f64,
}

pub async fn run(
    global: &GlobalArgs,
    args: &EvalArgs,
    labels: &[String],
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let [a, b] = labels else {
        anyhow::bail!("--compare takes two evaluation names");
    };
    if a == b {
        anyhow::bail!("--compare {a} {b}: name two different evaluations");
    }
    let _lock = stage::sqlite_lock(&global.db, "eval", "evaluating process")?;
    let db = Db::open(&global.db).await?;
    let _owner = stage::postgres_lock(&db, "eval", &format!("compare/{a}/{b}")).await?;
    let (ea, eb) = (find(&db, a).await?, find(&db, b).await?);
    if ea.eval_set_sha256 != eb.eval_set_sha256 {
        anyhow::bail!(
            "--compare {a} {b}: they were evaluated on different eval sets ({} and {}); compare evaluations of the same set",
            ea.eval_set,
            eb.eval_set
        );
    }
    let qa = answers(&db, &ea).await?;
    let qb = answers(&db, &eb).await?;
    let classes: BTreeMap<i64, String> = db
        .grades(a)
        .await?
        .into_iter()
        .map(|g| (g.idx, g.class))
        .collect();
    let mut items = Vec::new();
    for (q, (question, answer_a)) in &qa {
        let Some((_, answer_b)) = qb.get(q) else {
            continue;
        };
        for (order, (first, second)) in [(answer_a, answer_b), (answer_b, answer_a)]
            .into_iter()
            .enumerate()
        {
            let prompt = pairwise_request(question, "", first, second).map_err(|e| e.to_string());
            items.push(prompt.map(|prompt| StageItem {
                idx: q * 2 + order as i64,
                prompt,
            }));
        }
    }
    let judge_server = crate::cmd::eval::judge_server(args);
    let judge_model = backend::resolve_model(
        global,
        &judge_server,
        Some(&args.judge_model),
        "--judge-model",
    )
    .await?;
    let key = backend::access(&judge_server)?;
    let judge = backend::open(
        &judge_server,
        &args.send,
        judge_model.clone(),
        key,
        args.seed,
    )
    .await?;
    let config = stage::config(
        format!("eval/compare/{a}/{b}"),
        RunKind::EvalJudge,
        serde_json::json!({ "a": a, "b": b, "eval_set_sha256": ea.eval_set_sha256 }),
        &args.send,
        args.judge_temperature,
        args.judge_max_tokens,
    );
    let total = items.len() as u64;
    let (report, stop) = stage::drive(global, &db, &judge, config, total, items, "comparing").await;
    let run = db.find_run(&format!("eval/compare/{a}/{b}")).await?;
    let verdicts = match &run {
        Some(run) => db.prompts_and_replies(run.id).await?,
        None => Vec::new(),
    };
    db.close().await;
    let report = report.map_err(|e| {
        anyhow::anyhow!(stage::message(
            &e,
            &format!("comparison {a} vs {b}"),
            "other --judge settings"
        ))
    })?;
    let mut summary = tally(a, b, &judge_model, &verdicts, &classes);
    summary.requests_sent_now = report.progress.sent_now;
    summary.seconds = started.elapsed().as_secs_f64();
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(stage::outcome(stop, report.progress.failed_now))
}

async fn find(db: &Db, label: &str) -> anyhow::Result<Evaluation> {
    db.evaluation(label).await?.ok_or_else(|| {
        anyhow::anyhow!(
            "--compare: no evaluation named `{label}`; run `instill eval --name {label}` first"
        )
    })
}

/// An evaluation's stored answers with their questions, by question position.
async fn answers(db: &Db, e: &Evaluation) -> anyhow::Result<BTreeMap<i64, (String, String)>> {
    let Some(run) = e.answer_run_id else {
        return Ok(BTreeMap::new());
    };
    Ok(db
        .prompts_and_replies(run)
        .await?
        .into_iter()
        .map(|(idx, q, r)| (idx, (q, stage::first_choice(r.as_deref()))))
        .collect())
}

/// Wins, ties, agreement and position bias from the stored verdicts.
fn tally(
    a: &str,
    b: &str,
    judge: &str,
    verdicts: &[(i64, String, Option<String>)],
    classes: &BTreeMap<i64, String>,
) -> Summary {
    let mut by_q: BTreeMap<i64, [Option<Preference>; 2]> = BTreeMap::new();
    let mut unreadable = 0;
    for (idx, _, reply) in verdicts {
        let p = parse_preference(&stage::first_choice(reply.as_deref()));
        unreadable += u64::from(p.is_none());
        by_q.entry(idx / 2).or_default()[(idx % 2) as usize] = p;
    }
    let mut overall = Tally::default();
    let mut per_class: BTreeMap<String, Tally> = BTreeMap::new();
    for (q, [first, second]) in &by_q {
        let (Some(p0), Some(p1)) = (first, second) else {
            continue;
        };
        let class = classes.get(q).cloned().unwrap_or_else(|| "unknown".into());
        for t in [&mut overall, per_class.entry(class).or_default()] {
            add(t, *p0, *p1);
        }
    }
    let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    Summary {
        a: a.to_string(),
        b: b.to_string(),
        judge_model: judge.to_string(),
        a_win_rate: rate(overall.a_wins, overall.questions),
        b_win_rate: rate(overall.b_wins, overall.questions),
        agreement: rate(overall.questions - overall.inconsistent, overall.questions),
        position_bias: rate(overall.first_shown_won, overall.decisive),
        overall,
        classes: per_class,
        unreadable_verdicts: unreadable,
        requests_sent_now: 0,
        seconds: 0.0,
    }
}

/// One question: `p0` with A shown first, `p1` with B shown first.
fn add(t: &mut Tally, p0: Preference, p1: Preference) {
    use Preference::{First, Second, Tie};
    t.questions += 1;
    // In A's terms: order 0 First = A, order 1 Second = A.
    let a0 = match p0 {
        First => Some(true),
        Second => Some(false),
        Tie => None,
    };
    let a1 = match p1 {
        Second => Some(true),
        First => Some(false),
        Tie => None,
    };
    for p in [p0, p1] {
        if p != Tie {
            t.decisive += 1;
            t.first_shown_won += u64::from(p == First);
        }
    }
    match (a0, a1) {
        (Some(true), Some(true)) => t.a_wins += 1,
        (Some(false), Some(false)) => t.b_wins += 1,
        (None, None) => t.ties += 1,
        _ => {
            t.inconsistent += 1;
            t.ties += 1;
        }
    }
}

fn print_summary(s: &Summary) {
    let pct = |x: Option<f64>| x.map_or("-".into(), |v| format!("{:.1}%", 100.0 * v));
    println!(
        "{} vs {} (judge {}): {} questions; {} wins {}, {} wins {}, ties {} ({} where the two orders disagreed)",
        s.a,
        s.b,
        s.judge_model,
        s.overall.questions,
        s.a,
        s.overall.a_wins,
        s.b,
        s.overall.b_wins,
        s.overall.ties,
        s.overall.inconsistent
    );
    println!(
        "  win rate {} {}, {} {}; the two orders agree on {}; the answer shown first wins {} of decisive verdicts (50% = no position bias)",
        s.a,
        pct(s.a_win_rate),
        s.b,
        pct(s.b_win_rate),
        pct(s.agreement),
        pct(s.position_bias)
    );
    for (class, t) in &s.classes {
        println!(
            "  {class:<20} {:>4} questions: {} {:>3}, {} {:>3}, ties {:>3}",
            t.questions, s.a, t.a_wins, s.b, t.b_wins, t.ties
        );
    }
    if s.unreadable_verdicts > 0 {
        println!(
            "  {} replies held no verdict ([[A]], [[B]] or [[C]])",
            s.unreadable_verdicts
        );
    }
    println!(
        "requests: {} sent now; {:.1} s",
        s.requests_sent_now, s.seconds
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_orders_decide_a_question_and_position_bias_counts_first_shown_wins() {
        use Preference::{First, Second, Tie};
        let mut t = Tally::default();
        add(&mut t, First, Second); // A both times
        add(&mut t, First, First); // first shown both times: inconsistent
        add(&mut t, Tie, Tie);
        add(&mut t, Second, First); // B both times
        assert_eq!(
            (t.questions, t.a_wins, t.b_wins, t.ties, t.inconsistent),
            (4, 1, 1, 2, 1)
        );
        assert_eq!((t.first_shown_won, t.decisive), (4, 6));
    }
}
