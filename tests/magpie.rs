//! `instill generate --mode magpie`: instructions written by the model from its chat template's
//! opening of a user turn, then answered. Against the fake server's `/completions` (counts,
//! rejections by reason, the system prompt stored and exported, SIGKILL and resume ending with
//! the uninterrupted records on SQLite and Postgres, a chat-only API and bad flags refused with
//! nothing written), with a tiny fixture model and with SmolLM2 on candle.

use std::collections::BTreeMap;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::local::smollm2;
use crate::util::{Env, repo, run_killed};

const SYSTEM: &str = "You ask questions about gardening.";

fn server(latency_ms: u64) -> FakeServer {
    FakeServer::start(FakeConfig {
        magpie: true,
        latency: std::time::Duration::from_millis(latency_ms),
        ..FakeConfig::default()
    })
}

fn magpie_args<'a>(server: &'a FakeServer, template: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--mode",
        "magpie",
        "--api",
        "completion",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--chat-template-from",
        template,
        "--system",
        SYSTEM,
        "--target",
        target,
        "--concurrency",
        "4",
        "--json",
    ]
}

fn fixture() -> String {
    repo("tests/fixtures/local/tiny-llama")
        .to_string_lossy()
        .into_owned()
}

/// The lines of an export's train split, parsed.
fn exported(env: &Env, dir: &str) -> Vec<serde_json::Value> {
    let path = env.path(&format!("{dir}/data/train/train-00000-of-00001.jsonl"));
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn magpie_over_completions_writes_answered_instructions_with_the_system_prompt() {
    let server = server(0);
    let template = fixture();
    for env in Env::both() {
        let run = env
            .run(magpie_args(&server, &template, "30"))
            .expect_code(0);
        let s = run.json();
        assert_eq!(
            (&s["mode"], &s["accepted"], &s["ending"]),
            (&"magpie".into(), &30.into(), &"target".into()),
            "{}",
            run.stdout
        );
        let records = env.records();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for r in &records {
            assert_eq!(r.record.system, SYSTEM);
            match r.status {
                instill_core::Status::Accepted => {
                    assert!(r.record.instruction.ends_with('?'), "{r:?}");
                    assert!(r.record.output.starts_with("Here is the answer"), "{r:?}");
                }
                _ => *reasons.entry(r.reason.clone().unwrap()).or_default() += 1,
            }
        }
        // The fake plants cut-off, empty and duplicate instructions: each rejected as such,
        // the first two unanswered.
        for reason in ["cut_off", "empty_turn", "exact"] {
            assert!(reasons.contains_key(reason), "{reasons:?}");
        }
        for r in records
            .iter()
            .filter(|r| matches!(r.reason.as_deref(), Some("cut_off") | Some("empty_turn")))
        {
            assert_eq!(r.record.output, "", "{r:?}");
        }
        let rejected: usize = reasons.values().sum();
        assert_eq!(s["rejected"], rejected);
        // Requests: two per answered item, one per unanswered one.
        let unanswered =
            reasons.get("cut_off").unwrap_or(&0) + reasons.get("empty_turn").unwrap_or(&0);
        assert!(
            s["requests_ok"].as_u64().unwrap() >= (2 * records.len() - unanswered) as u64,
            "{s}"
        );
        // Exports carry the system prompt in each layout.
        for format in ["alpaca", "sharegpt", "messages"] {
            let dir = format!("out-{format}");
            env.run(["export", "--out", &dir, "--format", format])
                .expect_code(0);
            let lines = exported(&env, &dir);
            assert_eq!(lines.len(), 30, "{format}");
            for l in &lines {
                let system = match format {
                    "alpaca" => &l["system"],
                    "sharegpt" => &l["conversations"][0]["value"],
                    _ => &l["messages"][0]["content"],
                };
                assert_eq!(system, SYSTEM, "{format}: {l}");
            }
        }
        // The run's settings hold the derived pre-query text (its provenance).
        let stats = env.run(["stats", "--json"]).expect_code(0);
        assert!(stats.stdout.contains("magpie-s42"), "{}", stats.stdout);
    }
}

#[test]
fn a_magpie_run_killed_anywhere_resumes_to_the_uninterrupted_records() {
    // About 40 ms a request, 4 at a time, ~2 per item: a run takes a few seconds.
    let server = server(40);
    let template = fixture();
    let args = magpie_args(&server, &template, "60");
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    reference.run(&args).expect_code(0);
    reference
        .run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    let want = std::fs::read(reference.path("out/data/train/train-00000-of-00001.jsonl")).unwrap();
    for env in Env::both() {
        let (code, kills) = run_killed(&env, &args, 5, 0x5eed);
        assert_eq!(code, 0, "{}", env.backend());
        assert!(kills >= 3, "{}: {kills} kills", env.backend());
        env.run(["export", "--out", "out", "--status", "all"])
            .expect_code(0);
        let got = std::fs::read(env.path("out/data/train/train-00000-of-00001.jsonl")).unwrap();
        assert!(
            got == want,
            "{}: the resumed export differs from the uninterrupted one",
            env.backend()
        );
    }
}

#[test]
fn a_chat_only_api_and_flags_that_make_no_sense_are_refused_and_nothing_is_written() {
    let chat_only = FakeServer::start(FakeConfig {
        magpie: true,
        chat_only: true,
        ..FakeConfig::default()
    });
    let template = fixture();
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let r = env
        .run(magpie_args(&chat_only, &template, "3"))
        .expect_code(2);
    assert!(
        r.stderr.contains("chat-only API") && r.stderr.contains("/completions"),
        "{}",
        r.stderr
    );
    let server = server(0);
    let base = magpie_args(&server, &template, "3");
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = base.clone();
        a.extend_from_slice(extra);
        a
    };
    for (args, needle) in [
        (
            base.iter()
                .map(|a| if *a == "completion" { "chat" } else { a })
                .collect(),
            "--api completion",
        ),
        (
            with(&["--turns", "2"]),
            "--turns does not apply to --mode magpie",
        ),
        (with(&["--n", "2"]), "--n does not apply to --mode magpie"),
        (
            with(&["--template", "mine.j2"]),
            "--template does not apply to --mode magpie",
        ),
        (
            magpie_args(&server, "/nonexistent/dir", "3"),
            "/nonexistent/dir",
        ),
    ] {
        let r = env.run(&args).expect_code(2);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    // No template to derive from: --model names no model, and none is given.
    let r = env
        .run([
            "generate",
            "--mode",
            "magpie",
            "--api",
            "completion",
            "--base-url",
            &server.base_url,
            "--model",
            "fake",
            "--target",
            "3",
        ])
        .expect_code(2);
    assert!(r.stderr.contains("--chat-template-from"), "{}", r.stderr);
    // A template that never writes the user's message.
    std::fs::create_dir_all(env.path("silent")).unwrap();
    env.write(
        "silent/tokenizer_config.json",
        r#"{"chat_template": "{% for m in messages %}<|{{ m.role }}|>{% endfor %}"}"#,
    );
    let silent = env.path("silent").to_string_lossy().into_owned();
    let mut args = magpie_args(&server, &silent, "3");
    args.retain(|a| *a != "--system" && *a != SYSTEM);
    let r = env.run(&args).expect_code(2);
    assert!(
        r.stderr.contains("silent") && r.stderr.contains("appears 0 times"),
        "{}",
        r.stderr
    );
    assert_eq!(env.counts().0, 0);
    assert_eq!(server.requests().len(), 0);
}

#[test]
fn magpie_on_candle_with_a_tiny_fixture_and_smollm2_stores_answered_instructions() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let tiny = fixture();
    let s = env
        .run([
            "generate",
            "--mode",
            "magpie",
            "--backend",
            "candle",
            "--model",
            &tiny,
            "--system",
            SYSTEM,
            "--target",
            "2",
            "--max-tokens",
            "8",
            "--max-requests",
            "12",
            "--run",
            "tiny",
            "--json",
        ])
        .json();
    // A random tiny model: instructions cut off at 8 tokens, each a request, none answered.
    assert_eq!(s["mode"], "magpie", "{s}");
    let tiny_records = env.records();
    assert!(!tiny_records.is_empty());
    let instructions: std::collections::BTreeSet<_> = tiny_records
        .iter()
        .map(|r| r.record.instruction.clone())
        .collect();
    assert!(
        instructions.len() > 1,
        "the same instruction every time: {instructions:?}"
    );
    for r in &tiny_records {
        assert_eq!(r.record.system, SYSTEM);
    }
    let model = smollm2();
    let s = env
        .run([
            "generate",
            "--mode",
            "magpie",
            "--backend",
            "candle",
            "--model",
            model.to_str().unwrap(),
            "--target",
            "2",
            "--max-tokens",
            "48",
            "--max-requests",
            "16",
            "--temperature",
            "0.7",
            "--run",
            "smol",
            "--json",
        ])
        .json();
    assert_eq!(s["mode"], "magpie", "{s}");
    let smol: Vec<_> = env
        .records()
        .into_iter()
        .filter(|r| r.record.system.is_empty())
        .collect();
    assert!(!smol.is_empty(), "{s}");
    let answered: Vec<_> = smol
        .iter()
        .filter(|r| !r.record.output.is_empty())
        .collect();
    assert!(!answered.is_empty(), "no instruction answered: {smol:?}");
    for r in &answered {
        assert!(!r.record.instruction.trim().is_empty());
        assert!(!r.record.instruction.contains("<|im_start|>"), "{r:?}");
    }
}
