//! `instill generate` against the fake OpenAI-compatible server: reaching the target exactly,
//! determinism across concurrency, crash equivalence under SIGKILL, faults, and a bad key.

use std::collections::BTreeSet;
use std::time::Duration;

use instill_dedup::{LcsQuery, Sequences, Tokenizer, rouge_l_f1};

use crate::fake_openai::{FakeConfig, FakeServer, Faults, prompt_hash};
use crate::util::{Env, block_on, run_bounded};

fn generate_args<'a>(
    server: &'a FakeServer,
    lang: &'a str,
    target: &'a str,
    concurrency: &'a str,
) -> Vec<&'a str> {
    vec![
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        lang,
        "--target",
        target,
        "--concurrency",
        concurrency,
        "--json",
    ]
}

/// (status, reason, instruction) of every record of the database, in id order.
fn records(env: &Env) -> Vec<(String, Option<String>, String)> {
    let verdicts: Vec<_> = block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let v = db.verdicts().await.unwrap();
        db.close().await;
        v
    });
    let recs = env.records();
    verdicts
        .into_iter()
        .zip(recs)
        .map(|(v, r)| (v.status.to_string(), v.reason, r.record.instruction))
        .collect()
}

/// The largest ROUGE-L F1 between any two of `texts` (auto tokenizer), by brute force.
fn max_pairwise_rouge(texts: &[&str]) -> f64 {
    let seq = Sequences::tokenize(texts, Tokenizer::Auto);
    let mut q = LcsQuery::new();
    let mut best = 0.0f64;
    for i in 0..seq.len() {
        q.set(seq.get(i));
        for j in 0..i {
            best = best.max(rouge_l_f1(
                q.lcs(seq.get(j)),
                seq.get(i).len(),
                seq.get(j).len(),
            ));
        }
    }
    best
}

#[test]
fn generation_reaches_the_target_exactly_in_both_languages() {
    for (env, lang) in [
        Env::new(instill_storage::testing::TempDb::sqlite()),
        Env::new(instill_storage::testing::TempDb::postgres()),
    ]
    .into_iter()
    .zip(["zh", "en"])
    {
        let server = FakeServer::start(FakeConfig {
            lang,
            ..FakeConfig::default()
        });
        env.run(["seeds", "import", "--builtin", "all"])
            .expect_code(0);
        let run = env
            .run(generate_args(&server, lang, "2000", "16"))
            .expect_code(0);
        let j = run.json();
        assert_eq!(
            j["accepted"],
            2000,
            "{} {lang}: {}",
            env.backend(),
            run.stdout
        );
        assert_eq!(j["ending"], "target");
        let recs = records(&env);
        let accepted: Vec<&str> = recs
            .iter()
            .filter(|r| r.0 == "accepted")
            .map(|r| r.2.as_str())
            .collect();
        assert_eq!(accepted.len(), 2000);
        assert!(
            recs.iter()
                .filter(|r| r.0 == "rejected")
                .all(|r| r.1.is_some()),
            "every rejection has a reason"
        );
        let reasons: BTreeSet<&str> = recs.iter().filter_map(|r| r.1.as_deref()).collect();
        for want in ["exact", "rouge_l", "instruction_too_short", "blacklist"] {
            assert!(
                reasons.contains(want),
                "{lang}: no `{want}` rejection in {reasons:?}"
            );
        }
        assert!(
            max_pairwise_rouge(&accepted) <= 0.7,
            "two accepted instructions are too similar"
        );
        // The summary adds up with the database.
        assert_eq!(j["rejected"].as_u64().unwrap() as usize, recs.len() - 2000);
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(stats["records"]["accepted"], 2000);
        assert_eq!(
            stats["requests"],
            j["requests_ok"].as_u64().unwrap() + j["requests_failed"].as_u64().unwrap()
        );
        // Running the finished command again does nothing more.
        let again = env
            .run(generate_args(&server, lang, "2000", "16"))
            .expect_code(0)
            .json();
        assert_eq!(
            (
                again["accepted"].as_u64(),
                again["requests_sent_now"].as_u64()
            ),
            (Some(2000), Some(0))
        );
    }
}

