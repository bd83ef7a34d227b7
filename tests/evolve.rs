//! `instill evolve` against the fake OpenAI-compatible server: each elimination rule counted
//! exactly (planted in the seed tasks: a rewrite copying the prompt, an apology, a
//! punctuation-only answer, an "Equal" verdict, a verdict that says neither), failed tasks
//! staying in the pool, provenance (parent, round, operation) across rounds, SIGKILLs and
//! resume ending with the uninterrupted export (SQLite and Postgres), the exported layouts,
//! and bad flags refused with nothing written.

use std::collections::BTreeMap;
use std::time::Duration;

use instill_core::{EvolveOp, EvolvedFrom, Status};
use xxhash_rust::xxh3::xxh3_64;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, block_on, exported, run_killed, train_shard, words};

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
    let thinking = if prompt.ends_with(COT_ASK) {
        format!(
            "<think>1. {}. 2. {}.</think>",
            words(h >> 4, 2),
            words(h >> 20, 2)
        )
    } else {
        String::new()
    };
    let answer = match tag(prompt) {
        Some("[sorry]") => "I'm sorry, but I cannot help with that.".into(),
        Some("[dots]") => "... !".into(),
        _ => format!(
            "The {} is {} and the {} can be {} for you.",
            words(h, 1),
            words(h >> 12, 2),
            words(h >> 24, 1),
            words(h >> 36, 2)
        ),
    };
    thinking + &answer
}

/// How the English chain-of-thought answering prompt ends (`--template cot`).
const COT_ASK: &str = "Then write the final answer after </think>.";

/// The fake server, keeping every request's model and prompt.
fn server(latency: Duration) -> FakeServer {
    FakeServer::start(FakeConfig {
        answer: Some(evolve_model),
        latency,
        keep_bodies: true,
        ..FakeConfig::default()
    })
}

/// Which step a prompt the server received is: a rewrite, a judge's comparison or an answer.
fn step_of(prompt: &str) -> &'static str {
    if prompt.contains("#Given Prompt#") {
        "rewrite"
    } else if prompt.starts_with("Here are two instructions") {
        "judge"
    } else {
        "answer"
    }
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
        let rounds = s["per_round"].as_object().unwrap();
        assert_eq!(rounds.keys().collect::<Vec<_>>(), ["1", "2"]);
        for r in rounds.values() {
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
        stats_and_report_break_it_down(&env, &records);
        card_and_manifest_say_what_was_evolved(&env, &records);
    }
}

/// `stats --json`'s `evolve` object: exact numbers per run, round and operation (the
/// operations counted from the stored records), the text view's lines, and the report showing
/// every one of those numbers under its path.
fn stats_and_report_break_it_down(env: &Env, records: &[instill_storage::EvolvedRecord]) {
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    let run = &stats["evolve"]["evolve-seeds-s42"];
    assert_eq!(
        (&run["evolved"], &run["kept"], &run["rejected"]),
        (&22.into(), &12.into(), &serde_json::json!({})),
        "{run}"
    );
    for (_, reason) in PLANTS {
        assert_eq!(run["eliminated"][reason], 2, "{reason}: {run}");
    }
    let rounds = run["rounds"].as_object().unwrap();
    assert_eq!(rounds.keys().collect::<Vec<_>>(), ["1", "2"]);
    for (round, r) in rounds {
        assert_eq!(
            (&r["evolved"], &r["kept"]),
            (&11.into(), &NORMAL.into()),
            "{r}"
        );
        for (_, reason) in PLANTS {
            assert_eq!(r["eliminated"][reason], 1, "{reason}: {r}");
        }
        let mut want: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        for e in records
            .iter()
            .filter(|e| e.evolution.round.to_string() == *round)
        {
            let w = want.entry(e.evolution.op.to_string()).or_default();
            w.0 += 1;
            w.1 += i64::from(e.status == Status::Accepted);
        }
        let got: BTreeMap<String, (i64, i64)> = r["ops"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(op, t)| {
                let n = |k: &str| t[k].as_i64().unwrap();
                (op.clone(), (n("evolved"), n("kept")))
            })
            .collect();
        assert_eq!(got, want, "round {round}");
    }
    let text = env.run(["stats"]).expect_code(0).stdout;
    assert!(
        text.contains("evolve-seeds-s42: 22 evolved, 12 kept, 10 eliminated, 0 rejected")
            && text.contains("round 2: 11 evolved, 6 kept, 5 eliminated, 0 rejected"),
        "{text}"
    );
    env.run(["report", "--out", "report.html"]).expect_code(0);
    let html = std::fs::read_to_string(env.path("report.html")).unwrap();
    let mut want = Vec::new();
    crate::report::flatten("evolve", &stats["evolve"], &mut want);
    assert!(want.len() > 30, "{want:?}");
    let shown = crate::report::data_values(&html);
    for (k, v) in &want {
        assert_eq!(shown.get(k), Some(v), "{k} in the report");
    }
    assert!(html.contains("id=\"evolve\""));
}

