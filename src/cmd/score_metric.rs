//! `instill score --metric ppl|ifd --model LOCAL_MODEL`: the answer's perplexity given the
//! instruction, or IFD (its loss given the instruction over its loss alone), with a candle model
//! and the trainer's masked loss (`instill_trainer::score`), each record rendered as `train`
//! renders it (`src/render.rs`). Records are scored a chunk at a time, each chunk's scores
//! committed before the next: Ctrl-C or a crash, then the same command, scores only what is
//! left.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use instill_core::{ScoreMethod, ScoreSummary, now_ms, summarize};
use instill_models::{Codec, Weights, hub::Want};
use instill_storage::{Db, NewScore, Scorer, StoredRecord};
use instill_trainer::{Model, ScoreConfig};
use serde::Serialize;

use crate::cli::{GlobalArgs, ScoreArgs};
use crate::cmd::{flags, score::records_to_score, stage};
use crate::render::{self, PromptFormat};
use crate::signals::Signals;
use crate::{Outcome, progress};

/// Records scored per transaction.
const CHUNK: usize = 64;

/// Why a record whose losses came out infinite or NaN has no score.
const NOT_FINITE: &str = "not a finite number";

#[derive(Debug, Serialize)]
struct Summary<'a> {
    scorer: &'a str,
    method: &'static str,
    model: &'a str,
    records: usize,
    scored_now: u64,
    no_score_now: u64,
    no_score_by_reason: BTreeMap<String, u64>,
    answer_tokens: u64,
    tokens_per_s: f64,
    ending: &'static str,
    scores: ScoreSummary,
    seconds: f64,
}

pub async fn run(
    global: &GlobalArgs,
    args: &ScoreArgs,
    method: ScoreMethod,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let spec = args
        .model
        .clone()
        .ok_or_else(|| anyhow::anyhow!("--metric {method} needs --model LOCAL_MODEL"))?;
    let name = args.name.clone().unwrap_or_else(|| method.as_str().into());
    let path = crate::hub::locate(
        &PathBuf::from(&spec),
        "--model",
        args.server.revision.as_deref(),
        Want::Model,
        global,
    )
    .await?;
    let mut settings = serde_json::json!({ "template": args.template, "max_len": args.max_len });
    // f32, the default, is left out: scorers made before --dtype applied here stay the same.
    if args.server.dtype != "f32" {
        settings["dtype"] = args.server.dtype.clone().into();
    }
    let _lock = stage::sqlite_lock(&global.db, "score", "scoring process")?;
    let db = Db::open(&global.db).await?;
    let _owner = stage::postgres_lock(&db, "score", &name).await?;
    let scorer = check_scorer(&db, &name, method, &spec, &settings).await?;
    let records = records_to_score(&db, global, args, &name).await?;
    let dev = instill_models::device(&args.server.device).map_err(flags::device_error)?;
    let dtype = instill_models::dtype_on(&args.server.dtype, &dev).map_err(flags::device_error)?;
    let opened = Weights::open(&path, &dev).map_err(|e| anyhow::anyhow!("--model {spec}: {e}"))?;
    let codec = opened.codec(args.server.tokenizer.as_deref())?;
    let (dims, weights) = opened.dense_all()?;
    let model = Model::frozen(dims, &weights, dtype, &dev)?;
    drop(weights);
    if !global.quiet {
        eprintln!(
            "score {name}: {method} with {spec} on {}, {} records to score, database {}",
            args.server.device,
            records.len(),
            instill_core::redact_url(&global.db)
        );
    }
    if scorer.is_none() {
        db.create_scorer(&Scorer {
            name: name.clone(),
            method,
            model: spec.clone(),
            rubric_hash: None,
            scale: None,
            run_id: None,
            settings_json: settings.to_string(),
            created_at: now_ms(),
        })
        .await?;
    }
    let cfg = ScoreConfig {
        max_len: usize::try_from(args.max_len).unwrap_or(usize::MAX),
        batch_tokens: usize::try_from(args.batch_tokens).unwrap_or(usize::MAX),
        alone: method == ScoreMethod::Ifd,
    };
    let work = Work {
        codec: &codec,
        model: &model,
        cfg: &cfg,
        dev: &dev,
        method,
        format: PromptFormat::from_flag(&args.template),
    };
    let done = score_all(global, &db, &name, &work, &records).await?;
    let all = db.scores(&name).await?;
    db.close().await;
    let secs = started.elapsed().as_secs_f64();
    let summary = Summary {
        scorer: &name,
        method: method.as_str(),
        model: &spec,
        records: records.len(),
        scored_now: done.scored,
        no_score_now: done.no_score.values().sum(),
        no_score_by_reason: done.no_score,
        answer_tokens: done.tokens,
        tokens_per_s: done.tokens as f64 / done.seconds.max(1e-9),
        ending: if done.interrupted.is_some() {
            "interrupted"
        } else {
            "done"
        },
        scores: summarize(all.iter().map(|s| s.score), None),
        seconds: secs,
    };
    if global.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(stage::outcome(done.interrupted, 0))
}

