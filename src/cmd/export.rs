//! `instill export`: records out in the Hugging Face Hub's layout (JSONL shards under
//! `data/{split}/`, a `README.md` dataset card whose YAML lists them, LLaMA-Factory's
//! `dataset_info.json`) with a manifest, staged and moved into place only when complete.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use futures::StreamExt;
use instill_core::{Columns, OutputFormat, ReasoningMode, Record, in_val, write_record};
use instill_storage::{Db, ExportRecord, StatusFilter};
use rayon::prelude::*;
use serde::Serialize;

use crate::card::{self, CARD, CardInput};
use crate::cli::{Compression, ExportArgs, FileFormat, GlobalArgs, Layout};
use crate::lf_info::{self, LF_INFO, LfNames};
use crate::outdir::{Producer, Stamp};
use crate::shards::{DATA_DIR, ShardConfig, ShardInfo, ShardWriter, Split, is_shard_path};
use crate::signals::{Signals, Stop};
use crate::staging::Staging;
use crate::{Outcome, outdir, progress};

/// Ids per database read window: a few windows in memory at a time.
const PAGE: i64 = 2000;
const DEFAULT_SHARD_ROWS: u64 = 100_000;

#[derive(Debug, Serialize)]
pub(super) struct Manifest {
    #[serde(flatten)]
    stamp: Stamp,
    /// Every file the export wrote besides this manifest: what `--overwrite` may replace.
    pub(super) files: Vec<String>,
    pub(super) created_at_ms: i64,
    format: &'static str,
    /// `jsonl` or `parquet`.
    file_format: &'static str,
    /// What wraps a JSONL shard: `none` or `zstd` (a Parquet file compresses its own pages).
    compression: &'static str,
    pub(super) filters: Filters,
    /// Alpaca's optional columns written on every line (and `messages`' `reasoning_content`).
    columns: ColumnsWritten,
    /// What was done with the records' reasoning: `keep`, `drop` or `inline`.
    reasoning: &'static str,
    val_fraction: f64,
    seed: u64,
    shard_rows: Option<u64>,
    shard_bytes: Option<u64>,
    pub(super) shards: Vec<ShardInfo>,
    pub(super) totals: Totals,
    /// The exported records `instill evolve` wrote, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    evolved: Option<Evolved>,
    /// A pair export's sets: how many pairs of each, with the mean judge's margin.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) pairs: Option<Vec<super::export_pairs::SetWritten>>,
}

impl Manifest {
    /// Whether the shards are zstd-compressed JSONL.
    pub(super) fn compression_is_zstd(&self) -> bool {
        self.compression == "zstd"
    }
}

/// The exported records evolve runs wrote: how many, from what, per run and round.
#[derive(Debug, Serialize)]
struct Evolved {
    records: i64,
    /// Rewritten from a seed task.
    from_seeds: i64,
    /// Rewritten from a record (an imported or generated one, or an earlier round's rewrite).
    from_records: i64,
    /// Per evolve run, records per round.
    runs: BTreeMap<String, BTreeMap<i64, i64>>,
}

impl Evolved {
    fn new(p: &instill_storage::Provenance) -> Option<Evolved> {
        if p.evolved.is_empty() {
            return None;
        }
        let mut e = Evolved {
            records: 0,
            from_seeds: 0,
            from_records: 0,
            runs: BTreeMap::new(),
        };
        for b in &p.evolved {
            let n = b.from_seeds + b.from_records;
            e.records += n;
            e.from_seeds += b.from_seeds;
            e.from_records += b.from_records;
            *e.runs
                .entry(b.run.clone())
                .or_default()
                .entry(b.round)
                .or_default() += n;
        }
        Some(e)
    }
}

#[derive(Debug, Serialize)]
pub(super) struct Filters {
    pub(super) status: &'static str,
}

#[derive(Debug, Serialize)]
struct ColumnsWritten {
    system: bool,
    history: bool,
    reasoning: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct Totals {
    pub(super) rows: u64,
    bytes: u64,
    uncompressed_bytes: u64,
    shards: usize,
    train_rows: u64,
    pub(super) val_rows: u64,
}

#[derive(Debug, Serialize)]
struct Summary<'a> {
    out: String,
    format: &'static str,
    rows: u64,
    train_rows: u64,
    val_rows: u64,
    shards: usize,
    bytes: u64,
    seconds: f64,
    manifest: &'a str,
}

