//! `instill dedup`: exact, MinHash-LSH and ROUGE-L near-duplicate removal over the stored
//! records that are not rejected, written back in one transaction. The pipeline is
//! `instill_dedup::curate`; this converts the arguments, loads, stores and prints.

use std::sync::Mutex;
use std::time::Instant;

use indicatif::ProgressBar;
use instill_core::Reason;
use instill_dedup::{
    CurateConfig, Curation, Field, MinHashStage, Progress, RougeConfig, RougeStage, Shingling,
    StageSummary, Step, curate,
};
use instill_storage::Db;
use serde::Serialize;

use crate::cli::{DedupArgs, GlobalArgs, ShingleArg};
use crate::cmd::scope::{self, load_scope};
use crate::{Outcome, progress};

#[derive(Debug, Serialize)]
struct Summary<'a> {
    scope: usize,
    dry_run: bool,
    /// What exact and MinHash dedup compared: `record` or `instruction`.
    field: &'static str,
    /// MinHash's shingles and permutations, when it ran (`char 5-grams, 128 permutations`).
    #[serde(skip_serializing_if = "Option::is_none")]
    shingling: Option<String>,
    exact: Option<&'a StageSummary>,
    minhash: Option<&'a StageSummary>,
    rouge_l: Option<&'a StageSummary>,
    rejected: usize,
    kept: usize,
    seconds: f64,
}

pub async fn run(global: &GlobalArgs, args: &DedupArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let config = curate_config(args);
    let show = progress::enabled(global.no_progress);

    let db = Db::open(&global.db).await?;
    let scope = load_scope(&db, show).await?;

    let seeds: Vec<String> = if args.with_seeds && config.rouge.is_some() {
        db.list_seeds(None)
            .await?
            .into_iter()
            .map(|s| s.seed.record.instruction)
            .collect()
    } else {
        Vec::new()
    };
    let seeds: Vec<&str> = seeds.iter().map(String::as_str).collect();
    let curation = curate(&scope::items(&scope), &seeds, &config, &Bars::new(show))?;

    let summary = Summary {
        scope: scope.len(),
        dry_run: args.dry_run,
        field: match config.field {
            Field::Record => "record",
            Field::Instruction => "instruction",
        },
        shingling: config.minhash.as_ref().map(|m| {
            let (unit, n) = match m.shingling {
                Shingling::Char(n) => ("char", n),
                Shingling::Word(n) => ("word", n),
            };
            format!("{unit} {n}-grams, {} permutations", m.num_perm)
        }),
        exact: curation.exact.as_ref(),
        minhash: curation.minhash.as_ref(),
        rouge_l: curation.rouge_l.as_ref(),
        rejected: curation.rejections.len(),
        kept: scope.len() - curation.rejections.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    if !args.dry_run {
        let stored = scope::curation("dedup", &summary, scope.len(), &curation.rejections)?;
        store(&db, &curation, &stored).await?;
    }
    db.close().await;
    print_summary(global, &summary)?;
    // Freeing 52,000 records one string at a time took 10 ms of a 150 ms command; the process
    // is about to exit, which returns their memory at once.
    std::mem::forget(scope);
    Ok(Outcome::Done)
}

/// The stages the arguments name: all three (MinHash at 0.8, ROUGE-L at 0.7) when none is named.
fn curate_config(args: &DedupArgs) -> CurateConfig {
    let none_named =
        !args.exact && args.minhash_threshold.is_none() && args.rouge_threshold.is_none();
    let n = args.ngram.map(|n| n as usize);
    let minhash = args
        .minhash_threshold
        .or(none_named.then_some(0.8))
        .map(|threshold| MinHashStage {
            threshold,
            num_perm: args.num_perm as usize,
            shingling: match args.shingle {
                ShingleArg::Char => Shingling::Char(n.unwrap_or(5)),
                ShingleArg::Word => Shingling::Word(n.unwrap_or(3)),
            },
            verify: args.minhash_verify.into(),
        });
    let rouge = args
        .rouge_threshold
        .or(none_named.then_some(0.7))
        .map(|threshold| RougeStage {
            config: RougeConfig {
                threshold,
                tokenizer: args.tokenizer.into(),
                floor: args.rouge_floor,
            },
            exhaustive: args.rouge_exhaustive,
        });
    CurateConfig {
        field: args.field.into(),
        exact: args.exact || none_named,
        minhash,
        rouge,
    }
}

/// Writes every verdict, and what this run did, in one transaction.
async fn store(db: &Db, c: &Curation, stored: &instill_storage::Curation) -> anyhow::Result<()> {
    let nearest: Vec<(i64, Option<i64>, f64)> = c
        .nearest
        .iter()
        .map(|n| (n.id, n.nearest, n.score))
        .collect();
    let mut w = db.writer().await?;
    w.reject(&scope::stored(&c.rejections)).await?;
    w.set_clusters(&c.clusters).await?;
    w.set_rouge_nearest(&nearest).await?;
    w.record_curation(stored).await?;
    w.commit().await?;
    Ok(())
}

/// A progress bar per long step of the pipeline.
struct Bars {
    show: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn new(show: bool) -> Bars {
        Bars {
            show,
            bar: Mutex::new(None),
        }
    }

    fn with(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        // A poisoned lock only loses the bar.
        if let Ok(mut bar) = self.bar.lock() {
            f(&mut bar);
        }
    }
}

impl Progress for Bars {
    fn begin(&self, step: Step, total: usize) {
        let message = match step {
            Step::MinHashSignatures => "minhash signatures",
            Step::RougeL => "ROUGE-L",
        };
        let bar = progress::rows(self.show, total as u64, message.into());
        self.with(|b| *b = Some(bar));
    }

    fn advance(&self, n: usize) {
        self.with(|b| {
            if let Some(bar) = b {
                bar.inc(n as u64);
            }
        });
    }

    fn end(&self) {
        self.with(|b| {
            if let Some(bar) = b.take() {
                bar.finish_and_clear();
            }
        });
    }
}

fn print_summary(global: &GlobalArgs, s: &Summary) -> anyhow::Result<()> {
    if global.json {
        println!("{}", serde_json::to_string(s)?);
        return Ok(());
    }
    let verb = if s.dry_run {
        "would reject"
    } else {
        "rejected"
    };
    println!("{} records not yet rejected", s.scope);
    for (name, m) in [
        (Reason::Exact.as_str(), &s.exact),
        (Reason::Minhash.as_str(), &s.minhash),
        (Reason::RougeL.as_str(), &s.rouge_l),
    ] {
        if let Some(m) = m {
            let mut extra = String::new();
            if let (Some(b), Some(r)) = (m.bands, m.rows) {
                extra.push_str(&format!(", {b} bands x {r} rows"));
            }
            if let Some(c) = m.clusters {
                extra.push_str(&format!(", {c} clusters"));
            }
            if let Some(t) = m.tokenizer {
                extra.push_str(&format!(", tokenizer {t}"));
            }
            if let Some(th) = m.threshold {
                extra.push_str(&format!(", threshold {th}"));
            }
            println!(
                "  {name:<8} {verb} {:>8} of {:>8} in {:.2} s{extra}",
                m.rejected, m.checked, m.seconds
            );
        }
    }
    println!(
        "{verb} {} records, kept {}, in {:.2} s",
        s.rejected, s.kept, s.seconds
    );
    Ok(())
}
