//! `instill train` and `instill merge-lora`: records in, prompts rendered and tokenized with the
//! model's own tokenizer, the trainer run with a progress bar, model or adapter written out.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use candle_core::{Device, Tensor};
use instill_core::{InputFormat, Record, held_out, held_out_digest, norm_hash};
use instill_generator::local::{Codec, device};
use instill_storage::{Db, StatusFilter};
use instill_trainer::{
    AdamWConfig, Config, Example, LoraConfig, Model, TrainConfig, load_adapter, merge, save_adapter,
};
use serde_json::{Value, json};

use crate::cli::{GlobalArgs, MergeLoraArgs, TrainArgs};
use crate::cmd::train_out;
use crate::outdir::Producer;
use crate::staging::Staging;
use crate::{Outcome, outdir};

/// A base model: its config (and `config.json` to write beside outputs), weights, tokenizer.
struct Base {
    config: Config,
    config_json: Value,
    weights: HashMap<String, Tensor>,
    codec: Codec,
    /// The Hugging Face directory, to copy tokenizer files from (None for GGUF).
    dir: Option<PathBuf>,
}

fn load_base(path: &Path, device: &Device) -> anyhow::Result<Base> {
    if path.is_dir() {
        let (config, config_json, weights) = instill_trainer::hf::load(path, device)?;
        let codec = Codec::from_hf_dir(path, None)?;
        Ok(Base {
            config,
            config_json,
            weights,
            codec,
            dir: Some(path.to_path_buf()),
        })
    } else if path.is_file() {
        let (config, config_json, weights) = instill_trainer::gguf::load(path, device)?;
        let content = instill_models::gguf::read(path)?;
        let codec = Codec::from_gguf(path, &content, None)?;
        Ok(Base {
            config,
            config_json,
            weights,
            codec,
            dir: None,
        })
    } else {
        bail!(
            "{}: no such file or directory; --model takes a Hugging Face model directory or a .gguf file",
            path.display()
        )
    }
}

/// Records from JSONL files (format detected per file), errors naming file and line.
fn read_jsonl(paths: &[PathBuf]) -> anyhow::Result<Vec<Record>> {
    let mut out = Vec::new();
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
            let f = match format {
                Some(f) => f,
                None => {
                    let f = InputFormat::detect(line)
                        .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
                    format = Some(f);
                    f
                }
            };
            instill_core::parse_records(line, f, &mut out)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        }
        if format.is_none() {
            bail!("{}: no records (empty file)", path.display());
        }
    }
    Ok(out)
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

/// The prompt text of a record (everything before its output) in `template`.
fn prompt(codec: &Codec, r: &Record, template: &str) -> anyhow::Result<String> {
    let user = if r.input.trim().is_empty() {
        r.instruction.clone()
    } else {
        format!("{}\n\n{}", r.instruction, r.input)
    };
    Ok(match template {
        "alpaca" if r.input.trim().is_empty() => format!(
            "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n### Response:\n",
            r.instruction
        ),
        "alpaca" => format!(
            "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\n{}\n\n### Input:\n{}\n\n### Response:\n",
            r.instruction, r.input
        ),
        "belle" => format!("Human: {user}\n\nAssistant: "),
        _ => {
            let mut messages: Vec<(&str, &str)> = Vec::new();
            if !r.system.is_empty() {
                messages.push(("system", &r.system));
            }
            for turn in &r.history {
                messages.push(("user", turn.user()));
                messages.push(("assistant", turn.assistant()));
            }
            messages.push(("user", &user));
            codec.render_chat(&messages)?
        }
    })
}