/// A run of records formatted as JSONL lines back to back, or the records themselves for
/// Parquet shards (whose writer lays them out in columns).
pub(super) struct Formatted {
    pub(super) text: Vec<u8>,
    /// Where each line ends in `text`.
    pub(super) ends: Vec<usize>,
    /// Whether each line (record) goes to the validation split.
    pub(super) val: Vec<bool>,
    /// The records, for Parquet shards (`text` and `ends` are then empty).
    pub(super) records: Vec<Record>,
}

fn format_chunk(
    chunk: &[ExportRecord],
    (format, columns): (OutputFormat, Columns),
    split: Option<(u64, f64)>,
) -> Formatted {
    let mut f = Formatted {
        text: Vec::with_capacity(chunk.len() * 600),
        ends: Vec::with_capacity(chunk.len()),
        val: Vec::with_capacity(chunk.len()),
        records: Vec::new(),
    };
    for stored in chunk {
        write_record(&stored.record, format, columns, &mut f.text);
        f.ends.push(f.text.len());
        f.val.push(is_val(stored, split));
    }
    f
}

/// Whether `stored` goes to the validation split (`split`: the seed and fraction, if any).
fn is_val(stored: &ExportRecord, split: Option<(u64, f64)>) -> bool {
    split.is_some_and(|(seed, fraction)| in_val(&stored.norm_hash, seed, fraction))
}

/// A page's records as they are, each with its split, for a Parquet shard writer.
fn unformatted(page: Vec<ExportRecord>, split: Option<(u64, f64)>) -> Formatted {
    let val = page.iter().map(|s| is_val(s, split)).collect();
    Formatted {
        text: Vec::new(),
        ends: Vec::new(),
        val,
        records: page.into_iter().map(|s| s.record).collect(),
    }
}

/// Writes one run of rows to the split each belongs to; returns the train and validation rows.
fn write_formatted(
    f: &Formatted,
    train: &mut ShardWriter,
    val: &mut ShardWriter,
) -> anyhow::Result<(u64, u64)> {
    let (mut train_rows, mut val_rows) = (0u64, 0u64);
    let mut start = 0;
    for (i, &is_val) in f.val.iter().enumerate() {
        let shards = if is_val {
            val_rows += 1;
            &mut *val
        } else {
            train_rows += 1;
            &mut *train
        };
        match (f.records.get(i), f.ends.get(i)) {
            (Some(record), _) => shards.write_record(record)?,
            (None, Some(&end)) => {
                shards.write_line(&f.text[start..end])?;
                start = end;
            }
            (None, None) => anyhow::bail!("a formatted run lost its row {i}"),
        }
    }
    Ok((train_rows, val_rows))
}

/// What an export stages: its shards, its card, LLaMA-Factory's file and its manifest (paths
/// relative to the export).
pub(super) fn staged_file(path: &str) -> bool {
    [outdir::MANIFEST, CARD, LF_INFO].contains(&path) || is_shard_path(path)
}

/// The shards written, and the train and validation rows; `None` when stopped before the end.
pub(super) type Written = Option<(Vec<ShardInfo>, u64, u64)>;

