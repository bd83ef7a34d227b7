//! `instill import`: datasets in, as `pending` records, all files in one transaction.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use instill_core::{Lang, Origin, Record, Status, norm_hash, parse_records, record_lang};
use instill_storage::{Db, NewImport, NewRecord};
use serde::Serialize;

use crate::cli::{GlobalArgs, ImportArgs, LangArg};
use crate::ingest::{Invalid, ParseFn, open_input, spawn_reader};
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
}

pub async fn run(global: &GlobalArgs, args: &ImportArgs) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let mut inputs = Vec::new();
    for path in &args.files {
        inputs.push(open_input(path)?);
    }
    let db = Db::open(&global.db).await?;
    let show = progress::enabled(global.no_progress);
    let forced_lang = match args.lang {
        LangArg::Auto => None,
        LangArg::Zh => Some(Lang::Zh),
        LangArg::En => Some(Lang::En),
    };
    let parse: ParseFn<Prepared> = Arc::new(move |bytes, format| {
        let mut records = Vec::with_capacity(1);
        parse_records(bytes, format, &mut records)?;
        Ok(records
            .into_iter()
            .map(|record| Prepared {
                lang: forced_lang.unwrap_or_else(|| record_lang(&record)),
                norm_hash: norm_hash(&record),
                record,
            })
            .collect())
    });

    let mut files = Vec::new();
    let mut seen = HashSet::new();
    let mut writer = db.writer().await?;
    let mut total_added = 0;
    let mut total_invalid = 0;
    for mut input in inputs {
        let sha = input.sha256()?;
        if let Some(prev) = db.find_import(&sha).await? {
            files.push(FileSummary {
                path: input.label.clone(),
                status: "already_imported",
                format: None,
                records: 0,
                invalid: 0,
                import_id: Some(prev.id),
                invalid_examples: Vec::new(),
            });
            if !global.json {
                println!(
                    "{}: already imported as #{} from {} ({} records); nothing added",
                    input.label, prev.id, prev.path, prev.rows
                );
            }
            continue;
        }
        if !seen.insert(sha.clone()) {
            files.push(FileSummary {
                path: input.label.clone(),
                status: "repeated",
                format: None,
                records: 0,
                invalid: 0,
                import_id: None,
                invalid_examples: Vec::new(),
            });
            if !global.json {
                println!(
                    "{}: same bytes as a file earlier in this command; nothing added",
                    input.label
                );
            }
            continue;
        }
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
                sha256: &sha,
                bytes: i64::try_from(size).unwrap_or(i64::MAX),
                created_at: instill_core::now_ms(),
            })
            .await?;
        let bar = progress::bytes(show, size, format!("importing {label}"));
        let mut rx = spawn_reader(
            label.clone(),
            input.into_reader(),
            args.format.0,
            args.skip_invalid,
            parse.clone(),
        );
        let mut rows = 0i64;
        let mut invalid: Vec<Invalid> = Vec::new();
        let mut invalid_count = 0i64;
        let mut format = None;
        let now = instill_core::now_ms();
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk?;
            format = Some(chunk.format);
            invalid_count += chunk.invalid.len() as i64;
            for inv in chunk.invalid {
                if invalid.len() < INVALID_SHOWN {
                    invalid.push(inv);
                }
            }
            let batch: Vec<NewRecord> = chunk
                .items
                .into_iter()
                .map(|(_, p)| NewRecord {
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
                })
                .collect();
            rows += batch.len() as i64;
            writer
                .insert_records(batch)
                .await
                .with_context(|| format!("{label}: storing records failed"))?;
            bar.set_position(chunk.bytes_read);
        }
        bar.finish_and_clear();
        let format_name = format.map_or("unknown", |f| f.name());
        writer
            .finish_import(import_id, format_name, rows, invalid_count)
            .await?;
        total_added += rows;
        total_invalid += invalid_count;
        if invalid_count > 0 {
            eprintln!(
                "warning: {label}: skipped {invalid_count} invalid record{}; the first:",
                if invalid_count == 1 { "" } else { "s" }
            );
            for inv in &invalid {
                eprintln!("  {}", inv.message);
            }
        }
        if !global.json {
            println!("{label}: imported {rows} records ({format_name}) as import #{import_id}");
        }
        files.push(FileSummary {
            path: label,
            status: "imported",
            format: Some(format_name.to_string()),
            records: rows,
            invalid: invalid_count,
            import_id: Some(import_id),
            invalid_examples: invalid
                .into_iter()
                .map(|i| InvalidOut {
                    line: i.line,
                    message: i.message,
                })
                .collect(),
        });
    }
    writer.commit().await?;
    db.close().await;

    let summary = Summary {
        files,
        records_added: total_added,
        invalid: total_invalid,
        seconds: started.elapsed().as_secs_f64(),
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(if total_invalid > 0 {
        Outcome::Partial
    } else {
        Outcome::Done
    })
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
