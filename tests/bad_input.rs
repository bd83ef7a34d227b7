//! Every kind of bad input: a one-line error naming file, line and field, exit code 2, and the
//! database exactly as before. `--skip-invalid`: the valid rows, the invalid ones reported, exit 1.
//! A failed export leaves no partial shard.

use crate::util::{Env, Run};

const GOOD: &str = "{\"instruction\":\"好的记录\",\"output\":\"是\"}\n{\"instruction\":\"A good one\",\"output\":\"yes\"}\n";

/// An Env with one good file already imported, so "unchanged" means something.
pub(crate) fn seeded(env: &Env) -> (i64, i64, i64) {
    let good = env.write("good.jsonl", GOOD);
    env.run(["import", good.to_str().unwrap()]).expect_code(0);
    let counts = env.counts();
    assert_eq!(counts, (2, 0, 1));
    counts
}

/// Asserts a one-line error on stderr containing every piece of `needles`, and exit 2.
#[track_caller]
pub(crate) fn assert_error(run: Run, needles: &[&str]) {
    let run = run.expect_code(2);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{}", run.stderr);
    assert!(lines[0].starts_with("error: "), "{}", lines[0]);
    for n in needles {
        assert!(lines[0].contains(n), "`{n}` missing from: {}", lines[0]);
    }
}

#[test]
fn bad_records_name_file_line_and_field_and_change_nothing() {
    let cases: Vec<(&str, Vec<u8>, Vec<&str>)> = vec![
        (
            "malformed.jsonl",
            format!("{GOOD}{{\"instruction\": \"x\", \"output\": \"y\",}}\n").into_bytes(),
            vec!["malformed.jsonl:3:", "trailing comma"],
        ),
        (
            "missing.jsonl",
            format!("{GOOD}{{\"instruction\": \"只有指令\"}}\n").into_bytes(),
            vec!["missing.jsonl:3:1:", "field `output`", "missing"],
        ),
        (
            "wrong_type.json",
            b"[\n  {\"instruction\": \"a\", \"output\": \"b\"},\n  {\"instruction\": \"c\",\n   \"output\": 42}\n]\n".to_vec(),
            vec!["wrong_type.json:4:", "field `output`", "integer `42`, expected a string"],
        ),
        (
            "utf8.jsonl",
            {
                let mut b = GOOD.as_bytes().to_vec();
                b.extend_from_slice(b"{\"instruction\": \"ok\", \"output\": \"bad \xff\xfe bytes\"}\n");
                b
            },
            vec!["utf8.jsonl:3:", "field `output`", "invalid UTF-8"],
        ),
        (
            "unterminated.jsonl",
            format!("{GOOD}{{\"instruction\": \"x\", \"output\": \"no closing quote}}\n{{\"instruction\":\"z\",\"output\":\"w\"}}\n").into_bytes(),
            vec!["unterminated.jsonl:3:", "line break inside a string"],
        ),
        (
            "conversation.jsonl",
            "{\"conversations\":[{\"from\":\"human\",\"value\":\"你好\"},{\"from\":\"gpt\",\"value\":\"你好！\"}]}\n{\"conversations\":[{\"from\":\"human\",\"value\":\"只问不答\"}]}\n".as_bytes().to_vec(),
            vec!["conversation.jsonl:2:1:", "field `conversations[0]`", "no gpt answer"],
        ),
        ("empty.jsonl", Vec::new(), vec!["empty.jsonl", "the file is empty"]),
        ("blank.jsonl", b"\n\n  \n".to_vec(), vec!["blank.jsonl", "the file is empty"]),
        ("not_json.txt", b"instruction,output\nhello,world\n".to_vec(), vec!["not_json.txt:1:1:", "expected a JSON object"]),
        ("unknown.jsonl", b"{\"question\": \"q\", \"answer\": \"a\"}\n".to_vec(), vec!["unknown.jsonl:1:1:", "cannot detect the format", "answer, question"]),
    ];
    for env in Env::both() {
        let before = seeded(&env);
        for (name, bytes, needles) in &cases {
            let path = env.write(name, bytes);
            let run = env.run(["import", path.to_str().unwrap()]);
            assert_error(run, needles);
            assert_eq!(
                env.counts(),
                before,
                "{} {name}: database changed",
                env.backend()
            );
        }
    }
}

