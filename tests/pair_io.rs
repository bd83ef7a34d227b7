//! Preference pairs in and out: a database holding a judged set (written with the storage API as
//! `instill pairs` writes it: scores, reasoning, a system prompt and earlier turns, an
//! instruction without a pair) and an imported one, exported in every pair layout, each loaded by
//! `datasets` and LLaMA-Factory's loader (emulated, `tests/py/load_export.py`), imported back
//! and exported again to the same lines; UltraFeedback-binarized rows in the Hub's schema (JSONL
//! and Parquet) with their scores; the pair-set choice; bad rows naming file, line and field and
//! writing nothing.

use std::path::PathBuf;

use instill_core::{Answer, Exchange, NoPair, Record};
use instill_storage::{Db, NewPreference, StatusFilter, StoredPair};
use serde_json::{Value, json};

use crate::util::{Env, block_on, repo};

/// The instructions of the judged set: (instruction, input, system, history, chosen, its
/// reasoning, rejected, chosen and rejected grades).
type Judged = (
    &'static str,
    &'static str,
    &'static str,
    Vec<Exchange>,
    &'static str,
    &'static str,
    &'static str,
    f64,
    f64,
);

fn judged() -> Vec<Judged> {
    vec![
        (
            "解释光合作用。",
            "",
            "",
            vec![],
            "光合作用把光能变成化学能。",
            "先回忆定义",
            "不知道",
            9.0,
            2.0,
        ),
        (
            "Name three primes.",
            "small ones",
            "",
            vec![],
            "2, 3 and 5.",
            "",
            "4, 6, 8",
            8.0,
            1.0,
        ),
        (
            "And in French?",
            "",
            "You translate.",
            vec![Exchange("Say hello".into(), "Hello".into())],
            "Bonjour",
            "French greeting",
            "Hola",
            7.0,
            3.0,
        ),
        (
            "Write \"quoted\"\ntext",
            "",
            "",
            vec![],
            "\"quoted\"\ntext 🎉",
            "",
            "no",
            6.0,
            5.0,
        ),
        (
            "如何煮米饭？",
            "电饭锅",
            "",
            vec![],
            "洗米，加水，按下开关。",
            "",
            "用微波炉",
            9.5,
            4.5,
        ),
    ]
}

/// Imports the judged set's prompts and stores its pairs (and one instruction without a pair)
/// as `instill pairs` stores them, with the storage API.
fn judged_database(env: &Env) {
    let mut lines = String::new();
    for (instruction, input, system, history, ..) in judged() {
        let history: Vec<[&str; 2]> = history
            .iter()
            .map(|e| [e.0.as_str(), e.1.as_str()])
            .collect();
        lines.push_str(
            &json!({"instruction": instruction, "input": input, "output": "old",
            "system": system, "history": history})
            .to_string(),
        );
        lines.push('\n');
    }
    lines.push_str("{\"instruction\":\"A lonely one\",\"output\":\"old\"}\n");
    let file = env.write("prompts.jsonl", lines);
    env.run(["import", file.to_str().unwrap()]).expect_code(0);
    let ids: Vec<i64> = env
        .records()
        .iter()
        .filter(|r| r.source == "prompts")
        .map(|r| r.id)
        .collect();
    block_on(async {
        let db = Db::open(&env.db.url).await.unwrap();
        let mut rows = Vec::new();
        for (i, (.., chosen, reasoning, rejected, cs, rs)) in judged().into_iter().enumerate() {
            let answer = |text: &str, reasoning: &str, score| Answer {
                text: text.into(),
                reasoning: reasoning.into(),
                score: Some(score),
            };
            rows.push(NewPreference {
                record_id: ids[i],
                run_id: None,
                import_id: None,
                no_pair: None,
                chosen: Some((answer(chosen, reasoning, cs), Some(0))),
                rejected: Some((answer(rejected, "", rs), Some(1))),
                samples: 4,
                graded: 4,
                created_at: 1,
            });
        }
        rows.push(NewPreference {
            record_id: ids[5],
            run_id: None,
            import_id: None,
            no_pair: Some(NoPair::SmallMargin),
            chosen: None,
            rejected: None,
            samples: 4,
            graded: 4,
            created_at: 1,
        });
        let mut w = db.writer().await.unwrap();
        w.insert_preferences("judged", &rows).await.unwrap();
        w.commit().await.unwrap();
        db.close().await;
    });
}

