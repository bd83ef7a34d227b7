//! Local-model generation speed: tokens/s of the candle and llama.cpp engines on the CPU at
//! batch 1 and 8, for SmolLM2-135M-Instruct (Q4_1 GGUF) and the tiny random Llama (safetensors
//! fixture, candle only), with llama.cpp through llama-cpp-python (the peer) in the same run.
//!
//! ```text
//! cargo bench --bench local -- [--tokens 64] [--runs 3] [--batches 1,8] [--engines candle,llama-cpp]
//! .peer-venv/bin/python scripts/bench_local_torch.py [--tokens 64] [--runs 3]   # PyTorch, same prompts
//! ```
//! Each run generates `--tokens` new tokens greedily for every prompt (EOS ignored, so every
//! sequence does the same work); tokens/s = generated tokens / wall time, prefill included.
//! The peer (`scripts/bench_local_llamacpp.py`, run with `.peer-venv/bin/python` when it exists)
//! generates from the same prompt token ids at batch 1 on as many threads as llama-cpp here.

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use instill_generator::local::{self, Codec, Forward, LoadOptions, SeqParams, generate_all};

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

/// `batch` prompts (the list repeated), greedy, `tokens` new tokens each.
fn prompts(codec: &Codec, batch: usize, tokens: usize) -> Vec<(Vec<u32>, SeqParams)> {
    PROMPTS
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
        .collect()
}

/// Runs every batch size `runs` times on `model`, prints a row per batch size and returns the
/// medians.
fn measure<F: Forward>(
    name: &str,
    mut model: F,
    codec: &Codec,
    batches: &[usize],
    tokens: usize,
    runs: usize,
) -> Vec<(usize, f64)> {
    let mut medians = Vec::new();
    for &batch in batches {
        let prompts = prompts(codec, batch, tokens);
        let mut rates = Vec::new();
        for _ in 0..runs {
            let t = Instant::now();
            let out = generate_all(&mut model, codec, &prompts, batch).expect("generate");
            let generated: usize = out.iter().map(|f| f.ids.len()).sum();
            rates.push(generated as f64 / t.elapsed().as_secs_f64());
        }
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        let m = median(rates);
        println!(
            "{name:<30} {batch:>5}   {m:>10.1}                 {}",
            shown.join(" ")
        );
        medians.push((batch, m));
    }
    medians
}

/// The SmolLM2 GGUF on llama.cpp; returns the medians per batch size and the codec (without
/// EOS) the prompts were encoded with.
#[cfg(feature = "llama-cpp")]
fn llama_cpp(
    gguf: &std::path::Path,
    batches: &[usize],
    tokens: usize,
    runs: usize,
) -> Option<(Vec<(usize, f64)>, Codec)> {
    let model = match local::llama_cpp::LlamaCppModel::load(gguf, None) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("llama-cpp: {e}");
            return None;
        }
    };
    let codec = Codec {
        eos_ids: Vec::new(),
        ..model.codec.clone()
    };
    let mut medians = Vec::new();
    for &batch in batches {
        // A context for exactly this many sequences, as `--batch-size` makes one.
        let engine = model.engine(batch).expect("llama.cpp context");
        medians.extend(measure(
            "smollm2-135m-q4_1 llama-cpp",
            engine,
            &codec,
            &[batch],
            tokens,
            runs,
        ));
    }
    Some((medians, codec))
}

/// llama-cpp-python on the first prompt, batch 1: its median tokens/s, if the peer venv runs.
fn peer(gguf: &std::path::Path, codec: &Codec, tokens: usize, runs: usize) -> Option<f64> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peer-venv/bin/python");
    if !python.exists() {
        eprintln!("peer: no .peer-venv/bin/python (see README: benchmarks)");
        return None;
    }
    let ids = codec.encode_prompt(PROMPTS[0], true).expect("encode");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let out = std::process::Command::new(&python)
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/bench_local_llamacpp.py"))
        .args(["--model", &gguf.display().to_string()])
        .args(["--prompt-ids", &format!("{ids:?}")])
        .args(["--tokens", &tokens.to_string(), "--runs", &runs.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().last().filter(|_| out.status.success()) else {
        eprintln!("peer failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    };
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let rates: Vec<String> = v["rates"]
        .as_array()?
        .iter()
        .filter_map(|r| r.as_f64())
        .map(|r| format!("{r:.1}"))
        .collect();
    let m = v["median"].as_f64()?;
    println!(
        "{:<30} {:>5}   {m:>10.1}                 {}",
        format!("llama-cpp-python {}", v["version"].as_str().unwrap_or("?")),
        1,
        rates.join(" ")
    );
    Some(m)
}

fn main() {
    let tokens: usize = opt("--tokens").and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let batches: Vec<usize> = opt("--batches")
        .unwrap_or_else(|| "1,8".into())
        .split(',')
        .filter_map(|b| b.parse().ok())
        .collect();
    let engines = opt("--engines").unwrap_or_else(|| "candle,llama-cpp".into());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gguf = std::env::var_os("INSTILL_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let models = [
        ("smollm2-135m-q4_1 candle", gguf.clone(), false),
        ("smollm2-135m-dequant candle", gguf.clone(), true),
        (
            "tiny-llama",
            root.join("tests/fixtures/local/tiny-llama"),
            false,
        ),
    ];
    println!("model / engine                 batch   tokens/s (median of {runs})   runs");
    #[cfg(feature = "llama-cpp")]
    if engines.contains("llama-cpp")
        && let Some((ours, codec)) = llama_cpp(&gguf, &batches, tokens, runs)
    {
        let rate = |b: usize| ours.iter().find(|(batch, _)| *batch == b).map(|m| m.1);
        if let Some(theirs) = peer(&gguf, &codec, tokens, runs)
            && let Some(one) = rate(1)
        {
            println!(
                "llama-cpp / llama-cpp-python at batch 1: {:.2}x",
                one / theirs
            );
        }
        for (batch, m) in &ours {
            if let Some(one) = rate(1).filter(|_| *batch > 1) {
                println!("llama-cpp batch {batch} / batch 1: {:.2}x", m / one);
            }
        }
    }
    #[cfg(not(feature = "llama-cpp"))]
    let _ = peer;
    if !engines.contains("candle") {
        return;
    }
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
        measure(name, &loaded.model, &codec, &batches, tokens, runs);
    }
}