#[test]
fn a_bad_second_file_rolls_back_the_first() {
    for env in Env::both() {
        let before = seeded(&env);
        let ok = env.write(
            "ok.jsonl",
            "{\"instruction\":\"新的\",\"output\":\"记录\"}\n",
        );
        let bad = env.write("bad.jsonl", "{\"instruction\":\"x\"}\n");
        let run = env.run(["import", ok.to_str().unwrap(), bad.to_str().unwrap()]);
        // Nothing claims the first file was imported: it was rolled back with the second.
        assert_eq!(run.stdout, "", "{}", env.backend());
        assert_error(run, &["bad.jsonl:1:1:", "field `output`"]);
        assert_eq!(env.counts(), before, "{}", env.backend());
        // And the good file still imports on its own afterwards (its hash was not recorded).
        let run = env.run(["import", ok.to_str().unwrap()]).expect_code(0);
        assert!(
            run.stdout
                .contains("ok.jsonl: imported 1 record (alpaca) as import #"),
            "{}",
            run.stdout
        );
        assert_eq!(env.counts().0, before.0 + 1);
    }
}

#[test]
fn paths_formats_and_databases_that_cannot_be_used() {
    for env in Env::both() {
        let before = seeded(&env);
        let dir = env.path("a_directory");
        std::fs::create_dir(&dir).unwrap();
        assert_error(
            env.run(["import", dir.to_str().unwrap()]),
            &["a_directory", "is a directory"],
        );
        assert_error(
            env.run(["import", "no_such_file.jsonl"]),
            &["no_such_file.jsonl", "cannot read"],
        );
        let good = env.write(
            "g2.jsonl",
            "{\"instruction\":\"另一条\",\"output\":\"记录\"}\n",
        );
        let run = env
            .run(["import", good.to_str().unwrap(), "--format", "csv"])
            .expect_code(2);
        assert!(
            run.stderr.contains("unknown format `csv`"),
            "{}",
            run.stderr
        );
        let run = env.run(["import", good.to_str().unwrap(), "--format", "sharegpt"]);
        assert_error(run, &["g2.jsonl:1:1:", "field `conversations`", "missing"]);
        assert_eq!(env.counts(), before, "{}", env.backend());
    }
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let good = env.write("g.jsonl", GOOD);
    let cases = [
        ("mysql://root@localhost/x", "unsupported database `mysql`"),
        (
            "sqlite:///no/such/dir/x.db",
            "cannot open database sqlite:///no/such/dir/x.db",
        ),
        (
            "postgres://nobody:secret@127.0.0.1:1/none",
            "cannot open database postgres://nobody:***@127.0.0.1:1/none",
        ),
    ];
    for (url, needle) in cases {
        let run = env.run(["--db", url, "import", good.to_str().unwrap()]);
        assert!(
            !run.stderr.contains("secret"),
            "password leaked: {}",
            run.stderr
        );
        assert_error(run, &[needle]);
    }
    let dir_db = env.path("dbdir");
    std::fs::create_dir(&dir_db).unwrap();
    let run = env.run(["--db", &format!("sqlite://{}", dir_db.display()), "stats"]);
    assert_error(run, &["is a directory, not a database file"]);
}

#[test]
fn skip_invalid_keeps_the_valid_rows_and_reports_the_rest() {
    for env in Env::both() {
        let mut text = String::new();
        for i in 1..=20 {
            if i % 4 == 0 {
                text.push_str(&format!("{{\"instruction\":\"bad {i}\",\"output\":{i}}}\n"));
            } else {
                text.push_str(&format!(
                    "{{\"instruction\":\"good {i}\",\"output\":\"ok\"}}\n"
                ));
            }
        }
        let file = env.write("mixed.jsonl", text);
        let run = env
            .run(["import", file.to_str().unwrap(), "--skip-invalid"])
            .expect_code(1);
        assert!(
            run.stderr.contains("skipped 5 invalid records"),
            "{}",
            run.stderr
        );
        for line in [4, 8, 12, 16, 20] {
            assert!(
                run.stderr.contains(&format!("mixed.jsonl:{line}:")),
                "line {line}: {}",
                run.stderr
            );
        }
        assert_eq!(env.counts().0, 15, "{}", env.backend());
        let kept: Vec<String> = env
            .records()
            .into_iter()
            .map(|r| r.record.instruction)
            .collect();
        assert_eq!(kept[0], "good 1");
        assert!(kept.iter().all(|k| k.starts_with("good")));
        let j = env
            .run([
                "import",
                env.write(
                    "m2.jsonl",
                    "{\"instruction\":\"x\"}\n{\"instruction\":\"y\",\"output\":\"z\"}\n",
                )
                .to_str()
                .unwrap(),
                "--skip-invalid",
                "--json",
            ])
            .expect_code(1)
            .json();
        assert_eq!(j["invalid"], 1);
        assert_eq!(j["files"][0]["invalid_examples"][0]["line"], 1);
    }
}

