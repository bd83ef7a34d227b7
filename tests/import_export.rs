//! Round trips through the real binary: every input layout → import → export in every output
//! layout → import again, on SQLite and Postgres; the shared data sets; idempotent re-import;
//! manifests, shards, validation splits and zstd.

use std::collections::BTreeMap;

use instill_core::{Exchange, Record};
use sha2::{Digest, Sha256};

use crate::util::{Env, shared};

/// The records each input file holds, as instill must store them.
fn expected() -> Vec<Record> {
    let mut chat = Record::new("那番茄炒蛋要先炒什么？", "", "先炒蛋，盛出后再炒番茄。");
    chat.system = "你是一位耐心的厨师。".into();
    chat.history = vec![Exchange(
        "我想学做饭，从哪道菜开始？".into(),
        "番茄炒蛋。\n步骤少，容易上手。".into(),
    )];
    vec![
        Record::new("写一首关于春天的短诗。", "", "春风拂面，\n桃花笑开。"),
        Record::new(
            "Translate into English.",
            "今天的会议改到下午三点。",
            "Today's meeting moved to 3 p.m.",
        ),
        Record::new(
            "Quote: \"tab\there\" and a backslash \\ and emoji 🎉",
            "",
            "ok\t✓",
        ),
        chat,
    ]
}

/// The expected records, written in `layout` (an input layout name).
fn input_file(layout: &str) -> String {
    let records = expected();
    let lines: Vec<serde_json::Value> = records
        .iter()
        .map(|r| match layout {
            "alpaca" | "alpaca-array" => {
                let mut v = serde_json::json!({"instruction": r.instruction, "input": r.input, "output": r.output});
                if !r.system.is_empty() {
                    v["system"] = r.system.clone().into();
                }
                if !r.history.is_empty() {
                    v["history"] = serde_json::to_value(&r.history).unwrap();
                }
                v
            }
            "sharegpt" | "messages" => {
                let (key, who, user, bot) = if layout == "sharegpt" {
                    ("conversations", "from", "human", "gpt")
                } else {
                    ("messages", "role", "user", "assistant")
                };
                let text = if layout == "sharegpt" { "value" } else { "content" };
                let mut turns = Vec::new();
                if !r.system.is_empty() {
                    turns.push(serde_json::json!({who: "system", text: r.system}));
                }
                for Exchange(u, a) in &r.history {
                    turns.push(serde_json::json!({who: user, text: u}));
                    turns.push(serde_json::json!({who: bot, text: a}));
                }
                turns.push(serde_json::json!({who: user, text: r.user_turn()}));
                turns.push(serde_json::json!({who: bot, text: r.output}));
                serde_json::json!({key: turns, "id": "x"})
            }
            other => panic!("{other}"),
        })
        .collect();
    if layout == "alpaca-array" {
        return serde_json::to_string_pretty(&lines).unwrap();
    }
    lines.iter().map(|v| format!("{v}\n")).collect()
}

/// What a record becomes after passing through `layout`: chat layouts have no `input` field,
/// so the input travels inside the user turn.
fn through(layout: &str, r: &Record) -> Record {
    let mut r = r.clone();
    if layout != "alpaca" && layout != "alpaca-array" {
        r.instruction = r.user_turn();
        r.input.clear();
    }
    r
}

fn stored(env: &Env, source: &str) -> Vec<Record> {
    env.records()
        .into_iter()
        .filter(|s| s.source == source)
        .map(|s| s.record)
        .collect()
}

#[test]
fn every_layout_round_trips_through_every_export_layout() {
    for env0 in Env::both() {
        for input in ["alpaca", "alpaca-array", "sharegpt", "messages"] {
            // Fresh databases per layout: the exports of two layouts can be byte-identical, and
            // importing the same bytes twice (rightly) adds nothing.
            let env = Env::new(env0.fresh_db());
            let back = Env::new(env0.fresh_db());
            let file = env.write(&format!("{input}.json"), input_file(input));
            env.run(["import", file.to_str().unwrap(), "--source", input])
                .expect_code(0);
            let first: Vec<Record> = expected().iter().map(|r| through(input, r)).collect();
            assert_eq!(stored(&env, input), first, "{} {input}", env.backend());
            for output in ["alpaca", "sharegpt", "messages"] {
                let out = env.path(&format!("out-{input}-{output}"));
                let compress = if output == "sharegpt" { "zstd" } else { "none" };
                env.run([
                    "export",
                    "--out",
                    out.to_str().unwrap(),
                    "--format",
                    output,
                    "--compress",
                    compress,
                ])
                .expect_code(0);
                let manifest: serde_json::Value = serde_json::from_str(
                    &std::fs::read_to_string(out.join("manifest.json")).unwrap(),
                )
                .unwrap();
                let shard = out.join(manifest["shards"][0]["file"].as_str().unwrap());
                let source = format!("{input}-{output}");
                // zstd shards are read back after decompressing them, as a user would.
                let shard = if compress == "zstd" {
                    let raw = std::fs::read(&shard).unwrap();
                    back.write(
                        &format!("{source}.jsonl"),
                        zstd::decode_all(&raw[..]).unwrap(),
                    )
                } else {
                    shard
                };
                back.run(["import", shard.to_str().unwrap(), "--source", &source])
                    .expect_code(0);
                let want: Vec<Record> = first.iter().map(|r| through(output, r)).collect();
                assert_eq!(
                    stored(&back, &source),
                    want,
                    "{} {input} -> {output}",
                    env.backend()
                );
            }
        }
    }
}

