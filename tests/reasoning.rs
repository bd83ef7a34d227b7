//! Reasoning kept, not dropped: `instill generate` against the fake server replying as
//! reasoning models do (DeepSeek's `reasoning_content`, vLLM's `reasoning`, `<think>` blocks in
//! the content or in each task, a reply cut off while thinking), on SQLite and Postgres; a
//! SIGKILLed and resumed run; filters and dedup that judge the answer, not the reasoning; every
//! export layout with `--reasoning keep|drop|inline`, read back by `import`.

use std::time::Duration;

use crate::fake_openai::{FakeConfig, FakeReasoning, FakeServer, reasoning_text};
use crate::util::{Env, block_on, run_killed};

/// A run asking for one new task per prompt (3 seeds shown, 4 tasks in the list): the reply's
/// reasoning is about that task.
fn one_task_args<'a>(server: &'a FakeServer, target: &'a str) -> Vec<&'a str> {
    vec![
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--target",
        target,
        "--tasks-per-prompt",
        "4",
        "--concurrency",
        "4",
        "--json",
    ]
}

fn server(reasoning: FakeReasoning, items: usize) -> FakeServer {
    FakeServer::start(FakeConfig {
        items,
        reasoning,
        ..FakeConfig::default()
    })
}

/// (status, reason, instruction, input, output) of every record, in id order: what the
/// verdicts judged.
fn judged(env: &Env) -> Vec<(String, Option<String>, String, String, String)> {
    env.records()
        .into_iter()
        .map(|r| {
            (
                r.status.to_string(),
                r.reason,
                r.record.instruction,
                r.record.input,
                r.record.output,
            )
        })
        .collect()
}

fn seeded(env: &Env) {
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
}

/// The reasoning stored on the requests of the run `name`, one entry per stored reply.
fn request_reasoning(env: &Env, name: &str) -> Vec<Option<String>> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let run = db.find_run(name).await.unwrap().unwrap();
        let rows = db.replies_page(run.id, -1, 100_000).await.unwrap();
        db.close().await;
        rows.into_iter().map(|r| r.reasoning).collect()
    })
}

#[test]
fn reasoning_goes_with_its_task_and_filters_and_dedup_judge_the_answer_alone() {
    let with = server(FakeReasoning::Field, 1);
    let without = server(FakeReasoning::None, 1);
    for env in Env::both() {
        let plain = Env::new(env.fresh_db());
        for e in [&env, &plain] {
            seeded(e);
        }
        let run = env.run(one_task_args(&with, "40")).expect_code(0).json();
        plain.run(one_task_args(&without, "40")).expect_code(0);
        assert_eq!(run["accepted"], 40, "{run}");
        let records = env.records();
        let carrying: Vec<_> = records
            .iter()
            .filter(|r| !r.record.reasoning.is_empty())
            .collect();
        // One reply in three sends `"reasoning_content": null`: those records have none.
        assert!(
            carrying.len() > records.len() / 2 && carrying.len() < records.len(),
            "{}: {} of {} records carry reasoning",
            env.backend(),
            carrying.len(),
            records.len()
        );
        for r in &carrying {
            assert!(r.record.reasoning.starts_with("As an AI language model"));
            assert!(!r.record.output.contains("As an AI") && !r.record.output.contains("<think>"));
        }
        // The reasoning trips self_reference and both blacklists wherever a rule would read
        // it, and is the same long text in every reply: judged as the answer, it would reject
        // records. Generation, filter and dedup decide exactly as without reasoning.
        assert_eq!(judged(&env), judged(&plain), "{}", env.backend());
        for e in [&env, &plain] {
            e.run(["filter"]).expect_code(0);
            e.run(["dedup"]).expect_code(0);
        }
        assert_eq!(judged(&env), judged(&plain), "{}", env.backend());
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(stats["with_reasoning"], carrying.len(), "{stats}");
        let stats = plain.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(stats["with_reasoning"], 0, "{stats}");
    }
}

