//! `instill select`: a scorer's scores into decisions. It takes back its own earlier
//! rejections (`low_score`, `not_diverse`, `unscored`), decides again over the records that are
//! not rejected, and writes the verdicts and a curation line in one transaction.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use instill_core::{Reason, ScoreSummary, summarize};
use instill_dedup::{Budget, Candidate, RougeConfig, SelectConfig, Shingling, Similarity, select};
use instill_storage::{Db, Scorer, StatusFilter, StoredRecord};
use serde::Serialize;

use crate::cli::{DiverseArg, GlobalArgs, SelectArgs};
use crate::cmd::scope;
use crate::{Outcome, progress};

/// The reasons select gives, and so takes back when it runs again.
const OWN: [Reason; 3] = [Reason::LowScore, Reason::NotDiverse, Reason::Unscored];

#[derive(Debug, Serialize)]
struct Summary<'a> {
    scorer: &'a str,
    method: &'static str,
    scale: Option<[f64; 2]>,
    min_score: Option<f64>,
    max_score: Option<f64>,
    top_k: Option<u64>,
    top_fraction: Option<f64>,
    diverse_threshold: Option<f64>,
    diverse_method: Option<&'static str>,
    keep_unscored: bool,
    dry_run: bool,
    candidates: usize,
    redecided: usize,
    kept: usize,
    rejected: usize,
    by_reason: BTreeMap<&'static str, usize>,
    kept_scores: ScoreSummary,
    seconds: f64,
}

