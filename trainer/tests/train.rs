//! Training the tiny Llama fixture (tests/fixtures/local/tiny-llama): the forward pass against
//! candle-transformers and transformers, overfitting with full and LoRA fine-tuning, frozen base
//! weights, merged = base + adapter, and resume = uninterrupted.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use instill_core::SplitMix;
use instill_models::Dims;
use instill_trainer::train::check_resume;
use instill_trainer::{
    AdamWConfig, Example, LoraConfig, Model, TrainConfig, load_adapter, merge, save_adapter, train,
};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/local/tiny-llama")
}

fn base() -> (Dims, HashMap<String, Tensor>) {
    let dir = fixture();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = Dims::from_config(&json, Path::new("config.json")).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    (config, weights)
}

/// 200 examples: random prompts; the response is one of five fixed token strings, picked by the
/// prompt's first token, then EOS: learnable, so the loss can fall far.
fn examples() -> Vec<Example> {
    let mut rng = SplitMix::new(3);
    let answers: Vec<Vec<u32>> = (0..5)
        .map(|k| (0..6).map(|i| 20 + 37 * k + 5 * i).collect())
        .collect();
    (0..200)
        .map(|_| {
            let len = 6 + (rng.next_u64() % 10) as usize;
            let prompt: Vec<u32> = (0..len)
                .map(|_| 3 + (rng.next_u64() % 390) as u32)
                .collect();
            let mut response = answers[(prompt[0] % 5) as usize].clone();
            response.push(2);
            Example::new(prompt, &response, 64).unwrap()
        })
        .collect()
}

fn config(dir: &Path, lr: f64, steps: usize) -> TrainConfig {
    TrainConfig {
        optim: AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
        epochs: 1,
        max_steps: Some(steps),
        batch_size: 8,
        grad_accum: 2,
        warmup_steps: 5,
        max_grad_norm: 1.0,
        seed: 11,
        checkpoint_every: 0,
        dir: dir.to_path_buf(),
        resume: false,
        stop_after: None,
        interrupt: instill_trainer::Interrupt::default(),
        settings: Vec::new(),
    }
}

fn lora() -> LoraConfig {
    LoraConfig {
        r: 8,
        alpha: 16.0,
        dropout: 0.05,
        target_modules: instill_trainer::model::MODULES.map(String::from).to_vec(),
        modules_to_save: Vec::new(),
        use_rslora: false,
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
    }
}

/// A recorded logits row (a JSON array of numbers) as a tensor.
fn logits_of(v: &serde_json::Value) -> Tensor {
    let row: Vec<f32> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    Tensor::new(row.as_slice(), &Device::Cpu).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

#[test]
fn forward_matches_candle_transformers_and_transformers() {
    let (config, weights) = base();
    let model = Model::new(config, &weights, None, 0, &Device::Cpu).unwrap();
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture().join("expected.json")).unwrap()).unwrap();
    let vb = candle_nn::VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let cfg: candle_transformers::models::llama::LlamaConfig =
        serde_json::from_slice(&std::fs::read(fixture().join("config.json")).unwrap()).unwrap();
    let cfg = cfg.into_config(false);
    let reference = candle_transformers::models::llama::Llama::load(vb, &cfg).unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours = model
            .forward(&x, None)
            .unwrap()
            .i((0, ids.len() - 1))
            .unwrap();
        let mut cache =
            candle_transformers::models::llama::Cache::new(false, DType::F32, &cfg, &Device::Cpu)
                .unwrap();
        let theirs = reference
            .forward(&x, 0, &mut cache)
            .unwrap()
            .squeeze(0)
            .unwrap();
        assert!(
            max_diff(&ours, &theirs) < 1e-5,
            "vs candle-transformers: {}",
            max_diff(&ours, &theirs)
        );
        let hf = logits_of(&case["logits"]);
        assert!(
            max_diff(&ours, &hf) < 1e-4,
            "vs transformers: {}",
            max_diff(&ours, &hf)
        );
    }
}

#[test]
fn full_fine_tuning_overfits() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = base();
    let model = Model::new(config, &weights, None, 0, &Device::Cpu).unwrap();
    let data = examples();
    let summary = train(
        &model,
        &data,
        &data[..16],
        &config_with(dir.path(), 3e-3, 60),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
    eprintln!("loss {first:.3} → {last:.3} in {} steps", summary.steps);
    assert!(last < 0.2 * first, "loss {first} → {last}");
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 61, "{log}");
}