/// Every stored pair of `set` (every set when None), in id order.
fn pairs(env: &Env, set: Option<&str>) -> Vec<StoredPair> {
    block_on(async {
        let db = Db::open(&env.db.url).await.unwrap();
        let page = db
            .pairs_page(set, StatusFilter::All, 0, 1000)
            .await
            .unwrap();
        db.close().await;
        page
    })
}

/// What `datasets`, pyarrow and LLaMA-Factory's loader saw in the export `dir`.
fn load(env: &Env, dir: &str) -> Value {
    let python =
        std::env::var_os("INSTILL_PYTHON").expect("INSTILL_PYTHON (a Python with datasets)");
    let root = env.path(dir);
    let out = std::process::Command::new(python)
        .arg(repo("tests/py/load_export.py"))
        .arg(&root)
        .env("HF_DATASETS_CACHE", root.with_extension("hf-cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load_export.py failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// The lines of every shard of the export `dir`, sorted.
fn lines(env: &Env, dir: &str) -> Vec<String> {
    let mut all = Vec::new();
    for split in ["train", "validation"] {
        let Ok(entries) = std::fs::read_dir(env.path(&format!("{dir}/data/{split}"))) else {
            continue;
        };
        for e in entries {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            all.extend(text.lines().map(str::to_string));
        }
    }
    all.sort();
    all
}

/// The shard files of the export `dir`, for `import`.
fn shard_files(env: &Env, dir: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for split in ["train", "validation"] {
        if let Ok(entries) = std::fs::read_dir(env.path(&format!("{dir}/data/{split}"))) {
            files.extend(entries.map(|e| e.unwrap().path()));
        }
    }
    files.sort();
    files
}

/// A judged pair as `datasets` gives back its `dpo-messages` row (the reasoning field on every
/// answer, since some have reasoning).
fn messages_row(p: &Judged) -> Value {
    let (instruction, input, system, history, chosen, reasoning, rejected, ..) = p;
    let mut prompt = Vec::new();
    if !system.is_empty() {
        prompt.push(json!({"role": "system", "content": system}));
    }
    for Exchange(u, a) in history {
        prompt.push(json!({"role": "user", "content": u}));
        prompt.push(json!({"role": "assistant", "content": a}));
    }
    let user = Record::new(*instruction, *input, "").user_turn();
    prompt.push(json!({"role": "user", "content": user}));
    json!({
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": chosen, "reasoning_content": reasoning}],
        "rejected": [{"role": "assistant", "content": rejected, "reasoning_content": ""}],
    })
}

/// Every row `datasets` loaded, all splits, sorted by their JSON text.
fn loaded_rows(seen: &Value) -> Vec<String> {
    let mut rows: Vec<String> = seen["datasets"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|s| s["rows"].as_array().unwrap().iter().map(Value::to_string))
        .collect();
    rows.sort();
    rows
}

#[test]
fn every_pair_layout_loads_with_datasets_and_imports_back_to_the_same_lines() {
    for env in Env::both() {
        judged_database(&env);
        // dpo-messages: every pair, reasoning in its field, a validation split by the prompt.
        env.run([
            "export",
            "--out",
            "msgs",
            "--format",
            "dpo-messages",
            "--val-fraction",
            "0.4",
            "--seed",
            "3",
        ])
        .expect_code(0);
        let seen = load(&env, "msgs");
        let mut want: Vec<String> = judged()
            .iter()
            .map(|p| messages_row(p).to_string())
            .collect();
        want.sort();
        assert_eq!(loaded_rows(&seen), want, "{}", env.backend());
        let val = seen["datasets"]["validation"]["rows"]
            .as_array()
            .map_or(0, Vec::len);
        let held: usize = pairs(&env, Some("judged"))
            .iter()
            .filter(|p| p.pair.held_out(3, 0.4))
            .count();
        assert_eq!(val, held);
        assert!(!env.path("msgs/dataset_info.json").exists());
        let card = std::fs::read_to_string(env.path("msgs/README.md")).unwrap();
        assert!(card.contains("| judged | `instill pairs`"), "{card}");
        assert!(card.contains("| 5 | 5 | 4.8 |"), "the mean margin: {card}");
        assert!(card.contains("1 `small_margin`"), "{card}");
        let manifest: Value =
            serde_json::from_str(&std::fs::read_to_string(env.path("msgs/manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["format"], "dpo-messages");
        assert_eq!(manifest["pairs"][0]["pairs"], 5);

        // lf-ranking: LLaMA-Factory reads it as pairwise examples.
        env.run(["export", "--out", "rank", "--format", "lf-ranking"])
            .expect_code(0);
        let seen = load(&env, "rank");
        let lf = &seen["llamafactory"]["rank"]["rows"];
        assert_eq!(lf.as_array().map(Vec::len), Some(5), "{seen}");
        let french = lf
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["rejected"] == "Hola")
            .unwrap();
        assert_eq!(
            french,
            &json!({"system": "You translate.", "turns": [["user", "Say hello"], ["assistant", "Hello"],
                ["user", "And in French?"]], "chosen": "<think>\nFrench greeting\n</think>\n\nBonjour",
                "rejected": "Hola"})
        );
        let info: Value = serde_json::from_str(
            &std::fs::read_to_string(env.path("rank/dataset_info.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(info["rank"]["ranking"], true);

        // Its sharegpt-style form: the same pairwise examples.
        env.run([
            "export",
            "--out",
            "rank-sg",
            "--format",
            "lf-ranking-sharegpt",
        ])
        .expect_code(0);
        let seen_sg = load(&env, "rank-sg");
        assert_eq!(
            seen_sg["llamafactory"]["rank-sg"]["rows"],
            seen["llamafactory"]["rank"]["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    // The sharegpt user turn joins instruction and input with a blank line.
                    let mut r = r.clone();
                    if r["rejected"] == "4, 6, 8" {
                        r["turns"][0][1] = json!("Name three primes.\n\nsmall ones");
                    }
                    if r["rejected"] == "用微波炉" {
                        r["turns"][0][1] = json!("如何煮米饭？\n\n电饭锅");
                    }
                    r
                })
                .collect::<Value>()
        );
        assert_eq!(loaded_rows(&seen_sg).len(), 5);

        // dpo cannot say a system prompt or earlier turns: refused, counted, nothing written.
        let run = env
            .run(["export", "--out", "dpo", "--format", "dpo"])
            .expect_code(2);
        assert!(
            run.stderr.contains("1 of the 5 pairs") && run.stderr.contains("dpo-messages"),
            "{}",
            run.stderr
        );
        assert!(!env.path("dpo").exists());

        // Each layout imported back into a fresh database exports the same lines again.
        for (dir, format) in [
            ("msgs", "dpo-messages"),
            ("rank", "lf-ranking"),
            ("rank-sg", "lf-ranking-sharegpt"),
        ] {
            let back = Env::new(env.fresh_db());
            let mut args = vec!["import".to_string(), "--source".into(), "back".into()];
            args.extend(["--format".to_string(), format.to_string()]);
            args.extend(
                shard_files(&env, dir)
                    .iter()
                    .map(|p| p.display().to_string()),
            );
            let run = back.run(&args).expect_code(0);
            assert!(run.stdout.contains("preference pair"), "{}", run.stdout);
            assert_eq!(back.records().len(), 5);
            back.run(["export", "--out", "again", "--format", format])
                .expect_code(0);
            assert_eq!(
                lines(&back, "again"),
                lines(&env, dir),
                "{format} {}",
                env.backend()
            );
        }
    }
}

#[test]
fn dpo_text_pairs_load_and_import_back_and_the_set_is_chosen_by_name() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    judged_database(&env);
    let file = env.write(
        "trl.jsonl",
        "{\"prompt\":\"Capital of France?\",\"chosen\":\"Paris\",\"rejected\":\"Lyon\"}\n\
         {\"prompt\":\"2+2?\",\"chosen\":\"<think>\\nadd\\n</think>\\n\\n4\",\"rejected\":\"5\"}\n",
    );
    env.run(["import", file.to_str().unwrap()]).expect_code(0);
    // Two sets: naming none is an error that lists them.
    let run = env
        .run(["export", "--out", "x", "--format", "dpo"])
        .expect_code(2);
    assert!(
        run.stderr.contains("judged (5 pairs), trl (2 pairs)"),
        "{}",
        run.stderr
    );
    let run = env
        .run(["export", "--out", "x", "--format", "dpo", "--pairs", "nope"])
        .expect_code(2);
    assert!(
        run.stderr.contains("--pairs nope: no such pair set"),
        "{}",
        run.stderr
    );
    let run = env
        .run([
            "export", "--out", "x", "--format", "alpaca", "--pairs", "trl",
        ])
        .expect_code(2);
    assert!(
        run.stderr.contains("--pairs chooses preference pairs"),
        "{}",
        run.stderr
    );
    assert!(!env.path("x").exists());
    env.run([
        "export",
        "--out",
        "dpo",
        "--format",
        "dpo",
        "--pairs",
        "trl",
        "--reasoning",
        "drop",
    ])
    .expect_code(0);
    // What export did not write is never replaced; its own earlier export is, with --overwrite.
    std::fs::create_dir(env.path("mine")).unwrap();
    env.write("mine/notes.txt", "keep me");
    env.run([
        "export",
        "--out",
        "mine",
        "--format",
        "dpo",
        "--pairs",
        "trl",
        "--overwrite",
    ])
    .expect_code(2);
    assert_eq!(
        std::fs::read_to_string(env.path("mine/notes.txt")).unwrap(),
        "keep me"
    );
    env.run([
        "export",
        "--out",
        "dpo",
        "--format",
        "dpo",
        "--pairs",
        "trl",
        "--reasoning",
        "drop",
    ])
    .expect_code(2);
    env.run([
        "export",
        "--out",
        "dpo",
        "--format",
        "dpo",
        "--pairs",
        "trl",
        "--reasoning",
        "drop",
        "--overwrite",
    ])
    .expect_code(0);
    let seen = load(&env, "dpo");
    assert_eq!(
        seen["datasets"]["train"]["rows"],
        json!([{"prompt": "Capital of France?", "chosen": "Paris", "rejected": "Lyon"},
               {"prompt": "2+2?", "chosen": "4", "rejected": "5"}])
    );
    // LLaMA-Factory reads trl's text layout too: the prompt as the instruction.
    assert_eq!(
        seen["llamafactory"]["dpo"]["rows"][0],
        json!({"system": "", "turns": [["user", "Capital of France?"]], "chosen": "Paris", "rejected": "Lyon"})
    );
    // Both sets at once, zstd-compressed: datasets reads them.
    env.run([
        "export",
        "--out",
        "both",
        "--format",
        "dpo-messages",
        "--pairs",
        "all",
        "--compress",
        "zstd",
    ])
    .expect_code(0);
    assert_eq!(loaded_rows(&load(&env, "both")).len(), 7);
    // Imported back, the record of a pair is its prompt answered by the chosen answer.
    let back = Env::new(env.fresh_db());
    back.run([
        "import",
        env.path("dpo/data/train/train-00000-of-00001.jsonl")
            .to_str()
            .unwrap(),
    ])
    .expect_code(0);
    let records: Vec<Record> = back.records().into_iter().map(|r| r.record).collect();
    assert_eq!(records[1], Record::new("2+2?", "", "4"));
}

/// UltraFeedback-binarized's rows, in the Hub's schema (`prompt`, `prompt_id`, `chosen` and
/// `rejected` full conversations, `messages`, `score_chosen`, `score_rejected`).
fn ultrafeedback_rows() -> Vec<Value> {
    let row = |prompt: &str, id: &str, good: &str, bad: &str, sc: f64, sr: f64| {
        let conv = |a: &str| json!([{"content": prompt, "role": "user"}, {"content": a, "role": "assistant"}]);
        json!({"prompt": prompt, "prompt_id": id, "chosen": conv(good), "rejected": conv(bad),
               "messages": conv(good), "score_chosen": sc, "score_rejected": sr})
    };
    vec![
        row(
            "How do I sort a list in Python?",
            "a1f3",
            "Use sorted(xs) or xs.sort().",
            "You can't.",
            9.0,
            2.5,
        ),
        row(
            "What is the boiling point of water?",
            "b2e4",
            "100 °C at sea level.",
            "50 °C.",
            8.5,
            1.0,
        ),
        row(
            "用一句话介绍长城。",
            "c3d5",
            "长城是中国古代的军事防御工程。",
            "长城是一条河。",
            10.0,
            3.0,
        ),
    ]
}

#[test]
fn ultrafeedback_binarized_rows_import_with_their_scores_from_jsonl_and_parquet() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let jsonl: String = ultrafeedback_rows()
        .iter()
        .map(|r| format!("{r}\n"))
        .collect();
    let file = env.write("train_prefs.jsonl", &jsonl);
    let run = env
        .run(["import", file.to_str().unwrap(), "--source", "uf"])
        .expect_code(0);
    assert!(
        run.stdout.contains("3 preference pairs (set `uf`) (dpo)"),
        "{}",
        run.stdout
    );
    type Row = (String, String, String, Option<f64>, Option<f64>);
    let got: Vec<Row> = pairs(&env, Some("uf"))
        .into_iter()
        .map(|p| {
            let q = p.pair;
            (
                q.prompt.instruction,
                q.chosen.text,
                q.rejected.text,
                q.chosen.score,
                q.rejected.score,
            )
        })
        .collect();
    assert_eq!(
        got[2],
        (
            "用一句话介绍长城。".into(),
            "长城是中国古代的军事防御工程。".into(),
            "长城是一条河。".into(),
            Some(10.0),
            Some(3.0)
        )
    );
    assert_eq!(got.len(), 3);
    // The records are SFT records too: the prompt answered by the chosen answer.
    assert_eq!(
        env.records()[0].record,
        Record::new(
            "How do I sort a list in Python?",
            "",
            "Use sorted(xs) or xs.sort()."
        )
    );
    env.run(["export", "--out", "uf", "--format", "dpo"])
        .expect_code(0);
    let card = std::fs::read_to_string(env.path("uf/README.md")).unwrap();
    assert!(card.contains("| uf | imported | 3 | 3 | 7 |"), "{card}");

    // The same rows as Parquet (UltraFeedback ships Parquet), written by pyarrow.
    let python = std::env::var_os("INSTILL_PYTHON").expect("INSTILL_PYTHON");
    let parquet = env.path("train_prefs.parquet");
    let status = std::process::Command::new(python)
        .args(["-c", "import sys, json, pyarrow as pa, pyarrow.parquet as pq; rows=[json.loads(l) for l in open(sys.argv[1])]; pq.write_table(pa.Table.from_pylist(rows), sys.argv[2])"])
        .arg(&file)
        .arg(&parquet)
        .status()
        .unwrap();
    assert!(status.success());
    let other = Env::new(instill_storage::testing::TempDb::sqlite());
    other
        .run(["import", parquet.to_str().unwrap(), "--source", "uf"])
        .expect_code(0);
    let from_parquet: Vec<_> = pairs(&other, Some("uf"))
        .into_iter()
        .map(|p| p.pair)
        .collect();
    let from_jsonl: Vec<_> = pairs(&env, Some("uf"))
        .into_iter()
        .map(|p| p.pair)
        .collect();
    assert_eq!(from_parquet, from_jsonl);
}

#[test]
fn bad_pair_rows_name_file_line_and_field_and_write_nothing() {
    let dpo = r#"{"prompt":"p","chosen":"a","rejected":"b"}"#;
    let ranking = r#"{"instruction":"i","chosen":"a","rejected":"b"}"#;
    let cases = [
        (
            r#"{"prompt":"p","rejected":"b","chosen_score":1}"#,
            "field `chosen`: missing",
        ),
        (
            r#"{"prompt":"p","chosen":{"text":"a"},"rejected":"b"}"#,
            "field `chosen`: invalid type: object",
        ),
        (
            r#"{"prompt":[{"role":"user","content":"q"}],"chosen":[{"role":"user","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]}"#,
            "field `chosen[0].role`: expected an assistant message",
        ),
        (
            r#"{"prompt":[{"role":"robot","content":"q"}],"chosen":[{"role":"assistant","content":"a"}],"rejected":[{"role":"assistant","content":"b"}]}"#,
            "field `prompt[0].role`: unsupported role `robot`",
        ),
        (
            r#"{"prompt":"p","chosen":"a","rejected":"b","score_chosen":"x"}"#,
            "field `score_chosen`",
        ),
        (
            r#"{"instruction":"i","chosen":"a","rejected":["b"]}"#,
            "field `rejected`: invalid type: array",
        ),
        (
            r#"{"conversations":[{"from":"human","value":"q"}],"chosen":{"from":"human","value":"a"},"rejected":{"from":"gpt","value":"b"}}"#,
            "field `chosen.from`: `human`: the answer is the assistant's",
        ),
    ];
    for env in Env::both() {
        for (i, (bad, want)) in cases.iter().enumerate() {
            let good = if bad.contains("prompt") || bad.contains("score") {
                dpo
            } else {
                ranking
            };
            let file = env.write(&format!("bad{i}.jsonl"), format!("{good}\n{bad}\n"));
            let run = env.run(["import", file.to_str().unwrap()]).expect_code(2);
            let at = format!("bad{i}.jsonl:2:");
            assert!(
                run.stderr.contains(&at) && run.stderr.contains(want),
                "{}: {}",
                want,
                run.stderr
            );
            assert_eq!(env.counts(), (0, 0, 0), "nothing written: {bad}");
            assert!(pairs(&env, None).is_empty());
        }
    }
}
