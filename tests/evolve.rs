//! `instill evolve` against the fake OpenAI-compatible server: each elimination rule counted
//! exactly (planted in the seed tasks: a rewrite copying the prompt, an apology, a
//! punctuation-only answer, an "Equal" verdict, a verdict that says neither), failed tasks
//! staying in the pool, provenance (parent, round, operation) across rounds, SIGKILLs and
//! resume ending with the uninterrupted export (SQLite and Postgres), the exported layouts,
//! and bad flags refused with nothing written.

use std::time::Duration;

use instill_core::{EvolveOp, EvolvedFrom, Status};
use xxhash_rust::xxh3::xxh3_64;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, block_on, run_killed, words};

/// Tags planted in seed instructions, with the elimination each one draws every round.
const PLANTS: [(&str, &str); 5] = [
    ("[copy]", "evol_copied_prompt"),
    ("[sorry]", "evol_apology"),
    ("[dots]", "evol_stop_words"),
    ("[same]", "evol_no_gain"),
    ("[mumble]", "evol_unjudged"),
];

/// Untagged seed tasks: their rewrites survive.
const NORMAL: usize = 6;

/// The tag an instruction carries, if any.
fn tag(text: &str) -> Option<&'static str> {
    PLANTS.iter().map(|p| p.0).find(|t| text.contains(t))
}

/// The operation a rewrite prompt asks for, read from its method line.
fn op_of(prompt: &str) -> &'static str {
    [
        ("one new constraint", "add_constraints"),
        ("in more depth", "deepen"),
        ("more specific ones", "concretize"),
        ("several steps", "increase_reasoning"),
        ("concrete material", "complicate_input"),
        ("brand-new instruction", "breadth"),
    ]
    .iter()
    .find(|(m, _)| prompt.contains(m))
    .map_or("unknown", |(_, op)| op)
}

/// The fake model: rewrites (a new instruction naming its operation, the planted tag kept),
/// answers and the judge's verdicts, each drawn from the prompt.
fn evolve_model(prompt: &str) -> String {
    let h = xxh3_64(prompt.as_bytes());
    if let Some(given) = prompt.split("#Given Prompt#:\n").nth(1) {
        let given = given.split("\n\n#").next().unwrap_or("");
        return match tag(given) {
            Some("[copy]") => "#Rewritten Prompt#: restate the given prompt [copy] again.".into(),
            t => format!(
                "Please {} the {} of {}, op {} {}",
                words(h, 2),
                words(h >> 8, 2),
                words(h >> 16, 2),
                op_of(prompt),
                t.unwrap_or("")
            )
            .trim_end()
            .to_string(),
        };
    }
    if prompt.starts_with("Here are two instructions") {
        let second = prompt.split("Second instruction:").nth(1).unwrap_or("");
        return match tag(second) {
            Some("[same]") => "Equal".into(),
            Some("[mumble]") => "They look similar to me.".into(),
            _ => "Not Equal".into(),
        };
    }
    match tag(prompt) {
        Some("[sorry]") => "I'm sorry, but I cannot help with that.".into(),
        Some("[dots]") => "... !".into(),
        _ => format!(
            "The {} is {} and the {} can be {} for you.",
            words(h, 1),
            words(h >> 12, 2),
            words(h >> 24, 1),
            words(h >> 36, 2)
        ),
    }
}

fn server(latency: Duration) -> FakeServer {
    FakeServer::start(FakeConfig {
        answer: Some(evolve_model),
        latency,
        ..FakeConfig::default()
    })
}

/// Seed tasks: `NORMAL` plain ones, then one per planted tag.
fn seed_file(env: &Env) -> String {
    let mut lines = Vec::new();
    let topics = [
        "the water cycle",
        "a budget for a student",
        "how tides work",
        "a recipe for bread",
        "the rules of chess",
        "training for a marathon",
    ];
    for (i, t) in topics.iter().take(NORMAL).enumerate() {
        lines.push(serde_json::json!({"id": format!("n{i}"), "instruction": format!("Explain {t} to a ten year old child."), "instances": [{"input": "", "output": "It is simple."}]}).to_string());
    }
    for (i, (t, _)) in PLANTS.iter().enumerate() {
        lines.push(serde_json::json!({"id": format!("p{i}"), "instruction": format!("Describe planted case number {i} for the test {t}"), "instances": [{"input": "", "output": "Fine."}]}).to_string());
    }
    env.write("seeds.jsonl", lines.join("\n") + "\n");
    "seeds.jsonl".into()
}

