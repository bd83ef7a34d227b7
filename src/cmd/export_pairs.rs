//! `instill export --format dpo|dpo-messages|lf-ranking`: preference pairs out, through the
//! same staging, shards (zstd, SHA-256), manifest and validation rule as records
//! (`export.rs`), with a card of their own (`pair_card.rs`) and, for the layouts LLaMA-Factory
//! reads, a `"ranking": true` entry in `dataset_info.json`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use instill_core::{Columns, PairFormat, ReasoningMode, write_pair};
use instill_storage::{Db, PairSet, StatusFilter, StoredPair};
use serde::Serialize;

use super::export::{
    Formatted, Manifest, Written, abandon, manifest, print_summary, shard_config,
    spawn_shard_writer, staged_file,
};
use crate::card::CARD;
use crate::cli::{ExportArgs, GlobalArgs};
use crate::lf_info::{self, LF_INFO, LfNames};
use crate::outdir::Producer;
use crate::pair_card::{self, PairCardInput};
use crate::signals::Signals;
use crate::staging::Staging;
use crate::{Outcome, outdir, progress};

/// Pairs per database page.
const PAGE: i64 = 2000;

/// One exported set, as the manifest and the card list it.
#[derive(Debug, Clone, Serialize)]
pub struct SetWritten {
    /// The `instill pairs` run's name or the import's source label.
    pub name: String,
    /// `pairs` (sampled and graded by `instill pairs`) or `import`.
    pub made_by: &'static str,
    /// Pairs of the set in this export.
    pub pairs: u64,
    /// The mean chosen-minus-rejected grade over its exported pairs graded on both sides.
    pub mean_margin: Option<f64>,
    /// Pairs graded on both sides.
    pub graded: u64,
    /// Instructions the set holds no pair for, by why (`instill pairs`' reasons).
    pub no_pair: BTreeMap<String, i64>,
}

/// What the formatting thread saw.
#[derive(Debug, Default)]
struct Tally {
    /// Per set: pairs written, margins summed, pairs graded on both sides.
    sets: BTreeMap<String, (u64, f64, u64)>,
    /// Pairs written per prompt language.
    langs: BTreeMap<String, u64>,
    /// Pairs the layout cannot say.
    unfit: u64,
    /// Pairs read.
    read: u64,
}

pub async fn run(
    global: &GlobalArgs,
    args: &ExportArgs,
    format: PairFormat,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let filter = StatusFilter::from(args.status);
    let config = shard_config(args, None)?;
    outdir::keep_apart(&args.out, &global.db, &[])?;
    let mut signals = Signals::listen()?;
    let staging = Staging::new(&args.out, args.overwrite, Producer::Export, staged_file)?;
    let db = Db::open(&global.db).await?;
    let all_sets = db.pair_sets().await?;
    let sets = choose_sets(&all_sets, &args.pairs)?;
    let mode = ReasoningMode::from(args.reasoning);
    let mut columns = Columns::default();
    for set in &sets {
        let c = db.pair_columns(Some(&set.name), filter).await?;
        columns.system |= c.system;
        columns.history |= c.history;
        columns.reasoning |= c.reasoning;
    }
    columns.reasoning &= mode == ReasoningMode::Keep && format.has_reasoning_field();
    let split = (args.val_fraction > 0.0).then_some((args.seed, args.val_fraction));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<StoredPair>>(4);
    let (formatted_tx, formatted_rx) = std::sync::mpsc::sync_channel::<Vec<Formatted>>(2);
    let formatter = spawn_formatter(rx, formatted_tx, (format, columns, mode), split, &stop);
    let writer = spawn_shard_writer(formatted_rx, &staging.dir, config, &stop);
    let names: Vec<&str> = sets.iter().map(|s| s.name.as_str()).collect();
    let total = sets.iter().map(|s| s.pairs).sum::<i64>();
    let (read, stopped) = tokio::select! {
        read = read_pairs(&db, global, args, (&names, total), filter, tx) => (read, None),
        signal = signals.recv() => (Ok(()), Some(signal)),
    };
    if stopped.is_some() || read.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    let tally = formatter
        .join()
        .map_err(|_| anyhow::anyhow!("the formatting thread panicked"))?;
    let written: anyhow::Result<Written> = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the shard writer thread panicked"))?;
    if let Some(signal) = stopped {
        return Ok(abandon(staging, signal, &args.out));
    }
    read?;
    let Some((shards, train_rows, val_rows)) = written? else {
        anyhow::bail!("the shard writer stopped early");
    };
    db.close().await;
    if tally.unfit > 0 {
        anyhow::bail!(
            "{} of the {} pairs read have a system prompt or earlier turns, which the dpo \
             layout cannot say as one prompt text: export them with --format dpo-messages (or \
             lf-ranking), which keep them; nothing was written to {}",
            tally.unfit,
            tally.read,
            args.out.display()
        );
    }
    let mut manifest = manifest(
        args,
        (format.name(), columns),
        filter,
        config,
        shards,
        (train_rows, val_rows),
    );
    manifest.pairs = Some(sets_written(&sets, &tally));
    write_metadata(&staging, args, &mut manifest, (format, columns), &tally)?;
    if let Some(signal) = signals.received() {
        return Ok(abandon(staging, signal, &args.out));
    }
    staging.commit()?;
    print_summary(global, args, &manifest, started)?;
    Ok(Outcome::Done)
}

