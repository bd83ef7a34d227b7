//! Exports as their consumers load them: `datasets.load_dataset(DIR)`, pyarrow on each data
//! file, and LLaMA-Factory's loader and converters (emulated from its source, its
//! `dataset_info.json` checked against its documented schema) — every layout, compression, file
//! format (JSONL, Parquet) and split, compared with the database. The Python side is `tests/py/load_export.py`, run with
//! the interpreter `.ci/run` prepares (`INSTILL_PYTHON`: datasets, pyarrow, zstandard).

use std::path::{Path, PathBuf};

use instill_core::{Exchange, Record, Status, in_val};
use serde_json::{Value, json};
use sha2::Digest as _;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, repo};

/// The Python with `datasets`, `pyarrow` and `zstandard` that `.ci/run` installs.
fn python() -> PathBuf {
    let path = std::env::var_os("INSTILL_PYTHON")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from);
    match path {
        Some(p) if p.exists() => p,
        _ => panic!(
            "INSTILL_PYTHON is not set to a Python with datasets, pyarrow and zstandard: run \
             .ci/run (it installs them into a cached virtualenv) or set INSTILL_PYTHON"
        ),
    }
}

/// What `datasets`, pyarrow and LLaMA-Factory saw in the export at `dir`.
fn load(dir: &Path) -> Value {
    let out = std::process::Command::new(python())
        .arg(repo("tests/py/load_export.py"))
        .arg(dir)
        .env("HF_DATASETS_CACHE", dir.with_extension("hf-cache"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("python runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "load_export.py failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"))
}

/// A mixed zh/en dataset with system prompts, multi-turn history, quotes, newlines and emoji;
/// every record about something else, so that dedup keeps them.
fn mixed_file() -> String {
    const ZH: [&str; 12] = [
        "长城的历史",
        "如何煮米饭",
        "光合作用的原理",
        "唐诗的格律",
        "太阳系有几颗行星",
        "怎样养护多肉植物",
        "人民币汇率的影响因素",
        "围棋的基本规则",
        "黄河的发源地",
        "春节的传统习俗",
        "高铁为什么这么快",
        "如何学习书法",
    ];
    const EN: [&str; 12] = [
        "the water cycle",
        "how vaccines work",
        "the rules of chess",
        "why the sky is blue",
        "compound interest",
        "the causes of inflation",
        "how bees make honey",
        "the French Revolution",
        "black holes",
        "how to bake sourdough bread",
        "the history of jazz",
        "plate tectonics",
    ];
    let mut lines = String::new();
    for (i, (zh, en)) in ZH.iter().zip(EN).enumerate() {
        let mut v = json!({
            "instruction": format!("请简要介绍{zh}。"),
            "input": if i % 3 == 0 { format!("读者是{}年级的学生。", i + 1) } else { String::new() },
            "output": format!("关于{zh}：\"要点\"如下。\n第二行 🎉"),
        });
        if i % 4 == 1 {
            v["system"] = json!("你是一位知识渊博的老师。");
            v["history"] = json!([[format!("你好，我想了解{zh}"), "好的，请问想知道哪方面？"]]);
        }
        lines.push_str(&format!("{v}\n"));
        let en = json!({
            "instruction": format!("Explain {en} to a curious adult."),
            "input": format!("Keep it short.\tUse one example about {en}."),
            "output": format!("Here is {en} in brief, with an example."),
        });
        lines.push_str(&format!("{en}\n"));
    }
    lines
}

/// A database with imported and generated records, filtered and deduplicated.
fn database() -> (Env, FakeServer) {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = env.write("mixed.jsonl", mixed_file());
    env.run(["import", file.to_str().unwrap(), "--source", "mixed"])
        .expect_code(0);
    env.run(["seeds", "import", "--builtin", "zh"])
        .expect_code(0);
    let server = FakeServer::start(FakeConfig {
        lang: "zh",
        ..FakeConfig::default()
    });
    env.run([
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "zh",
        "--target",
        "6",
        "--run",
        "zh-run",
        "--max-requests",
        "20",
    ])
    .expect_code(0);
    env.run(["filter"]).expect_code(0);
    env.run(["dedup"]).expect_code(0);
    (env, server)
}

/// The turns of a record: (role, text), system first when set, the user turn joining
/// instruction and input with `join`.
fn turns(r: &Record, join: &str) -> Vec<(&'static str, String)> {
    let mut t: Vec<(&str, String)> = Vec::new();
    if !r.system.is_empty() {
        t.push(("system", r.system.clone()));
    }
    for Exchange(u, a) in &r.history {
        t.push(("user", u.clone()));
        t.push(("assistant", a.clone()));
    }
    let user: Vec<&str> = [r.instruction.as_str(), r.input.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    t.push(("user", user.join(join)));
    t.push(("assistant", r.output.clone()));
    t
}

/// A record as `datasets` gives it back in `format` (alpaca's optional columns null when no
/// exported record has them).
fn row(r: &Record, format: &str, any_system: bool, any_history: bool) -> Value {
    let named = |names: [&str; 3], keys: [&str; 2]| -> Value {
        let list: Vec<Value> = turns(r, "\n\n")
            .into_iter()
            .map(|(role, text)| {
                let name = match role {
                    "system" => names[0],
                    "user" => names[1],
                    _ => names[2],
                };
                json!({keys[0]: name, keys[1]: text})
            })
            .collect();
        Value::Array(list)
    };
    match format {
        "alpaca" => {
            let history: Vec<Value> = r
                .history
                .iter()
                .map(|Exchange(u, a)| json!([u, a]))
                .collect();
            json!({
                "instruction": r.instruction, "input": r.input, "output": r.output,
                "system": if any_system { json!(r.system) } else { Value::Null },
                "history": if any_history { json!(history) } else { Value::Null },
            })
        }
        "sharegpt" => {
            json!({"conversations": named(["system", "human", "gpt"], ["from", "value"])})
        }
        _ => json!({"messages": named(["system", "user", "assistant"], ["role", "content"])}),
    }
}

/// What LLaMA-Factory's converter reads from a record's row: the system prompt and the turns.
fn lf_row(r: &Record, format: &str) -> Value {
    // Alpaca's converter joins instruction and input with one newline; the chat layouts carry
    // the user turn instill wrote (a blank line between them).
    let join = if format == "alpaca" { "\n" } else { "\n\n" };
    let turns: Vec<Value> = turns(r, join)
        .into_iter()
        .filter(|(role, _)| *role != "system")
        .map(|(role, text)| json!([role, text]))
        .collect();
    json!({"system": r.system, "turns": turns})
}

/// Removes the keys pyarrow leaves out where `datasets` gives null (a column no line has).
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn every_export_loads_in_datasets_pyarrow_and_llamafactory() {
    let (env, _server) = database();
    let kept: Vec<_> = env
        .records()
        .into_iter()
        .filter(|r| r.status != Status::Rejected)
        .collect();
    assert!(kept.len() > 20, "{} kept", kept.len());
    let any_system = kept.iter().any(|r| !r.record.system.is_empty());
    let any_history = kept.iter().any(|r| !r.record.history.is_empty());
    assert!(any_system && any_history);
    let split_args = ["--val-fraction", "0.3", "--seed", "5", "--shard-rows", "4"];
    let parquet_split = [&["--file-format", "parquet"][..], &split_args].concat();
    let cases: [(&str, &[&str]); 5] = [
        ("plain", &[]),
        ("zstd", &["--compress", "zstd"]),
        ("split", &split_args),
        ("parquet", &["--file-format", "parquet"]),
        ("parquet-split", &parquet_split),
    ];
    for format in ["alpaca", "sharegpt", "messages"] {
        // A build without the `parquet` feature refuses Parquet exports.
        let built = cases
            .iter()
            .filter(|(case, _)| cfg!(feature = "parquet") || !case.starts_with("parquet"));
        for &(case, extra) in built {
            let what = format!("{format} {case}");
            let dir = env.path(&format!("{format}-{case}"));
            let mut args = vec!["export", "--out", dir.to_str().unwrap(), "--format", format];
            args.extend(extra);
            let run = env.run(args).expect_code(0);
            assert_eq!(
                run.stderr.contains("LLaMA-Factory cannot read"),
                case == "zstd",
                "{what}: {}",
                run.stderr
            );
            let manifest: Value =
                serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
            let file_format = if case.starts_with("parquet") {
                "parquet"
            } else {
                "jsonl"
            };
            assert_eq!(manifest["file_format"], file_format, "{what}");
            let seen = load(&dir);
            let with_val = case.ends_with("split");
            let mut want: Vec<(&str, Vec<&Record>)> = vec![("train", Vec::new())];
            if with_val {
                want.push(("validation", Vec::new()));
            }
            for r in &kept {
                let val = with_val && in_val(&r.norm_hash, 5, 0.3);
                want[usize::from(val)].1.push(&r.record);
            }
            let splits: Vec<&str> = want.iter().map(|(s, _)| *s).collect();
            let got: Vec<&str> = seen["datasets"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut sorted = splits.clone();
            sorted.sort_unstable();
            assert_eq!(got, sorted, "{what}: splits");
            for (split, records) in &want {
                let rows: Vec<Value> = records
                    .iter()
                    .map(|r| row(r, format, any_system, any_history))
                    .collect();
                let key = if *split == "train" {
                    "train_rows"
                } else {
                    "val_rows"
                };
                assert_eq!(manifest["totals"][key], rows.len(), "{what}: {split} count");
                let ds = &seen["datasets"][split];
                assert_eq!(
                    ds["rows"],
                    Value::Array(rows.clone()),
                    "{what}: {split} rows"
                );
                let columns: Vec<&str> = match format {
                    "alpaca" => vec!["instruction", "input", "output", "system", "history"],
                    "sharegpt" => vec!["conversations"],
                    _ => vec!["messages"],
                };
                assert_eq!(ds["columns"], json!(columns), "{what}: {split} columns");
                // pyarrow, file by file, in the card's order.
                let files = seen["pyarrow"][split].as_array().unwrap();
                if with_val && *split == "train" {
                    assert!(files.len() > 1, "{what}: one shard");
                }
                let by_pyarrow: Vec<Value> = files
                    .iter()
                    .flat_map(|f| f["rows"].as_array().unwrap().clone())
                    .collect();
                let rows_no_nulls: Vec<Value> = rows.iter().map(without_nulls).collect();
                assert_eq!(by_pyarrow, rows_no_nulls, "{what}: {split} pyarrow");
                check_llamafactory(&seen, &dir, split, records, format, case, &what);
            }
        }
    }
}

/// LLaMA-Factory's view of one split: the entry for it, refused for zstd shards (the documented
/// limit), otherwise the turns its converter reads equal the records'.
fn check_llamafactory(
    seen: &Value,
    dir: &Path,
    split: &str,
    records: &[&Record],
    format: &str,
    case: &str,
    what: &str,
) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let entry_name = if split == "train" {
        name
    } else {
        format!("{name}_validation")
    };
    let entry = &seen["llamafactory"][&entry_name];
    if case == "zstd" {
        let error = entry["error"].as_str().unwrap_or("");
        assert!(error.starts_with("Allowed file types"), "{what}: {entry}");
        return;
    }
    assert!(entry["error"].is_null(), "{what}: {entry}");
    let want: Vec<Value> = records.iter().map(|r| lf_row(r, format)).collect();
    let mut got = entry["rows"].as_array().unwrap().clone();
    let mut want_sorted = want;
    // LLaMA-Factory lists a directory in the file system's order: compare as sets.
    let key = |v: &Value| v.to_string();
    got.sort_by_key(key);
    want_sorted.sort_by_key(key);
    assert_eq!(
        got, want_sorted,
        "{what}: LLaMA-Factory rows of {entry_name}"
    );
}

#[test]
fn the_dataset_card_tells_where_the_data_came_from() {
    let (env, _server) = database();
    let dir = env.path("card");
    env.run([
        "export",
        "--out",
        dir.to_str().unwrap(),
        "--compress",
        "zstd",
    ])
    .expect_code(0);
    let card = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mixed_sha: String = sha2::Sha256::digest(mixed_file().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let kept = env
        .records()
        .into_iter()
        .filter(|r| r.status != Status::Rejected)
        .count();
    for want in [
        "configs:\n- config_name: default\n",
        "    - \"data/train/train-00000-of-00001.jsonl.zst\"\n",
        "language:\n- zh\n- en\n",
        "license: unknown",
        "- synthetic\n",
        &format!("{kept} instruction records exported by instill"),
        "| Chinese (zh) |",
        "| English (en) |",
        "| mixed |",
        "### `zh-run`",
        "- model: `fake`",
        "- temperature: ",
        "`instill filter` on ",
        "`instill dedup` on ",
        "MinHash-LSH at Jaccard 0.8 (char 5-grams, 128 permutations)",
        "ROUGE-L at 0.7",
        "## License",
        "LLaMA-Factory cannot read `.jsonl.zst`",
        "pip install zstandard",
        "load_dataset(\"path/to/card\")",
        "every record that `filter` and `dedup` did not reject (`--status kept`)",
        "Of the exported records: ",
        "| mixed.jsonl | alpaca | `",
        &mixed_sha,
    ] {
        assert!(card.contains(want), "the card lacks {want:?}:\n{card}");
    }
    // Markdown tables start at the line's start (an indented one is a code block).
    for line in card.lines() {
        assert!(
            !line.trim_start().starts_with('|') || line.starts_with('|'),
            "{line:?}"
        );
    }
    // LLaMA-Factory refuses .zst: the card gives no configuration that cannot work.
    assert!(!card.contains("dataset_dir:"), "{card}");
    let plain = env.path("plain");
    env.run([
        "export",
        "--out",
        plain.to_str().unwrap(),
        "--val-fraction",
        "0.2",
    ])
    .expect_code(0);
    let card = std::fs::read_to_string(plain.join("README.md")).unwrap();
    assert!(
        card.contains(
            "dataset_dir: path/to/plain\ndataset: plain\neval_dataset: plain_validation\n"
        ),
        "{card}"
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let files: Vec<&str> = manifest["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        [
            "data/train/train-00000-of-00001.jsonl.zst",
            "README.md",
            "dataset_info.json"
        ]
    );
}
