//! `instill import`: datasets in, as `pending` records, all files in one transaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use indicatif::ProgressBar;
use instill_core::{
    Answer, InputFormat, Lang, Origin, Record, Status, norm_hash, parse_pair, parse_records,
    record_lang,
};
use instill_storage::{Db, NewImport, NewPreference, NewRecord, Writer};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cli::{GlobalArgs, ImportArgs};
use crate::ingest::{Chunk, InputFile, Invalid, ParseFn, open_input, spawn_reader};
use crate::{Outcome, progress};

/// How many invalid records a report lists by line.
const INVALID_SHOWN: usize = 5;

#[derive(Debug, Serialize)]
struct FileSummary {
    path: String,
    /// `imported`, `already_imported` or `repeated` (the same bytes named twice in one command).
    status: &'static str,
    format: Option<String>,
    records: i64,
    /// Preference pairs stored (a pair layout's rows), in the set named by the source.
    pairs: i64,
    /// The pair set they went to, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pair_set: Option<String>,
    invalid: i64,
    import_id: Option<i64>,
    invalid_examples: Vec<InvalidOut>,
}

#[derive(Debug, Serialize)]
struct InvalidOut {
    line: u64,
    message: String,
}

#[derive(Debug, Serialize)]
struct Summary {
    files: Vec<FileSummary>,
    records_added: i64,
    invalid: i64,
    seconds: f64,
}

/// A record ready to store: parsed, language detected, hashed (done on the reader's threads).
pub struct Prepared {
    record: Record,
    lang: Lang,
    norm_hash: String,
    /// A pair layout's row: the chosen and rejected answers (the record's output is the chosen).
    pair: Option<(Answer, Answer)>,
}

pub async fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut inputs = Vec::new();
    for path in &args.files {
        inputs.push(open_input(path)?);
    }
    let db = Db::open(&global.db).await?;
    let parse = parser(args.lang.into());
    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut writer = db.writer().await?;
    // What each file got, printed once everything is committed: a later file's error rolls
    // back the earlier files too.
    let mut lines = Vec::new();
    for mut input in inputs {
        let sha = input.sha256()?;
        let skipped = match db.find_import(&sha).await? {
            Some(prev) => Some(skipped(&input, "already_imported", Some(prev.id), || {
                format!(
                    "{}: already imported as #{} from {} ({} records); nothing added",
                    input.label, prev.id, prev.path, prev.rows
                )
            })),
            None if !seen.insert(sha.clone()) => Some(skipped(&input, "repeated", None, || {
                format!(
                    "{}: same bytes as a file earlier in this command; nothing added",
                    input.label
                )
            })),
            None => None,
        };
        if let Some((file, message)) = skipped {
            lines.push(message);
            files.push(file);
            continue;
        }
        let file = import_file(global, args, &mut writer, input, &sha, &parse).await?;
        let pairs = if file.pairs > 0 {
            format!(
                " and {} preference pair{} (set `{}`)",
                file.pairs,
                if file.pairs == 1 { "" } else { "s" },
                file.pair_set.as_deref().unwrap_or_default()
            )
        } else {
            String::new()
        };
        lines.push(format!(
            "{}: imported {} record{}{pairs} ({}) as import #{}",
            file.path,
            file.records,
            if file.records == 1 { "" } else { "s" },
            file.format.as_deref().unwrap_or("unknown"),
            file.import_id.unwrap_or_default()
        ));
        files.push(file);
    }
    writer.commit().await?;
    db.close().await;
    if !global.json {
        for line in &lines {
            println!("{line}");
        }
    }

    let summary = Summary {
        records_added: files.iter().map(|f| f.records).sum(),
        invalid: files.iter().map(|f| f.invalid).sum(),
        files,
        seconds: started.elapsed().as_secs_f64(),
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(if summary.invalid > 0 {
        Outcome::Partial
    } else {
        Outcome::Done
    })
}

/// Parses a raw record into records ready to store, with `lang` or each record's own language.
fn parser(lang: Option<Lang>) -> ParseFn<Prepared> {
    let prepare = move |record: Record, pair| Prepared {
        lang: lang.unwrap_or_else(|| record_lang(&record)),
        norm_hash: norm_hash(&record),
        record,
        pair,
    };
    Arc::new(move |bytes, format| {
        if format.is_pair() {
            let pair = parse_pair(bytes, format)?;
            let answers = (pair.chosen.clone(), pair.rejected.clone());
            return Ok(vec![prepare(pair.into_record(), Some(answers))]);
        }
        let mut records = Vec::with_capacity(1);
        parse_records(bytes, format, &mut records)?;
        Ok(records.into_iter().map(|r| prepare(r, None)).collect())
    })
}

/// The summary of a file not imported (`status`), and the line saying why.
fn skipped(
    input: &InputFile,
    status: &'static str,
    import_id: Option<i64>,
    message: impl FnOnce() -> String,
) -> (FileSummary, String) {
    let file = FileSummary {
        path: input.label.clone(),
        status,
        format: None,
        records: 0,
        pairs: 0,
        pair_set: None,
        invalid: 0,
        import_id,
        invalid_examples: Vec::new(),
    };
    (file, message())
}