pub async fn run(global: &GlobalArgs, args: &ExportArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let format = match Layout::from(args.format) {
        Layout::Records(format) if !args.pairs.is_empty() => anyhow::bail!(
            "--pairs chooses preference pairs: it goes with --format dpo, dpo-messages or lf-ranking, not {}",
            format.name()
        ),
        Layout::Records(format) => format,
        Layout::Pairs(format) => return super::export_pairs::run(global, args, format).await,
    };
    let (filter, config) = export_config(args, format)?;

    outdir::keep_apart(&args.out, &global.db, &[])?;
    // Caught from here on: a SIGINT or SIGTERM removes the staging directory and ends the export.
    let mut signals = Signals::listen()?;
    let staging = Staging::new(&args.out, args.overwrite, Producer::Export, staged_file)?;
    let db = Db::open(&global.db).await?;
    let mode = ReasoningMode::from(args.reasoning);
    let mut columns = db.columns_in_use(filter).await?;
    // `reasoning_content` on every assistant turn when any is kept in its field.
    columns.reasoning &= mode == ReasoningMode::Keep && format.has_reasoning_field();
    let config = ShardConfig {
        reasoning_field: columns.reasoning,
        ..config
    };
    let split = args.val_fraction > 0.0;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<ExportRecord>>(4);
    let split_by = split.then_some((args.seed, args.val_fraction));
    let layout = (format, columns);
    let (formatter, writer) = start_writing(rx, &staging, (layout, mode), split_by, config, &stop);
    let (read, stopped) = tokio::select! {
        read = read_pages(&db, global, args, filter, split, tx) => (read, None),
        signal = signals.recv() => (Ok(()), Some(signal)),
    };
    if stopped.is_some() || read.is_err() {
        stop.store(true, Ordering::Relaxed);
    }
    formatter
        .join()
        .map_err(|_| anyhow::anyhow!("the formatting thread panicked"))?;
    let written = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the shard writer thread panicked"))?;
    if let Some(signal) = stopped {
        return Ok(abandon(staging, signal, &args.out));
    }
    read?;
    let Some((shards, train_rows, val_rows)) = written? else {
        anyhow::bail!("the shard writer stopped early");
    };
    let provenance = db.provenance(filter).await?;
    db.close().await;

    let mut manifest = manifest(
        args,
        (format.name(), columns),
        filter,
        config,
        shards,
        (train_rows, val_rows),
    );
    write_metadata(&staging, args, &mut manifest, &provenance, (layout, config))?;
    // A signal that came while the last shards were sealed: nothing is in place yet.
    if let Some(signal) = signals.received() {
        return Ok(abandon(staging, signal, &args.out));
    }
    staging.commit()?;
    print_summary(global, args, &manifest, started)?;
    Ok(Outcome::Done)
}