/// The export's card and manifest: how many exported records were evolved, from seed tasks or
/// records, round by round.
fn card_and_manifest_say_what_was_evolved(env: &Env, records: &[instill_storage::EvolvedRecord]) {
    let kept = |round: u32, seed: bool| {
        records
            .iter()
            .filter(|e| e.status == Status::Accepted && e.evolution.round == round)
            .filter(|e| matches!(e.evolution.from, EvolvedFrom::Seed(_)) == seed)
            .count()
    };
    let card = std::fs::read_to_string(env.path("out-alpaca/README.md")).unwrap();
    let (seeds, from_records) = (kept(1, true) + kept(2, true), kept(2, false));
    assert_eq!(kept(1, false), 0);
    assert!(
        from_records > 0,
        "a kept rewrite is evolved again in round 2"
    );
    for line in [
        "12 of them were evolved by `instill evolve`".to_string(),
        format!("over 2 rounds: {seeds} rewritten from a seed task, {from_records} from a record"),
        format!(
            "round 1: 6 (6 from seed tasks, 0 from records); round 2: 6 ({} from seed tasks, {from_records} from records)",
            kept(2, true)
        ),
    ] {
        assert!(card.contains(&line), "{line}\n{card}");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.path("out-alpaca/manifest.json")).unwrap())
            .unwrap();
    assert_eq!(
        manifest["evolved"],
        serde_json::json!({
            "records": 12, "from_seeds": seeds, "from_records": from_records,
            "runs": {"evolve-seeds-s42": {"1": 6, "2": 6}},
        })
    );
}