/// The sets `--pairs` names (`all`: every one); with none named, the database's only set.
pub fn choose_sets<'a>(sets: &'a [PairSet], asked: &[String]) -> anyhow::Result<Vec<&'a PairSet>> {
    let listing = || {
        sets.iter()
            .map(|s| {
                format!(
                    "{} ({} pair{})",
                    s.name,
                    s.pairs,
                    if s.pairs == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    if sets.is_empty() {
        anyhow::bail!(
            "the database holds no preference pairs: make them with `instill pairs`, or import \
             a pair file (dpo, dpo-messages, UltraFeedback, lf-ranking)"
        );
    }
    if asked.is_empty() {
        return match sets {
            [one] => Ok(vec![one]),
            _ => anyhow::bail!(
                "the database holds {} pair sets: {}; name one with --pairs NAME (repeat it for \
                 several) or --pairs all",
                sets.len(),
                listing()
            ),
        };
    }
    if asked.iter().any(|a| a == "all") {
        return Ok(sets.iter().collect());
    }
    let mut chosen: Vec<&PairSet> = Vec::new();
    for name in asked {
        let Some(set) = sets.iter().find(|s| &s.name == name) else {
            anyhow::bail!(
                "--pairs {name}: no such pair set; the database holds: {}",
                listing()
            );
        };
        if !chosen.iter().any(|c| c.name == set.name) {
            chosen.push(set);
        }
    }
    Ok(chosen)
}

/// Reads each set's pairs page by page, in set order, and hands them on.
async fn read_pairs(
    db: &Db,
    global: &GlobalArgs,
    args: &ExportArgs,
    (sets, total): (&[&str], i64),
    filter: StatusFilter,
    tx: tokio::sync::mpsc::Sender<Vec<StoredPair>>,
) -> anyhow::Result<()> {
    let bar = progress::rows(
        progress::enabled(global.no_progress),
        u64::try_from(total).unwrap_or(0),
        format!("exporting pairs to {}", args.out.display()),
    );
    for set in sets {
        let mut after = 0;
        loop {
            let page = db.pairs_page(Some(set), filter, after, PAGE).await?;
            let Some(last) = page.last() else {
                break;
            };
            after = last.id;
            bar.inc(page.len() as u64);
            if tx.send(page).await.is_err() {
                bar.finish_and_clear();
                return Ok(()); // the writer failed; its error comes out of join
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// Starts the thread that applies the reasoning mode to each page's pairs, writes their lines
/// with each one's split, and counts what it wrote; it ends when the pages do or `stop` is set.
fn spawn_formatter(
    mut rx: tokio::sync::mpsc::Receiver<Vec<StoredPair>>,
    tx: std::sync::mpsc::SyncSender<Vec<Formatted>>,
    (format, columns, mode): (PairFormat, Columns, ReasoningMode),
    split: Option<(u64, f64)>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Tally> {
    let stop = Arc::clone(stop);
    std::thread::spawn(move || {
        let mut tally = Tally::default();
        while let Some(page) = rx.blocking_recv() {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let mut f = Formatted {
                text: Vec::with_capacity(page.len() * 800),
                ends: Vec::with_capacity(page.len()),
                val: Vec::with_capacity(page.len()),
                records: Vec::new(),
            };
            for mut stored in page {
                tally.read += 1;
                let margin = stored.pair.margin();
                let val =
                    split.is_some_and(|(seed, fraction)| stored.pair.held_out(seed, fraction));
                mode.apply_pair(&mut stored.pair, format);
                if write_pair(&stored.pair, format, columns, &mut f.text).is_err() {
                    tally.unfit += 1;
                    continue;
                }
                f.ends.push(f.text.len());
                f.val.push(val);
                let set = tally.sets.entry(stored.pair_set).or_default();
                set.0 += 1;
                if let Some(m) = margin {
                    set.1 += m;
                    set.2 += 1;
                }
                *tally
                    .langs
                    .entry(stored.lang.as_str().to_string())
                    .or_default() += 1;
            }
            if tx.send(vec![f]).is_err() {
                break; // the shard writer failed; its error comes out of join
            }
        }
        tally
    })
}

/// Each chosen set with what this export holds of it.
fn sets_written(sets: &[&PairSet], tally: &Tally) -> Vec<SetWritten> {
    sets.iter()
        .map(|s| {
            let (pairs, sum, graded) = tally.sets.get(&s.name).copied().unwrap_or_default();
            SetWritten {
                name: s.name.clone(),
                made_by: if s.imported { "import" } else { "pairs" },
                pairs,
                mean_margin: (graded > 0).then(|| sum / graded as f64),
                graded,
                no_pair: s
                    .no_pair
                    .iter()
                    .map(|(why, n)| (why.as_str().to_string(), *n))
                    .collect(),
            }
        })
        .collect()
}

/// Writes the card, LLaMA-Factory's file (for the layouts it reads) and the manifest listing
/// them into the staging directory, and syncs the data directories.
fn write_metadata(
    staging: &Staging,
    args: &ExportArgs,
    manifest: &mut Manifest,
    (format, columns): (PairFormat, Columns),
    tally: &Tally,
) -> anyhow::Result<()> {
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let names = LfNames::new(&name, manifest.totals.val_rows > 0);
    let lf = lf_info::render_pairs(&names, format, columns);
    let card = pair_card::render(&PairCardInput {
        name: &name,
        format,
        reasoning: columns.reasoning,
        zstd: manifest.compression_is_zstd(),
        shards: &manifest.shards,
        status: manifest.filters.status,
        val_fraction: args.val_fraction,
        seed: args.seed,
        sets: manifest.pairs.as_deref().unwrap_or_default(),
        langs: &tally.langs,
        lf: lf.is_some().then_some(&names),
        created_at_ms: manifest.created_at_ms,
    });
    let mut files = vec![(CARD, card)];
    files.extend(lf.map(|text| (LF_INFO, text)));
    crate::cmd::export::finish_staging(staging, manifest, &files)
}
