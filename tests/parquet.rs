//! Parquet through the real binary: files written by `datasets` and pyarrow
//! (`tests/fixtures/parquet`, made by `scripts/make_parquet_fixtures.py`) import exactly as the
//! same rows in JSONL do; bad files name file, row and field and change nothing; JSONL → import →
//! Parquet export → import → JSONL export is byte-equal in every layout.

use crate::bad_input::{assert_error, seeded};
use crate::util::{Env, repo};

/// A fixture file.
fn fixture(name: &str) -> String {
    repo(&format!("tests/fixtures/parquet/{name}"))
        .to_str()
        .unwrap()
        .to_string()
}

/// The stored records with their language, in id order.
fn stored(env: &Env) -> Vec<(instill_core::Record, instill_core::Lang)> {
    env.records()
        .into_iter()
        .map(|s| (s.record, s.lang))
        .collect()
}

#[test]
fn parquet_from_datasets_and_pyarrow_imports_as_its_jsonl_does() {
    for env0 in Env::both() {
        for name in ["datasets_alpaca", "pyarrow_sharegpt", "pyarrow_messages"] {
            let (pq, js) = (Env::new(env0.fresh_db()), Env::new(env0.fresh_db()));
            let run = pq
                .run(["import", &fixture(&format!("{name}.parquet")), "--json"])
                .expect_code(0)
                .json();
            js.run(["import", &fixture(&format!("{name}.jsonl"))])
                .expect_code(0);
            let want = stored(&js);
            assert!(want.len() >= 2, "{name}");
            assert_eq!(stored(&pq), want, "{} {name}", env0.backend());
            let layout = name.split('_').nth(1).unwrap();
            assert_eq!(run["files"][0]["format"], layout, "{name}");
            assert_eq!(run["records_added"], want.len(), "{name}");
        }
    }
}

#[test]
fn bad_parquet_files_name_file_row_and_field_and_change_nothing() {
    for env in Env::both() {
        let before = seeded(&env);
        let good = std::fs::read(fixture("datasets_alpaca.parquet")).unwrap();
        let truncated = env.write("truncated.parquet", &good[..good.len() / 2]);
        // The footer intact, the pages overwritten: the damage shows only when rows are read.
        let footer = u32::from_le_bytes(good[good.len() - 8..good.len() - 4].try_into().unwrap());
        let mut damaged = good.clone();
        for b in &mut damaged[8..good.len() - 8 - footer as usize] {
            *b = 0x5a;
        }
        let damaged = env.write("damaged.parquet", damaged);
        let not_parquet = env.write("rows.parquet", "{\"instruction\":\"x\",\"output\":\"y\"}\n");
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                fixture("output_int64.parquet"),
                vec![
                    "output_int64.parquet: row 1: field `output`",
                    "integer `1`, expected a string",
                ],
            ),
            (
                fixture("robot_row3.parquet"),
                vec![
                    "robot_row3.parquet: row 3: field `conversations[1].from`",
                    "unknown speaker `robot`",
                ],
            ),
            (
                fixture("unknown_columns.parquet"),
                vec![
                    "unknown_columns.parquet: cannot detect the format from the columns (answer, question)",
                    "pass --format",
                ],
            ),
            (
                truncated.to_str().unwrap().to_string(),
                vec!["truncated.parquet: not a readable Parquet file"],
            ),
            (
                damaged.to_str().unwrap().to_string(),
                vec!["damaged.parquet: cannot read the rows from row 1 on"],
            ),
            (
                not_parquet.to_str().unwrap().to_string(),
                vec!["rows.parquet: not a Parquet file (it does not start with `PAR1`)"],
            ),
        ];
        for (path, needles) in &cases {
            assert_error(env.run(["import", path]), needles);
            assert_eq!(
                env.counts(),
                before,
                "{} {path}: database changed",
                env.backend()
            );
        }
        // All or nothing across files: a good Parquet file before a bad one is not kept.
        let run = env.run([
            "import",
            &fixture("pyarrow_messages.parquet"),
            &fixture("robot_row3.parquet"),
        ]);
        assert_error(run, &["robot_row3.parquet: row 3:"]);
        assert_eq!(env.counts(), before, "{}", env.backend());
        // --format names the layout; the columns it does not read are never looked at.
        let run = env.run([
            "import",
            &fixture("unknown_columns.parquet"),
            "--format",
            "messages",
        ]);
        assert_error(
            run,
            &[
                "none of the columns the messages layout reads (messages) is in the file (its columns: question, answer)",
            ],
        );
        // Parquet compresses its own pages: wrapping it in zstd is refused, naming the flags.
        let out = env.path("zstd-parquet");
        let run = env.run([
            "export",
            "--out",
            out.to_str().unwrap(),
            "--file-format",
            "parquet",
            "--compress",
            "zstd",
        ]);
        assert_error(
            run,
            &[
                "--compress zstd",
                "Parquet shards are always zstd-compressed inside",
            ],
        );
        assert!(!out.exists());
    }
}

#[test]
fn skip_invalid_keeps_the_valid_rows_and_names_the_bad_ones() {
    for env in Env::both() {
        let j = env
            .run([
                "import",
                &fixture("robot_row3.parquet"),
                "--skip-invalid",
                "--json",
            ])
            .expect_code(1)
            .json();
        assert_eq!(j["records_added"], 2);
        assert_eq!(j["invalid"], 1);
        assert_eq!(j["files"][0]["invalid_examples"][0]["line"], 3);
        assert_eq!(env.counts().0, 2, "{}", env.backend());
    }
}

