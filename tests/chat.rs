//! `instill generate --mode chat` against the fake OpenAI-compatible server: conversations of K
//! exchanges stored as one record each (history + last exchange), the target reached exactly,
//! dedup and rules on the opening, every turn in the sharegpt and messages exports, SIGKILL and
//! resume ending with the uninterrupted records (SQLite and Postgres), several processes sharing
//! a run on Postgres with one killed ending with one process's records, and flags that make no
//! sense refused.

use std::collections::BTreeSet;
use std::time::Duration;

use xxhash_rust::xxh3::xxh3_64;

use crate::fake_openai::{FakeConfig, FakeServer, prompt_hash};
use crate::util::{Env, block_on, exported, words};

/// Every follow-up the fake user asks: too short for the quality rules (3 words) and the same in every
/// conversation, so a run that judged the last user turn would reject nearly everything.
const FOLLOW_UP: &str = "Why is that?";

/// The fake model of a self-chat: an opening question or the follow-up for the user simulator's
/// prompts, an answer for the assistant's; each drawn from the prompt (same prompt, same reply).
/// One opening in three is a near copy of one fixed question (a ROUGE-L duplicate of its first
/// user turn, with other words after it).
fn chat_model(prompt: &str) -> String {
    let h = xxh3_64(prompt.as_bytes());
    if prompt.starts_with("Play a real person") {
        if prompt.contains("conversation so far") {
            return FOLLOW_UP.to_string();
        }
        if h.is_multiple_of(3) {
            return format!(
                "User: How should I start learning to cook healthy meals at home, {}?",
                words(h, 1)
            );
        }
        return format!(
            "How should I {} the {} for my {} project?",
            words(h, 3),
            words(h >> 17, 2),
            words(h >> 33, 1)
        );
    }
    format!(
        "The answer is that you should {} it with the {}, and then it is {} for you.",
        words(h, 4),
        words(h >> 21, 2),
        words(h >> 41, 1)
    )
}

fn server(latency: Duration) -> FakeServer {
    FakeServer::start(FakeConfig {
        answer: Some(chat_model),
        latency,
        ..FakeConfig::default()
    })
}

fn chat_args<'a>(server: &'a FakeServer, turns: &'a str, target: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--mode",
        "chat",
        "--turns",
        turns,
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--target",
        target,
        "--concurrency",
        "4",
        "--json",
    ]
}

#[test]
fn conversations_of_k_exchanges_are_one_record_each_and_export_with_every_turn() {
    let server = server(Duration::ZERO);
    for env in Env::both() {
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        let seen = server.requests().len();
        let run = env.run(chat_args(&server, "3", "12")).expect_code(0);
        let s = run.json();
        assert_eq!(
            (&s["mode"], &s["turns"], &s["accepted"], &s["ending"]),
            (&"chat".into(), &3.into(), &12.into(), &"target".into()),
            "{}",
            run.stdout
        );
        let records = env.records();
        assert_eq!(s["conversations"], records.len());
        let accepted: Vec<_> = records
            .iter()
            .filter(|r| r.status == instill_core::Status::Accepted)
            .collect();
        assert_eq!(accepted.len(), 12, "{}", env.backend());
        // Every conversation judged cost its 6 requests. One process (SQLite) finishes every
        // conversation it begins (a batch may begin a few more than the target needs); workers
        // (Postgres) stop at the target with the turns in flight unanswered.
        let sent = server.requests().len() - seen;
        let whole = sent.is_multiple_of(6) || env.db.backend == "postgres";
        assert!(whole && sent >= 6 * records.len(), "{sent} requests");
        for r in &records {
            let r = &r.record;
            assert_eq!(r.history.len(), 2);
            assert!(r.history[0].0.starts_with("How should I"), "{r:?}");
            assert!(r.history[0].1.starts_with("The answer is"));
            assert_eq!(
                (r.history[1].0.as_str(), r.instruction.as_str()),
                (FOLLOW_UP, FOLLOW_UP)
            );
            assert!(r.output.starts_with("The answer is"));
        }
        // The planted near copies are judged by their first user turn: ROUGE-L duplicates.
        let copies: Vec<_> = records
            .iter()
            .filter(|r| r.record.history[0].0.contains("cook healthy meals"))
            .collect();
        assert!(copies.len() >= 2, "{} planted copies", copies.len());
        for r in &copies[1..] {
            assert_eq!(r.reason.as_deref(), Some("rouge_l"), "{r:?}");
        }
        assert!(
            records
                .iter()
                .all(|r| r.status == instill_core::Status::Accepted || r.reason.is_some())
        );
        // The batch rules and dedup judge the opening too: nothing more is rejected.
        let f = env
            .run(["filter", "--dry-run", "--json"])
            .expect_code(0)
            .json();
        assert_eq!(f["rejected"], 0, "{f}");
        for method in [
            &["--rouge-threshold", "0.7"][..],
            &["--exact", "--field", "instruction"][..],
        ] {
            let mut args = vec!["dedup", "--dry-run", "--json"];
            args.extend_from_slice(method);
            let d = env.run(args).expect_code(0).json();
            assert_eq!(d["rejected"], 0, "{method:?}: {d}");
        }
        exports_carry_every_turn(&env);
    }
}