/// The manifest of the shards written; its file list gains the card and LLaMA-Factory's file
/// when [`write_metadata`] writes them.
pub(super) fn manifest(
    args: &ExportArgs,
    (format, columns): (&'static str, Columns),
    filter: StatusFilter,
    config: ShardConfig,
    shards: Vec<ShardInfo>,
    (train_rows, val_rows): (u64, u64),
) -> Manifest {
    let totals = Totals {
        rows: train_rows + val_rows,
        bytes: shards.iter().map(|s| s.bytes).sum(),
        uncompressed_bytes: shards.iter().map(|s| s.uncompressed_bytes).sum(),
        shards: shards.len(),
        train_rows,
        val_rows,
    };
    Manifest {
        stamp: Stamp::new(Producer::Export),
        files: shards.iter().map(|s| s.file.clone()).collect(),
        created_at_ms: instill_core::now_ms(),
        format,
        file_format: if config.parquet.is_some() {
            "parquet"
        } else {
            "jsonl"
        },
        compression: if config.zstd_level.is_some() {
            "zstd"
        } else {
            "none"
        },
        filters: Filters {
            status: filter.name(),
        },
        columns: ColumnsWritten {
            system: columns.system,
            history: columns.history,
            reasoning: columns.reasoning,
        },
        reasoning: ReasoningMode::from(args.reasoning).name(),
        val_fraction: args.val_fraction,
        seed: args.seed,
        shard_rows: config.max_rows,
        shard_bytes: config.max_bytes,
        shards,
        totals,
        evolved: None,
        pairs: None,
    }
}

/// Writes the dataset card, LLaMA-Factory's `dataset_info.json` and the manifest (listing
/// both) into the staging directory, and syncs the data directories.
fn write_metadata(
    staging: &Staging,
    args: &ExportArgs,
    manifest: &mut Manifest,
    provenance: &instill_storage::Provenance,
    ((format, columns), config): ((OutputFormat, Columns), ShardConfig),
) -> anyhow::Result<()> {
    let name = args
        .out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    manifest.evolved = Evolved::new(provenance);
    let names = LfNames::new(&name, manifest.totals.val_rows > 0);
    let card = card::render(&CardInput {
        name: &name,
        format,
        reasoning: columns.reasoning,
        zstd: config.zstd_level.is_some(),
        parquet: config.parquet.is_some(),
        shards: &manifest.shards,
        status: manifest.filters.status,
        val_fraction: args.val_fraction,
        seed: args.seed,
        provenance,
        lf: &names,
        created_at_ms: manifest.created_at_ms,
    });
    let lf = lf_info::render(&names, format, columns);
    finish_staging(staging, manifest, &[(CARD, card), (LF_INFO, lf)])
}

/// Writes the export's metadata `files` (name, text) into the staging directory, syncs its data
/// directories and writes the manifest last, listing them.
pub(super) fn finish_staging(
    staging: &Staging,
    manifest: &mut Manifest,
    files: &[(&str, String)],
) -> anyhow::Result<()> {
    for (file, text) in files {
        outdir::write_synced(&staging.dir.join(file), text.as_bytes())?;
        manifest.files.push(file.to_string());
    }
    let data = staging.dir.join(DATA_DIR);
    if data.is_dir() {
        outdir::sync_dir(&data)?;
    }
    outdir::write_manifest(&staging.dir, manifest)?;
    Ok(())
}

/// The records and the shard sizes the arguments ask for, in `format`.
fn export_config(
    args: &ExportArgs,
    format: OutputFormat,
) -> anyhow::Result<(StatusFilter, ShardConfig)> {
    let filter = StatusFilter::from(args.status);
    Ok((filter, shard_config(args, Some(format))?))
}

/// The shard sizes and compression the arguments ask for; Parquet shards only for a record
/// layout (`parquet_layout`).
pub(super) fn shard_config(
    args: &ExportArgs,
    parquet_layout: Option<OutputFormat>,
) -> anyhow::Result<ShardConfig> {
    let max_rows = match (args.shard_rows, args.shard_bytes) {
        (None, None) => Some(DEFAULT_SHARD_ROWS),
        (rows, _) => rows,
    };
    if max_rows == Some(0) {
        anyhow::bail!("--shard-rows must be at least 1");
    }
    let zstd = args.compress == Compression::Zstd;
    let parquet = match args.file_format {
        FileFormat::Jsonl => None,
        FileFormat::Parquet if zstd => anyhow::bail!(
            "--compress zstd compresses JSONL shards: Parquet shards are always zstd-compressed inside (--zstd-level sets the level); drop --compress"
        ),
        FileFormat::Parquet if cfg!(not(feature = "parquet")) => anyhow::bail!(
            "--file-format parquet: this instill was built without Parquet support (the `parquet` feature, on by default)"
        ),
        FileFormat::Parquet => match parquet_layout {
            Some(format) => Some((format, args.zstd_level)),
            None => anyhow::bail!(
                "--file-format parquet: the pair layouts are written as JSONL shards only; drop --file-format (datasets, trl and LLaMA-Factory read them)"
            ),
        },
    };
    let config = ShardConfig {
        max_rows,
        max_bytes: args.shard_bytes,
        zstd_level: (zstd && parquet.is_none()).then_some(args.zstd_level),
        parquet,
        reasoning_field: false,
    };
    Ok(config)
}

/// Ends an export stopped by `signal`: its staging directory removed, `out` untouched.
pub(super) fn abandon(staging: Staging, signal: Stop, out: &std::path::Path) -> Outcome {
    drop(staging);
    eprintln!(
        "export stopped by {}: nothing written to {}",
        signal.name(),
        out.display()
    );
    signal.outcome()
}

/// Starts the formatting and shard-writing threads: a formatting thread applies the reasoning
/// mode and turns each page into JSONL on every core, and the shard thread writes (copy into the page cache, SHA-256, zstd)
/// in order. Writing shard bytes was the longest single stage; overlapping it with formatting
/// the next page is what keeps both cores busy. Both stop early once `stop` is set.
fn start_writing(
    mut rx: tokio::sync::mpsc::Receiver<Vec<ExportRecord>>,
    staging: &Staging,
    (layout, mode): ((OutputFormat, Columns), ReasoningMode),
    split_by: Option<(u64, f64)>,
    config: ShardConfig,
    stop: &Arc<AtomicBool>,
) -> (
    std::thread::JoinHandle<()>,
    std::thread::JoinHandle<anyhow::Result<Written>>,
) {
    let (formatted_tx, formatted_rx) = std::sync::mpsc::sync_channel::<Vec<Formatted>>(2);
    let stopped = Arc::clone(stop);
    let formatter = std::thread::spawn(move || {
        while let Some(mut page) = rx.blocking_recv() {
            if stopped.load(Ordering::Relaxed) {
                break;
            }
            for stored in &mut page {
                mode.apply(&mut stored.record, layout.0);
            }
            let formatted: Vec<Formatted> = if config.parquet.is_some() {
                vec![unformatted(page, split_by)]
            } else {
                page.par_chunks(256)
                    .map(|chunk| format_chunk(chunk, layout, split_by))
                    .collect()
            };
            if formatted_tx.send(formatted).is_err() {
                break; // the shard writer failed; its error comes out of join
            }
        }
    });
    let writer = spawn_shard_writer(formatted_rx, &staging.dir, config, stop);
    (formatter, writer)
}

/// Starts the thread that writes formatted runs of lines to the train and validation shards in
/// order (copy into the page cache, SHA-256, zstd), stopping early once `stop` is set.
pub(super) fn spawn_shard_writer(
    formatted_rx: std::sync::mpsc::Receiver<Vec<Formatted>>,
    dir: &std::path::Path,
    config: ShardConfig,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<anyhow::Result<Written>> {
    let (dir, stopped) = (dir.to_path_buf(), Arc::clone(stop));
    std::thread::spawn(move || -> anyhow::Result<Written> {
        let mut train = ShardWriter::new(&dir, Split::Train, config);
        let mut val = ShardWriter::new(&dir, Split::Validation, config);
        let (mut train_rows, mut val_rows) = (0u64, 0u64);
        for formatted in formatted_rx {
            if stopped.load(Ordering::Relaxed) {
                return Ok(None);
            }
            for f in &formatted {
                let (t, v) = write_formatted(f, &mut train, &mut val)?;
                train_rows += t;
                val_rows += v;
            }
        }
        if stopped.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut shards = train.finish()?;
        shards.extend(val.finish()?);
        Ok(Some((shards, train_rows, val_rows)))
    })
}

/// Reads the records in windows of PAGE ids, two at once (one per core), and hands them on in
/// order; ends when all are sent or the writer is gone.
async fn read_pages(
    db: &Db,
    global: &GlobalArgs,
    args: &ExportArgs,
    filter: StatusFilter,
    split: bool,
    tx: tokio::sync::mpsc::Sender<Vec<ExportRecord>>,
) -> anyhow::Result<()> {
    // The count is a full scan, there only to size the bar: skipped when no bar is drawn.
    let show = progress::enabled(global.no_progress);
    let total = if show {
        db.count_records(filter).await?
    } else {
        0
    };
    let bar = progress::rows(
        show,
        u64::try_from(total).unwrap_or(0),
        format!("exporting to {}", args.out.display()),
    );
    if let Some((lo, hi)) = db.id_range(filter).await? {
        let windows = (lo - 1..hi)
            .step_by(PAGE as usize)
            .map(|start| (start, (start + PAGE).min(hi)));
        let mut pages = futures::stream::iter(windows)
            .map(|(a, b)| db.export_between(filter, a, b, split))
            .buffered(2);
        while let Some(page) = pages.next().await {
            let page = page?;
            bar.inc(page.len() as u64);
            if tx.send(page).await.is_err() {
                break; // the writer failed; its error comes out of join
            }
        }
    }
    bar.finish_and_clear();
    Ok(())
}

pub(super) fn print_summary(
    global: &GlobalArgs,
    args: &ExportArgs,
    manifest: &Manifest,
    started: Instant,
) -> anyhow::Result<()> {
    let t = &manifest.totals;
    let summary = Summary {
        out: args.out.display().to_string(),
        format: manifest.format,
        rows: t.rows,
        train_rows: t.train_rows,
        val_rows: t.val_rows,
        shards: t.shards,
        bytes: t.bytes,
        seconds: started.elapsed().as_secs_f64(),
        manifest: outdir::MANIFEST,
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        let split_note = if manifest.val_fraction > 0.0 {
            format!(" ({} train, {} validation)", t.train_rows, t.val_rows)
        } else {
            String::new()
        };
        let what = if manifest.pairs.is_some() {
            "preference pairs"
        } else {
            "records"
        };
        let lf = if manifest.files.iter().any(|f| f == LF_INFO) {
            format!(", LLaMA-Factory {LF_INFO}")
        } else {
            String::new()
        };
        println!(
            "exported {} {what}{split_note} as {} in {} {} shard{} ({} bytes) to {}; \
             dataset card {CARD}{lf}",
            t.rows,
            manifest.format,
            t.shards,
            manifest.file_format,
            if t.shards == 1 { "" } else { "s" },
            t.bytes,
            args.out.display()
        );
    }
    if t.rows == 0 {
        eprintln!(
            "note: no {} matched --status {}: the export holds no data file, and \
             `datasets` cannot load a dataset with no rows",
            if manifest.pairs.is_some() {
                "pairs' prompts"
            } else {
                "records"
            },
            manifest.filters.status
        );
    }
    if manifest.compression == "zstd" {
        eprintln!(
            "note: LLaMA-Factory cannot read .jsonl.zst shards (datasets can, with the \
             zstandard package); export without --compress zstd to train with LLaMA-Factory"
        );
    }
    Ok(())
}