#[test]
fn every_shape_servers_send_is_read_and_a_list_keeps_its_reasoning_on_the_request() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    seeded(&env);
    // One task per prompt: vLLM's field and a <think> block in the content.
    for (i, how) in [FakeReasoning::VllmField, FakeReasoning::Think]
        .into_iter()
        .enumerate()
    {
        let s = server(how, 1);
        let name = format!("one-{i}");
        let mut args = one_task_args(&s, "10");
        args.extend(["--run", &name]);
        env.run(&args).expect_code(0);
        let from_run: Vec<_> = env
            .records()
            .into_iter()
            .filter(|r| r.source == name)
            .collect();
        assert!(from_run.len() >= 10, "{how:?}: {} records", from_run.len());
        for r in from_run {
            assert!(r.record.reasoning.starts_with("As an AI"), "{how:?}: {r:?}");
            assert!(!r.record.output.contains("think>"), "{how:?}: {r:?}");
        }
    }
    // A list of eight tasks per reply: the reply's reasoning is about the whole list, so it
    // stays on the request row and no record carries it; a task's own <think> block is its own.
    for (how, name) in [
        (FakeReasoning::Field, "list"),
        (FakeReasoning::InTasks, "in-tasks"),
    ] {
        let s = server(how, 8);
        // The chain-of-thought template asks for each task's reasoning in a <think> block.
        let template = if how == FakeReasoning::InTasks {
            "cot"
        } else {
            "self_instruct"
        };
        let run = env
            .run([
                "generate",
                "--base-url",
                &s.base_url,
                "--model",
                "fake",
                "--lang",
                "en",
                "--template",
                template,
                "--target",
                "30",
                "--run",
                name,
                "--json",
            ])
            .expect_code(0)
            .json();
        assert_eq!(run["accepted"], 30, "{run}");
        let from_run: Vec<_> = env
            .records()
            .into_iter()
            .filter(|r| r.source == name)
            .collect();
        let stored = request_reasoning(&env, name);
        if how == FakeReasoning::Field {
            assert!(from_run.iter().all(|r| r.record.reasoning.is_empty()));
            assert!(stored.iter().flatten().any(|r| r.contains("As an AI")));
        } else {
            assert!(stored.iter().all(Option::is_none));
            for r in &from_run {
                assert!(r.record.reasoning.starts_with("As an AI"), "{r:?}");
                assert!(!r.record.output.contains("think>"), "{r:?}");
            }
        }
    }
}

#[test]
fn a_reply_cut_off_while_thinking_is_counted_and_yields_no_task() {
    let s = server(FakeReasoning::CutOff, 1);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    seeded(&env);
    let mut args = one_task_args(&s, "5");
    args.extend(["--max-requests", "6"]);
    let run = env.run(&args).expect_code(1).json();
    assert_eq!(run["ending"], "max_requests", "{run}");
    assert_eq!(run["accepted"], 0, "{run}");
    assert_eq!(run["replies_without_answer"], 6, "{run}");
    // Said in words too, with what to do about it.
    let mut words: Vec<&str> = one_task_args(&s, "5")
        .into_iter()
        .filter(|a| *a != "--json")
        .collect();
    words.extend(["--max-requests", "8"]);
    let again = env.run(&words).expect_code(1).stdout;
    assert!(again.contains("2 held reasoning but no answer"), "{again}");
    // The reasoning is stored on the requests, though no record came of them.
    let stored = request_reasoning(&env, "en-en-self_instruct-s42");
    assert!(stored.iter().flatten().count() >= 6, "{stored:?}");
}

#[test]
fn killed_and_resumed_reasoning_runs_end_with_the_uninterrupted_records() {
    let s = FakeServer::start(FakeConfig {
        items: 1,
        reasoning: FakeReasoning::Field,
        latency: Duration::from_millis(40),
        ..FakeConfig::default()
    });
    let export = |env: &Env| {
        env.run([
            "export", "--out", "out", "--status", "all", "--format", "messages",
        ])
        .expect_code(0);
        std::fs::read_to_string(env.path("out/data/train/train-00000-of-00001.jsonl")).unwrap()
    };
    let reference = Env::new(instill_storage::testing::TempDb::sqlite());
    seeded(&reference);
    reference.run(one_task_args(&s, "150")).expect_code(0);
    let want = export(&reference);
    assert!(want.contains("\"reasoning_content\":\"As an AI"), "{want}");
    for env in Env::both() {
        seeded(&env);
        let (code, kills) = run_killed(&env, &one_task_args(&s, "150"), 5, 0x5eed);
        assert_eq!(code, 0, "{}", env.backend());
        assert!(kills >= 3, "{}: {kills} kills", env.backend());
        assert!(
            export(&env) == want,
            "{}: the resumed export differs from the uninterrupted one",
            env.backend()
        );
    }
}

/// The last turn of an exported line: (answer text, `reasoning_content`).
fn last_turn(line: &serde_json::Value) -> (String, Option<String>) {
    if let Some(output) = line["output"].as_str() {
        return (output.to_string(), None);
    }
    let turns = line["messages"]
        .as_array()
        .or(line["conversations"].as_array())
        .unwrap();
    let last = turns.last().unwrap();
    let text = last["content"].as_str().or(last["value"].as_str()).unwrap();
    (
        text.to_string(),
        last["reasoning_content"].as_str().map(str::to_string),
    )
}