/// The sharegpt and messages exports of the accepted conversations alternate user and
/// assistant turns, all six of them, in order.
fn exports_carry_every_turn(env: &Env) {
    env.run(["export", "--out", "sg", "--format", "sharegpt"])
        .expect_code(0);
    env.run(["export", "--out", "msg", "--format", "messages"])
        .expect_code(0);
    let want: Vec<Vec<String>> = env
        .records()
        .into_iter()
        .filter(|r| r.status == instill_core::Status::Accepted)
        .map(|r| {
            let mut turns: Vec<String> = r
                .record
                .history
                .iter()
                .flat_map(|e| [e.0.clone(), e.1.clone()])
                .collect();
            turns.extend([r.record.instruction.clone(), r.record.output.clone()]);
            turns
        })
        .collect();
    let sharegpt: Vec<Vec<String>> = exported(env, "sg")
        .iter()
        .map(|line| {
            let conv = line["conversations"].as_array().unwrap();
            for (i, turn) in conv.iter().enumerate() {
                assert_eq!(turn["from"], if i % 2 == 0 { "human" } else { "gpt" });
            }
            conv.iter()
                .map(|t| t["value"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(sharegpt, want, "{}: sharegpt", env.backend());
    let messages: Vec<Vec<String>> = exported(env, "msg")
        .iter()
        .map(|line| {
            let msgs = line["messages"].as_array().unwrap();
            for (i, m) in msgs.iter().enumerate() {
                assert_eq!(m["role"], if i % 2 == 0 { "user" } else { "assistant" });
            }
            msgs.iter()
                .map(|m| m["content"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(messages, want, "{}: messages", env.backend());
}

#[test]
fn one_exchange_is_a_record_without_history() {
    let server = server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let s = env.run(chat_args(&server, "1", "5")).expect_code(0).json();
    assert_eq!((&s["accepted"], &s["turns"]), (&5.into(), &1.into()));
    let records = env.records();
    let sent = server.requests().len();
    assert!(
        sent.is_multiple_of(2) && sent >= 2 * records.len(),
        "{sent} requests"
    );
    for r in records {
        assert!(r.record.history.is_empty());
        assert!(r.record.instruction.starts_with("How should I"));
        assert!(r.record.output.starts_with("The answer is"));
    }
}

#[test]
fn a_chat_run_killed_mid_conversation_resumes_to_the_uninterrupted_records() {
    // About 20 ms a request, 4 conversations at a time, 8 requests each: a few seconds a run.
    let server = server(Duration::from_millis(20));
    let args = chat_args(&server, "4", "40");
    let (reference, want) = one_process_export(&args);
    // Two conversations can draw the same seeds, hence the same prompts: only prompts that
    // belong to one request are checked for being sent twice.
    let shared: BTreeSet<u64> = {
        let mut seen = BTreeSet::new();
        stored_prompts(&reference)
            .into_iter()
            .filter(|h| !seen.insert(*h))
            .collect()
    };
    for env in Env::both() {
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        let mut kills = 0u64;
        let mut state = 0x9e37_79b9u64;
        loop {
            let stored_before: BTreeSet<u64> = stored_prompts(&env).into_iter().collect();
            let seen_before = server.requests().len();
            let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
                .args(&args)
                .arg("--no-progress")
                .env("INSTILL_DB", &env.db.url)
                .current_dir(env.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let done = if kills < 6 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                std::thread::sleep(Duration::from_millis(150 + state % 400));
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
            for (h, _) in &server.requests()[seen_before..] {
                assert!(
                    !stored_before.contains(h) || shared.contains(h),
                    "{}: a turn whose reply was stored was sent again",
                    env.backend()
                );
            }
            if let Some(status) = done {
                assert_eq!(status.code(), Some(0));
                break;
            }
        }
        assert!(kills >= 6, "{kills} kills");
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

/// The run of `args` by one process on a new SQLite file, and its export of every record.
fn one_process_export(args: &[&str]) -> (Env, Vec<u8>) {
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    reference
        .run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    reference.run(args).expect_code(0);
    reference
        .run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    let want = std::fs::read(reference.path("out/data/train/train-00000-of-00001.jsonl")).unwrap();
    (reference, want)
}

/// Hashes (as the fake server computes them) of the prompts of the stored replies.
fn stored_prompts(env: &Env) -> Vec<u64> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let mut out = Vec::new();
        if let Some(run) = db.find_run("en-chat-t4-s42").await.unwrap() {
            out = db
                .stored_prompts(run.id)
                .await
                .unwrap()
                .iter()
                .map(|p| prompt_hash(p))
                .collect();
        }
        db.close().await;
        out
    })
}

/// Starts `instill` with `args` on `env`'s database, quietly.
fn spawn(env: &Env, args: &[&str]) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(args)
        .arg("--no-progress")
        .env("INSTILL_DB", &env.db.url)
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the process `pid` has joined the run as a worker (so it listens for signals).
fn wait_registered(env: &Env, pid: u32) {
    let tag = format!("-{pid}-");
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let joined = block_on(async {
            let db = instill_storage::Db::open(&env.db.url).await.unwrap();
            let workers = db.live_workers(0, 0).await.unwrap();
            db.close().await;
            workers.iter().any(|w| w.worker.contains(&tag))
        });
        if joined {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("process {pid} never joined the run");
}

#[test]
fn processes_sharing_a_chat_run_on_postgres_write_the_single_process_records() {
    // About 20 ms a request, 4 turns in flight per process, 8 requests a conversation; a dead
    // worker's claims live 2 s.
    let server = server(Duration::from_millis(20));
    let mut args = chat_args(&server, "4", "24");
    args.extend(["--lease-seconds", "2"]);
    let (_reference, want) = one_process_export(&args);

    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let seen_before = server.requests().len();
    let mut workers: Vec<std::process::Child> = (0..4).map(|_| spawn(&env, &args)).collect();
    // One worker dies mid-run, without a word: its claimed turns go to the others once their
    // leases run out; the acceptor may be the one that died. Another is told to stop
    // (SIGTERM): it stores what arrived, gives its claims back and exits 143.
    std::thread::sleep(Duration::from_millis(700));
    wait_registered(&env, workers[1].id());
    workers[0].kill().unwrap(); // SIGKILL
    workers[0].wait().unwrap();
    let term = std::process::Command::new("kill")
        .args(["-s", "TERM", &workers[1].id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let stopped = workers.remove(1).wait_with_output().unwrap();
    assert_eq!(
        stopped.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    for w in workers.drain(1..) {
        let out = w.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The run is done: the same command sends nothing.
    let again = env.run(&args).expect_code(0).json();
    assert_eq!(
        (&again["accepted"], &again["requests_sent_now"]),
        (&24.into(), &0.into())
    );
    env.run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    let got = std::fs::read(env.path("out/data/train/train-00000-of-00001.jsonl")).unwrap();
    assert!(
        got == want,
        "the shared run's export differs from one process's"
    );
    // Each turn was sent once, besides those in flight when a worker died or stopped (4 each
    // at most).
    let stored = stored_prompts(&env).len();
    let sent = server.requests().len() - seen_before;
    assert!(
        stored <= sent && sent <= stored + 16,
        "{sent} requests sent for {stored} stored turns"
    );
}

#[test]
fn a_turn_cut_off_ends_its_conversation_and_the_last_answers_reasoning_is_kept() {
    let server = FakeServer::start(FakeConfig {
        answer: Some(chat_model),
        reasoning: crate::fake_openai::FakeReasoning::Field,
        faults: crate::fake_openai::Faults {
            length: 0.15,
            ..Default::default()
        },
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let seen = server.requests().len();
    env.run(chat_args(&server, "3", "12")).expect_code(0);
    let sent = server.requests().len() - seen;
    let records = env.records();
    let cut: Vec<_> = records
        .iter()
        .filter(|r| r.reason.as_deref() == Some("cut_off"))
        .collect();
    assert!(!cut.is_empty(), "no conversation was cut off");
    // A cut conversation stops at its cut turn: fewer than 6 requests each.
    assert!(
        sent < 6 * records.len(),
        "{sent} requests for {} conversations",
        records.len()
    );
    let accepted: Vec<_> = records
        .iter()
        .filter(|r| r.status == instill_core::Status::Accepted)
        .collect();
    assert_eq!(accepted.len(), 12);
    assert!(
        accepted.iter().any(|r| !r.record.reasoning.is_empty()),
        "the last answers' reasoning was dropped"
    );
    for r in &accepted {
        assert!(!r.record.reasoning.contains(&r.record.output), "{r:?}");
    }
}

#[test]
fn chat_flags_that_make_no_sense_are_refused_and_nothing_is_written() {
    let server = server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let base = chat_args(&server, "2", "3");
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut a = base.clone();
        a.extend_from_slice(extra);
        a
    };
    let zero = env.run(chat_args(&server, "0", "3")).expect_code(2);
    assert!(zero.stderr.contains("--turns"), "{}", zero.stderr);
    for (extra, flag) in [
        (&["--template", "mine.j2"][..], "--template"),
        (&["--n", "2"][..], "--n"),
        (
            &["--generated-per-prompt", "2"][..],
            "--generated-per-prompt",
        ),
        (&["--api", "completion"][..], "--api completion"),
        (&["--tasks-per-prompt", "5"][..], "--tasks-per-prompt"),
        (&["--system", "Be brief."][..], "--system"),
    ] {
        let r = env.run(with(extra)).expect_code(2);
        assert!(
            r.stderr
                .contains(&format!("{flag} does not apply to --mode chat")),
            "{}",
            r.stderr
        );
    }
    let r = env
        .run([
            "generate", "--turns", "3", "--target", "3", "--model", "fake",
        ])
        .expect_code(2);
    assert!(
        r.stderr.contains("--turns is for --mode chat"),
        "{}",
        r.stderr
    );
    assert_eq!(env.counts().0, 0);
    assert_eq!(server.requests().len(), 0);
    // A run resumed with other turns is refused, naming the setting.
    env.run(with(&["--run", "c"])).expect_code(0);
    let records = env.counts().0;
    let mut other = chat_args(&server, "3", "3");
    other.extend(["--run", "c"]);
    let r = env.run(other).expect_code(2);
    assert!(
        r.stderr.contains("other settings") && r.stderr.contains("settings.turns: 2 → 3"),
        "{}",
        r.stderr
    );
    assert_eq!(env.counts().0, records);
}
