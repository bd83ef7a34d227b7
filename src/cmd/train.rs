//! `instill train` and `instill merge-lora`: records in, prompts rendered and tokenized with the
//! model's own tokenizer, the trainer run with a progress bar, model or adapter written out.
//! The model (configuration, weights, codec, device) comes from `instill-models`.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};
use instill_core::{InputFormat, Record, held_out, held_out_digest, norm_hash};
use instill_models::hub::Want;
use instill_models::{Codec, Dims, Weights};
use instill_storage::{Db, StatusFilter};
use instill_trainer::{
    AdamWConfig, DpoConfig, DpoMetrics, Example, LoraConfig, Model, Objective, Reference,
    TrainConfig, TrainError, TrainSummary, load_adapter, merge, save_adapter,
};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, MergeLoraArgs, TrainArgs};
use crate::cmd::train_pairs::{self, PairData};
use crate::cmd::{flags, train_out};
use crate::hub;
use crate::outdir::Producer;
use crate::render::{self, PromptFormat};
use crate::signals::{Seen, Signals};
use crate::staging::Staging;
use crate::{Outcome, outdir};

/// A base model: its configuration (and `config.json` to write beside outputs), its weights in
/// f32 under Hugging Face names, its codec.
struct Base {
    dims: Dims,
    config_json: Value,
    weights: HashMap<String, Tensor>,
    codec: Codec,
    /// The Hugging Face directory, to copy tokenizer files from (None for GGUF).
    dir: Option<PathBuf>,
}

fn load_base(path: &Path, device: &Device) -> anyhow::Result<Base> {
    let opened = Weights::open(path, device)?;
    let (dims, weights) = opened.dense_all()?;
    let codec = opened.codec(None)?;
    Ok(Base {
        dims,
        config_json: opened.config_json().clone(),
        weights,
        codec,
        dir: opened.dir().map(Path::to_path_buf),
    })
}

/// Records from JSONL files (format detected per file), errors naming file and line.
fn read_jsonl(paths: &[PathBuf]) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
    each_line(paths, "records", |line, format| {
        instill_core::parse_records(line, format, &mut out).map_err(|e| anyhow::anyhow!("{e}"))
    })?;
    Ok(out)
}

/// Calls `each` with every non-blank line of the JSONL files (`.zst` decoded) and the layout
/// detected from the file's first line; an error from detection or from `each` names the file
/// and the line. A file with no line is refused as holding no `what`.
pub fn each_line(
    paths: &[PathBuf],
    what: &str,
    mut each: impl FnMut(&[u8], InputFormat) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for path in paths {
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if path.extension().is_some_and(|e| e == "zst") {
            bytes = zstd::decode_all(bytes.as_slice())
                .with_context(|| format!("{}: not zstd", path.display()))?;
        }
        let mut format = None;
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let at =
                |e: &dyn std::fmt::Display| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1);
            let f = match format {
                Some(f) => f,
                None => *format.insert(InputFormat::detect(line).map_err(|e| at(&e))?),
            };
            each(line, f).map_err(|e| at(&e))?;
        }
        if format.is_none() {
            bail!("{}: no {what} (empty file)", path.display());
        }
    }
    Ok(())
}

async fn read_db(global: &GlobalArgs, status: &str) -> anyhow::Result<Vec<Record>> {
    let filter = match status {
        "kept" => StatusFilter::Kept,
        "all" => StatusFilter::All,
        _ => StatusFilter::Accepted,
    };
    let db = Db::open(&global.db).await?;
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = db.records_page(filter, after, 5_000).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        out.extend(page.into_iter().map(|r| r.record));
    }
    db.close().await;
    Ok(out)
}

/// What a run learns from: records (supervised) or preference pairs (DPO).
enum Data {
    Sft(Examples),
    Dpo(PairData),
}

impl Data {
    /// Training examples or pairs.
    fn train_len(&self) -> usize {
        match self {
            Data::Sft(d) => d.train.len(),
            Data::Dpo(d) => d.train.len(),
        }
    }

    /// Validation examples or pairs.
    fn val_len(&self) -> usize {
        match self {
            Data::Sft(d) => d.val.len(),
            Data::Dpo(d) => d.val.len(),
        }
    }

    /// Too long for --max-len.
    fn skipped(&self) -> usize {
        match self {
            Data::Sft(d) => d.skipped,
            Data::Dpo(d) => d.skipped,
        }
    }

    /// The held-out records' (or prompts') hashes.
    fn held(&self) -> &[String] {
        match self {
            Data::Sft(d) => &d.held,
            Data::Dpo(d) => &d.held,
        }
    }