/// A mixed Chinese/English data set in `layout`: system prompts, multi-turn history, inputs,
/// quotes, backslashes, tabs, newlines and emoji.
fn mixed_input(layout: &str) -> String {
    let mut out = String::new();
    for i in 0..12 {
        let (system, history, input) = match i % 4 {
            0 => ("", vec![], ""),
            1 => ("你是一位耐心的老师。", vec![], "今天的会议改到下午三点。"),
            2 => (
                "You answer \"briefly\".",
                vec![
                    (
                        "我想学做饭，从哪道菜开始？",
                        "番茄炒蛋。\n步骤少，容易上手。",
                    ),
                    ("Why that one? 🤔", "Few steps\tand a \\ cheap pan 🍳"),
                ],
                "",
            ),
            _ => ("", vec![("Hi!", "你好！")], "line one\nline two"),
        };
        let instruction = if i % 2 == 0 {
            format!("第{i}题：写一首关于春天的短诗。")
        } else {
            format!("Task {i}: translate \"this\" into English 🎉")
        };
        let output = format!("答案 {i}：\n春风拂面，桃花笑开。 Done ✓");
        let user = if input.is_empty() {
            instruction.clone()
        } else {
            format!("{instruction}\n\n{input}")
        };
        let value = match layout {
            "alpaca" => {
                let mut v = serde_json::json!({"instruction": instruction, "input": input, "output": output});
                if !system.is_empty() {
                    v["system"] = system.into();
                }
                if !history.is_empty() {
                    v["history"] = serde_json::json!(history);
                }
                v
            }
            _ => {
                let (key, who, what, names) = if layout == "sharegpt" {
                    ("conversations", "from", "value", ["system", "human", "gpt"])
                } else {
                    (
                        "messages",
                        "role",
                        "content",
                        ["system", "user", "assistant"],
                    )
                };
                let mut turns = Vec::new();
                if !system.is_empty() {
                    turns.push(serde_json::json!({who: names[0], what: system}));
                }
                for (u, a) in &history {
                    turns.push(serde_json::json!({who: names[1], what: u}));
                    turns.push(serde_json::json!({who: names[2], what: a}));
                }
                turns.push(serde_json::json!({who: names[1], what: user}));
                turns.push(serde_json::json!({who: names[2], what: output}));
                serde_json::json!({ key: turns })
            }
        };
        out.push_str(&format!("{value}\n"));
    }
    out
}

/// The shards an export's manifest lists, in order.
fn shards(out: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    manifest["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let file = s["file"].as_str().unwrap();
            (s["split"].as_str().unwrap().to_string(), out.join(file))
        })
        .collect()
}

/// Each split's shards, concatenated.
fn split_bytes(out: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut splits: Vec<(String, Vec<u8>)> = Vec::new();
    for (split, path) in shards(out) {
        let bytes = std::fs::read(path).unwrap();
        match splits.last_mut() {
            Some((s, b)) if *s == split => b.extend(bytes),
            _ => splits.push((split, bytes)),
        }
    }
    splits
}

#[test]
fn jsonl_to_parquet_and_back_is_byte_equal_in_every_layout() {
    for env0 in Env::both() {
        for layout in ["alpaca", "sharegpt", "messages"] {
            for val_fraction in ["0", "0.3"] {
                let (first, second) = (Env::new(env0.fresh_db()), Env::new(env0.fresh_db()));
                let input = first.write(&format!("{layout}.jsonl"), mixed_input(layout));
                first
                    .run(["import", input.to_str().unwrap()])
                    .expect_code(0);
                let export = |env: &Env, name: &str, file_format: &str| {
                    let out = env.path(name);
                    env.run([
                        "export",
                        "--out",
                        out.to_str().unwrap(),
                        "--format",
                        layout,
                        "--file-format",
                        file_format,
                        "--shard-rows",
                        "5",
                        "--val-fraction",
                        val_fraction,
                    ])
                    .expect_code(0);
                    out
                };
                let jsonl = export(&first, "jsonl", "jsonl");
                let parquet = export(&first, "parquet", "parquet");
                let files = shards(&parquet);
                assert!(files.len() >= 3, "{files:?}");
                let card = std::fs::read_to_string(parquet.join("README.md")).unwrap();
                assert!(card.contains("as Parquet (`.parquet`"), "{card}");
                let manifest = std::fs::read_to_string(parquet.join("manifest.json")).unwrap();
                assert!(
                    manifest.contains("\"file_format\": \"parquet\""),
                    "{manifest}"
                );
                for (_, path) in &files {
                    assert!(path.to_str().unwrap().ends_with(".parquet"), "{path:?}");
                    assert_eq!(&std::fs::read(path).unwrap()[..4], b"PAR1");
                }
                // Train shards first, then validation: the second database holds the records in
                // the order that gives each split the same rows in the same order.
                let mut args = vec!["import".to_string()];
                args.extend(files.iter().map(|(_, p)| p.to_str().unwrap().to_string()));
                let run = second.run(&args).expect_code(0).stdout;
                assert!(run.contains(&format!("({layout})")), "{run}");
                let back = export(&second, "back", "jsonl");
                let (want, got) = (split_bytes(&jsonl), split_bytes(&back));
                assert_eq!(want.len(), if val_fraction == "0" { 1 } else { 2 });
                for ((ws, w), (gs, g)) in want.iter().zip(&got) {
                    assert_eq!(ws, gs);
                    assert!(
                        w == g,
                        "{} {layout} {val_fraction} {ws}:\n{}\n---\n{}",
                        env0.backend(),
                        String::from_utf8_lossy(w),
                        String::from_utf8_lossy(g)
                    );
                }
                assert_eq!(want.len(), got.len());
            }
        }
    }
}
