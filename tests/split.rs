//! One validation split: with the same `--val-fraction` and `--seed`, `instill train` holds out
//! exactly the records `instill export` puts in `val` (train reports the held-out records'
//! count and digest in its summary), from the database and from `--data` files alike, and the
//! two commands' default seeds agree.

use instill_core::{Record, held_out_digest, norm_hash};

use crate::util::{Env, repo, shared};

/// 80 Alpaca records, then case and punctuation variants of the first 10 (exact duplicates
/// after normalisation: a split of the raw text would part them).
fn data(env: &Env) -> std::path::PathBuf {
    let all: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(shared("data/alpaca_data.json")).unwrap()).unwrap();
    let mut lines: String = all[..80].iter().map(|r| format!("{r}\n")).collect();
    for r in &all[..10] {
        let mut v = r.clone();
        let shout = v["instruction"].as_str().unwrap().to_uppercase();
        v["instruction"] = serde_json::Value::String(format!("{shout}!!"));
        lines.push_str(&format!("{v}\n"));
    }
    env.write("data.jsonl", lines)
}

/// (rows, digest) of an export's validation shard.
fn exported_val(env: &Env, out: &str, extra: &[&str]) -> (u64, String) {
    let dir = env.path(out);
    let mut args = vec!["export", "--out", dir.to_str().unwrap(), "--json"];
    args.extend(extra);
    let j = env.run(args).expect_code(0).json();
    let text = std::fs::read_to_string(dir.join("data/validation/validation-00000-of-00001.jsonl"))
        .unwrap();
    let hashes: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let field = |k: &str| v[k].as_str().unwrap_or("").to_string();
            norm_hash(&Record::new(
                field("instruction"),
                field("input"),
                field("output"),
            ))
        })
        .collect();
    assert_eq!(j["val_rows"].as_u64(), Some(hashes.len() as u64), "{j}");
    (
        hashes.len() as u64,
        held_out_digest(hashes.iter().map(String::as_str)),
    )
}

/// (held-out records, digest) that `train` reports.
fn trained_val(env: &Env, out: &str, extra: &[&str]) -> (u64, String) {
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let dir = env.path(out);
    let mut args = vec![
        "train",
        "--model",
        tiny.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
        "--max-len",
        "96",
        "--json",
    ];
    args.extend(extra);
    let j = env.run(args).expect_code(0).json();
    (
        j["held_out"].as_u64().unwrap_or(u64::MAX),
        j["held_out_digest"].as_str().unwrap_or("none").to_string(),
    )
}

#[test]
fn train_holds_out_exactly_the_records_export_puts_in_val() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = data(&env);
    let path = file.to_str().unwrap();
    env.run(["import", path]).expect_code(0);

    let split = ["--val-fraction", "0.3", "--seed", "7"];
    let (n, digest) = exported_val(
        &env,
        "export",
        &[&split[..], &["--status", "kept"]].concat(),
    );
    assert!((5..60).contains(&n), "{n} of 90 held out");
    // From the database (the same records), and from the file they were imported from.
    let from_db = trained_val(&env, "t-db", &[&split[..], &["--status", "kept"]].concat());
    assert_eq!(from_db, (n, digest.clone()));
    let from_file = trained_val(&env, "t-file", &[&split[..], &["--data", path]].concat());
    assert_eq!(from_file, (n, digest.clone()));

    // Another seed holds out other records, in both.
    let other = ["--val-fraction", "0.3", "--seed", "8"];
    let exported = exported_val(&env, "export-8", &other);
    assert_ne!(exported.1, digest);
    assert_eq!(
        trained_val(&env, "t-8", &[&other[..], &["--data", path]].concat()),
        exported
    );

    // The default seeds agree: only the fraction given.
    let fraction = ["--val-fraction", "0.3"];
    assert_eq!(
        trained_val(
            &env,
            "t-default",
            &[&fraction[..], &["--data", path]].concat()
        ),
        exported_val(&env, "export-default", &fraction)
    );
}
