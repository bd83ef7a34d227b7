//! Training speed on the CPU: tokens/s of LoRA on SmolLM2-135M (GGUF, dequantized) and of LoRA
//! and full fine-tuning on the tiny Llama fixture, on the first 200 Alpaca records (Alpaca prompt,
//! max 128 tokens, batch 4); then DPO with LoRA (sigmoid, β 0.1, the reference the base with the
//! adapters off) on pairs of them (chosen: a record's output; rejected: the next record's), one
//! epoch of 40 pairs on SmolLM2 and of 200 on the tiny model, tokens counting both sides.
//!
//! ```text
//! cargo bench --bench train -- [--steps 10] [--dpo | --sft]   # only the DPO / the SFT cases
//!     [--lora-dropout 0]   # the adapters' dropout (`instill train`'s default is 0.05)
//! .peer-venv/bin/python scripts/bench_train_torch.py [--steps 10]   # PyTorch + PEFT, same data
//! .peer-venv/bin/python scripts/bench_dpo_trl.py                    # trl's DPOTrainer, same pairs
//! ```

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use instill_models::{Codec, Weights};
use instill_trainer::{
    AdamWConfig, DpoConfig, DpoLoss, Example, LoraConfig, Model, Objective, PairExample, Reference,
    TrainConfig, fit,
};

fn opt(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn alpaca() -> Vec<serde_json::Value> {
    let shared = std::env::var("INSTILL_SHARED").unwrap_or_else(|_| "../shared".into());
    serde_json::from_slice(
        &std::fs::read(PathBuf::from(shared).join("data/alpaca_data.json"))
            .expect("alpaca_data.json"),
    )
    .expect("json")
}

/// A record's Alpaca prompt and output.
fn prompt_output(r: &serde_json::Value) -> Option<(String, &str)> {
    let (i, x, o) = (
        r["instruction"].as_str()?,
        r["input"].as_str()?,
        r["output"].as_str()?,
    );
    let prompt = if x.is_empty() {
        format!("### Instruction:\n{i}\n\n### Response:\n")
    } else {
        format!("### Instruction:\n{i}\n\n### Input:\n{x}\n\n### Response:\n")
    };
    Some((prompt, o))
}

fn examples(codec: &Codec, eos: u32) -> Vec<Example> {
    alpaca()[..200]
        .iter()
        .filter_map(|r| {
            let (prompt, o) = prompt_output(r)?;
            let mut response = codec.encode(o).ok()?;
            response.push(eos);
            Example::new(codec.encode(&prompt).ok()?, &response, 128)
        })
        .collect()
}

/// `n` pairs: record i's prompt, its output chosen, record i+1's output rejected.
fn pairs(codec: &Codec, eos: u32, n: usize) -> Vec<PairExample> {
    let all = alpaca();
    all[..=n]
        .windows(2)
        .filter_map(|w| {
            let (prompt, chosen) = prompt_output(&w[0])?;
            let (_, rejected) = prompt_output(&w[1])?;
            let side = |text: &str| {
                let mut ids = codec.encode(text).ok()?;
                ids.push(eos);
                Some(ids)
            };
            PairExample::new(
                codec.encode(&prompt).ok()?,
                &side(chosen)?,
                &side(rejected)?,
                128,
            )
        })
        .collect()
}

fn run(name: &str, model: &Model, objective: &Objective, steps: usize, lr: f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = TrainConfig {
        optim: AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
        epochs: 1,
        max_steps: Some(steps),
        batch_size: 4,
        grad_accum: 1,
        warmup_steps: 2,
        max_grad_norm: 1.0,
        seed: 1,
        checkpoint_every: 0,
        dir: dir.path().to_path_buf(),
        resume: false,
        stop_after: None,
        interrupt: instill_trainer::Interrupt::default(),
        settings: Vec::new(),
    };
    let started = Instant::now();
    let s = fit(model, objective, &cfg, &Device::Cpu, |_| {}).expect("train");
    println!(
        "{name:<26} {steps:>3} steps  {:>8.1} tokens/s  loss {:.3} → {:.3}  ({:.1} s)",
        s.tokens_per_s,
        s.first_loss.unwrap_or(f64::NAN),
        s.last_loss.unwrap_or(f64::NAN),
        started.elapsed().as_secs_f64()
    );
}

/// One epoch of DPO with fresh LoRA adapters on `pairs`.
fn run_dpo(name: &str, model: &Model, pairs: &[PairExample], lr: f64) {
    let reference = Reference::of(model).expect("reference");
    let objective = Objective::Dpo {
        train: pairs,
        val: &[],
        config: DpoConfig {
            beta: 0.1,
            loss: DpoLoss::Sigmoid,
        },
        reference: &reference,
    };
    run(name, model, &objective, pairs.len().div_ceil(4), lr);
}

fn sft<'a>(train: &'a [Example]) -> Objective<'a> {
    Objective::Sft { train, val: &[] }
}

fn main() {
    let steps: usize = opt("--steps").and_then(|v| v.parse().ok()).unwrap_or(10);
    let only_dpo = std::env::args().any(|a| a == "--dpo");
    let only_sft = std::env::args().any(|a| a == "--sft");
    let lora = LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: opt("--lora-dropout")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
        target_modules: instill_trainer::model::MODULES.map(String::from).to_vec(),
        modules_to_save: Vec::new(),
        use_rslora: false,
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
    };
    let gguf = std::env::var_os("INSTILL_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let opened = Weights::open(&gguf, &Device::Cpu).expect("gguf");
    let (config, weights) = opened.dense_all().expect("weights");
    let codec = opened.codec(None).expect("codec");
    let eos = codec.eos_ids[0];
    if !only_dpo {
        let data = examples(&codec, eos);
        let model =
            Model::new(config.clone(), &weights, Some(&lora), 1, &Device::Cpu).expect("model");
        run("smollm2-135m lora", &model, &sft(&data), steps, 2e-4);
    }
    if !only_sft {
        let model = Model::new(config, &weights, Some(&lora), 1, &Device::Cpu).expect("model");
        run_dpo(
            "smollm2-135m dpo lora",
            &model,
            &pairs(&codec, eos, 40),
            2e-4,
        );
    }

    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/local/tiny-llama");
    let codec = Codec::from_hf_dir(&tiny, None).expect("codec");
    let eos = codec.eos_ids[0];
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny.join("config.json")).expect("config"))
            .expect("json");
    let config = instill_models::Dims::from_config(&json, std::path::Path::new("config.json"))
        .expect("config");
    let weights = candle_core::safetensors::load(tiny.join("model.safetensors"), &Device::Cpu)
        .expect("weights");
    if !only_dpo {
        let data = examples(&codec, eos);
        let model =
            Model::new(config.clone(), &weights, Some(&lora), 1, &Device::Cpu).expect("model");
        run("tiny lora", &model, &sft(&data), steps * 5, 1e-2);
        let full = Model::new(config.clone(), &weights, None, 1, &Device::Cpu).expect("model");
        run("tiny full", &full, &sft(&data), steps * 5, 3e-3);
    }
    if !only_sft {
        let model = Model::new(config, &weights, Some(&lora), 1, &Device::Cpu).expect("model");
        run_dpo("tiny dpo lora", &model, &pairs(&codec, eos, 200), 1e-2);
    }
}
