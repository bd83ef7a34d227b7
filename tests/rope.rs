//! Llama 3.x RoPE scaling through the binary (tests/fixtures/local/tiny-llama3): `train` takes
//! the model and writes its scaling into the config beside the trained weights, which the candle
//! backend then loads; `generate --backend candle` serves it (a copy with a longer context).

use candle_core::Device;
use instill_generator::local::{self, LoadOptions};

use crate::util::{Env, repo, shared};

#[test]
fn train_and_generate_take_a_llama3_scaled_model() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let tiny = repo("tests/fixtures/local/tiny-llama3");
    let all: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(shared("data/alpaca_data.json")).unwrap()).unwrap();
    let lines: String = all[..8].iter().map(|r| format!("{r}\n")).collect();
    let data = env.write("train.jsonl", lines);
    let out = env.path("full");
    let j = env
        .run([
            "train",
            "--model",
            tiny.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--max-steps",
            "2",
            "--max-len",
            "96",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(j["steps"].as_u64(), Some(2), "{j}");
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    let original: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tiny.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        written["rope_parameters"], original["rope_parameters"],
        "the scaling is kept beside the trained weights"
    );
    let trained = local::load(&out, &Device::Cpu, &LoadOptions::default()).unwrap();
    let original = local::load(&tiny, &Device::Cpu, &LoadOptions::default()).unwrap();
    assert_eq!(
        trained.model.config().rope(),
        original.model.config().rope(),
        "same scaled frequencies"
    );

    // The generation prompt is longer than tiny-llama3's 256 positions in its 400-token
    // vocabulary: a copy with a longer context (RoPE extrapolates; the weights are random).
    let long = env.path("long-context");
    std::fs::create_dir_all(&long).unwrap();
    for e in std::fs::read_dir(&tiny).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), long.join(e.file_name())).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(long.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = 8192.into();
    std::fs::write(
        long.join("config.json"),
        serde_json::to_vec(&config).unwrap(),
    )
    .unwrap();
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let run = env.run([
        "generate",
        "--backend",
        "candle",
        "--model",
        long.to_str().unwrap(),
        "--lang",
        "en",
        "--target",
        "1",
        "--max-requests",
        "1",
        "--max-tokens",
        "16",
        "--json",
    ]);
    // A random model writes no parseable item: the run ends at its one request (exit 1).
    assert!(matches!(run.code, 0 | 1), "{}\n{}", run.stdout, run.stderr);
    let j = run.json();
    assert_eq!(
        (j["requests_ok"].as_u64(), j["requests_failed"].as_u64()),
        (Some(1), Some(0)),
        "{j}"
    );
    assert!(j["completion_tokens"].as_u64().unwrap() > 0, "{j}");
}
