//! `instill seeds import|list`: the seed tasks generation draws its examples from.

use std::sync::Arc;

use instill_core::{InputFormat, Lang, Seed, norm_hash, parse_seeds, record_lang};
use instill_storage::{Db, NewSeed, Writer};
use serde::Serialize;

use crate::Outcome;
use crate::cli::{BuiltinSeeds, GlobalArgs, SeedsImportArgs, SeedsListArgs};
use crate::cmd::import::file_stem;
use crate::ingest::{ParseFn, Source, open_input, spawn_reader};

/// The Chinese seed tasks shipped with instill.
pub const BUILTIN_ZH: &str = include_str!("../../prompts/seeds/zh.jsonl");
/// The English seed tasks shipped with instill.
pub const BUILTIN_EN: &str = include_str!("../../prompts/seeds/en.jsonl");

#[derive(Debug, Serialize)]
struct ImportSummary {
    source: String,
    read: u64,
    added: u64,
    already_present: u64,
}

/// A seed file to read: its label in messages, the source its seeds get, and its bytes.
struct SeedInput {
    label: String,
    source: String,
    data: Source,
}

pub async fn import(global: &GlobalArgs, args: &SeedsImportArgs) -> anyhow::Result<Outcome> {
    let inputs = seed_inputs(args)?;
    let db = Db::open(&global.db).await?;
    let forced_lang: Option<Lang> = args.lang.into();
    let parse: ParseFn<(Seed, Lang, String)> = Arc::new(move |bytes, format| {
        let seed = parse_seeds(bytes, format)?;
        let lang = forced_lang.unwrap_or_else(|| record_lang(&seed.record));
        let hash = norm_hash(&seed.record);
        Ok(vec![(seed, lang, hash)])
    });
    let mut writer = db.writer().await?;
    let mut summaries = Vec::new();
    let now = instill_core::now_ms();
    for input in inputs {
        let summary = import_seeds(args, &mut writer, input, &parse, now).await?;
        if !global.json {
            let (label, read, added) = (&summary.0, summary.1.read, summary.1.added);
            if added == 0 {
                println!("{label}: all {read} seed tasks already present; nothing added");
            } else {
                println!(
                    "{label}: added {added} of {read} seed tasks ({} already present)",
                    read - added
                );
            }
        }
        summaries.push(summary.1);
    }
    writer.commit().await?;
    db.close().await;
    if global.json {
        println!("{}", serde_json::to_string(&summaries)?);
    }
    Ok(Outcome::Done)
}

/// The files (or built-in sets) the arguments name.
fn seed_inputs(args: &SeedsImportArgs) -> anyhow::Result<Vec<SeedInput>> {
    let mut inputs = Vec::new();
    match (&args.file, args.builtin) {
        (Some(path), _) => {
            let input = open_input(path)?;
            let source = args
                .source
                .clone()
                .unwrap_or_else(|| file_stem(&input.label));
            inputs.push(SeedInput {
                label: input.label.clone(),
                source,
                data: input.into_source(),
            });
        }
        (None, Some(which)) => {
            let sets = match which {
                BuiltinSeeds::Zh => vec![("zh", BUILTIN_ZH)],
                BuiltinSeeds::En => vec![("en", BUILTIN_EN)],
                BuiltinSeeds::All => vec![("zh", BUILTIN_ZH), ("en", BUILTIN_EN)],
            };
            for (lang, text) in sets {
                let source = args
                    .source
                    .clone()
                    .unwrap_or_else(|| format!("builtin-{lang}"));
                inputs.push(SeedInput {
                    label: format!("builtin:{lang}"),
                    source,
                    data: Source::Json(Box::new(std::io::Cursor::new(text))),
                });
            }
        }
        (None, None) => anyhow::bail!("name a seed FILE or pass --builtin zh|en|all"),
    }
    Ok(inputs)
}

/// Reads one input's seeds and stores those not present yet; returns its label and counts.
async fn import_seeds(
    args: &SeedsImportArgs,
    writer: &mut Writer,
    input: SeedInput,
    parse: &ParseFn<(Seed, Lang, String)>,
    now: i64,
) -> anyhow::Result<(String, ImportSummary)> {
    let SeedInput {
        label,
        source,
        data,
    } = input;
    let format = args.format.0.or(if label.starts_with("builtin:") {
        Some(InputFormat::SelfInstruct)
    } else {
        None
    });
    let mut rx = spawn_reader(label.clone(), data, format, false, parse.clone());
    let mut read = 0u64;
    let mut added = 0u64;
    while let Some(chunk) = rx.recv().await {
        let seeds: Vec<NewSeed> = chunk?
            .items
            .into_iter()
            .map(|(_, (seed, lang, hash))| NewSeed {
                seed,
                lang,
                source: source.clone(),
                norm_hash: hash,
                created_at: now,
            })
            .collect();
        read += seeds.len() as u64;
        added += writer.insert_seeds(&seeds).await?;
    }
    let summary = ImportSummary {
        source,
        read,
        added,
        already_present: read - added,
    };
    Ok((label, summary))
}

#[derive(Debug, Serialize)]
struct SeedOut<'a> {
    id: i64,
    name: &'a str,
    lang: &'a str,
    source: &'a str,
    is_classification: bool,
    instruction: &'a str,
    input: &'a str,
    output: &'a str,
}

pub async fn list(global: &GlobalArgs, args: &SeedsListArgs) -> anyhow::Result<Outcome> {
    let db = Db::open(&global.db).await?;
    let lang = args.lang.map(Lang::from);
    let seeds = db.list_seeds(lang).await?;
    db.close().await;
    if global.json {
        let out: Vec<SeedOut> = seeds
            .iter()
            .map(|s| SeedOut {
                id: s.id,
                name: &s.seed.name,
                lang: s.lang.as_str(),
                source: &s.source,
                is_classification: s.seed.is_classification,
                instruction: &s.seed.record.instruction,
                input: &s.seed.record.input,
                output: &s.seed.record.output,
            })
            .collect();
        println!("{}", serde_json::to_string(&out)?);
        return Ok(Outcome::Done);
    }
    if seeds.is_empty() {
        println!("no seed tasks yet: `instill seeds import --builtin all` loads the shipped ones");
        return Ok(Outcome::Done);
    }
    println!("{:>5}  {:<5}  {:<16}  instruction", "id", "lang", "source");
    for s in &seeds {
        println!(
            "{:>5}  {:<5}  {:<16}  {}",
            s.id,
            s.lang.as_str(),
            truncate(&s.source, 16),
            truncate(&s.seed.record.instruction.replace('\n', " "), 70)
        );
    }
    println!("{} seed tasks", seeds.len());
    Ok(Outcome::Done)
}

/// At most `max` characters of `text`, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}