#[test]
fn cot_answers_and_a_judge_model_of_its_own() {
    let server = server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let seeds = seed_file(&env);
    env.run(["seeds", "import", &seeds]).expect_code(0);
    let mut args = evolve_args(&server, "1");
    args.extend(["--template", "cot", "--judge-model", "fake-judge"]);
    let s = env.run(&args).expect_code(0).json();
    assert_eq!(s["accepted"], NORMAL, "{s}");
    // The cot answering prompt: the rewrite, then the template's request for reasoning.
    let template = std::fs::read_to_string(crate::util::repo(
        "prompts/templates/en/evolve_answer_cot.j2",
    ))
    .unwrap();
    let ask = template.trim_end().rsplit("\n\n").next().unwrap();
    assert!(ask.ends_with(COT_ASK), "{ask}");
    let bodies = server.bodies();
    let mut steps: BTreeMap<&str, usize> = BTreeMap::new();
    let rewrites = env.records();
    for (model, prompt) in &bodies {
        let step = step_of(prompt);
        *steps.entry(step).or_default() += 1;
        // The judge's requests go to its model, the others to --model.
        let want = if step == "judge" {
            "fake-judge"
        } else {
            "fake"
        };
        assert_eq!(model, want, "{step}: {prompt}");
        if step == "answer" {
            let (rewrite, rest) = prompt.split_once("\n\n").unwrap();
            assert_eq!(rest.trim_end(), ask, "{prompt}");
            assert!(
                rewrites.iter().any(|r| r.record.instruction == rewrite),
                "an answer to something never rewritten: {rewrite}"
            );
        }
    }
    // [copy]'s rewrite is eliminated before it is answered, [sorry]'s and [dots]'s answers
    // before they are judged.
    assert_eq!(
        steps,
        BTreeMap::from([("rewrite", 11), ("answer", 10), ("judge", 8)]),
        "{steps:?}"
    );
    // The reasoning is kept beside the answer, not in it.
    let accepted: Vec<_> = rewrites
        .iter()
        .filter(|r| r.status == Status::Accepted)
        .collect();
    assert_eq!(accepted.len(), NORMAL);
    for r in accepted {
        assert!(r.record.reasoning.starts_with("1. "), "{:?}", r.record);
        assert!(!r.record.output.contains("think>"), "{:?}", r.record);
    }
    // A plain run's answering prompt is the rewrite alone.
    let seen = bodies.len();
    let mut plain = evolve_args(&server, "1");
    plain.extend(["--name", "plain"]);
    env.run(&plain).expect_code(0);
    for (model, prompt) in &server.bodies()[seen..] {
        assert_eq!(model, "fake");
        if step_of(prompt) == "answer" {
            assert!(
                !prompt.contains(COT_ASK) && !prompt.contains("\n\n"),
                "{prompt}"
            );
        }
    }
}

#[test]
fn a_second_evolve_on_a_running_run_is_refused_and_writes_nothing() {
    // What one process alone sends.
    let alone = server(Duration::ZERO);
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    let seeds = seed_file(&reference);
    reference.run(["seeds", "import", &seeds]).expect_code(0);
    reference.run(evolve_args(&alone, "3")).expect_code(0);
    let want = alone.requests().len();
    for db in [
        instill_storage::testing::TempDb::sqlite(),
        instill_storage::testing::TempDb::postgres(),
    ] {
        let backend = db.backend;
        // About 150 ms a request, 4 at a time, 11 tasks, 3 steps a round, 3 rounds: a few
        // seconds, longer than the second process waits for the run's lock.
        let server = server(Duration::from_millis(150));
        let env = Env::new(db);
        let seeds = seed_file(&env);
        env.run(["seeds", "import", &seeds]).expect_code(0);
        let args = evolve_args(&server, "3");
        let first = env.spawn(&args);
        let started = std::time::Instant::now();
        while server.requests().is_empty() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let second = env.run(&args);
        let first = first.wait_with_output().unwrap();
        assert_eq!(first.status.code(), Some(0), "{backend}: {first:?}");
        assert_eq!(second.code, 2, "{backend}: {}", second.stdout);
        assert!(second.stdout.is_empty(), "{backend}: {}", second.stdout);
        let why = if backend == "postgres" {
            "run `evolve-seeds-s42` is being evolved by another process"
        } else {
            "another `instill evolve` is writing to this SQLite database"
        };
        assert!(second.stderr.contains(why), "{backend}: {}", second.stderr);
        // The refused process sent nothing and wrote no records.
        assert_eq!(server.requests().len(), want, "{backend}");
        assert_eq!(evolved(&env, "evolve-seeds-s42").len(), 33, "{backend}");
        assert_eq!(env.counts().0, 33, "{backend}");
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
        let lines = exported(env, &out);
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
    let want = train_shard(&reference, "out");
    for env in Env::both() {
        let seeds = seed_file(&env);
        env.run(["seeds", "import", &seeds]).expect_code(0);
        let (code, kills) = run_killed(&env, &args, 5, 0x5eed);
        assert_eq!(code, 0, "{}", env.backend());
        assert!(kills >= 3, "{}: {kills} kills", env.backend());
        env.run(["export", "--out", "out", "--status", "all"])
            .expect_code(0);
        assert!(
            train_shard(&env, "out") == want,
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
