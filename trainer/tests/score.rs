//! Scoring with the tiny Llama fixture: batched losses equal one-at-a-time ones, the per-row loss
//! is the training loss split by row, the answer is cut as training cuts it, and a sample that
//! cannot be scored says why while the others are scored. (Agreement with transformers is checked
//! on real records in the workspace's tests, `tests/score_metric.rs`.)

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use instill_core::SplitMix;
use instill_models::Dims;
use instill_trainer::data::make_batch;
use instill_trainer::{
    Example, Model, Sample, SampleError, ScoreConfig, masked_nll, masked_nll_rows, score,
};

fn base() -> (Dims, HashMap<String, Tensor>) {
    fixture("tiny-llama")
}

fn fixture(name: &str) -> (Dims, HashMap<String, Tensor>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/local")
        .join(name);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    let config = Dims::from_config(&json, Path::new("config.json")).unwrap();
    let weights =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    (config, weights)
}

fn frozen() -> Model {
    let (dims, weights) = base();
    Model::frozen(dims, &weights, DType::F32, &Device::Cpu).unwrap()
}

/// Random samples of varied lengths (ids within the fixture's 400-token vocabulary).
fn samples(n: usize) -> Vec<Sample> {
    let mut rng = SplitMix::new(11);
    let mut ids = |len: usize| -> Vec<u32> {
        (0..len)
            .map(|_| 3 + (rng.next_u64() % 390) as u32)
            .collect()
    };
    (0..n)
        .map(|i| Sample {
            prompt: ids(4 + i % 13),
            alone: ids(1 + i % 3),
            answer: ids(1 + (i * 7) % 19),
        })
        .collect()
}

fn cfg(batch_tokens: usize) -> ScoreConfig {
    ScoreConfig {
        max_len: 64,
        batch_tokens,
        alone: true,
    }
}

#[test]
fn batched_losses_equal_one_at_a_time_and_a_frozen_model_gives_the_trained_ones() {
    let model = frozen();
    let s = samples(24);
    let mut passes = 0;
    let batched = score(&model, &s, &cfg(512), &Device::Cpu, |_, _| passes += 1).unwrap();
    assert!(passes < 24, "batched into {passes} passes");
    // One sequence per pass: no padding anywhere.
    let single = score(&model, &s, &cfg(1), &Device::Cpu, |_, _| {}).unwrap();
    // The trainable model (every weight a variable) computes the same function.
    let (dims, weights) = base();
    let trainable = Model::new(dims, &weights, None, 0, &Device::Cpu).unwrap();
    assert!(!trainable.trainable.is_empty());
    let by_trainable = score(&trainable, &s, &cfg(512), &Device::Cpu, |_, _| {}).unwrap();
    for ((a, b), c) in batched.iter().zip(&single).zip(&by_trainable) {
        let (a, b, c) = (
            a.as_ref().unwrap(),
            b.as_ref().unwrap(),
            c.as_ref().unwrap(),
        );
        assert!((a.given - b.given).abs() < 1e-5, "{a:?} vs {b:?}");
        let (aa, ba) = (a.alone.unwrap(), b.alone.unwrap());
        assert!((aa - ba).abs() < 1e-5, "{a:?} vs {b:?}");
        // The frozen model's fast pass (fused kernels) rounds differently, within f32 noise.
        assert_eq!((a.tokens, a.truncated), (c.tokens, c.truncated));
        assert!((a.given - c.given).abs() < 1e-5, "{a:?} vs {c:?}");
        assert!((aa - c.alone.unwrap()).abs() < 1e-5, "{a:?} vs {c:?}");
        // A random model: about ln(400) nats per token, IFD near 1.
        assert!(a.given > 3.0 && a.given < 9.0, "{a:?}");
        assert!((a.ppl() - a.given.exp()).abs() < 1e-9);
        assert!((a.ifd().unwrap() - a.given / aa).abs() < 1e-12);
    }
}

#[test]
fn row_losses_are_the_training_loss_split_by_row() {
    let model = frozen();
    let examples: Vec<Example> = samples(5)
        .into_iter()
        .map(|s| Example::new(s.prompt, &s.answer, 64).unwrap())
        .collect();
    let members: Vec<usize> = (0..examples.len()).collect();
    let batch = make_batch(&examples, &members, &Device::Cpu).unwrap();
    let logits = model.forward(&batch.ids, None).unwrap();
    let rows: Vec<f32> = masked_nll_rows(&logits, &batch.ids, &batch.weights)
        .unwrap()
        .to_vec1()
        .unwrap();
    let whole: f32 = masked_nll(&logits, &batch.ids, &batch.weights)
        .unwrap()
        .to_scalar()
        .unwrap();
    let counted: Vec<f32> = examples.iter().map(|e| e.learned() as f32).collect();
    let weighted: f32 =
        rows.iter().zip(&counted).map(|(r, n)| r * n).sum::<f32>() / counted.iter().sum::<f32>();
    assert!((weighted - whole).abs() < 1e-5, "{weighted} vs {whole}");
    // Each row alone, unpadded, gives its own loss.
    for (i, e) in examples.iter().enumerate() {
        let one = make_batch(&examples, &[i], &Device::Cpu).unwrap();
        let l: f32 = masked_nll(
            &model.forward(&one.ids, None).unwrap(),
            &one.ids,
            &one.weights,
        )
        .unwrap()
        .to_scalar()
        .unwrap();
        assert!((l - rows[i]).abs() < 1e-5, "row {i} ({} ids)", e.ids.len());
    }
}