#[test]
fn the_shared_data_sets_import_with_format_auto() {
    for env in Env::both() {
        let files = [
            ("data/alpaca_data.json", "alpaca", 52_002),
            ("data/zh_seed_tasks.json", "self-instruct", 175),
            ("data/seed_tasks.jsonl", "self-instruct", 175),
        ];
        for (rel, format, rows) in files {
            let path = shared(rel);
            let run = env
                .run(["import", path.to_str().unwrap(), "--json"])
                .expect_code(0);
            let j = run.json();
            assert_eq!(j["files"][0]["format"], format, "{rel}");
            assert_eq!(j["records_added"], rows, "{rel}");
        }
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(stats["records"]["total"], 52_352);
        assert_eq!(stats["by_lang"]["zh"], 175, "{}", env.backend());
        assert!(stats["by_lang"]["en"].as_i64().unwrap() >= 52_002 + 175 - 5);
        // Chinese text is intact: the first zh seed reads back byte for byte.
        let first_zh = std::fs::read_to_string(shared("data/zh_seed_tasks.json")).unwrap();
        let first: serde_json::Value =
            serde_json::from_str(first_zh.lines().next().unwrap()).unwrap();
        let recs = env.records();
        let zh: Vec<_> = recs
            .iter()
            .filter(|r| r.source == "zh_seed_tasks")
            .collect();
        assert_eq!(
            zh[0].record.instruction,
            first["instruction"].as_str().unwrap()
        );
        assert_eq!(
            zh[0].record.output,
            first["instances"][0]["output"].as_str().unwrap()
        );
    }
}

#[test]
fn importing_the_same_file_twice_adds_nothing_and_says_so() {
    for env in Env::both() {
        let file = env.write("a.jsonl", input_file("alpaca"));
        env.run(["import", file.to_str().unwrap()]).expect_code(0);
        let copy = env.write("copy-of-a.jsonl", input_file("alpaca"));
        let again = env
            .run(["import", file.to_str().unwrap(), copy.to_str().unwrap()])
            .expect_code(0);
        assert!(
            again.stdout.contains("already imported as #1"),
            "{}",
            again.stdout
        );
        assert!(
            again.stdout.contains("copy-of-a.jsonl: already imported"),
            "{}",
            again.stdout
        );
        assert_eq!(env.counts(), (4, 0, 1), "{}", env.backend());
        let j = env
            .run(["import", file.to_str().unwrap(), "--json"])
            .expect_code(0)
            .json();
        assert_eq!(j["records_added"], 0);
        assert_eq!(j["files"][0]["status"], "already_imported");
    }
}