#[test]
fn lora_overfits_leaves_the_base_alone_and_merges_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = base();
    let model = Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    assert_eq!(
        model.trainable.len(),
        2 * 7 * 2,
        "only adapters are trained"
    );
    let data = examples();
    let summary = train(
        &model,
        &data,
        &[],
        &config_with(dir.path(), 1e-2, 80),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
    eprintln!("loss {first:.3} → {last:.3} in {} steps", summary.steps);
    assert!(last < 0.2 * first, "loss {first} → {last}");
    // Every base tensor is bit-identical to the file's.
    for (name, t) in model.base_weights().unwrap() {
        let original = weights[&name]
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap() == original,
            "{name} changed"
        );
    }
    // Saved as a PEFT adapter, merged into the base: same logits as base + adapter.
    let adapter_dir = dir.path().join("adapter");
    let tensors: HashMap<String, Tensor> = model
        .trainable
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    save_adapter(&adapter_dir, &lora(), "tiny-llama", &tensors).unwrap();
    let (cfg, saved) = load_adapter(&adapter_dir, &Device::Cpu).unwrap();
    assert!(saved.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"));
    let mut merged = weights.clone();
    assert_eq!(merge(&mut merged, &cfg, &saved).unwrap(), 14);
    let merged_model = Model::new(config, &merged, None, 0, &Device::Cpu).unwrap();
    let x = Tensor::new(&[[5u32, 17, 99, 230, 4, 8]], &Device::Cpu).unwrap();
    let a = model.forward(&x, None).unwrap();
    let b = merged_model.forward(&x, None).unwrap();
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
}

fn config_with(dir: &Path, lr: f64, steps: usize) -> TrainConfig {
    config(dir, lr, steps)
}

#[test]
fn a_resumed_run_ends_with_the_uninterrupted_weights() {
    let (config, weights) = base();
    let data = examples();
    let straight = tempfile::tempdir().unwrap();
    let a = Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    train(
        &a,
        &data,
        &[],
        &config_with(straight.path(), 1e-2, 12),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();

    let interrupted = tempfile::tempdir().unwrap();
    let b = Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let mut first = config_with(interrupted.path(), 1e-2, 12);
    first.stop_after = Some(5);
    let s = train(&b, &data, &[], &first, &Device::Cpu, |_| {}).unwrap();
    assert_eq!(s.steps, 5);
    // A new process: a fresh model from the same base, resumed from the checkpoint.
    let c = Model::new(config, &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let mut second = config_with(interrupted.path(), 1e-2, 12);
    second.resume = true;
    let s = train(&c, &data, &[], &second, &Device::Cpu, |_| {}).unwrap();
    assert_eq!(s.steps, 12);
    for ((na, va), (nc, vc)) in a.trainable.iter().zip(&c.trainable) {
        assert_eq!(na, nc);
        let (x, y) = (
            va.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vc.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
        );
        assert!(x == y, "{na} differs after resume");
    }
}

#[test]
fn our_adapter_in_peft_gives_our_logits() {
    // tests/fixtures/local/tiny-llama-lora: written by `instill train --lora`; its expected.json
    // holds the logits PEFT computed with it on the tiny base (scripts/peft_fixture.py).
    let dir = fixture().with_file_name("tiny-llama-lora");
    let (cfg, tensors) = load_adapter(&dir, &Device::Cpu).unwrap();
    let (config, weights) = base();
    let model = Model::new(config, &weights, Some(&cfg), 0, &Device::Cpu).unwrap();
    for (name, var) in &model.trainable {
        var.set(&tensors[name]).unwrap();
    }
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    for case in expected["cases"].as_array().unwrap() {
        let ids: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours = model
            .forward(&x, None)
            .unwrap()
            .i((0, ids.len() - 1))
            .unwrap();
        let peft = logits_of(&case["logits"]);
        assert!(
            max_diff(&ours, &peft) < 1e-4,
            "vs PEFT: {}",
            max_diff(&ours, &peft)
        );
    }
}

#[test]
fn modules_to_save_train_in_full_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = base();
    let cfg = LoraConfig {
        modules_to_save: vec!["embed_tokens".into(), "lm_head".into()],
        ..lora()
    };
    let model = Model::new(config.clone(), &weights, Some(&cfg), 5, &Device::Cpu).unwrap();
    let names: Vec<&str> = model.trainable.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"base_model.model.model.embed_tokens.weight")
            && names.contains(&"base_model.model.lm_head.weight")
    );
    train(
        &model,
        &examples(),
        &[],
        &config_with(dir.path(), 1e-2, 4),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    let tensors: HashMap<String, Tensor> = model
        .trainable
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    save_adapter(&dir.path().join("a"), &cfg, "tiny", &tensors).unwrap();
    let (loaded, saved) = load_adapter(&dir.path().join("a"), &Device::Cpu).unwrap();
    assert_eq!(loaded.modules_to_save, cfg.modules_to_save);
    let mut merged = weights.clone();
    merge(&mut merged, &loaded, &saved).unwrap();
    let x = Tensor::new(&[[5u32, 17, 99, 230]], &Device::Cpu).unwrap();
    let a = model.forward(&x, None).unwrap();
    let b = Model::new(config, &merged, None, 0, &Device::Cpu)
        .unwrap()
        .forward(&x, None)
        .unwrap();
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
}

