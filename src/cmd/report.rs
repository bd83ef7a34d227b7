//! `instill report`: gathers what the database holds and writes the HTML page atomically.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use instill_storage::{Db, RunSummary};

use crate::cli::{GlobalArgs, ReportArgs};
use crate::report::{self, ReportData, text::TextStats};
use crate::scoreboard::Scoreboard;
use crate::{Outcome, outdir};

const PAGE: i64 = 5_000;

pub async fn run(global: &GlobalArgs, args: &ReportArgs) -> anyhow::Result<Outcome> {
    check_out(global, &args.out)?;
    let db = Db::open(&global.db).await?;
    let board = Scoreboard::load(&db).await?;
    let stats = crate::cmd::stats::to_json(&db, &board).await?;
    let runs = db.run_summaries().await?;
    let run_id = match &args.run {
        Some(name) => Some(run_named(&runs, name)?),
        None => None,
    };
    let mut timelines = Vec::new();
    let generated = runs.iter().filter(|r| r.kind.makes_records());
    for r in generated.filter(|r| run_id.is_none_or(|id| id == r.id)) {
        // About 60 points per run, at least one second each.
        let bucket = (db.run_span_ms(r.id).await? / 60).max(1000);
        timelines.push((r.id, bucket, db.run_timeline(r.id, bucket).await?));
    }
    let total = stats["records"]["total"].as_u64().unwrap_or(0);
    let text = text_stats(&db, run_id, total, global.no_progress).await?;
    let training = read_training(&args.training)?;
    let data = ReportData {
        db: db.url().to_string(),
        stats,
        runs,
        timelines,
        rouge: db.rouge_nn_scores(run_id).await?,
        clusters: db.cluster_sizes().await?,
        text,
        run_filter: args.run.clone(),
        prices: args.price_in.zip(args.price_out).or_else(|| {
            (args.price_in.is_some() || args.price_out.is_some())
                .then(|| (args.price_in.unwrap_or(0.0), args.price_out.unwrap_or(0.0)))
        }),
        generated_at: instill_core::utc(instill_core::now_ms()),
        training,
        board,
    };
    db.close().await;
    let html = report::render(&data);
    write_atomically(&args.out, html.as_bytes())?;
    if global.json {
        println!(
            "{}",
            serde_json::json!({"out": args.out.display().to_string(), "bytes": html.len(), "records": data.text.records})
        );
    } else {
        println!(
            "wrote {} ({} KB, {} records)",
            args.out.display(),
            html.len() / 1024,
            data.text.records
        );
    }
    Ok(Outcome::Done)
}

/// The id of the generation or evolve run called `name` (`--run`), or an error listing those
/// there are (the other kinds make no records to chart).
fn run_named(runs: &[RunSummary], name: &str) -> anyhow::Result<i64> {
    let generated = || runs.iter().filter(|r| r.kind.makes_records());
    generated()
        .find(|r| r.name == name)
        .map(|r| r.id)
        .ok_or_else(|| {
            let known: Vec<&str> = generated().map(|r| r.name.as_str()).collect();
            anyhow::anyhow!(
                "--run {name}: no such generation run (generation runs: {})",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })
}

/// Text statistics over the records the report covers, read a page at a time.
async fn text_stats(
    db: &Db,
    run_id: Option<i64>,
    total: u64,
    no_progress: bool,
) -> anyhow::Result<TextStats> {
    let bar = crate::progress::rows(
        crate::progress::enabled(no_progress),
        total,
        "reading records".to_string(),
    );
    let mut text = TextStats::default();
    let mut after = 0;
    loop {
        let page = db.record_texts(run_id, after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for r in &page {
            text.add(&r.instruction, &r.input, &r.output, &r.lang);
        }
        bar.inc(page.len() as u64);
    }
    bar.finish_and_clear();
    Ok(text)
}

/// The loss curves of `instill train` output directories.
fn read_training(dirs: &[PathBuf]) -> anyhow::Result<Vec<report::TrainingCurve>> {
    let mut training = Vec::new();
    for dir in dirs {
        let path = dir.join("loss.csv");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "{}: cannot read (is {} an `instill train` output directory?)",
                path.display(),
                dir.display()
            )
        })?;
        training.push(
            report::read_loss_csv(&dir.display().to_string(), &text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
    }
    Ok(training)
}

/// Refuses an `--out` that is the database, a directory, or a file other than an earlier report.
fn check_out(global: &GlobalArgs, out: &Path) -> anyhow::Result<()> {
    outdir::keep_apart(out, &global.db, &[])?;
    let shown = out.display();
    match std::fs::symlink_metadata(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("{shown}: cannot read")),
        Ok(m) if m.is_dir() => {
            anyhow::bail!("{shown}: is a directory; --out takes the HTML file to write")
        }
        Ok(_) => {
            let mut head = Vec::with_capacity(1024);
            std::fs::File::open(out)
                .and_then(|f| f.take(1024).read_to_end(&mut head))
                .with_context(|| format!("{shown}: cannot read"))?;
            if !report::is_report(&head) {
                anyhow::bail!(
                    "{shown}: exists and is not an instill report; report replaces only its own \
                     earlier page: choose another --out or move the file away"
                );
            }
            Ok(())
        }
    }
}

/// Writes `path` through a synced temporary file beside it, renamed over it.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = outdir::parent_of(path);
    let name = path.file_name().context("--out needs a file name")?;
    let tmp = dir.join(format!(
        ".{}.instill-tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    outdir::write_synced(&tmp, bytes)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("{}: cannot write", path.display()));
    }
    outdir::sync_dir(&dir)
}
