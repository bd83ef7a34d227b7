//! Local scoring speed: answer tokens/s of `instill score --metric ppl|ifd --model SmolLM2` (the
//! Q4_1 GGUF, dequantized to f32) on the first `--records` Alpaca records, as users run it:
//! import, then score into a SQLite database; the summary's rate counts the forward passes only
//! (not loading the model). `scripts/bench_score_torch.py` is the PyTorch peer on the same
//! records, rendered, cut and batched the same way (chunks of 64 records, padded batches of at
//! most 4096 tokens): run both in one sitting and compare medians.
//!
//! ```text
//! cargo bench --bench score -- [--records 64] [--runs 3]
//! .peer-venv/bin/python scripts/bench_score_torch.py [--records 64] [--runs 3] [--threads 2]
//! ```

use std::path::PathBuf;
use std::process::Command;

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

fn instill(db: &str, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(args)
        .args(["--no-progress", "--json"])
        .env("INSTILL_DB", db)
        .output()
        .expect("run instill");
    assert!(
        out.status.success(),
        "instill {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    serde_json::from_str(&last).expect("a JSON summary")
}

fn main() {
    let records: usize = opt("--records").and_then(|v| v.parse().ok()).unwrap_or(64);
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let shared = std::env::var("INSTILL_SHARED").unwrap_or_else(|_| "../shared".into());
    let gguf = std::env::var_os("INSTILL_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        });
    let dir = tempfile::tempdir().expect("tempdir");
    let all: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(PathBuf::from(shared).join("data/alpaca_data.json"))
            .expect("alpaca_data.json (set INSTILL_SHARED)"),
    )
    .expect("json");
    let data = dir.path().join("alpaca.json");
    std::fs::write(
        &data,
        serde_json::to_vec(&all[..records.min(all.len())]).expect("json"),
    )
    .expect("write");
    let db = format!("sqlite://{}", dir.path().join("bench.db").display());
    instill(&db, &["import", data.to_str().unwrap_or_default()]);
    let model = gguf.to_str().unwrap_or_default();
    println!("instill score on {records} Alpaca records, SmolLM2-135M (f32), {runs} runs");
    println!("metric   answer tokens   tokens/s (median)   runs");
    for metric in ["ppl", "ifd"] {
        let mut rates = Vec::new();
        let mut tokens = 0;
        for run in 0..runs {
            let name = format!("{metric}-{run}");
            let s = instill(
                &db,
                &[
                    "score", "--metric", metric, "--model", model, "--name", &name,
                ],
            );
            tokens = s["answer_tokens"].as_u64().unwrap_or(0);
            rates.push(s["tokens_per_s"].as_f64().unwrap_or(f64::NAN));
        }
        let list: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        println!(
            "{metric:<8} {tokens:>13}   {:>17.1}   {}",
            median(rates),
            list.join(" ")
        );
    }
}