/// A stored scorer of this name must be this metric on this model with these settings.
async fn check_scorer(
    db: &Db,
    name: &str,
    method: ScoreMethod,
    model: &str,
    settings: &serde_json::Value,
) -> anyhow::Result<Option<Scorer>> {
    let Some(s) = db.scorer(name).await? else {
        return Ok(None);
    };
    let stored: serde_json::Value = serde_json::from_str(&s.settings_json).unwrap_or_default();
    let mut diffs = Vec::new();
    if s.method != method {
        diffs.push(format!("method: {} → {method}", s.method));
    }
    if s.model != model {
        diffs.push(format!("model: {} → {model}", s.model));
    }
    if &stored != settings {
        diffs.push(format!("settings: {stored} → {settings}"));
    }
    if !diffs.is_empty() {
        anyhow::bail!(
            "scorer `{name}` was made with other settings ({}); score under another --name to keep both",
            diffs.join("; ")
        );
    }
    Ok(Some(s))
}

/// What scoring needs, passed together.
struct Work<'a> {
    codec: &'a Codec,
    model: &'a Model,
    cfg: &'a ScoreConfig,
    dev: &'a candle_core::Device,
    method: ScoreMethod,
    format: PromptFormat,
}

/// What scoring did.
#[derive(Default)]
struct Done {
    scored: u64,
    no_score: BTreeMap<String, u64>,
    tokens: u64,
    seconds: f64,
    interrupted: Option<crate::signals::Stop>,
}

/// Scores the records a chunk at a time, each chunk committed, until done or a signal.
async fn score_all(
    global: &GlobalArgs,
    db: &Db,
    name: &str,
    w: &Work<'_>,
    records: &[StoredRecord],
) -> anyhow::Result<Done> {
    let eos = render::eos(w.codec)?;
    let mut signals = Signals::listen()?;
    let bar = progress::rows(
        progress::enabled(global.no_progress),
        records.len() as u64,
        format!("scoring ({})", w.method),
    );
    let mut done = Done::default();
    for chunk in records.chunks(CHUNK) {
        if let Some(stop) = signals.received() {
            done.interrupted = Some(stop);
            break;
        }
        let started = Instant::now();
        let samples = chunk
            .iter()
            .map(|r| render::sample(w.codec, &r.record, w.format, eos))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let losses = instill_trainer::score(w.model, &samples, w.cfg, w.dev, |_, _| {})?;
        done.seconds += started.elapsed().as_secs_f64();
        let rows: Vec<NewScore> = chunk
            .iter()
            .zip(losses)
            .map(|(r, l)| {
                let (score, reason) = match l {
                    Ok(l) => {
                        done.tokens += l.tokens as u64;
                        let v = match w.method {
                            ScoreMethod::Ifd => l.ifd(),
                            _ => Some(l.ppl()),
                        };
                        match v.filter(|v| v.is_finite()) {
                            Some(v) => (Some(v), None),
                            None => (None, Some((NOT_FINITE, NOT_FINITE.to_string()))),
                        }
                    }
                    Err(e) => (None, Some((e.kind(), e.to_string()))),
                };
                match &reason {
                    None => done.scored += 1,
                    Some((kind, _)) => *done.no_score.entry((*kind).to_string()).or_default() += 1,
                }
                NewScore {
                    record_id: r.id,
                    score,
                    rationale: String::new(),
                    reason: reason.map(|(_, message)| message),
                    request_id: None,
                    prompt_tokens: None,
                    completion_tokens: None,
                    created_at: now_ms(),
                }
            })
            .collect();
        let mut tx = db.writer().await?;
        tx.insert_scores(name, &rows).await?;
        tx.commit().await?;
        bar.inc(chunk.len() as u64);
        bar.set_message(format!(
            "scoring ({}) | {:.0} answer tokens/s",
            w.method,
            done.tokens as f64 / done.seconds.max(1e-9)
        ));
    }
    bar.finish_and_clear();
    Ok(done)
}

fn print_summary(s: &Summary) {
    println!(
        "scorer {} ({} with {}): {}",
        s.scorer,
        s.method,
        s.model,
        if s.ending == "done" {
            "done"
        } else {
            "interrupted (run the same command to resume)"
        }
    );
    println!(
        "records: {} to score; {} scored now, {} without a score; {} answer tokens at {:.0} tokens/s",
        s.records, s.scored_now, s.no_score_now, s.answer_tokens, s.tokens_per_s
    );
    for (r, n) in &s.no_score_by_reason {
        println!("  no score: {r:<40} {n:>8}");
    }
    crate::scoreboard::print_distribution(&s.scores, None);
    println!("{:.1} s", s.seconds);
}