#[test]
fn lora_on_a_bf16_base_learns_and_leaves_the_base_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = base();
    let model = Model::with_dtype(
        config.clone(),
        &weights,
        Some(&lora()),
        5,
        DType::BF16,
        &Device::Cpu,
    )
    .unwrap();
    let summary = train(
        &model,
        &examples(),
        &[],
        &config_with(dir.path(), 1e-2, 60),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
    eprintln!("bf16 base, LoRA: loss {first:.3} → {last:.3}");
    assert!(last < 0.3 * first, "loss {first} → {last}");
    for (name, t) in model.base_weights().unwrap() {
        assert_eq!(t.dtype(), DType::BF16, "{name}");
        let original = weights[&name]
            .to_dtype(DType::BF16)
            .unwrap()
            .to_dtype(DType::F32)
            .unwrap();
        let now = t.to_dtype(DType::F32).unwrap();
        assert!(max_diff(&original, &now) == 0.0, "{name} changed");
    }
    // Full fine-tuning keeps f32 weights.
    assert!(Model::with_dtype(config, &weights, None, 0, DType::BF16, &Device::Cpu).is_err());
}

/// The trainable variables' values, in order.
fn values(model: &Model) -> Vec<Vec<f32>> {
    model
        .trainable
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn a_fresh_run_into_an_earlier_directory_starts_a_new_loss_log() {
    let dir = tempfile::tempdir().unwrap();
    let (config, weights) = base();
    for _ in 0..2 {
        let model = Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
        train(
            &model,
            &examples(),
            &[],
            &config_with(dir.path(), 1e-2, 3),
            &Device::Cpu,
            |_| {},
        )
        .unwrap();
    }
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    assert!(
        log.starts_with("step,") && log.matches("step,").count() == 1,
        "{log}"
    );
}

#[test]
fn a_resume_with_other_settings_is_refused_naming_the_first_that_differs() {
    let (config, weights) = base();
    let data = examples();
    let dir = tempfile::tempdir().unwrap();
    let model = || Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let mut first = config_with(dir.path(), 1e-2, 12);
    first.stop_after = Some(3);
    train(&model(), &data, &[], &first, &Device::Cpu, |_| {}).unwrap();
    let resumed = |change: &dyn Fn(&mut TrainConfig)| {
        let mut cfg = config_with(dir.path(), 1e-2, 12);
        cfg.resume = true;
        change(&mut cfg);
        cfg
    };
    type Change = dyn Fn(&mut TrainConfig);
    let cases: [(&str, &Change); 4] = [
        ("lr", &|c| c.optim.lr = 2e-2),
        ("seed", &|c| c.seed = 12),
        ("batch_size", &|c| c.batch_size = 4),
        ("max_steps", &|c| c.max_steps = Some(20)),
    ];
    for (name, change) in cases {
        // check_resume refuses as train does, before anything is written.
        let err = check_resume(&model(), &data, &resumed(change))
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
        let err = train(&model(), &data, &[], &resumed(change), &Device::Cpu, |_| {})
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    check_resume(&model(), &data, &resumed(&|_| {})).unwrap();
    // Other data: the examples differ.
    let err = train(
        &model(),
        &data[..100],
        &[],
        &resumed(&|_| {}),
        &Device::Cpu,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("examples"), "{err}");
    // Another LoRA rank: other trainable variables.
    let other = LoraConfig { r: 4, ..lora() };
    let m = Model::new(config.clone(), &weights, Some(&other), 5, &Device::Cpu).unwrap();
    let err = train(&m, &data, &[], &resumed(&|_| {}), &Device::Cpu, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("trainable"), "{err}");
    // Nothing was changed by the refusals: the same settings resume.
    let s = train(
        &model(),
        &data,
        &[],
        &resumed(&|_| {}),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    assert_eq!(s.steps, 12);
}

#[test]
fn a_crash_between_moving_the_old_checkpoint_aside_and_the_new_into_place_still_resumes() {
    let (config, weights) = base();
    let data = examples();
    let model = || Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let straight = tempfile::tempdir().unwrap();
    let a = model();
    train(
        &a,
        &data,
        &[],
        &config_with(straight.path(), 1e-2, 8),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = config_with(dir.path(), 1e-2, 8);
    first.checkpoint_every = 2;
    first.stop_after = Some(4);
    train(&model(), &data, &[], &first, &Device::Cpu, |_| {}).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(
        !names.iter().any(|n| n.contains("tmp") || n.contains("old")),
        "{names:?}"
    );
    // The state a crash during the save after step 5 leaves: step 5 logged, the step-4
    // checkpoint moved aside, the new one half-written.
    let log_path = dir.path().join("loss.csv");
    let mut log = std::fs::read_to_string(&log_path).unwrap();
    log.push_str("5,9.0,1.000e-2,1.0,10,0.10,\n");
    std::fs::write(&log_path, log).unwrap();
    let ckpt = dir.path().join("checkpoint");
    std::fs::rename(&ckpt, dir.path().join("checkpoint.old")).unwrap();
    std::fs::create_dir(dir.path().join("checkpoint.tmp")).unwrap();
    std::fs::write(
        dir.path().join("checkpoint.tmp/trainable.safetensors"),
        b"half",
    )
    .unwrap();
    let c = model();
    let mut second = config_with(dir.path(), 1e-2, 8);
    second.checkpoint_every = 2;
    second.resume = true;
    let s = train(&c, &data, &[], &second, &Device::Cpu, |_| {}).unwrap();
    assert_eq!(s.steps, 8);
    assert!(values(&a) == values(&c), "resumed weights differ");
    assert!(ckpt.join("state.json").is_file());
    assert!(
        !dir.path().join("checkpoint.old").exists() && !dir.path().join("checkpoint.tmp").exists()
    );
    // The loss log has each step once, the steps redone after the crash included.
    let log = std::fs::read_to_string(&log_path).unwrap();
    let steps: Vec<&str> = log
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(steps, ["1", "2", "3", "4", "5", "6", "7", "8"], "{log}");
}

/// An interrupt set during a step stops the run after that step with a checkpoint there (no
/// final validation), and the resumed run ends where an uninterrupted one does; one set during
/// the last step changes nothing.
#[test]
fn an_interrupt_stops_after_the_step_under_way_and_resumes_exactly() {
    let (config, weights) = base();
    let data = examples();
    let model = || Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let straight = tempfile::tempdir().unwrap();
    let a = model();
    let s = train(
        &a,
        &data,
        &data[..8],
        &config_with(straight.path(), 1e-2, 6),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    assert!(!s.stopped_early);

    let dir = tempfile::tempdir().unwrap();
    let first = config_with(dir.path(), 1e-2, 6);
    let flag = first.interrupt.clone();
    let s = train(&model(), &data, &data[..8], &first, &Device::Cpu, |r| {
        if r.step == 2 {
            flag.set();
        }
    })
    .unwrap();
    assert_eq!((s.steps, s.stopped_early, s.val_loss), (2, true, None));
    let state = std::fs::read_to_string(dir.path().join("checkpoint/state.json")).unwrap();
    assert!(state.contains("\"step\":2"), "{state}");
    let c = model();
    let mut second = config_with(dir.path(), 1e-2, 6);
    second.resume = true;
    let flag = second.interrupt.clone();
    let s = train(&c, &data, &data[..8], &second, &Device::Cpu, |r| {
        if r.step == 6 {
            flag.set();
        }
    })
    .unwrap();
    assert_eq!((s.steps, s.stopped_early), (6, false));
    assert!(s.val_loss.is_some());
    assert!(values(&a) == values(&c), "resumed weights differ");
}