#[test]
fn export_shards_by_rows_and_bytes_with_a_truthful_manifest() {
    for env in Env::both() {
        let lines: String = (0..250)
            .map(|i| {
                format!("{{\"instruction\":\"任务 {i}\",\"input\":\"\",\"output\":\"答案 {i}\"}}\n")
            })
            .collect();
        let file = env.write("many.jsonl", lines);
        env.run(["import", file.to_str().unwrap()]).expect_code(0);
        let out = env.path("shards");
        let run = env
            .run([
                "export",
                "--out",
                out.to_str().unwrap(),
                "--shard-rows",
                "100",
                "--shard-bytes",
                "4K",
                "--json",
            ])
            .expect_code(0);
        assert_eq!(run.json()["rows"], 250);
        let manifest: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap())
                .unwrap();
        let shards = manifest["shards"].as_array().unwrap();
        let mut total_rows = 0;
        let mut names = Vec::new();
        for s in shards {
            let name = s["file"].as_str().unwrap();
            let bytes = std::fs::read(out.join(name)).unwrap();
            assert_eq!(s["bytes"], bytes.len() as u64);
            let digest: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert_eq!(s["sha256"], digest);
            let rows = bytes.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(s["rows"], rows);
            assert!(rows <= 100);
            total_rows += rows;
            names.push(name.to_string());
        }
        assert_eq!(total_rows, 250);
        assert_eq!(manifest["totals"]["rows"], 250);
        assert_eq!(manifest["format"], "alpaca");
        assert_eq!(manifest["filters"]["status"], "kept");
        assert!(
            names.len() >= 3
                && names[0] == format!("data/train/train-00000-of-{:05}.jsonl", names.len()),
            "{names:?}"
        );
        // Records come out in id order.
        let first = std::fs::read_to_string(out.join(&names[0])).unwrap();
        assert!(first.starts_with("{\"instruction\":\"任务 0\""));
        assert_eq!(
            listing(&out),
            ["README.md", "data", "dataset_info.json", "manifest.json"]
        );
        assert_eq!(listing(&out.join("data")), ["train"]);
        assert_eq!(listing(&out.join("data/train")).len(), shards.len());
    }
}

#[test]
fn the_validation_split_is_deterministic_and_keeps_duplicates_together() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let mut lines = String::new();
    for i in 0..400 {
        lines.push_str(&format!(
            "{{\"instruction\":\"Task number {i}\",\"output\":\"Answer {i}\"}}\n"
        ));
    }
    // Exact duplicates (after normalisation) of the first 50.
    for i in 0..50 {
        lines.push_str(&format!(
            "{{\"instruction\":\"TASK NUMBER {i}!\",\"output\":\"answer {i}\"}}\n"
        ));
    }
    let file = env.write("d.jsonl", lines);
    env.run(["import", file.to_str().unwrap()]).expect_code(0);
    let split = |name: &str, seed: &str| -> BTreeMap<String, Vec<String>> {
        let out = env.path(name);
        env.run([
            "export",
            "--out",
            out.to_str().unwrap(),
            "--val-fraction",
            "0.2",
            "--seed",
            seed,
        ])
        .expect_code(0);
        let mut by_split = BTreeMap::new();
        for which in ["train", "validation"] {
            let shard = format!("data/{which}/{which}-00000-of-00001.jsonl");
            let text = std::fs::read_to_string(out.join(shard)).unwrap();
            let keys: Vec<String> = text
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["output"].as_str().unwrap().to_lowercase()
                })
                .collect();
            by_split.insert(which.to_string(), keys);
        }
        by_split
    };
    let a = split("a", "7");
    let b = split("b", "7");
    let c = split("c", "8");
    assert_eq!(a, b);
    assert_ne!(a, c);
    let val = a["validation"].len();
    assert!((50..130).contains(&val), "{val} of 450 in validation");
    for key in &a["validation"] {
        assert!(!a["train"].contains(key), "{key} is in both splits");
    }
}

