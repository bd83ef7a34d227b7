//! `instill dedup`: exact, MinHash-LSH and ROUGE-L near-duplicate removal over the stored
//! records that are not rejected, written back in one transaction.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use instill_core::text_hash;
use instill_dedup::{
    LshConfig, MinHasher, RougeConfig, Shingling, Signatures, Tokenizer, Verify, exact_dups,
    lsh_clusters, rouge_filter_exhaustive_with_progress, rouge_filter_with_progress,
};
use instill_storage::{Db, Rejection, StoredRecord};
use rayon::prelude::*;
use serde::Serialize;

use crate::cli::{DedupArgs, FieldArg, GlobalArgs, ShingleArg, TokenizerArg, VerifyArg};
use crate::cmd::scope::load_scope;
use crate::{Outcome, progress};

#[derive(Debug, Default, Serialize)]
struct Summary {
    scope: usize,
    dry_run: bool,
    exact: Option<MethodSummary>,
    minhash: Option<MethodSummary>,
    rouge_l: Option<MethodSummary>,
    rejected: usize,
    kept: usize,
    seconds: f64,
}

#[derive(Debug, Default, Serialize)]
struct MethodSummary {
    checked: usize,
    rejected: usize,
    seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bands: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    clusters: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokenizer: Option<&'static str>,
}

/// Everything the run decides, applied at the end (or only reported with --dry-run).
#[derive(Default)]
struct Decisions {
    rejections: Vec<Rejection>,
    clusters: Vec<(i64, i64)>,
    nearest: Vec<(i64, Option<i64>, f64)>,
}