#[test]
fn every_layout_keeps_drops_or_inlines_the_reasoning_and_imports_it_back() {
    for env in Env::both() {
        // Imported: DeepSeek-style messages, one without reasoning.
        let file = env.write(
            "r1.jsonl",
            concat!(
                r#"{"messages":[{"role":"user","content":"What is 6*7?"},{"role":"assistant","content":"42","reasoning_content":"6*7 = 42."}]}"#,
                "\n",
                r#"{"messages":[{"role":"user","content":"Name a colour."},{"role":"assistant","content":"Blue."}]}"#,
                "\n",
            ),
        );
        env.run(["import", file.to_str().unwrap()]).expect_code(0);
        let inline = "<think>\n6*7 = 42.\n</think>\n\n42";
        for (format, mode, answer, field) in [
            ("messages", "keep", "42", Some("6*7 = 42.")),
            ("messages", "drop", "42", None),
            ("messages", "inline", inline, None),
            ("alpaca", "keep", inline, None),
            ("alpaca", "drop", "42", None),
            ("alpaca", "inline", inline, None),
            ("sharegpt", "keep", inline, None),
            ("sharegpt", "drop", "42", None),
            ("sharegpt", "inline", inline, None),
        ] {
            let out = format!("out-{format}-{mode}");
            env.run([
                "export",
                "--out",
                &out,
                "--format",
                format,
                "--reasoning",
                mode,
            ])
            .expect_code(0);
            let text = std::fs::read_to_string(
                env.path(&format!("{out}/data/train/train-00000-of-00001.jsonl")),
            )
            .unwrap();
            let lines: Vec<serde_json::Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
            let case = format!("{} {format} {mode}", env.backend());
            assert_eq!(
                last_turn(&lines[0]),
                (answer.to_string(), field.map(str::to_string)),
                "{case}"
            );
            // A record without reasoning: its answer alone; in `messages` keep, the field is
            // on every assistant message ("" when none) so every line has the same columns.
            let empty_field = (format == "messages" && mode == "keep").then(String::new);
            assert_eq!(
                last_turn(&lines[1]),
                ("Blue.".to_string(), empty_field),
                "{case}"
            );
            let manifest: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(env.path(&format!("{out}/manifest.json"))).unwrap(),
            )
            .unwrap();
            assert_eq!(manifest["reasoning"], mode, "{case}");
            let card = std::fs::read_to_string(env.path(&format!("{out}/README.md"))).unwrap();
            assert_eq!(
                card.contains("name: reasoning_content"),
                field.is_some(),
                "{case}"
            );
            // Imported again: the reasoning comes back unless it was dropped.
            let again = Env::new(env.fresh_db());
            let shard = env.path(&format!("{out}/data/train/train-00000-of-00001.jsonl"));
            again
                .run(["import", shard.to_str().unwrap()])
                .expect_code(0);
            let back = again.records();
            let want = if mode == "drop" { "" } else { "6*7 = 42." };
            assert_eq!(back[0].record.reasoning, want, "{case}");
            assert_eq!(back[0].record.output, "42", "{case}");
            assert_eq!(back[1].record.reasoning, "", "{case}");
        }
        #[cfg(feature = "parquet")]
        {
            env.run([
                "export",
                "--out",
                "pq",
                "--format",
                "messages",
                "--file-format",
                "parquet",
            ])
            .expect_code(0);
            let again = Env::new(env.fresh_db());
            let shard = env.path("pq/data/train/train-00000-of-00001.parquet");
            again
                .run(["import", shard.to_str().unwrap()])
                .expect_code(0);
            let back = again.records();
            assert_eq!(back[0].record.reasoning, "6*7 = 42.", "{}", env.backend());
            assert_eq!(back[1].record.reasoning, "", "{}", env.backend());
        }
    }
}

#[test]
fn the_fake_reasoning_would_trip_the_rules_if_they_read_it() {
    // Guards the test above: the text really is rejected when it is the answer.
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let line = serde_json::json!({"instruction": "Describe a calm morning walk.", "input": "",
        "output": reasoning_text(7)});
    env.write("bad.jsonl", format!("{line}\n"));
    env.run(["import", "bad.jsonl"]).expect_code(0);
    env.run(["filter"]).expect_code(0);
    let r = &env.records()[0];
    assert_eq!(r.status.to_string(), "rejected", "{r:?}");
}