fn evolve_args<'a>(server: &'a FakeServer, rounds: &'a str) -> Vec<&'a str> {
    vec![
        "evolve",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--rounds",
        rounds,
        "--concurrency",
        "4",
        "--json",
    ]
}

/// The run's evolved records with their provenance, in id order.
fn evolved(env: &Env, run: &str) -> Vec<instill_storage::EvolvedRecord> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let id = db.find_run(run).await.unwrap().unwrap().id;
        let out = db.evolved_records(id).await.unwrap();
        db.close().await;
        out
    })
}

#[test]
fn each_elimination_is_counted_and_failed_tasks_stay_in_the_pool() {
    let server = server(Duration::ZERO);
    for env in Env::both() {
        let seeds = seed_file(&env);
        env.run(["seeds", "import", &seeds]).expect_code(0);
        let run = env.run(evolve_args(&server, "2")).expect_code(0);
        let s = run.json();
        assert_eq!(
            (&s["ending"], &s["rounds_done"], &s["pool"]),
            (&"done".into(), &2.into(), &11.into()),
            "{}",
            run.stdout
        );
        let rounds = s["per_round"].as_array().unwrap();
        assert_eq!(rounds.len(), 2);
        for r in rounds {
            assert_eq!(r["evolved"], 11, "{r}");
            assert_eq!(r["kept"], NORMAL, "{r}");
            for (_, reason) in PLANTS {
                assert_eq!(r["eliminated"][reason], 1, "{reason}: {r}");
            }
            assert_eq!(r["rejected"], serde_json::json!({}), "{r}");
        }
        assert_eq!((&s["accepted"], &s["eliminated"]), (&12.into(), &10.into()));
        let records = evolved(&env, "evolve-seeds-s42");
        assert_eq!(records.len(), 22);
        let seed_ids: Vec<i64> = block_on(async {
            let db = instill_storage::Db::open(&env.db.url).await.unwrap();
            let ids = db
                .list_seeds(None)
                .await
                .unwrap()
                .iter()
                .map(|s| s.id)
                .collect();
            db.close().await;
            ids
        });
        let (first, second) = records.split_at(11);
        for (i, r) in first.iter().enumerate() {
            assert_eq!(r.evolution.round, 1);
            assert_eq!(r.evolution.from, EvolvedFrom::Seed(seed_ids[i]), "{r:?}");
        }
        for (i, r) in second.iter().enumerate() {
            assert_eq!(r.evolution.round, 2);
            // A kept rewrite is the next round's parent; a failed task stays in the pool.
            let want = if first[i].status == Status::Accepted {
                EvolvedFrom::Record(first[i].id)
            } else {
                EvolvedFrom::Seed(seed_ids[i])
            };
            assert_eq!(r.evolution.from, want, "{r:?}");
        }
        for r in &records {
            let op: EvolveOp = r.evolution.op;
            if r.status == Status::Accepted {
                assert!(
                    r.record.instruction.contains(&format!("op {op}")),
                    "{op}: {}",
                    r.record.instruction
                );
            }
        }
        // The operations are drawn, not fixed: more than one shows up.
        let mut ops: Vec<_> = records.iter().map(|r| r.evolution.op).collect();
        ops.sort();
        ops.dedup();
        assert!(ops.len() > 1, "{ops:?}");
        // The same command again sends nothing and changes nothing.
        let seen = server.requests().len();
        let again = env.run(evolve_args(&server, "2")).expect_code(0).json();
        assert_eq!(again["requests_sent_now"], 0);
        assert_eq!(server.requests().len(), seen);
        assert_eq!(evolved(&env, "evolve-seeds-s42").len(), 22);
        exports_load(&env, 12);
    }
}