#[test]
fn the_fast_pass_gives_the_training_loss_with_biases_and_grouped_heads() {
    // tiny-llama has 4 query heads over 2 key/value heads; tiny-qwen2 has q/k/v biases.
    for name in ["tiny-llama", "tiny-qwen2"] {
        let (dims, weights) = fixture(name);
        let frozen = Model::frozen(dims.clone(), &weights, DType::F32, &Device::Cpu).unwrap();
        let trainable = Model::new(dims, &weights, None, 0, &Device::Cpu).unwrap();
        let examples: Vec<Example> = samples(7)
            .into_iter()
            .map(|s| Example::new(s.prompt, &s.answer, 64).unwrap())
            .collect();
        let members: Vec<usize> = (0..examples.len()).collect();
        let batch = make_batch(&examples, &members, &Device::Cpu).unwrap();
        let fast = frozen.answer_nll_rows(&batch.ids, &batch.weights).unwrap();
        let logits = trainable.forward(&batch.ids, None).unwrap();
        let slow: Vec<f32> = masked_nll_rows(&logits, &batch.ids, &batch.weights)
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(fast.len(), slow.len());
        for (f, s) in fast.iter().zip(&slow) {
            assert!((f - s).abs() < 1e-5, "{name}: {fast:?} vs {slow:?}");
            assert!(*s > 3.0, "{name}: a random model's loss, {s}");
        }
        // Its q/k/v and gate/up are views of the fused weights: the saved weights are the same.
        let saved = frozen.base_weights().unwrap();
        for (k, w) in &weights {
            let diff = (saved[k].to_dtype(DType::F32).unwrap() - w)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0, "{name}: {k}");
        }
    }
}

#[test]
fn the_answer_is_cut_as_training_cuts_it_and_scored_alone_on_the_same_tokens() {
    let model = frozen();
    let long = Sample {
        prompt: vec![5; 10],
        alone: vec![7, 8],
        answer: (20..80).collect(),
    };
    let cut = Sample {
        answer: (20..74).collect(),
        ..long.clone()
    };
    let out = score(&model, &[long, cut], &cfg(4096), &Device::Cpu, |_, _| {}).unwrap();
    let (a, b) = (out[0].as_ref().unwrap(), out[1].as_ref().unwrap());
    assert_eq!((a.tokens, a.truncated), (54, true));
    assert_eq!((b.tokens, b.truncated), (54, false));
    assert!((a.given - b.given).abs() < 1e-6);
    assert!((a.alone.unwrap() - b.alone.unwrap()).abs() < 1e-6);
}

#[test]
fn a_sample_that_cannot_be_scored_says_why_and_the_others_are_scored() {
    let model = frozen();
    let good = samples(1).remove(0);
    let bad = [
        (
            Sample {
                answer: vec![],
                ..good.clone()
            },
            SampleError::EmptyAnswer,
        ),
        (
            Sample {
                prompt: vec![],
                ..good.clone()
            },
            SampleError::EmptyPrompt,
        ),
        (
            Sample {
                alone: vec![],
                ..good.clone()
            },
            SampleError::EmptyAloneContext,
        ),
        (
            Sample {
                prompt: vec![9; 64],
                ..good.clone()
            },
            SampleError::PromptTooLong {
                prompt: 64,
                max_len: 64,
            },
        ),
    ];
    let mut all = vec![good.clone()];
    all.extend(bad.iter().map(|(s, _)| s.clone()));
    all.push(good);
    let out = score(&model, &all, &cfg(512), &Device::Cpu, |_, _| {}).unwrap();
    assert!(out[0].is_ok() && out[5].is_ok());
    assert_eq!(out[0], out[5]);
    for (got, (_, want)) in out[1..5].iter().zip(&bad) {
        assert_eq!(got.as_ref().unwrap_err(), want);
    }
    // Perplexity alone needs no context for the answer alone.
    let ppl_only = ScoreConfig {
        alone: false,
        ..cfg(512)
    };
    let out = score(&model, &all[3..4], &ppl_only, &Device::Cpu, |_, _| {}).unwrap();
    let l = out[0].as_ref().unwrap();
    assert_eq!((l.alone, l.ifd()), (None, None));
    assert!(l.given.is_finite());
    assert!(
        SampleError::PromptTooLong {
            prompt: 64,
            max_len: 64
        }
        .to_string()
        .contains("64 tokens")
    );
}