#[test]
fn the_same_seed_gives_the_same_export_at_concurrency_1_and_64() {
    let server = FakeServer::start(FakeConfig::default());
    let mut exports = Vec::new();
    for c in ["1", "64"] {
        let env = Env::new(instill_storage::testing::TempDb::sqlite());
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        env.run(generate_args(&server, "en", "400", c))
            .expect_code(0);
        env.run(["export", "--out", "out", "--status", "all"])
            .expect_code(0);
        exports.push(std::fs::read(env.path("out/data/train/train-00000-of-00001.jsonl")).unwrap());
    }
    assert!(!exports[0].is_empty());
    assert!(
        exports[0] == exports[1],
        "exports differ between concurrency 1 and 64"
    );
}

#[test]
fn killed_and_resumed_runs_end_with_the_uninterrupted_export() {
    // Slow enough (about 5 s a run) for ten kills at random moments before it finishes.
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(40),
        ..FakeConfig::default()
    });
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    reference
        .run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    reference
        .run(generate_args(&server, "en", "3000", "4"))
        .expect_code(0);
    reference
        .run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    let want = std::fs::read(reference.path("out/data/train/train-00000-of-00001.jsonl")).unwrap();

    let shared_prompts: BTreeSet<u64> = {
        let all = block_on(async {
            let db = instill_storage::Db::open(&reference.db.url).await.unwrap();
            let run = db
                .find_run("en-en-self_instruct-s42")
                .await
                .unwrap()
                .unwrap();
            let p = db.stored_prompts(run.id).await.unwrap();
            db.close().await;
            p
        });
        let mut seen = BTreeSet::new();
        all.iter()
            .map(|p| prompt_hash(p))
            .filter(|h| !seen.insert(*h))
            .collect()
    };
    for env in Env::both() {
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        let mut kills = 0;
        let mut state = 0x1234_5678u64 ^ kills;
        loop {
            // Prompts whose replies were stored before this attempt must never be sent again.
            let stored_before = stored_prompts_db(&env);
            let seen_before = server.requests().len();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
                .args(generate_args(&server, "en", "3000", "4"))
                .arg("--no-progress")
                .env("INSTILL_DB", &env.db.url)
                .current_dir(env.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let done = if kills < 10 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                std::thread::sleep(Duration::from_millis(100 + state % 400));
                match child.try_wait().unwrap() {
                    Some(status) => Some(status),
                    None => {
                        child.kill().unwrap(); // SIGKILL
                        child.wait().unwrap();
                        kills += 1;
                        None
                    }
                }
            } else {
                Some(child.wait().unwrap())
            };
            let sent: Vec<u64> = server.requests()[seen_before..]
                .iter()
                .map(|r| r.0)
                .collect();
            // (Two request indices can draw the same examples, hence the same prompt: only
            // prompts that belong to one request are checked.)
            for h in &sent {
                if stored_before.contains(h) && !shared_prompts.contains(h) {
                    panic!(
                        "{}: a prompt whose reply was stored was sent again",
                        env.backend()
                    );
                }
            }
            if let Some(status) = done {
                assert_eq!(status.code(), Some(0));
                break;
            }
        }
        assert!(kills >= 10, "{kills} kills");
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

/// Hashes (as the fake server computes them) of the prompts of stored replies.
fn stored_prompts_db(env: &Env) -> BTreeSet<u64> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let mut out = BTreeSet::new();
        if let Some(run) = db.find_run("en-en-self_instruct-s42").await.unwrap() {
            for p in db.stored_prompts(run.id).await.unwrap() {
                out.insert(prompt_hash(&p));
            }
        }
        db.close().await;
        out
    })
}