pub async fn run(global: &GlobalArgs, args: &SelectArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let db = Db::open(&global.db).await?;
    let scorer = find_scorer(&db, &args.scorer).await?;
    check_thresholds(args, &scorer)?;
    let scores: HashMap<i64, Option<f64>> = db
        .scores(&scorer.name)
        .await?
        .into_iter()
        .map(|s| (s.record_id, s.score))
        .collect();
    let all = scope::load_records(
        &db,
        StatusFilter::All,
        progress::enabled(global.no_progress),
    )
    .await?;
    let own = |r: &StoredRecord| {
        r.reason
            .as_deref()
            .is_some_and(|code| OWN.iter().any(|o| o.as_str() == code))
    };
    let pool: Vec<&StoredRecord> = all
        .iter()
        .filter(|r| r.status != instill_core::Status::Rejected || own(r))
        .collect();
    let redecided = pool.iter().filter(|r| own(r)).count();
    let texts: Vec<String> = pool
        .iter()
        .map(|r| {
            format!(
                "{}\n{}\n{}",
                r.record.instruction, r.record.input, r.record.output
            )
        })
        .collect();
    let candidates: Vec<Candidate<'_>> = pool
        .iter()
        .zip(&texts)
        .map(|(r, text)| Candidate {
            id: r.id,
            score: scores.get(&r.id).copied().flatten(),
            instruction: &r.record.instruction,
            text,
        })
        .collect();
    let rejections = select(&candidates, &config(args, &scorer));
    let mut by_reason: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in &rejections {
        *by_reason.entry(r.reason.as_str()).or_default() += 1;
    }
    let rejected_ids: std::collections::HashSet<i64> = rejections.iter().map(|r| r.id).collect();
    let summary = Summary {
        scorer: &scorer.name,
        method: scorer.method.as_str(),
        scale: scorer.scale.map(|(a, b)| [a, b]),
        min_score: args.min_score,
        max_score: args.max_score,
        top_k: args.top_k,
        top_fraction: args.top_fraction,
        diverse_threshold: args.diverse_threshold,
        diverse_method: args.diverse_threshold.map(|_| match args.diverse_method {
            DiverseArg::RougeL => "rouge-l",
            DiverseArg::Minhash => "minhash",
        }),
        keep_unscored: args.keep_unscored,
        dry_run: args.dry_run,
        candidates: candidates.len(),
        redecided,
        kept: candidates.len() - rejections.len(),
        rejected: rejections.len(),
        by_reason,
        kept_scores: summarize(
            candidates
                .iter()
                .filter(|c| !rejected_ids.contains(&c.id) && scores.contains_key(&c.id))
                .map(|c| c.score),
            scorer.scale,
        ),
        seconds: 0.0,
    };
    if !args.dry_run {
        let stored = scope::curation("select", &summary, candidates.len(), &rejections)?;
        let mut w = db.writer().await?;
        w.unreject(&OWN).await?;
        w.reject(&scope::stored(&rejections)).await?;
        w.record_curation(&stored).await?;
        w.commit().await?;
    }
    db.close().await;
    let summary = Summary {
        seconds: started.elapsed().as_secs_f64(),
        ..summary
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(Outcome::Done)
}

/// The scorer `name`, or an error that lists the scorers there are.
async fn find_scorer(db: &Db, name: &str) -> anyhow::Result<Scorer> {
    if let Some(s) = db.scorer(name).await? {
        return Ok(s);
    }
    let names: Vec<String> = db.scorers().await?.into_iter().map(|s| s.name).collect();
    if names.is_empty() {
        anyhow::bail!(
            "--scorer {name}: there are no scores in this database yet; run `instill score` first"
        );
    }
    anyhow::bail!(
        "--scorer {name}: no such scorer; the database has: {}",
        names.join(", ")
    )
}

/// Thresholds must be on the scorer's scale (a judge's rubric), and say something.
fn check_thresholds(args: &SelectArgs, scorer: &Scorer) -> anyhow::Result<()> {
    for (flag, v) in [
        ("--min-score", args.min_score),
        ("--max-score", args.max_score),
    ] {
        let Some(v) = v else { continue };
        if !v.is_finite() {
            anyhow::bail!("{flag} {v}: not a number");
        }
        if let Some((lo, hi)) = scorer.scale
            && !(lo..=hi).contains(&v)
        {
            anyhow::bail!(
                "{flag} {v} is outside scorer {}'s scale {lo}–{hi} (scores and thresholds are in the rubric's own scale)",
                scorer.name
            );
        }
    }
    if let (Some(lo), Some(hi)) = (args.min_score, args.max_score)
        && lo > hi
    {
        anyhow::bail!("--min-score {lo} is above --max-score {hi}: nothing could pass");
    }
    Ok(())
}

/// The library's settings from the flags.
fn config(args: &SelectArgs, scorer: &Scorer) -> SelectConfig {
    SelectConfig {
        min_score: args.min_score,
        max_score: args.max_score,
        budget: match (args.top_k, args.top_fraction) {
            (Some(k), _) => Budget::TopK(usize::try_from(k).unwrap_or(usize::MAX)),
            (None, Some(f)) => Budget::TopFraction(f),
            (None, None) => Budget::All,
        },
        higher_is_better: scorer.method.higher_is_better(),
        diverse: args.diverse_threshold.map(|t| {
            let sim = match args.diverse_method {
                DiverseArg::RougeL => Similarity::RougeL(RougeConfig::default()),
                DiverseArg::Minhash => Similarity::MinHash {
                    num_perm: 128,
                    shingling: Shingling::Word(3),
                },
            };
            (sim, t)
        }),
        keep_unscored: args.keep_unscored,
    }
}

fn print_summary(s: &Summary) {
    let verb = if s.dry_run { "would keep" } else { "kept" };
    println!(
        "select by {} ({}{}): {} records not rejected (of them {} re-decided from an earlier select); {verb} {}, rejected {}",
        s.scorer,
        s.method,
        s.scale
            .map(|[a, b]| format!(", scale {a}–{b}"))
            .unwrap_or_default(),
        s.candidates,
        s.redecided,
        s.kept,
        s.rejected
    );
    for (reason, n) in &s.by_reason {
        println!("  {reason:<24} {n:>8}");
    }
    println!("kept records' scores:");
    crate::scoreboard::print_distribution(&s.kept_scores, s.scale.map(|[a, b]| (a, b)));
}
