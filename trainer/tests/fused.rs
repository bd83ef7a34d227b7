//! The fused training pass (CPU, f32) against the composed one: the same loss and the same
//! gradient for every trainable tensor within 1e-5 (relative to the gradient's largest value),
//! for LoRA (adapters on all seven modules or some of those sharing an input, dropout on and
//! off) and full fine-tuning, on the tiny Llama, Llama 3 (scaled RoPE) and Qwen2 (attention biases) fixtures,
//! with a padded batch; and DPO's sequence log-probabilities, adapters on and off.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use candle_core::{Device, Tensor};
use instill_core::SplitMix;
use instill_models::Dims;
use instill_trainer::data::make_batch;
use instill_trainer::{Example, LoraConfig, Model, masked_nll, sequence_logps};

fn model(fixture: &str, lora: Option<&LoraConfig>) -> Model {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/local")
        .join(fixture);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = Dims::from_config(&json, Path::new("config.json")).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = Model::new(config, &weights, lora, 5, &Device::Cpu).unwrap();
    // LoRA's B starts at zero, which would leave A's gradient zero on both passes: randomise.
    let mut rng = SplitMix::new(17);
    for (name, var) in &model.trainable {
        if name.ends_with("lora_B.weight") {
            let n = var.as_tensor().elem_count();
            let v: Vec<f32> = (0..n).map(|_| (rng.unit() as f32 - 0.5) * 0.2).collect();
            var.set(&Tensor::from_vec(v, var.as_tensor().shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    model
}

fn lora(targets: &[&str], dropout: f64) -> LoraConfig {
    LoraConfig {
        r: 4,
        alpha: 8.0,
        dropout,
        target_modules: targets.iter().map(|s| s.to_string()).collect(),
        modules_to_save: Vec::new(),
        use_rslora: false,
        rank_pattern: Vec::new(),
        alpha_pattern: Vec::new(),
    }
}

/// Three examples of different lengths (so two rows are padded); the last counts one token.
fn batch() -> instill_trainer::data::Batch {
    let mut rng = SplitMix::new(9);
    let mut ids =
        |n: usize| -> Vec<u32> { (0..n).map(|_| 3 + (rng.next_u64() % 390) as u32).collect() };
    let examples = vec![
        Example::new(ids(7), &ids(9), 64).unwrap(),
        Example::new(ids(12), &ids(3), 64).unwrap(),
        Example::new(ids(5), &ids(1), 64).unwrap(),
    ];
    make_batch(&examples, &[0, 1, 2], &Device::Cpu).unwrap()
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Loss and gradients of both passes agree.
fn same_loss_and_gradients(model: &Model, what: &str) {
    let b = batch();
    let seed = Some(42);
    let composed = masked_nll(&model.forward(&b.ids, seed).unwrap(), &b.ids, &b.weights).unwrap();
    let fused = model.nll(&b.ids, &b.weights, seed).unwrap();
    let (lc, lf) = (
        composed.to_scalar::<f32>().unwrap(),
        fused.to_scalar::<f32>().unwrap(),
    );
    assert!(
        (lc - lf).abs() < 1e-5,
        "{what}: loss {lc} (composed) vs {lf} (fused)"
    );
    let (gc, gf) = (composed.backward().unwrap(), fused.backward().unwrap());
    for (name, var) in &model.trainable {
        let (c, f) = (
            gc.get(var.as_tensor()).unwrap(),
            gf.get(var.as_tensor()).unwrap(),
        );
        let diff = max_abs(&(c - f).unwrap());
        let scale = max_abs(c).max(1.0);
        assert!(
            diff <= 1e-5 * scale,
            "{what}: {name}: gradient differs by {diff} (largest {scale})"
        );
    }
}

#[test]
fn the_fused_pass_matches_the_composed_one_on_loss_and_gradients() {
    for fixture in ["tiny-llama", "tiny-llama3", "tiny-qwen2"] {
        let all = instill_trainer::model::MODULES;
        same_loss_and_gradients(
            &model(fixture, Some(&lora(&all, 0.1))),
            &format!("{fixture} lora"),
        );
        // Adapters grouped by input: all of q, k, v (gate, up) or some, dropout drawn or not.
        for (targets, dropout) in [(&all[..], 0.0), (&["q_proj", "v_proj"], 0.0)]
            .into_iter()
            .chain([(&["q_proj", "v_proj", "up_proj"][..], 0.1)])
        {
            same_loss_and_gradients(
                &model(fixture, Some(&lora(targets, dropout))),
                &format!("{fixture} lora {targets:?} dropout {dropout}"),
            );
        }
        same_loss_and_gradients(&model(fixture, None), &format!("{fixture} full"));
    }
}

#[test]
fn sequence_logps_match_with_adapters_on_and_off() {
    let model = model(
        "tiny-qwen2",
        Some(&lora(&instill_trainer::model::MODULES, 0.0)),
    );
    let b = batch();
    let on = sequence_logps(&model.forward(&b.ids, None).unwrap(), &b.ids, &b.weights).unwrap();
    let off = sequence_logps(&model.forward_base(&b.ids).unwrap(), &b.ids, &b.weights).unwrap();
    let fused_on = model.row_logps(&b.ids, &b.weights, None, true).unwrap();
    let fused_off = model.row_logps(&b.ids, &b.weights, None, false).unwrap();
    for (a, f, what) in [
        (&on, &fused_on, "adapters on"),
        (&off, &fused_off, "adapters off"),
    ] {
        let diff = max_abs(&(a - f).unwrap());
        assert!(diff < 1e-4, "{what}: {diff}");
    }
    // Switching the adapters off changes the values (the check above can fail).
    assert!(max_abs(&(&on - &off).unwrap()) > 1e-3);
}