#[test]
fn faults_are_retried_and_the_counts_reconcile() {
    let server = FakeServer::start(FakeConfig {
        faults: Faults {
            rate_limited: 0.10,
            server_error: 0.05,
            timeout: 0.02,
            garbage: 0.02,
            length: 0.05,
        },
        stall: Duration::from_secs(2),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let mut args = generate_args(&server, "en", "1500", "16");
    args.extend(["--timeout", "0.5", "--max-retries", "20"]);
    let j = env.run(args).expect_code(0).json();
    assert_eq!(j["accepted"], 1500);
    let errors = &j["errors_by_kind"];
    for kind in ["rate_limited", "server_error", "timeout", "bad_body"] {
        assert!(
            errors[kind].as_u64().unwrap_or(0) > 0,
            "no {kind} in {errors}"
        );
    }
    assert!(j["truncated_replies"].as_u64().unwrap() > 0);
    // Client side: every failed attempt was retried (none failed for good), and the requests it
    // counts are the ones stored.
    let failed_attempts: u64 = errors
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        failed_attempts,
        j["requests_retried_attempts"].as_u64().unwrap()
    );
    assert_eq!(j["requests_failed"], 0);
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    assert_eq!(stats["requests"], j["requests_ok"]);
    // Server side: it answered at least what the client counted, and at most what the client
    // counted plus the requests still in flight when the target was reached.
    let log = server.requests();
    let served = |kind: &str| log.iter().filter(|r| r.1 == kind).count() as u64;
    assert!(served("rate_limited") >= errors["rate_limited"].as_u64().unwrap());
    assert!(served("ok") + served("length") >= j["requests_ok"].as_u64().unwrap());
    assert!(log.len() as u64 <= j["requests_ok"].as_u64().unwrap() + failed_attempts + 16);
}

#[test]
fn a_bad_key_stops_at_once_naming_the_server_not_the_key() {
    let server = FakeServer::start(FakeConfig {
        always_status: Some(401),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(generate_args(&server, "en", "100", "4"))
        .env("INSTILL_DB", &env.db.url)
        .env("OPENAI_API_KEY", "sk-test-very-secret")
        .current_dir(env.dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&server.base_url) && stderr.contains("401"),
        "{stderr}"
    );
    assert!(!stderr.contains("sk-test-very-secret"));
    // The line the run started with, then one error line.
    assert_eq!(stderr.lines().count(), 2, "{stderr}");
    assert!(
        stderr.lines().nth(1).unwrap().starts_with("error: "),
        "{stderr}"
    );
    assert!(
        server.requests().len() <= 4,
        "it kept sending after a 401: {}",
        server.requests().len()
    );
}

#[test]
fn a_run_ends_only_at_the_target_or_at_the_request_budget() {
    // Replies in bursts from a server that answers at once: every 100th request is held back
    // while the ones after it fill the window and are answered, so its reply makes a whole
    // window acceptable with nothing else in flight. A run ended there ("max_requests") after
    // the first window, with no budget given or far below it.
    let server = FakeServer::start(FakeConfig {
        hold_every: 100,
        hold: Duration::from_millis(300),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    // A target it cannot reach: it ends at the budget, having sent exactly that many requests.
    let mut args = generate_args(&server, "en", "100000000", "16");
    args.extend(["--run", "budget", "--max-requests", "600"]);
    let j = env.run(args).expect_code(1).json();
    assert_eq!(j["ending"], "max_requests", "{j}");
    let requests = j["requests_ok"].as_u64().unwrap() + j["requests_failed"].as_u64().unwrap();
    assert_eq!(requests, 600, "{j}");
    assert_eq!(j["requests_sent_now"], 600, "{j}");
    // No budget: it ends at the target.
    let mut args = generate_args(&server, "en", "1500", "16");
    args.extend(["--run", "target"]);
    let j = env.run(args).expect_code(0).json();
    assert_eq!(
        (&j["ending"], &j["accepted"]),
        (&"target".into(), &1500.into()),
        "{j}"
    );
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    assert_eq!(
        stats["requests"].as_u64().unwrap(),
        600 + j["requests_ok"].as_u64().unwrap() + j["requests_failed"].as_u64().unwrap()
    );
}

#[test]
fn without_a_key_a_remote_server_is_refused_at_once_saying_what_to_do() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    for (extra, var) in [
        (vec![], "OPENAI_API_KEY"),
        (vec!["--api-key-env", "MY_LLM_KEY"], "MY_LLM_KEY"),
    ] {
        let mut args = vec![
            "generate",
            "--base-url",
            "http://api.example.invalid/v1",
            "--model",
            "m",
            "--lang",
            "en",
            "--target",
            "10",
            "--max-requests",
            "1",
            "--max-retries",
            "1",
        ];
        args.extend(extra);
        let run = run_bounded(
            &env,
            &args,
            &[],
            &["OPENAI_API_KEY", "MY_LLM_KEY", "OPENAI_BASE_URL"],
            Duration::from_secs(120),
        )
        .expect_code(2);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        for want in [
            var,
            "--api-key-env",
            "http://api.example.invalid/v1",
            "--base-url",
            "http://localhost:11434/v1",
        ] {
            assert!(lines[0].contains(want), "`{want}` missing: {}", lines[0]);
        }
    }
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_server_never_reached_stops_the_run_naming_the_url_and_the_error() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let port = closed_port();
    let url = format!("http://someone:s3cret@127.0.0.1:{port}/v1");
    let run = run_bounded(
        &env,
        &[
            "generate",
            "--base-url",
            &url,
            "--model",
            "m",
            "--lang",
            "en",
            "--target",
            "1000",
            "--concurrency",
            "4",
            "--max-requests",
            "200",
            "--json",
        ],
        &[],
        &["OPENAI_API_KEY"],
        Duration::from_secs(120),
    )
    .expect_code(2);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    let error: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(error.len(), 1, "{}", run.stderr);
    let shown = format!("http://someone:***@127.0.0.1:{port}/v1");
    for want in [
        format!("cannot connect to {shown}"),
        "Connection refused".to_string(),
        "--base-url".to_string(),
    ] {
        assert!(error[0].contains(&want), "`{want}` missing: {}", error[0]);
    }
    // The line it started with named what it talks to and where it writes.
    let start = run.stderr.lines().next().unwrap();
    for want in [
        format!("openai at {shown}"),
        "model m".into(),
        "target 1000".into(),
        "concurrency 4".into(),
        format!("database {}", env.db.url),
    ] {
        assert!(start.contains(&want), "`{want}` missing: {start}");
    }
}

#[test]
fn a_server_that_answered_then_went_away_is_retried() {
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(50),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let base_url = server.base_url.clone();
    let args = [
        "generate",
        "--base-url",
        &base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--target",
        "100000",
        "--concurrency",
        "2",
        "--max-requests",
        "24",
        "--max-retries",
        "3",
        "--json",
    ];
    let run = std::thread::scope(|s| {
        let child = s.spawn(|| {
            // A grace of 1 s: the failures below last longer than that.
            run_bounded(
                &env,
                &args,
                &[
                    ("INSTILL_CONNECT_GRACE", "1"),
                    ("INSTILL_PROGRESS_INTERVAL", "0.2"),
                ],
                &[],
                Duration::from_secs(120),
            )
        });
        while server.requests().len() < 10 {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(server);
        child.join().unwrap()
    });
    let run = run.expect_code(1);
    let j = run.json();
    assert_eq!(j["ending"], "max_requests", "{j}");
    let (ok, failed) = (
        j["requests_ok"].as_u64().unwrap(),
        j["requests_failed"].as_u64().unwrap(),
    );
    assert!(ok >= 10 && failed > 0 && ok + failed == 24, "{j}");
    assert!(
        j["errors_by_kind"]["connection"].as_u64().unwrap() > 0,
        "{j}"
    );
    // The progress lines counted the failures while they were being retried.
    assert!(
        run.stderr
            .lines()
            .any(|l| l.starts_with("progress: ") && l.contains("failed attempts: connection ")),
        "{}",
        run.stderr
    );
}
