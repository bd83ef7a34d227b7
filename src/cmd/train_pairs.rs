//! `instill train --dpo`'s data: preference pairs from the database's pair sets (`--pairs`) or
//! from files in a pair layout (`--data`), each rendered as SFT renders a record (the prompt
//! with the model's chat template or the Alpaca / BELLE prompt) and tokenized: prompt, chosen
//! answer then EOS, rejected answer then EOS. The validation split is export's for pairs
//! (`Pair::held_out`: the prompt alone), so training holds out what the export put in
//! `validation`.

use std::path::PathBuf;

use anyhow::bail;
use instill_core::{Pair, parse_pair};
use instill_models::Codec;
use instill_storage::{Db, StatusFilter};
use instill_trainer::PairExample;

use crate::cli::{GlobalArgs, TrainArgs};
use crate::cmd::export_pairs::choose_sets;
use crate::cmd::train::each_line;
use crate::render::{self, PromptFormat};

/// The pairs to train on and to validate with.
pub struct PairData {
    pub train: Vec<PairExample>,
    pub val: Vec<PairExample>,
    /// Pairs with no room for an answer token within --max-len.
    pub skipped: usize,
    /// The normalised hash of each held-out pair's prompt (the summary's digest).
    pub held: Vec<String>,
}

/// The pairs `--data` or the database hold.
pub async fn pairs(global: &GlobalArgs, args: &TrainArgs) -> anyhow::Result<Vec<Pair>> {
    let pairs = if args.data.is_empty() {
        read_db(global, args).await?
    } else {
        read_files(&args.data)?
    };
    if pairs.is_empty() {
        bail!(
            "no preference pairs to train on ({})",
            if args.data.is_empty() {
                format!(
                    "the chosen pair sets hold no pair whose prompt record is {}",
                    args.status()
                )
            } else {
                "the --data files hold none".into()
            }
        );
    }
    Ok(pairs)
}

async fn read_db(global: &GlobalArgs, args: &TrainArgs) -> anyhow::Result<Vec<Pair>> {
    let filter = match args.status() {
        "accepted" => StatusFilter::Accepted,
        "all" => StatusFilter::All,
        _ => StatusFilter::Kept,
    };
    let db = Db::open(&global.db).await?;
    let sets = db.pair_sets().await?;
    let chosen: Vec<String> = choose_sets(&sets, &args.pairs)
        .map_err(|e| anyhow::anyhow!("--pairs: {e}"))?
        .into_iter()
        .map(|s| s.name.clone())
        .collect();
    let mut out = Vec::new();
    for set in &chosen {
        let mut after = 0;
        loop {
            let page = db.pairs_page(Some(set), filter, after, 2_000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            out.extend(page.into_iter().map(|p| p.pair));
        }
    }
    db.close().await;
    Ok(out)
}

/// Pairs from JSONL files (layout detected per file), errors naming file and line.
fn read_files(paths: &[PathBuf]) -> anyhow::Result<Vec<Pair>> {
    let mut out = Vec::new();
    each_line(paths, "pairs", |line, format| {
        if !format.is_pair() {
            bail!(
                "a {} record, not a preference pair: --dpo trains on pairs (dpo, dpo-messages, lf-ranking, UltraFeedback layouts)",
                format.name()
            );
        }
        out.push(parse_pair(line, format).map_err(|e| anyhow::anyhow!("{e}"))?);
        Ok(())
    })?;
    Ok(out)
}

/// Each pair rendered and tokenized, held out for validation or not.
pub fn examples(codec: &Codec, pairs: &[Pair], args: &TrainArgs) -> anyhow::Result<PairData> {
    let eos = render::eos(codec)?;
    let format = PromptFormat::from_flag(&args.template);
    let mut data = PairData {
        train: Vec::new(),
        val: Vec::new(),
        skipped: 0,
        held: Vec::new(),
    };
    for p in pairs {
        let val = p.held_out(args.seed, args.val_fraction);
        if val {
            data.held.push(instill_core::norm_hash(&p.prompt));
        }
        let (prompt, chosen, rejected) = render::preference(codec, p, format, eos)?;
        match PairExample::new(prompt, &chosen, &rejected, args.max_len) {
            Some(e) if val => data.val.push(e),
            Some(e) => data.train.push(e),
            None => data.skipped += 1,
        }
    }
    if data.train.is_empty() {
        bail!(
            "no pair fits --max-len {} ({} skipped, {} held out)",
            args.max_len,
            data.skipped,
            data.val.len()
        );
    }
    Ok(data)
}