#[test]
fn a_failed_export_leaves_no_partial_shard() {
    for env in Env::both() {
        let lines: String = (0..3000)
            .map(|i| {
                format!(
                    "{{\"instruction\":\"记录 {i}：{}\",\"output\":\"{}\"}}\n",
                    "字".repeat(40),
                    "x".repeat(200)
                )
            })
            .collect();
        let file = env.write("big.jsonl", lines);
        env.run(["import", file.to_str().unwrap()]).expect_code(0);

        // The file-size limit makes a shard write fail half-way (EFBIG; the signal is ignored so
        // instill sees the error).
        let run = env.sh("trap '' XFSZ; ulimit -f 256; exec \"$INSTILL\" export --out out --shard-rows 1000 --no-progress");
        let run = run.expect_code(2);
        assert!(
            run.stderr.contains("data/train/train-00000.jsonl") && run.stderr.contains("too large"),
            "{}",
            run.stderr
        );
        assert!(
            !env.path("out").exists(),
            "a partial export was left behind"
        );
        let leftovers: Vec<String> = std::fs::read_dir(env.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("instill-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // Replacing an existing export: on failure the old one stays whole.
        env.run(["export", "--out", "out", "--shard-rows", "1000"])
            .expect_code(0);
        let manifest_before = std::fs::read(env.path("out/manifest.json")).unwrap();
        let run = env.sh("trap '' XFSZ; ulimit -f 256; exec \"$INSTILL\" export --out out --overwrite --format messages --no-progress");
        run.expect_code(2);
        assert_eq!(
            std::fs::read(env.path("out/manifest.json")).unwrap(),
            manifest_before
        );
        let names: Vec<String> = std::fs::read_dir(env.path("out"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");

        // Without --overwrite an existing export is refused and untouched.
        let run = env.run(["export", "--out", "out"]);
        assert_error(run, &["out: exists and is not empty", "--overwrite"]);
        assert_eq!(
            std::fs::read(env.path("out/manifest.json")).unwrap(),
            manifest_before
        );
    }
}

#[test]
fn numeric_flags_refuse_zero_and_negative_values_naming_the_flag() {
    // `--timeout -1` was clap's "unexpected argument '-1'"; `--target 0` started a run;
    // `--lora-r 0`, `--batch-size 0`, `--grad-accum 0`, `--epochs 0` silently became 1.
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let generate: &[(&str, &str)] = &[
        ("--target", "0"),
        ("--target", "-5"),
        ("--max-requests", "0"),
        ("--timeout", "-1"),
        ("--lease-seconds", "-30"),
        ("--rpm", "-1"),
        ("--concurrency", "-2"),
        ("--temperature", "-0.5"),
        ("--seed", "-1"),
    ];
    let train: &[(&str, &str)] = &[
        ("--lora-r", "0"),
        ("--batch-size", "0"),
        ("--grad-accum", "0"),
        ("--epochs", "0"),
        ("--max-steps", "0"),
        ("--max-len", "0"),
        ("--lr", "-1"),
        ("--warmup-steps", "-1"),
    ];
    let other: &[(&str, &str, &[&str])] = &[
        ("--ngram", "-1", &["dedup"]),
        ("--zstd-level", "-3", &["export", "--out", "o"]),
        ("--price-in", "-1", &["report", "--out", "r.html"]),
    ];
    let mut cases: Vec<(Vec<&str>, &str)> = Vec::new();
    for &(flag, value) in generate {
        let mut args = vec!["generate", "--base-url", "http://127.0.0.1:1/v1"];
        args.extend(["--model", "m", flag, value]);
        for (default, v) in [("--target", "1"), ("--max-requests", "1")] {
            if default != flag {
                args.extend([default, v]);
            }
        }
        cases.push((args, flag));
    }
    for &(flag, value) in train {
        let args = vec!["train", "--lora", "--model", "m", "--out", "o", flag, value];
        cases.push((args, flag));
    }
    for &(flag, value, command) in other {
        let mut args = command.to_vec();
        args.extend([flag, value]);
        cases.push((args, flag));
    }
    for (args, flag) in cases {
        let run = crate::util::run_bounded(
            &env,
            &args,
            &[("INSTILL_CONNECT_GRACE", "0")],
            &[],
            std::time::Duration::from_secs(120),
        );
        let run = run.expect_code(2);
        assert!(
            run.stderr.contains("invalid value") && run.stderr.contains(flag),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!env.path("o").exists() && !env.path("r.html").exists());
    let runs = env.run(["stats", "--json"]).expect_code(0).json();
    assert_eq!(runs["requests"], 0, "a refused generate sent requests");
}
