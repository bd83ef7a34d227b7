//! DPO on the tiny Llama fixture (tests/fixtures/local/tiny-llama): the first step of fresh
//! adapters is exactly ln 2; sequence log-probabilities and losses against trl's; the loss
//! falls; resume equals an uninterrupted run; full fine-tuning's reference stays frozen.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use instill_core::SplitMix;
use instill_models::Dims;
use instill_trainer::data::make_pair_batch;
use instill_trainer::dpo::{pair_logps, pair_loss};
use instill_trainer::train::check_fit_resume;
use instill_trainer::{
    AdamWConfig, DpoConfig, DpoLoss, LoraConfig, Model, Objective, PairExample, Reference,
    TrainConfig, fit, load_adapter,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/local")
}

fn base() -> (Dims, HashMap<String, Tensor>) {
    let dir = fixtures().join("tiny-llama");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = Dims::from_config(&json, Path::new("config.json")).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    (config, weights)
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

/// 120 pairs: a random prompt; chosen, one of five fixed token strings picked by the prompt's
/// first token; rejected, random tokens of a random length; both then EOS. Learnable.
fn pairs() -> Vec<PairExample> {
    let mut rng = SplitMix::new(7);
    let answers: Vec<Vec<u32>> = (0..5)
        .map(|k| (0..5).map(|i| 20 + 37 * k + 5 * i).collect())
        .collect();
    (0..120)
        .map(|_| {
            let len = 4 + (rng.next_u64() % 8) as usize;
            let prompt: Vec<u32> = (0..len)
                .map(|_| 3 + (rng.next_u64() % 390) as u32)
                .collect();
            let mut chosen = answers[(prompt[0] % 5) as usize].clone();
            chosen.push(2);
            let mut rejected: Vec<u32> = (0..2 + rng.next_u64() % 6)
                .map(|_| 3 + (rng.next_u64() % 390) as u32)
                .collect();
            rejected.push(2);
            PairExample::new(prompt, &chosen, &rejected, 64).unwrap()
        })
        .collect()
}

fn run_config(dir: &Path, lr: f64, steps: usize) -> TrainConfig {
    TrainConfig {
        optim: AdamWConfig {
            lr,
            ..AdamWConfig::default()
        },
        epochs: 1,
        max_steps: Some(steps),
        batch_size: 4,
        grad_accum: 2,
        warmup_steps: 2,
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

const SIGMOID: DpoConfig = DpoConfig {
    beta: 0.1,
    loss: DpoLoss::Sigmoid,
};

fn dpo<'a>(
    train: &'a [PairExample],
    val: &'a [PairExample],
    config: DpoConfig,
    reference: &'a Reference,
) -> Objective<'a> {
    Objective::Dpo {
        train,
        val,
        config,
        reference,
    }
}

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
fn fresh_adapters_make_the_first_loss_exactly_ln_2() {
    // LoRA's B starts at zero, so every adapter adds exactly 0 (B·anything = 0, and x + 0 = x in
    // floating point) and the policy's logits are bit for bit the reference's (the same pass
    // with the adapters switched off). Both log-ratios are then exactly 0, z = 0, and
    // −log σ(0) = log(1 + e⁰) = ln 2, up to rounding ln 2 to f32 and the mean over pairs.
    let (config, weights) = base();
    let model = Model::new(config, &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let reference = Reference::of(&model).unwrap();
    assert!(matches!(reference, Reference::Adapters));
    let data = pairs();
    let dir = tempfile::tempdir().unwrap();
    let mut first = None;
    fit(
        &model,
        &dpo(&data, &[], SIGMOID, &reference),
        &run_config(dir.path(), 1e-2, 2),
        &Device::Cpu,
        |s| {
            first.get_or_insert(*s);
        },
    )
    .unwrap();
    let first = first.unwrap();
    let ln2 = std::f32::consts::LN_2 as f64;
    assert!(
        (first.loss - ln2).abs() <= f64::from(f32::EPSILON) * ln2,
        "first loss {} is not ln 2",
        first.loss
    );
    let m = first.dpo.unwrap();
    assert_eq!((m.reward_margin, m.reward_accuracy), (0.0, 0.0), "{m:?}");
}

#[test]
fn log_probabilities_and_losses_match_trl() {
    // tests/fixtures/local/dpo/expected.json: trl's DPOTrainer on the tiny base with the
    // tiny-llama-lora adapter (B non-zero), reference = adapter off (scripts/dpo_fixture.py).
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixtures().join("dpo/expected.json")).unwrap())
            .unwrap();
    let (cfg, tensors) = load_adapter(&fixtures().join("tiny-llama-lora"), &Device::Cpu).unwrap();
    let (config, weights) = base();
    let model = Model::new(config, &weights, Some(&cfg), 0, &Device::Cpu).unwrap();
    for (name, var) in &model.trainable {
        var.set(&tensors[name]).unwrap();
    }
    let reference = Reference::of(&model).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let pairs: Vec<PairExample> = expected["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let (c, r) = (ids(&p["chosen_ids"]), ids(&p["rejected_ids"]));
            PairExample::new(ids(&p["prompt_ids"]), &c, &r, 64).unwrap()
        })
        .collect();
    let n = pairs.len();
    let members: Vec<usize> = (0..n).collect();
    let batch = make_pair_batch(&pairs, &members, &Device::Cpu).unwrap();
    let logps = pair_logps(&model, &reference, &batch, None).unwrap();
    let policy = logps.policy.to_vec1::<f32>().unwrap();
    let refs = logps.reference.to_vec1::<f32>().unwrap();
    // Sums of a few dozen f32 log-probabilities of about −5 each, computed by two libraries in
    // different orders: they agree to about 1e-5; 1e-4 is the bound asked for.
    let mut worst = 0f64;
    for (i, e) in expected["logps"].as_array().unwrap().iter().enumerate() {
        for (ours, key) in [
            (policy[i], "policy_chosen"),
            (policy[n + i], "policy_rejected"),
            (refs[i], "reference_chosen"),
            (refs[n + i], "reference_rejected"),
        ] {
            let theirs = e[key].as_f64().unwrap();
            worst = worst.max((f64::from(ours) - theirs).abs());
            assert!(
                (f64::from(ours) - theirs).abs() < 1e-4,
                "pair {i} {key}: ours {ours}, trl's {theirs}"
            );
        }
    }
    for (loss, name) in [(DpoLoss::Sigmoid, "sigmoid"), (DpoLoss::Ipo, "ipo")] {
        let (value, metrics) = pair_loss(&DpoConfig { beta: 0.1, loss }, &logps).unwrap();
        let e = &expected["losses"][name];
        let theirs = e["loss"].as_f64().unwrap();
        let ours = f64::from(value.to_scalar::<f32>().unwrap());
        eprintln!("{name}: loss {ours} vs trl's {theirs}; log-probabilities within {worst:.2e}");
        // The sigmoid loss moves by at most β/4 per unit of log-ratio error: 1e-5 absolute (it
        // agrees to 2e-7). IPO's is ≈ 24 here, where an f32 step is 2e-6, and moves by
        // 2|δ − 1/2β|/n ≈ 10/n per unit: 1e-5 of the loss (it agrees to 1e-5 absolute, 4e-7
        // relative).
        let tolerance = if loss == DpoLoss::Sigmoid {
            1e-5
        } else {
            1e-5 * theirs
        };
        assert!(
            (ours - theirs).abs() < tolerance,
            "{name}: ours {ours}, trl's {theirs}"
        );
        for (ours, key) in [
            (metrics.reward_margin, "reward_margin"),
            (metrics.reward_accuracy, "reward_accuracy"),
            (metrics.logps_chosen, "logps_chosen"),
            (metrics.logps_rejected, "logps_rejected"),
        ] {
            let theirs = e[key].as_f64().unwrap();
            assert!(
                (ours - theirs).abs() < 1e-4,
                "{name} {key}: {ours} vs {theirs}"
            );
        }
    }
}