    /// The trainer's objective over these data (DPO's needs its reference).
    fn objective<'a>(
        &'a self,
        args: &TrainArgs,
        reference: Option<&'a Reference>,
    ) -> anyhow::Result<Objective<'a>> {
        Ok(match self {
            Data::Sft(d) => Objective::Sft {
                train: &d.train,
                val: &d.val,
            },
            Data::Dpo(d) => Objective::Dpo {
                train: &d.train,
                val: &d.val,
                config: dpo_config(args),
                reference: reference.context("DPO needs its reference model")?,
            },
        })
    }
}

/// The examples to train on and to validate with, and how many records were too long.
struct Examples {
    train: Vec<Example>,
    val: Vec<Example>,
    skipped: usize,
    /// The normalised hashes of the records the split held out (before the length check).
    held: Vec<String>,
}

pub async fn train(global: &GlobalArgs, args: &TrainArgs) -> anyhow::Result<Outcome> {
    // --out is checked before a Hub id's download, and again against the path it resolves to.
    train_out::keep_apart(args, &global.db)?;
    // Held to the end: a second `train` into the same --out stops here, before the download.
    let _lock = crate::dirlock::lock(&args.out, "train")?;
    train_out::plan(args, &global.db)?;
    let given = args.model.display().to_string();
    let model = hub::locate(
        &args.model,
        "--model",
        args.revision.as_deref(),
        Want::Model,
        global,
    )
    .await?;
    // From here on --model is a local path (a Hub id's is its snapshot in the cache).
    let args = &TrainArgs {
        model,
        ..args.clone()
    };
    let plan = train_out::plan(args, &global.db)?;
    let dev = instill_models::device(&args.device).map_err(flags::device_error)?;
    let (base, data) = if args.dpo {
        let pairs = train_pairs::pairs(global, args).await?;
        let base = load_base(&args.model, &dev)?;
        let data = Data::Dpo(train_pairs::examples(&base.codec, &pairs, args)?);
        (base, data)
    } else {
        let records = records(global, args).await?;
        let base = load_base(&args.model, &dev)?;
        let data = Data::Sft(examples(&base.codec, &records, args)?);
        (base, data)
    };
    let lora = lora_config(args);
    let dtype = if args.dtype == "bf16" {
        candle_core::DType::BF16
    } else {
        candle_core::DType::F32
    };
    let model = Model::with_dtype(
        base.dims.clone(),
        &base.weights,
        lora.as_ref(),
        args.seed,
        dtype,
        &dev,
    )
    .map_err(flag_hint)?;
    // DPO's reference is taken before training (and before a resume loads its checkpoint).
    let reference = match &data {
        Data::Dpo(_) => Some(Reference::of(&model).map_err(dpo_hint)?),
        Data::Sft(_) => None,
    };
    let objective = data.objective(args, reference.as_ref())?;
    let cfg = train_config(args);
    if plan == train_out::Plan::Resume {
        // Every setting checked before anything is written: a refused resume changes nothing.
        instill_trainer::train::check_fit_resume(&model, &objective, &cfg)?;
    }
    train_out::ready(&args.out, plan)?;
    let (summary, seen) = run(global, &model, &objective, &cfg, &dev)?;
    if summary.stopped_early {
        return Ok(stopped(args, &summary, &seen));
    }
    if let Some(signal) = seen.get() {
        eprintln!(
            "{}: training had reached its last step and is complete: writing the {} (again to stop at once)",
            signal.name(),
            if lora.is_some() { "adapter" } else { "model" }
        );
    }
    train_out::write_final(&args.out, |dir| match &lora {
        Some(l) => {
            let tensors: HashMap<String, Tensor> = model
                .trainable
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect();
            Ok(save_adapter(dir, l, &given, &tensors)?)
        }
        None => write_model(dir, &base, &model.merged_weights()?),
    })?;
    report(global, args, &data, &summary, lora.is_some());
    Ok(Outcome::Done)
}

/// The records to train on: `--data` files, else the database's.
async fn records(global: &GlobalArgs, args: &TrainArgs) -> anyhow::Result<Vec<Record>> {
    let records = if args.data.is_empty() {
        read_db(global, args.status()).await?
    } else {
        read_jsonl(&args.data)?
    };
    if records.is_empty() {
        bail!(
            "no records to train on ({})",
            if args.data.is_empty() {
                format!("the database has no {} records", args.status())
            } else {
                "the --data files are empty".into()
            }
        );
    }
    Ok(records)
}

