//! Answer perplexity and IFD (`instill_trainer::score`) against transformers: the losses
//! `scripts/ifd_reference.py` computed for the records of `tests/fixtures/local/ifd.json` with
//! the tiny Llama fixture and with SmolLM2-135M-Instruct (its Q4_1 GGUF, dequantized to f32 by
//! both sides). The ids are the fixture's, which `src/render.rs`'s tests hold equal to what
//! instill renders, so this checks the model and the loss. Perplexity and IFD must agree within
//! 1e-3 relative (and the two losses within 1e-3 nats), scored as one padded batch and as
//! several small ones.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use instill_models::Weights;
use instill_trainer::{Model, Sample, ScoreConfig, score};
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Largest (absolute, relative) differences seen.
#[derive(Debug, Default)]
struct Worst {
    abs: f64,
    rel: f64,
}

impl Worst {
    fn see(&mut self, got: f64, want: f64) {
        self.abs = self.abs.max((got - want).abs());
        self.rel = self.rel.max((got - want).abs() / want.abs());
    }
}

fn check(name: &str, model_path: &Path) {
    let fixture: Value = serde_json::from_slice(
        &std::fs::read(root().join("tests/fixtures/local/ifd.json")).unwrap(),
    )
    .unwrap();
    let expected = &fixture["models"][name];
    let want = expected["samples"].as_array().unwrap();
    let samples: Vec<Sample> = want
        .iter()
        .map(|s| Sample {
            prompt: ids(&s["prompt"]),
            alone: ids(&s["alone"]),
            answer: ids(&s["answer"]),
        })
        .collect();
    let (dims, weights) = Weights::open(model_path, &Device::Cpu)
        .unwrap()
        .dense_all()
        .unwrap();
    let model = Model::frozen(dims, &weights, DType::F32, &Device::Cpu).unwrap();
    for batch_tokens in [4096, 200] {
        let cfg = ScoreConfig {
            max_len: expected["max_len"].as_u64().unwrap() as usize,
            batch_tokens,
            alone: true,
        };
        let got = score(&model, &samples, &cfg, &Device::Cpu, |_, _| {}).unwrap();
        let (mut loss, mut ppl, mut ifd) = (Worst::default(), Worst::default(), Worst::default());
        for (g, w) in got.iter().zip(want) {
            let g = g.as_ref().unwrap();
            assert_eq!(g.tokens as u64, w["tokens"].as_u64().unwrap());
            assert_eq!(g.truncated, w["truncated"].as_bool().unwrap());
            loss.see(g.given, w["given"].as_f64().unwrap());
            loss.see(g.alone.unwrap(), w["alone_loss"].as_f64().unwrap());
            ppl.see(g.ppl(), w["ppl"].as_f64().unwrap());
            ifd.see(g.ifd().unwrap(), w["ifd"].as_f64().unwrap());
        }
        eprintln!(
            "{name} (batches of {batch_tokens} tokens): loss max abs {:.2e}; ppl max abs {:.2e} rel {:.2e}; ifd max abs {:.2e} rel {:.2e}",
            loss.abs, ppl.abs, ppl.rel, ifd.abs, ifd.rel
        );
        assert!(loss.abs < 1e-3, "{name}: {loss:?}");
        assert!(ppl.rel < 1e-3 && ifd.rel < 1e-3, "{name}: {ppl:?} {ifd:?}");
    }
}

#[test]
fn ppl_and_ifd_match_transformers_on_the_tiny_llama() {
    check(
        "tiny-llama",
        &root().join("tests/fixtures/local/tiny-llama"),
    );
}

#[test]
fn ppl_and_ifd_match_transformers_on_smollm2() {
    check("smollm2", &crate::local::smollm2());
}

/// Through the binary: every record scored once, a rerun scores nothing, the scores select, and
/// a second metric lives beside the first.
#[test]
fn score_metric_stores_ifd_and_ppl_and_a_rerun_scores_nothing() {
    use crate::util::{Env, repo};
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = repo("examples/quickstart.json");
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let n = env.records().len() as u64;
    let model = root().join("tests/fixtures/local/tiny-llama");
    let model = model.to_str().unwrap();
    let ifd = env
        .run(["score", "--metric", "ifd", "--model", model, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(ifd["scored_now"], n, "{ifd}");
    assert!(ifd["answer_tokens"].as_u64().unwrap() > n);
    let mean = ifd["scores"]["mean"].as_f64().unwrap();
    assert!(
        mean > 0.5 && mean < 1.5,
        "IFD of an untrained model is near 1: {mean}"
    );
    let again = env
        .run(["score", "--metric", "ifd", "--model", model, "--json"])
        .expect_code(0)
        .json();
    assert_eq!(again["scored_now"], 0);
    assert_eq!(again["scores"], ifd["scores"]);
    let ppl = env
        .run(["score", "--metric", "ppl", "--model", model, "--json"])
        .expect_code(0)
        .json();
    assert!(ppl["scores"]["min"].as_f64().unwrap() > 1.0, "{ppl}");
    let sel = env
        .run(["select", "--scorer", "ppl", "--top-k", "5", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(sel["kept"], 5, "the 5 lowest perplexities: {sel}");
    let other = env.run([
        "score",
        "--metric",
        "ppl",
        "--model",
        model,
        "--max-len",
        "64",
    ]);
    assert_eq!(other.code, 2, "{}", other.stderr);
    assert!(
        other
            .stderr
            .contains("scorer `ppl` was made with other settings"),
        "{}",
        other.stderr
    );
}