#[test]
fn the_loss_falls_and_the_log_has_the_dpo_columns() {
    let (config, weights) = base();
    let model = Model::new(config, &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let reference = Reference::of(&model).unwrap();
    let data = pairs();
    let dir = tempfile::tempdir().unwrap();
    let summary = fit(
        &model,
        &dpo(&data[16..], &data[..16], SIGMOID, &reference),
        &run_config(dir.path(), 1e-2, 30),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    let (first, last) = (summary.first_loss.unwrap(), summary.last_loss.unwrap());
    let (val0, val) = (summary.initial_val_loss.unwrap(), summary.val_loss.unwrap());
    eprintln!("loss {first:.4} → {last:.4}, validation {val0:.4} → {val:.4}");
    assert!(last < 0.5 * first, "loss {first} → {last}");
    assert!(val < 0.5 * val0, "validation loss {val0} → {val}");
    let m = summary.val_dpo.unwrap();
    assert!(m.reward_accuracy > 0.9 && m.reward_margin > 0.0, "{m:?}");
    assert!(summary.last_dpo.is_some());
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines[0],
        "step,loss,lr,grad_norm,tokens,seconds,val_loss,reward_margin,reward_accuracy,\
         logps_chosen,logps_rejected,rewards_chosen,rewards_rejected"
    );
    assert_eq!(lines.len(), 31, "{log}");
    assert!(
        lines[1..].iter().all(|l| l.split(',').count() == 13),
        "{log}"
    );
}

#[test]
fn a_resumed_dpo_run_ends_with_the_uninterrupted_weights_and_other_settings_are_refused() {
    let (config, weights) = base();
    let data = pairs();
    let model = || Model::new(config.clone(), &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let ipo = DpoConfig {
        beta: 0.5,
        loss: DpoLoss::Ipo,
    };
    let straight = tempfile::tempdir().unwrap();
    let a = model();
    let reference = Reference::of(&a).unwrap();
    let cfg = |dir: &Path| run_config(dir, 1e-2, 8);
    fit(
        &a,
        &dpo(&data, &[], ipo, &reference),
        &cfg(straight.path()),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = cfg(dir.path());
    first.stop_after = Some(3);
    let b = model();
    let s = fit(
        &b,
        &dpo(&data, &[], ipo, &reference),
        &first,
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    assert_eq!(s.steps, 3);
    let mut second = cfg(dir.path());
    second.resume = true;
    // Other DPO settings, or supervised fine-tuning, are refused before anything is written.
    let c = model();
    for (other, name) in [
        (DpoConfig { beta: 0.1, ..ipo }, "dpo_beta"),
        (SIGMOID, "dpo_loss"),
    ] {
        let err = check_fit_resume(&c, &dpo(&data, &[], other, &reference), &second)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
    }
    let sft: Vec<_> = data.iter().map(|p| p.chosen.clone()).collect();
    let err = check_fit_resume(
        &c,
        &Objective::Sft {
            train: &sft,
            val: &[],
        },
        &second,
    )
    .unwrap_err()
    .to_string();
    // The first setting that differs: examples, where the checkpoint's are pairs.
    assert!(
        err.contains("examples differs") && err.contains("pairs"),
        "{err}"
    );
    // A new process: a fresh model from the same base, resumed from the checkpoint.
    let s = fit(
        &c,
        &dpo(&data, &[], ipo, &Reference::of(&c).unwrap()),
        &second,
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    assert_eq!(s.steps, 8);
    assert!(values(&a) == values(&c), "resumed weights differ");
    let log = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let straight_log = std::fs::read_to_string(straight.path().join("loss.csv")).unwrap();
    // The same losses and metrics step by step (the seconds column aside).
    let strip = |l: &str| {
        let mut f: Vec<&str> = l.split(',').collect();
        f.remove(5);
        f.join(",")
    };
    let rows = |log: &str| log.lines().map(strip).collect::<Vec<_>>();
    assert_eq!(rows(&log), rows(&straight_log));
}

#[test]
fn full_fine_tuning_keeps_a_frozen_reference() {
    let (config, weights) = base();
    let model = Model::new(config, &weights, None, 0, &Device::Cpu).unwrap();
    let reference = Reference::of(&model).unwrap();
    assert!(matches!(reference, Reference::Frozen(_)));
    let data = pairs();
    let members: Vec<usize> = (0..8).collect();
    let batch = make_pair_batch(&data, &members, &Device::Cpu).unwrap();
    let before = pair_logps(&model, &reference, &batch, None).unwrap();
    // Before training the policy is the reference: the frozen fast pass gives the training
    // pass's log-probabilities.
    let (p, r) = (
        before.policy.to_vec1::<f32>().unwrap(),
        before.reference.to_vec1::<f32>().unwrap(),
    );
    for (x, y) in p.iter().zip(&r) {
        assert!((x - y).abs() < 1e-4, "policy {x}, reference {y}");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = fit(
        &model,
        &dpo(&data, &[], SIGMOID, &reference),
        &run_config(dir.path(), 3e-3, 6),
        &Device::Cpu,
        |_| {},
    )
    .unwrap();
    assert!(s.last_loss.unwrap() < s.first_loss.unwrap(), "{s:?}");
    let after = pair_logps(&model, &reference, &batch, None).unwrap();
    let moved = after.policy.to_vec1::<f32>().unwrap();
    assert!(
        moved.iter().zip(&p).any(|(a, b)| (a - b).abs() > 1e-2),
        "the policy did not move"
    );
    assert!(
        after.reference.to_vec1::<f32>().unwrap() == r,
        "the reference moved"
    );
}

#[test]
fn lora_that_trains_whole_modules_has_no_adapters_off_reference() {
    let (config, weights) = base();
    let cfg = LoraConfig {
        modules_to_save: vec!["embed_tokens".into()],
        ..lora()
    };
    let model = Model::new(config, &weights, Some(&cfg), 5, &Device::Cpu).unwrap();
    let err = Reference::of(&model).unwrap_err().to_string();
    assert!(err.contains("modules_to_save"), "{err}");
}

#[test]
fn a_beta_that_is_not_positive_is_refused() {
    let (config, weights) = base();
    let model = Model::new(config, &weights, Some(&lora()), 5, &Device::Cpu).unwrap();
    let reference = Reference::of(&model).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = pairs();
    let bad = DpoConfig {
        beta: 0.0,
        loss: DpoLoss::Ipo,
    };
    let err = fit(
        &model,
        &dpo(&data, &[], bad, &reference),
        &run_config(dir.path(), 1e-2, 2),
        &Device::Cpu,
        |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("beta"), "{err}");
    assert!(!dir.path().join("loss.csv").exists());
}