/// The names in a directory, sorted.
fn listing(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn export_overwrite_replaces_only_an_earlier_export() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = env.write(
        "few.jsonl",
        "{\"instruction\":\"a\",\"output\":\"b\"}\n{\"instruction\":\"c\",\"output\":\"d\"}\n",
    );
    // The reproduction: the database lives in the directory exported to.
    let out = env.path("out");
    std::fs::create_dir(&out).unwrap();
    let db = format!("sqlite://{}", out.join("instill.db").display());
    env.run(["--db", &db, "import", file.to_str().unwrap()])
        .expect_code(0);
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let before = listing(&out);
    let run = env
        .run(["--db", &db, "export", "--out", "out", "--overwrite"])
        .expect_code(2);
    assert!(run.stderr.contains("instill.db"), "{}", run.stderr);
    assert_eq!(listing(&out), before, "nothing removed");
    assert_eq!(
        std::fs::read_to_string(out.join("notes.txt")).unwrap(),
        "mine"
    );
    let run = env
        .run(["--db", &db, "stats", "--json"])
        .expect_code(0)
        .json();
    assert_eq!(run["records"]["total"], 2, "{run}");

    // An earlier export is replaced; a file added to it since makes it no longer ours.
    let exp = env.path("exp");
    env.run(["--db", &db, "export", "--out", "exp"])
        .expect_code(0);
    std::fs::write(exp.join("zz-notes.txt"), "mine").unwrap();
    let run = env
        .run(["--db", &db, "export", "--out", "exp", "--overwrite"])
        .expect_code(2);
    assert!(run.stderr.contains("zz-notes.txt"), "{}", run.stderr);
    assert!(exp.join("zz-notes.txt").is_file() && exp.join("manifest.json").is_file());
    std::fs::remove_file(exp.join("zz-notes.txt")).unwrap();
    env.run([
        "--db",
        &db,
        "export",
        "--out",
        "exp",
        "--overwrite",
        "--shard-rows",
        "1",
    ])
    .expect_code(0);
    assert_eq!(
        listing(&exp),
        ["README.md", "data", "dataset_info.json", "manifest.json"]
    );
    assert_eq!(
        listing(&exp.join("data/train")),
        ["train-00000-of-00002.jsonl", "train-00001-of-00002.jsonl"]
    );
    // A directory without a manifest is not an export, whatever it holds.
    let other = env.path("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("part-00000.jsonl"), "{}\n").unwrap();
    let run = env
        .run(["--db", &db, "export", "--out", "other", "--overwrite"])
        .expect_code(2);
    assert!(run.stderr.contains("part-00000.jsonl"), "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(other.join("part-00000.jsonl")).unwrap(),
        "{}\n"
    );
}

/// A manifest must prove it is instill's: another tool's `{"files": [...]}` or `{}` does not
/// make a directory an export. An export written by instill 0.1 (its exact manifest, shards
/// with their SHA-256) is still replaced.
#[test]
fn only_a_manifest_written_by_instill_makes_a_directory_replaceable() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = env.write("few.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n");
    env.run(["import", file.to_str().unwrap()]).expect_code(0);
    let foreign = [
        serde_json::json!({"files": ["data.jsonl"]}),
        serde_json::json!({}),
        serde_json::json!({"instill_version": "0.1.0", "shards": [{"file": "data.jsonl"}]}),
        serde_json::json!({"tool": "other", "command": "export", "files": ["data.jsonl"]}),
    ];
    for (i, manifest) in foreign.iter().enumerate() {
        let dir = env.path(&format!("foreign{i}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
        if i != 1 {
            std::fs::write(dir.join("data.jsonl"), "mine\n").unwrap();
        }
        let before = listing(&dir);
        let out = dir.to_str().unwrap();
        let run = env
            .run(["export", "--out", out, "--overwrite"])
            .expect_code(2);
        assert!(
            run.stderr.contains("manifest.json"),
            "{manifest}: {}",
            run.stderr
        );
        assert_eq!(listing(&dir), before, "{manifest}: changed");
        assert_eq!(
            std::fs::read_to_string(dir.join("manifest.json")).unwrap(),
            manifest.to_string()
        );
    }

    // The manifest instill 0.1 (0460483) wrote, byte for byte in shape.
    let old = env.path("old");
    std::fs::create_dir(&old).unwrap();
    let shard = b"{\"instruction\":\"a\",\"input\":\"\",\"output\":\"b\"}\n";
    std::fs::write(old.join("part-00000.jsonl"), shard).unwrap();
    let sha: String = Sha256::digest(shard)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let manifest = serde_json::json!({
        "instill_version": "0.1.0", "created_at_ms": 1_760_000_000_000_i64, "format": "alpaca",
        "compression": "none", "filters": {"status": "kept"}, "val_fraction": 0.0, "seed": 0,
        "shard_rows": 100_000, "shard_bytes": null,
        "shards": [{"file": "part-00000.jsonl", "split": "all", "rows": 1,
                    "bytes": shard.len(), "uncompressed_bytes": shard.len(), "sha256": sha}],
        "totals": {"rows": 1, "bytes": shard.len(), "uncompressed_bytes": shard.len(),
                   "shards": 1, "train_rows": 1, "val_rows": 0}
    });
    std::fs::write(old.join("manifest.json"), manifest.to_string()).unwrap();
    env.run([
        "export",
        "--out",
        "old",
        "--overwrite",
        "--format",
        "sharegpt",
    ])
    .expect_code(0);
    let now: serde_json::Value =
        serde_json::from_slice(&std::fs::read(old.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(now["tool"], "instill", "{now}");
    assert_eq!(now["command"], "export", "{now}");
    assert_eq!(now["format"], "sharegpt", "{now}");
}

/// The staging directories beside `out` (`.NAME.instill-tmp-PID`).
fn staging_dirs(out: &std::path::Path) -> Vec<String> {
    let name = out.file_name().unwrap().to_string_lossy().into_owned();
    listing(out.parent().unwrap())
        .into_iter()
        .filter(|n| n.starts_with(&format!(".{name}.instill-")))
        .collect()
}

/// Starts a slow export (zstd 19, small shards) of the database into `out` and waits until it
/// is writing its second shard.
fn export_until_mid_way(env: &Env, out: &std::path::Path) -> std::process::Child {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(["export", "--out", out.to_str().unwrap(), "--no-progress"])
        .args([
            "--compress",
            "zstd",
            "--zstd-level",
            "19",
            "--shard-rows",
            "300",
        ])
        .env("INSTILL_DB", &env.db.url)
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let staging = out.parent().unwrap().join(format!(
        ".{}.instill-tmp-{}",
        out.file_name().unwrap().to_string_lossy(),
        child.id()
    ));
    let started = std::time::Instant::now();
    while std::fs::read_dir(staging.join("data/train")).map_or(0, |d| d.count()) < 2 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(120),
            "the export never reached its second shard"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child
}

/// SIGINT or SIGTERM to the instill process mid-export: its staging directory is removed and
/// it exits 130 or 143. A SIGKILL leaves one behind, which the next export into the same --out
/// removes (its process is dead and it holds only shards); other staging directories (a live
/// process's, or one holding a file an export never writes) stay.
#[test]
fn an_interrupted_export_leaves_no_staging_directory() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["import", shared("data/alpaca_data.json").to_str().unwrap()])
        .expect_code(0);
    let out = env.path("big");
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let child = export_until_mid_way(&env, &out);
        let status = std::process::Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(code), "SIG{signal}: {stderr}");
        assert_eq!(staging_dirs(&out), Vec::<String>::new(), "SIG{signal}");
        assert!(!out.exists(), "SIG{signal}");
    }

    let mut child = export_until_mid_way(&env, &out);
    child.kill().unwrap(); // SIGKILL: no handler runs
    child.wait().unwrap();
    let stale = format!(".big.instill-tmp-{}", child.id());
    assert_eq!(staging_dirs(&out), std::slice::from_ref(&stale));
    // A dead process's directory with a file no export writes, and a live process's: kept.
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let foreign = env.path(&format!(".big.instill-tmp-{}", dead.id()));
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "mine").unwrap();
    let live = env.path(&format!(".big.instill-tmp-{}", std::process::id()));
    std::fs::create_dir_all(live.join("data/train")).unwrap();
    std::fs::write(live.join("data/train/train-00000.jsonl"), "{}\n").unwrap();
    env.run(["export", "--out", "big", "--shard-rows", "30000"])
        .expect_code(0);
    assert!(
        !env.path(&stale).exists(),
        "the stale staging directory stayed"
    );
    assert!(
        foreign.join("notes.txt").is_file() && live.join("data/train/train-00000.jsonl").is_file()
    );
    assert!(
        out.join("manifest.json").is_file()
            && out.join("data/train/train-00000-of-00002.jsonl").is_file()
    );
}