/// Each record rendered and tokenized, response then EOS, held out for validation or not.
fn examples(codec: &Codec, records: &[Record], args: &TrainArgs) -> anyhow::Result<Examples> {
    let eos = render::eos(codec)?;
    let format = PromptFormat::from_flag(&args.template);
    let (mut train_set, mut val_set, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    // The records the split holds out (export's split: same --val-fraction and --seed, same
    // records), by normalised hash, for the summary's digest.
    let mut held = Vec::new();
    for r in records {
        let val = held_out(r, args.seed, args.val_fraction);
        if val {
            held.push(norm_hash(r));
        }
        let (p, response) = render::pair(codec, r, format, eos)?;
        match Example::new(p, &response, args.max_len) {
            Some(e) if val => val_set.push(e),
            Some(e) => train_set.push(e),
            None => skipped += 1,
        }
    }
    if train_set.is_empty() {
        bail!(
            "no example fits --max-len {} ({skipped} skipped)",
            args.max_len
        );
    }
    Ok(Examples {
        train: train_set,
        val: val_set,
        skipped,
        held,
    })
}

/// The trainer's refusals that a flag fixes, with the flag named.
fn flag_hint(e: TrainError) -> anyhow::Error {
    match e {
        TrainError::FullInLowPrecision => {
            anyhow::anyhow!("{e}: use --lora with --dtype bf16, or --dtype f32")
        }
        TrainError::TiedLmHead => {
            anyhow::anyhow!("{e}: list embed_tokens in --modules-to-save, not lm_head")
        }
        other => other.into(),
    }
}

fn lora_config(args: &TrainArgs) -> Option<LoraConfig> {
    args.lora.then(|| LoraConfig {
        r: args.lora_r,
        alpha: args.lora_alpha,
        dropout: args.lora_dropout,
        target_modules: args.target_modules.clone(),
        modules_to_save: args.modules_to_save.clone(),
        use_rslora: false,
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
    })
}

fn train_config(args: &TrainArgs) -> TrainConfig {
    TrainConfig {
        optim: AdamWConfig {
            lr: args.lr,
            weight_decay: args.weight_decay,
            ..AdamWConfig::default()
        },
        epochs: args.epochs,
        max_steps: args.max_steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        warmup_steps: args.warmup_steps,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        checkpoint_every: args.checkpoint_every,
        dir: args.out.clone(),
        resume: args.resume,
        stop_after: None,
        interrupt: instill_trainer::Interrupt::default(),
        settings: train_out::settings(args),
    }
}

/// Trains with a progress bar showing loss, learning rate, gradient norm, throughput and, for
/// DPO, the reward accuracy and margin. The first SIGINT or SIGTERM stops it after the step
/// under way, with a checkpoint (the signal is returned); a second stops the process at once.
fn run(
    global: &GlobalArgs,
    model: &Model,
    objective: &Objective,
    cfg: &TrainConfig,
    dev: &Device,
) -> anyhow::Result<(TrainSummary, Seen)> {
    let total = instill_trainer::total_steps(cfg, objective.len());
    let bar = crate::progress::steps(
        crate::progress::enabled(global.no_progress),
        total as u64,
        "training".to_string(),
    );
    let seen = Seen::default();
    let (interrupt, shown) = (cfg.interrupt.clone(), bar.clone());
    Signals::listen()?.watch(&seen, move |signal| {
        interrupt.set();
        shown.suspend(|| {
            eprintln!(
                "{}: stopping after the step under way, with a checkpoint (again to stop at once)",
                signal.name()
            );
        });
    });
    let mut tokens = 0usize;
    let summary = instill_trainer::fit(model, objective, cfg, dev, |s| {
        tokens += s.tokens;
        bar.set_position(s.step as u64);
        let dpo = s
            .dpo
            .map(|m| {
                format!(
                    "  reward acc {:.2}  margin {:.3}",
                    m.reward_accuracy, m.reward_margin
                )
            })
            .unwrap_or_default();
        bar.set_message(format!(
            "loss {:.4}{dpo}  lr {:.2e}  |g| {:.2}  {:.0} tokens/s",
            s.loss,
            s.lr,
            s.grad_norm,
            tokens as f64 / s.seconds.max(1e-9)
        ));
    })?;
    bar.finish_and_clear();
    Ok((summary, seen))
}

/// Says where a run that stopped early left off and how to go on; nothing but the checkpoint
/// and the loss log was written.
fn stopped(args: &TrainArgs, summary: &TrainSummary, seen: &Seen) -> Outcome {
    let by = seen.get().map_or("a signal", |s| s.name());
    eprintln!(
        "training stopped by {by} after step {}: the checkpoint in {} holds it; \
         run the same command with --resume to go on",
        summary.steps,
        args.out.join(instill_trainer::train::CHECKPOINT).display()
    );
    seen.outcome()
}

/// Prints what the run did (one JSON object with `--json`).
fn report(global: &GlobalArgs, args: &TrainArgs, data: &Data, summary: &TrainSummary, lora: bool) {
    let skipped = data.skipped();
    let held = data.held();
    let (unit, held_unit) = match data {
        Data::Sft(_) => ("examples", "records"),
        Data::Dpo(_) => ("pairs", "prompts"),
    };
    if global.json {
        let mut out = json!({
            "out": args.out.display().to_string(),
            "mode": if lora { "lora" } else { "full" },
            "objective": if args.dpo { "dpo" } else { "sft" },
            "examples": data.train_len(), "validation": data.val_len(), "skipped": skipped,
            "held_out": held.len(), "held_out_digest": held_out_digest(held.iter().map(String::as_str)),
            "steps": summary.steps, "first_loss": summary.first_loss, "last_loss": summary.last_loss,
            "initial_val_loss": summary.initial_val_loss, "val_loss": summary.val_loss, "tokens_per_s": (summary.tokens_per_s * 10.0).round() / 10.0,
        });
        if args.dpo {
            let metrics = |m: Option<DpoMetrics>| {
                m.map(|m| {
                    json!({
                        "reward_accuracy": m.reward_accuracy, "reward_margin": m.reward_margin,
                        "rewards_chosen": m.rewards_chosen, "rewards_rejected": m.rewards_rejected,
                        "logps_chosen": m.logps_chosen, "logps_rejected": m.logps_rejected,
                    })
                })
            };
            out["dpo"] = json!({
                "loss": dpo_config(args).loss.name(), "beta": args.beta,
                "last_step": metrics(summary.last_dpo), "validation": metrics(summary.val_dpo),
            });
        }
        println!("{out}");
    } else {
        println!(
            "trained {} steps on {} {unit} ({} validation {unit} from the {} {held_unit} held out; {skipped} too long): loss {:.4} → {:.4}{}{}, {:.0} tokens/s; wrote {}",
            summary.steps,
            data.train_len(),
            data.val_len(),
            held.len(),
            summary.first_loss.unwrap_or(f64::NAN),
            summary.last_loss.unwrap_or(f64::NAN),
            summary
                .val_loss
                .map(|v| format!(", validation {v:.4}"))
                .unwrap_or_default(),
            summary
                .val_dpo
                .or(summary.last_dpo)
                .map(|m| format!(
                    ", reward accuracy {:.2}, margin {:.3}",
                    m.reward_accuracy, m.reward_margin
                ))
                .unwrap_or_default(),
            summary.tokens_per_s,
            args.out.display()
        );
    }
}

/// β and the loss `--beta` and `--loss` give.
fn dpo_config(args: &TrainArgs) -> DpoConfig {
    DpoConfig {
        beta: args.beta,
        loss: args.loss.into(),
    }
}

/// The trainer's DPO refusals that a flag fixes, with the flag named.
fn dpo_hint(e: TrainError) -> anyhow::Error {
    match e {
        TrainError::Config(m) if m.contains("modules_to_save") => {
            anyhow::anyhow!("{m} (--modules-to-save)")
        }
        other => other.into(),
    }
}

/// A full model directory: weights, config, tokenizer files (see [`train_out::model_files`]).
fn write_model(out: &Path, base: &Base, weights: &HashMap<String, Tensor>) -> anyhow::Result<()> {
    instill_models::save::write_model_dir(
        out,
        weights,
        &base.config_json,
        &base.codec,
        base.dir.as_deref(),
    )?;
    Ok(())
}

pub async fn merge_lora(global: &GlobalArgs, args: &MergeLoraArgs) -> anyhow::Result<Outcome> {
    let model = hub::locate(
        &args.model,
        "--model",
        args.revision.as_deref(),
        Want::Model,
        global,
    )
    .await?;
    let adapter = hub::locate(
        &args.adapter,
        "--adapter",
        args.adapter_revision.as_deref(),
        Want::Adapter,
        global,
    )
    .await?;
    outdir::keep_apart(
        &args.out,
        &global.db,
        &[("--model", &model), ("--adapter", &adapter)],
    )?;
    let staging = Staging::new(
        &args.out,
        args.overwrite,
        Producer::MergeLora,
        train_out::is_model_file,
    )?;
    let dev = Device::Cpu;
    let (lora, adapter) = load_adapter(&adapter, &dev)?;
    let mut base = load_base(&model, &dev)?;
    let mut weights = std::mem::take(&mut base.weights);
    let merged = merge(&mut weights, &lora, &adapter)?;
    write_model(&staging.dir, &base, &weights)?;
    train_out::write_manifest(&staging.dir, Producer::MergeLora, &train_out::model_files())?;
    staging.commit()?;
    if global.json {
        println!(
            "{}",
            json!({"out": args.out.display().to_string(), "merged_modules": merged})
        );
    } else {
        println!(
            "merged {merged} adapted modules into {}",
            args.out.display()
        );
    }
    Ok(Outcome::Done)
}