/// The accepted records export in every layout, one line each, the evolved instruction and
/// its answer in place.
fn exports_load(env: &Env, accepted: usize) {
    for (format, check) in [
        ("alpaca", "instruction"),
        ("sharegpt", "conversations"),
        ("messages", "messages"),
    ] {
        let out = format!("out-{format}");
        env.run(["export", "--out", &out, "--format", format])
            .expect_code(0);
        let text = std::fs::read_to_string(
            env.path(&format!("{out}/data/train/train-00000-of-00001.jsonl")),
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), accepted, "{format}");
        for l in &lines {
            assert!(!l[check].is_null(), "{format}: {l}");
            assert!(l.to_string().contains("Please "), "{format}: {l}");
        }
    }
}

#[test]
fn an_evolve_run_killed_anywhere_resumes_to_the_uninterrupted_export() {
    // About 60 ms a request, 4 at a time, 11 tasks, 3 steps a round: a few seconds a run.
    let server = server(Duration::from_millis(60));
    let args = evolve_args(&server, "3");
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    let seeds = seed_file(&reference);
    reference.run(["seeds", "import", &seeds]).expect_code(0);
    reference.run(&args).expect_code(0);
    reference
        .run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    let want = std::fs::read(reference.path("out/data/train/train-00000-of-00001.jsonl")).unwrap();
    for env in Env::both() {
        let seeds = seed_file(&env);
        env.run(["seeds", "import", &seeds]).expect_code(0);
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
        assert_eq!(evolved(&env, "evolve-seeds-s42").len(), 33);
    }
}

#[test]
fn bad_flags_and_an_empty_pool_are_refused_and_nothing_is_written() {
    let server = server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let r = env.run(evolve_args(&server, "0")).expect_code(2);
    assert!(r.stderr.contains("--rounds"), "{}", r.stderr);
    let mut bad_op = evolve_args(&server, "1");
    bad_op.extend(["--ops", "depth,sideways"]);
    let r = env.run(bad_op).expect_code(2);
    assert!(
        r.stderr.contains("--ops sideways: unknown operation"),
        "{}",
        r.stderr
    );
    let r = env.run(evolve_args(&server, "1")).expect_code(2);
    assert!(
        r.stderr.contains("no seed tasks") && r.stderr.contains("seeds import"),
        "{}",
        r.stderr
    );
    let mut records = evolve_args(&server, "1");
    records.extend(["--from", "records"]);
    let r = env.run(records).expect_code(2);
    assert!(r.stderr.contains("no accepted"), "{}", r.stderr);
    assert_eq!(env.counts().0, 0);
    assert!(server.requests().is_empty());
    // A resumed run whose pool changed is refused, saying so.
    let seeds = seed_file(&env);
    env.run(["seeds", "import", &seeds]).expect_code(0);
    env.run(evolve_args(&server, "1")).expect_code(0);
    let before = env.counts().0;
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let r = env.run(evolve_args(&server, "2")).expect_code(2);
    assert!(
        r.stderr.contains("frozen when it started") && r.stderr.contains("11 seeds"),
        "{}",
        r.stderr
    );
    assert_eq!(env.counts().0, before);
}

#[test]
fn records_evolved_from_records_name_their_parent_record() {
    let server = server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let seeds = seed_file(&env);
    env.run(["seeds", "import", &seeds]).expect_code(0);
    env.run(evolve_args(&server, "1")).expect_code(0);
    // Round 1's six accepted rewrites become the pool of a run from records.
    let mut args = evolve_args(&server, "1");
    args.extend(["--from", "records", "--name", "again", "--limit", "4"]);
    let s = env.run(&args).expect_code(0).json();
    assert_eq!((&s["pool"], &s["from"]), (&4.into(), &"records".into()));
    let parents: Vec<i64> = evolved(&env, "evolve-seeds-s42")
        .iter()
        .filter(|r| r.status == Status::Accepted)
        .map(|r| r.id)
        .take(4)
        .collect();
    let got: Vec<EvolvedFrom> = evolved(&env, "again")
        .iter()
        .map(|r| r.evolution.from)
        .collect();
    assert_eq!(
        got,
        parents
            .into_iter()
            .map(EvolvedFrom::Record)
            .collect::<Vec<_>>()
    );
    // Resumed, the run's own records are not in its pool: nothing changes, nothing is sent.
    let seen = server.requests().len();
    let again = env.run(&args).expect_code(0).json();
    assert_eq!(
        (&again["pool"], &again["requests_sent_now"]),
        (&4.into(), &0.into())
    );
    assert_eq!(server.requests().len(), seen);
}
