//! `instill filter`: the quality rules over the records that are not rejected.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use instill_dedup::{Rules, apply_rules};
use instill_storage::Db;
use serde::Serialize;

use crate::cli::{FilterArgs, GlobalArgs};
use crate::cmd::scope::{self, load_scope};
use crate::{Outcome, progress};

#[derive(Debug, Serialize)]
struct Summary {
    scope: usize,
    dry_run: bool,
    rules: String,
    rejected: usize,
    by_rule: BTreeMap<&'static str, usize>,
    seconds: f64,
}

/// The rules named by `--rules`: the built-in set, or a TOML file over it.
pub fn load_rules(spec: &str) -> anyhow::Result<Rules> {
    if spec == "default" {
        return Ok(Rules::default());
    }
    let text = std::fs::read_to_string(spec)
        .with_context(|| format!("{spec}: cannot read the rules file"))?;
    Rules::from_toml(&text).map_err(|e| anyhow::anyhow!("{spec}: {e}"))
}

pub async fn run(global: &GlobalArgs, args: &FilterArgs) -> anyhow::Result<Outcome> {
    if args.print_rules {
        print!("{}", Rules::default().to_toml());
        return Ok(Outcome::Done);
    }
    let started = Instant::now();
    let rules = load_rules(&args.rules)?;
    let db = Db::open(&global.db).await?;
    let scope = load_scope(&db, progress::enabled(global.no_progress)).await?;
    let outcome = apply_rules(&scope::items(&scope), &rules);
    let summary = Summary {
        scope: scope.len(),
        dry_run: args.dry_run,
        rules: args.rules.clone(),
        rejected: outcome.rejections.len(),
        by_rule: outcome.by_rule,
        seconds: started.elapsed().as_secs_f64(),
    };
    if !args.dry_run {
        let stored = scope::curation("filter", &summary, scope.len(), &outcome.rejections)?;
        let mut w = db.writer().await?;
        w.reject(&scope::stored(&outcome.rejections)).await?;
        w.record_curation(&stored).await?;
        w.commit().await?;
    }
    db.close().await;
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let verb = if args.dry_run {
            "would reject"
        } else {
            "rejected"
        };
        println!(
            "{} records not yet rejected; {verb} {}",
            summary.scope, summary.rejected
        );
        for (rule, n) in &summary.by_rule {
            println!("  {rule:<24} {n:>8}");
        }
    }
    Ok(Outcome::Done)
}
