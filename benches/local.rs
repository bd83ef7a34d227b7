//! Local-model generation speed: tokens/s of the candle backend on the CPU at batch 1 and 8,
//! for SmolLM2-135M-Instruct (Q4_1 GGUF) and the tiny random Llama (safetensors fixture).
//!
//! ```text
//! cargo bench --bench local -- [--tokens 64] [--runs 3] [--batches 1,8]
//! .peer-venv/bin/python scripts/bench_local_torch.py [--tokens 64] [--runs 3]   # PyTorch, same prompts
//! ```
//! Each run generates `--tokens` new tokens greedily for every prompt (EOS ignored, so every
//! sequence does the same work); tokens/s = generated tokens / wall time, prefill included.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use instill_generator::local::{self, Codec, LoadOptions, SeqParams, generate_all};

const PROMPTS: [&str; 8] = [
    "Write a short poem about the sea.",
    "Give three tips for staying healthy.",
    "请用一句话解释什么是机器学习。",
    "List five animals that live in the ocean.",
    "Translate into French: the cat sleeps on the roof.",
    "写一首关于春天的诗。",
    "Summarise the plot of Hamlet in two sentences.",
    "What is the difference between a list and a tuple in Python?",
];

fn opt(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let tokens: usize = opt("--tokens").and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let batches: Vec<usize> = opt("--batches")
        .unwrap_or_else(|| "1,8".into())
        .split(',')
        .filter_map(|b| b.parse().ok())
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gguf = std::env::var_os("INSTILL_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let models = [
        ("smollm2-135m-q4_1", gguf.clone(), false),
        ("smollm2-135m-dequant", gguf, true),
        (
            "tiny-llama",
            root.join("tests/fixtures/local/tiny-llama"),
            false,
        ),
    ];
    println!("model                 batch   tokens/s (median of {runs})   runs");
    for (name, path, dequantize) in models {
        let started = Instant::now();
        let loaded = match local::load(
            &path,
            &Device::Cpu,
            &LoadOptions {
                dequantize,
                ..LoadOptions::default()
            },
        ) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{name}: {e}");
                continue;
            }
        };
        eprintln!("{name}: loaded in {:.2} s", started.elapsed().as_secs_f64());
        let codec = Codec {
            eos_ids: Vec::new(),
            ..loaded.codec.clone()
        };
        for &batch in &batches {
            let prompts: Vec<(Vec<u32>, SeqParams)> = PROMPTS
                .iter()
                .cycle()
                .take(batch)
                .map(|p| {
                    let ids = codec.encode_prompt(p, true).expect("encode");
                    let params = SeqParams {
                        max_new_tokens: tokens,
                        temperature: 0.0,
                        top_p: 1.0,
                        seed: 0,
                        stop: Vec::new(),
                        stop_ids: Vec::new(),
                    };
                    (ids, params)
                })
                .collect();
            let mut rates = Vec::new();
            for _ in 0..runs {
                let t = Instant::now();
                let out = generate_all(&loaded.model, &codec, &prompts, batch).expect("generate");
                let generated: usize = out.iter().map(|f| f.ids.len()).sum();
                rates.push(generated as f64 / t.elapsed().as_secs_f64());
            }
            let shown: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
            println!(
                "{name:<21} {batch:>5}   {:>10.1}                 {}",
                median(rates.clone()),
                shown.join(" ")
            );
        }
    }
}