/// `--out` never is the database's -wal, -shm or -journal file: a directory there would keep
/// the database from opening.
#[test]
fn export_never_writes_over_the_database_files() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = env.write("few.jsonl", "{\"instruction\":\"a\",\"output\":\"b\"}\n");
    env.run(["import", file.to_str().unwrap()]).expect_code(0);
    let db = env.db.url.trim_start_matches("sqlite://").to_string();
    for suffix in ["-wal", "-shm", "-journal"] {
        let out = format!("{db}{suffix}");
        let run = env
            .run(["export", "--out", &out, "--overwrite"])
            .expect_code(2);
        assert!(run.stderr.contains("--db"), "{suffix}: {}", run.stderr);
        assert!(!std::path::Path::new(&out).is_dir(), "{suffix}");
        let run = env
            .run(["export", "--out", &format!("{out}/x")])
            .expect_code(2);
        assert!(run.stderr.contains("--db"), "{suffix}: {}", run.stderr);
    }
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    assert_eq!(stats["records"]["total"], 1, "{stats}");
}

/// `export --out out/zh` on a fresh checkout (no `out/`): the missing parents are made, as the
/// README's first run needs.
#[test]
fn export_makes_the_missing_parents_of_its_directory() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = env.write("a.jsonl", input_file("alpaca"));
    env.run(["import", file.to_str().unwrap()]).expect_code(0);
    env.run(["export", "--out", "out/zh/v1"]).expect_code(0);
    let manifest = env.path("out/zh/v1/manifest.json");
    assert!(manifest.is_file(), "{}", manifest.display());
}