pub async fn train(global: &GlobalArgs, args: &TrainArgs) -> anyhow::Result<Outcome> {
    let plan = train_out::plan(args, &global.db)?;
    let dev = device(&args.device)?;
    let records = if args.data.is_empty() {
        read_db(global, &args.status).await?
    } else {
        read_jsonl(&args.data)?
    };
    if records.is_empty() {
        bail!(
            "no records to train on ({})",
            if args.data.is_empty() {
                format!("the database has no {} records", args.status)
            } else {
                "the --data files are empty".into()
            }
        );
    }
    let base = load_base(&args.model, &dev)?;
    let eos = *base
        .codec
        .eos_ids
        .first()
        .context("the model declares no EOS token")?;
    let (mut train_set, mut val_set, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    // The records the split holds out (export's split: same --val-fraction and --seed, same
    // records), by normalised hash, for the summary's digest.
    let mut held = Vec::new();
    for r in &records {
        let val = held_out(r, args.seed, args.val_fraction);
        if val {
            held.push(norm_hash(r));
        }
        let p = base
            .codec
            .encode(&prompt(&base.codec, r, &args.template)?)?;
        let mut response = base.codec.encode(&r.output)?;
        response.push(eos);
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
    let lora = args.lora.then(|| LoraConfig {
        r: args.lora_r,
        alpha: args.lora_alpha,
        dropout: args.lora_dropout,
        target_modules: args.target_modules.clone(),
        modules_to_save: args.modules_to_save.clone(),
        use_rslora: false,
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
    });
    let dtype = if args.dtype == "bf16" {
        candle_core::DType::BF16
    } else {
        candle_core::DType::F32
    };
    let model = Model::with_dtype(
        base.config.clone(),
        &base.weights,
        lora.as_ref(),
        args.seed,
        dtype,
        &dev,
    )?;
    let cfg = TrainConfig {
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
        settings: train_out::settings(args),
    };
    if plan == train_out::Plan::Resume {
        // Every setting checked before anything is written: a refused resume changes nothing.
        instill_trainer::train::check_resume(&model, &train_set, &cfg)?;
    }
    train_out::ready(&args.out, plan)?;
    let total = instill_trainer::total_steps(&cfg, train_set.len());
    let bar = crate::progress::steps(
        crate::progress::enabled(global.no_progress),
        total as u64,
        "training".to_string(),
    );
    let mut tokens = 0usize;
    let summary = instill_trainer::train(&model, &train_set, &val_set, &cfg, &dev, |s| {
        tokens += s.tokens;
        bar.set_position(s.step as u64);
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  |g| {:.2}  {:.0} tokens/s",
            s.loss,
            s.lr,
            s.grad_norm,
            tokens as f64 / s.seconds.max(1e-9)
        ));
    })?;
    bar.finish_and_clear();
    match &lora {
        Some(l) => {
            let tensors: HashMap<String, Tensor> = model
                .trainable
                .iter()
                .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
                .collect();
            save_adapter(&args.out, l, &args.model.display().to_string(), &tensors)?;
        }
        None => write_model(&args.out, &base, model.merged_weights()?)?,
    }
    let out = json!({
        "out": args.out.display().to_string(),
        "mode": if lora.is_some() { "lora" } else { "full" },
        "examples": train_set.len(), "validation": val_set.len(), "skipped": skipped,
        "held_out": held.len(), "held_out_digest": held_out_digest(held.iter().map(String::as_str)),
        "steps": summary.steps, "first_loss": summary.first_loss, "last_loss": summary.last_loss,
        "initial_val_loss": summary.initial_val_loss, "val_loss": summary.val_loss, "tokens_per_s": (summary.tokens_per_s * 10.0).round() / 10.0,
    });
    if global.json {
        println!("{out}");
    } else {
        println!(
            "trained {} steps on {} examples ({} held out, {skipped} too long): loss {:.4} → {:.4}{}, {:.0} tokens/s; wrote {}",
            summary.steps,
            train_set.len(),
            val_set.len(),
            summary.first_loss.unwrap_or(f64::NAN),
            summary.last_loss.unwrap_or(f64::NAN),
            summary
                .val_loss
                .map(|v| format!(", validation {v:.4}"))
                .unwrap_or_default(),
            summary.tokens_per_s,
            args.out.display()
        );
    }
    Ok(Outcome::Done)
}

/// A full model directory: weights, config, tokenizer files (see [`train_out::model_files`]).
fn write_model(out: &Path, base: &Base, weights: HashMap<String, Tensor>) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}", out.display()))?;
    candle_core::safetensors::save(&weights, out.join("model.safetensors"))?;
    std::fs::write(
        out.join("config.json"),
        serde_json::to_vec_pretty(&base.config_json)?,
    )?;
    match &base.dir {
        Some(dir) => {
            for f in train_out::TOKENIZER_FILES {
                if dir.join(f).is_file() {
                    std::fs::copy(dir.join(f), out.join(f))
                        .with_context(|| format!("copying {f}"))?;
                }
            }
        }
        None => {
            base.codec
                .tokenizer
                .save(out.join("tokenizer.json"), false)
                .map_err(|e| anyhow::anyhow!("writing tokenizer.json: {e}"))?;
            let cfg = json!({
                "bos_token": base.codec.bos, "eos_token": base.codec.eos,
                "add_bos_token": base.codec.add_bos, "chat_template": base.codec.chat_template,
            });
            std::fs::write(
                out.join("tokenizer_config.json"),
                serde_json::to_vec_pretty(&cfg)?,
            )?;
        }
    }
    Ok(())
}

pub async fn merge_lora(global: &GlobalArgs, args: &MergeLoraArgs) -> anyhow::Result<Outcome> {
    outdir::keep_apart(
        &args.out,
        &global.db,
        &[("--model", &args.model), ("--adapter", &args.adapter)],
    )?;
    let staging = Staging::new(
        &args.out,
        args.overwrite,
        Producer::MergeLora,
        train_out::is_model_file,
    )?;
    let dev = Device::Cpu;
    let (lora, adapter) = load_adapter(&args.adapter, &dev)?;
    let mut base = load_base(&args.model, &dev)?;
    let mut weights = std::mem::take(&mut base.weights);
    let merged = merge(&mut weights, &lora, &adapter)?;
    write_model(&staging.dir, &base, weights)?;
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
