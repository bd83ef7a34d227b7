//! The trainable model with Llama 3's RoPE scaling (tests/fixtures/local/tiny-llama3) against
//! transformers: the scaled frequencies, the logits of every recorded prompt, and a 96-token
//! sequence (three times the original context of 32) in train mode: logits at a few positions
//! and the next-token loss.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::{Device, IndexOp, Tensor};
use instill_models::Dims;
use instill_trainer::{Model, masked_nll};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/local/tiny-llama3")
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn model() -> Model {
    let config = Dims::from_config(
        &json(&fixture().join("config.json")),
        Path::new("config.json"),
    )
    .unwrap();
    let weights =
        candle_core::safetensors::load(fixture().join("model.safetensors"), &Device::Cpu).unwrap();
    Model::new(config, &weights, None, 0, &Device::Cpu).unwrap()
}

#[test]
fn llama3_scaled_forward_and_loss_match_transformers() {
    let model = model();
    let expected = json(&fixture().join("expected.json"));
    let inv = floats(&expected["inv_freq"]);
    assert!(
        worst(model.rope().inv_freq(), &inv) < 1e-6,
        "frequencies {:?} vs transformers' {inv:?}",
        model.rope().inv_freq()
    );
    for case in expected["cases"].as_array().unwrap() {
        let ids = ids(&case["ids"]);
        let x = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let ours = model
            .forward(&x, None)
            .unwrap()
            .i((0, ids.len() - 1))
            .unwrap();
        let d = worst(&ours.to_vec1::<f32>().unwrap(), &floats(&case["logits"]));
        assert!(d < 1e-4, "{:?}: logits differ by {d}", case["prompt"]);
    }
    let train = &expected["train"];
    let ids = ids(&train["ids"]);
    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    // Train mode: this model has no dropout without adapters, so the seed changes nothing.
    let logits = model.forward(&x, Some(7)).unwrap();
    for (p, want) in train["positions"]
        .as_array()
        .unwrap()
        .iter()
        .zip(train["logits"].as_array().unwrap())
    {
        let p = p.as_u64().unwrap() as usize;
        let d = worst(
            &logits.i((0, p)).unwrap().to_vec1::<f32>().unwrap(),
            &floats(want),
        );
        assert!(d < 1e-4, "position {p}: logits differ by {d}");
    }
    let weights = Tensor::ones((1, ids.len()), candle_core::DType::F32, &Device::Cpu).unwrap();
    let loss = masked_nll(&logits, &x, &weights)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let want = train["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss - want).abs() < 1e-4,
        "loss {loss} vs transformers' {want}"
    );
}