/// Imports one file's records as `pending` through `writer`, and reports it.
async fn import_file(
    global: &GlobalArgs,
    args: &ImportArgs,
    writer: &mut Writer,
    input: InputFile,
    sha: &str,
    parse: &ParseFn<Prepared>,
) -> anyhow::Result<FileSummary> {
    let source: Arc<str> = Arc::from(
        args.source
            .clone()
            .unwrap_or_else(|| file_stem(&input.label)),
    );
    let label = input.label.clone();
    let size = input.size;
    let import_id = writer
        .create_import(&NewImport {
            path: &label,
            source: &source,
            format: args.format.0.map_or("auto", |f| f.name()),
            sha256: sha,
            bytes: i64::try_from(size).unwrap_or(i64::MAX),
            created_at: instill_core::now_ms(),
        })
        .await?;
    let bar = progress::bytes(
        progress::enabled(global.no_progress),
        size,
        format!("importing {label}"),
    );
    let rx = spawn_reader(
        label.clone(),
        input.into_source(),
        args.format.0,
        args.skip_invalid,
        parse.clone(),
    );
    let read = store_chunks(rx, writer, &label, (&source, import_id), &bar).await?;
    bar.finish_and_clear();
    let format_name = read.format.map_or("unknown", |f| f.name());
    writer
        .finish_import(import_id, format_name, read.rows, read.invalid_count)
        .await?;
    if read.invalid_count > 0 {
        eprintln!(
            "warning: {label}: skipped {} invalid record{}; the first:",
            read.invalid_count,
            if read.invalid_count == 1 { "" } else { "s" }
        );
        for inv in &read.invalid {
            eprintln!("  {}", inv.message);
        }
    }
    Ok(FileSummary {
        path: label,
        status: "imported",
        format: Some(format_name.to_string()),
        records: read.rows,
        pairs: read.pairs,
        pair_set: (read.pairs > 0).then(|| source.to_string()),
        invalid: read.invalid_count,
        import_id: Some(import_id),
        invalid_examples: read
            .invalid
            .into_iter()
            .map(|i| InvalidOut {
                line: i.line,
                message: i.message,
            })
            .collect(),
    })
}

/// What reading one file stored.
struct FileRead {
    rows: i64,
    pairs: i64,
    /// The first [`INVALID_SHOWN`] invalid records.
    invalid: Vec<Invalid>,
    invalid_count: i64,
    format: Option<InputFormat>,
}

/// Stores every parsed chunk of one file as it arrives.
async fn store_chunks(
    mut rx: mpsc::Receiver<anyhow::Result<Chunk<Prepared>>>,
    writer: &mut Writer,
    label: &str,
    (source, import_id): (&Arc<str>, i64),
    bar: &ProgressBar,
) -> anyhow::Result<FileRead> {
    let mut read = FileRead {
        rows: 0,
        pairs: 0,
        invalid: Vec::new(),
        invalid_count: 0,
        format: None,
    };
    let now = instill_core::now_ms();
    while let Some(chunk) = rx.recv().await {
        let chunk = chunk?;
        read.format = Some(chunk.format);
        read.invalid_count += chunk.invalid.len() as i64;
        let room = INVALID_SHOWN.saturating_sub(read.invalid.len());
        read.invalid.extend(chunk.invalid.into_iter().take(room));
        let pairs = chunk.items.iter().any(|(_, p)| p.pair.is_some());
        let ids = if pairs {
            writer.reserve_record_ids(chunk.items.len()).await?
        } else {
            Vec::new()
        };
        let mut preferences = Vec::new();
        let mut batch: Vec<NewRecord> = Vec::with_capacity(chunk.items.len());
        for (i, (_, mut p)) in chunk.items.into_iter().enumerate() {
            let id = ids.get(i).copied();
            if let (Some(answers), Some(record_id)) = (p.pair.take(), id) {
                preferences.push(new_preference(record_id, answers, import_id, now));
            }
            let mut record = new_record(p, source, import_id, now);
            record.id = id;
            batch.push(record);
        }
        read.rows += batch.len() as i64;
        read.pairs += preferences.len() as i64;
        writer
            .insert_records(batch)
            .await
            .with_context(|| format!("{label}: storing records failed"))?;
        writer
            .insert_preferences(source, &preferences)
            .await
            .with_context(|| format!("{label}: storing preference pairs failed"))?;
        bar.set_position(chunk.bytes_read);
    }
    Ok(read)
}

/// An imported pair as a `preferences` row of the import's set: no sampling run, both sides
/// with their scores when the file had them.
fn new_preference(
    record_id: i64,
    (chosen, rejected): (Answer, Answer),
    import_id: i64,
    now: i64,
) -> NewPreference {
    let graded = i64::from(chosen.score.is_some()) + i64::from(rejected.score.is_some());
    NewPreference {
        record_id,
        run_id: None,
        import_id: Some(import_id),
        no_pair: None,
        chosen: Some((chosen, None)),
        rejected: Some((rejected, None)),
        samples: 2,
        graded,
        created_at: now,
    }
}

/// An imported record as a `pending` row.
fn new_record(p: Prepared, source: &Arc<str>, import_id: i64, now: i64) -> NewRecord {
    NewRecord {
        id: None,
        record: p.record,
        lang: p.lang,
        origin: Origin::Imported,
        source: source.clone(),
        import_id: Some(import_id),
        run_id: None,
        request_id: None,
        item_idx: None,
        status: Status::Pending,
        reason: None,
        dup_of: None,
        score: None,
        norm_hash: p.norm_hash,
        created_at: now,
        evolution: None,
    }
}

/// The file name without directories and extension(s): the default source name.
pub fn file_stem(label: &str) -> String {
    let name = std::path::Path::new(label)
        .file_name()
        .map_or_else(|| label.to_string(), |n| n.to_string_lossy().into_owned());
    let stem = name.split('.').next().unwrap_or(&name);
    if stem.is_empty() {
        name.clone()
    } else {
        stem.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_source_is_the_bare_file_name() {
        assert_eq!(file_stem("../data/alpaca_data.json"), "alpaca_data");
        assert_eq!(file_stem("x/belle.jsonl.zst"), "belle");
        assert_eq!(file_stem(".hidden"), ".hidden");
    }
}