pub async fn run(global: &GlobalArgs, args: &DedupArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let none_named =
        !args.exact && args.minhash_threshold.is_none() && args.rouge_threshold.is_none();
    let exact = args.exact || none_named;
    let minhash = args.minhash_threshold.or(none_named.then_some(0.8));
    let rouge = args.rouge_threshold.or(none_named.then_some(0.7));
    let show = progress::enabled(global.no_progress);

    let db = Db::open(&global.db).await?;
    let scope = load_scope(&db, show).await?;
    let seeds: Vec<String> = if args.with_seeds && rouge.is_some() {
        db.list_seeds(None)
            .await?
            .into_iter()
            .map(|s| s.seed.record.instruction)
            .collect()
    } else {
        Vec::new()
    };
    let mut summary = Summary {
        scope: scope.len(),
        dry_run: args.dry_run,
        ..Summary::default()
    };
    let mut alive = vec![true; scope.len()];
    let mut decisions = Decisions::default();

    if exact {
        let t = Instant::now();
        let keys: Vec<String> = scope
            .par_iter()
            .map(|r| match args.field {
                FieldArg::Record => r.norm_hash.clone(),
                FieldArg::Instruction => text_hash(&r.record.instruction),
            })
            .collect();
        let mut m = MethodSummary {
            checked: scope.len(),
            ..MethodSummary::default()
        };
        for (i, dup) in exact_dups(keys.iter()).into_iter().enumerate() {
            if let Some(first) = dup {
                alive[i] = false;
                m.rejected += 1;
                decisions.rejections.push(Rejection {
                    id: scope[i].id,
                    reason: "exact".into(),
                    dup_of: Some(scope[first].id),
                    score: Some(1.0),
                    cluster_id: None,
                });
            }
        }
        m.seconds = t.elapsed().as_secs_f64();
        summary.exact = Some(m);
    }

    if let Some(threshold) = minhash {
        let t = Instant::now();
        let live: Vec<usize> = (0..scope.len()).filter(|&i| alive[i]).collect();
        let texts: Vec<String> = live
            .par_iter()
            .map(|&i| field_text(&scope[i], args.field))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let n = args.ngram.map(|n| n as usize);
        let shingling = match args.shingle {
            ShingleArg::Char => Shingling::Char(n.unwrap_or(5)),
            ShingleArg::Word => Shingling::Word(n.unwrap_or(3)),
        };
        let hasher = MinHasher::new(args.num_perm as usize, shingling, 1);
        let bar = progress::rows(show, refs.len() as u64, "minhash signatures".into());
        let done = AtomicU64::new(0);
        let sigs = Signatures::compute_with_progress(&hasher, &refs, &|k| {
            bar.set_position(done.fetch_add(k as u64, Ordering::Relaxed) + k as u64);
        });
        bar.finish_and_clear();
        let verify = match args.minhash_verify {
            VerifyArg::Estimate => Verify::Estimate,
            VerifyArg::Exact => Verify::Exact,
            VerifyArg::None => Verify::None,
        };
        let sets: Option<Vec<Vec<u64>>> =
            (verify == Verify::Exact).then(|| refs.par_iter().map(|t| shingling.set(t)).collect());
        let config = LshConfig::for_threshold(threshold, args.num_perm as usize, verify);
        let verdicts = lsh_clusters(&sigs, &config, sets.as_deref());
        let mut m = MethodSummary {
            checked: live.len(),
            threshold: Some(threshold),
            bands: Some(config.bands),
            rows: Some(config.rows),
            ..MethodSummary::default()
        };
        let mut clusters = 0;
        for (k, v) in verdicts.iter().enumerate() {
            let i = live[k];
            let cluster_id = v.in_cluster.then(|| scope[live[v.cluster]].id);
            if v.kept {
                if let Some(c) = cluster_id {
                    clusters += 1;
                    decisions.clusters.push((scope[i].id, c));
                }
                continue;
            }
            alive[i] = false;
            m.rejected += 1;
            decisions.rejections.push(Rejection {
                id: scope[i].id,
                reason: "minhash".into(),
                dup_of: v.dup_of.map(|(j, _)| scope[live[j]].id),
                score: v.dup_of.map(|(_, s)| s),
                cluster_id,
            });
        }
        m.clusters = Some(clusters);
        m.seconds = t.elapsed().as_secs_f64();
        summary.minhash = Some(m);
    }

    if let Some(threshold) = rouge {
        let t = Instant::now();
        let live: Vec<usize> = (0..scope.len()).filter(|&i| alive[i]).collect();
        let mut texts: Vec<&str> = seeds.iter().map(String::as_str).collect();
        texts.extend(live.iter().map(|&i| scope[i].record.instruction.as_str()));
        let tokenizer = match args.tokenizer {
            TokenizerArg::Auto => Tokenizer::Auto,
            TokenizerArg::Alpaca => Tokenizer::Alpaca,
            TokenizerArg::Char => Tokenizer::Char,
        };
        let config = RougeConfig {
            threshold,
            tokenizer,
            floor: args.rouge_floor,
        };
        let bar = progress::rows(show, live.len() as u64, "ROUGE-L".into());
        let tick = |k: usize| bar.inc(k as u64);
        let verdicts = if args.rouge_exhaustive {
            rouge_filter_exhaustive_with_progress(&texts, seeds.len(), &config, &tick)
        } else {
            rouge_filter_with_progress(&texts, seeds.len(), &config, &tick)
        };
        bar.finish_and_clear();
        let mut m = MethodSummary {
            checked: live.len(),
            threshold: Some(threshold),
            tokenizer: Some(tokenizer.name()),
            ..MethodSummary::default()
        };
        // Items are the seeds, then the live records: map an item back to a record id.
        let record_id = |item: usize| item.checked_sub(seeds.len()).map(|k| scope[live[k]].id);
        for (k, v) in verdicts.iter().enumerate() {
            let i = live[k];
            if let Some(n) = v.nearest.filter(|n| n.score >= args.rouge_floor || !v.kept) {
                decisions
                    .nearest
                    .push((scope[i].id, record_id(n.index), n.score));
            }
            if !v.kept {
                alive[i] = false;
                m.rejected += 1;
                decisions.rejections.push(Rejection {
                    id: scope[i].id,
                    reason: "rouge_l".into(),
                    dup_of: v.nearest.and_then(|n| record_id(n.index)),
                    score: v.nearest.map(|n| n.score),
                    cluster_id: None,
                });
            }
        }
        m.seconds = t.elapsed().as_secs_f64();
        summary.rouge_l = Some(m);
    }

    summary.rejected = decisions.rejections.len();
    summary.kept = scope.len() - summary.rejected;
    if !args.dry_run {
        let mut w = db.writer().await?;
        w.reject(&decisions.rejections).await?;
        w.set_clusters(&decisions.clusters).await?;
        w.set_rouge_nearest(&decisions.nearest).await?;
        w.commit().await?;
    }
    db.close().await;
    summary.seconds = started.elapsed().as_secs_f64();
    print_summary(global, &summary)?;
    Ok(Outcome::Done)
}

/// The text exact and MinHash dedup compare for a record.
fn field_text(r: &StoredRecord, field: FieldArg) -> String {
    match field {
        FieldArg::Instruction => r.record.instruction.clone(),
        FieldArg::Record => {
            let mut t = String::with_capacity(
                r.record.instruction.len() + r.record.input.len() + r.record.output.len() + 2,
            );
            for part in [
                &r.record.system,
                &r.record.instruction,
                &r.record.input,
                &r.record.output,
            ] {
                if !part.is_empty() {
                    if !t.is_empty() {
                        t.push(' ');
                    }
                    t.push_str(part);
                }
            }
            for h in &r.record.history {
                t.push(' ');
                t.push_str(h.user());
                t.push(' ');
                t.push_str(h.assistant());
            }
            t
        }
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
        ("exact", &s.exact),
        ("minhash", &s.minhash),
        ("rouge_l", &s.rouge_l),
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
