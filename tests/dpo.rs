//! `instill train --dpo` from the command line on the tiny fixture: pairs from the database
//! (imported) or from a file, LoRA and full fine-tuning, sigmoid and IPO. Fresh adapters make
//! the policy equal to its reference, so the first step's loss is exactly DPO's ln 2 (IPO's
//! (1/(2β))²) and then falls; the loss log has DPO's columns; resume settings are checked; bad
//! data is refused naming the file and line.

use std::path::{Path, PathBuf};

use crate::util::{Env, repo};

/// `n` preference pairs in trl's text layout: a short good answer and a garbled one.
fn pairs_jsonl(env: &Env, n: usize) -> PathBuf {
    let mut lines = String::new();
    for i in 0..n {
        let row = serde_json::json!({
            "prompt": format!("Give tip number {i} for staying healthy."),
            "chosen": format!("Tip {i}: sleep eight hours and drink water."),
            "rejected": format!("tip tip {i} {i} no no"),
        });
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    env.write("pairs.jsonl", lines)
}

fn train(env: &Env, out: &Path, extra: &[&str]) -> crate::util::Run {
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let mut args: Vec<String> = [
        "train",
        "--model",
        tiny.to_str().unwrap(),
        "--dpo",
        "--out",
        out.to_str().unwrap(),
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
        "--max-len",
        "64",
        "--val-fraction",
        "0",
        "--json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if !extra.contains(&"--max-steps") {
        args.extend(["--max-steps".to_string(), "6".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    env.run(args)
}

/// The loss log's rows as (header, rows of numbers).
fn loss_log(dir: &Path) -> (String, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(dir.join("loss.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let rows = lines
        .map(|l| {
            l.split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    (header, rows)
}

#[test]
fn dpo_starts_at_ln2_falls_and_logs_its_rewards_from_the_database_and_from_files() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = pairs_jsonl(&env, 8);
    env.run(["import", data.to_str().unwrap(), "--source", "tips"])
        .expect_code(0);

    // LoRA from the database's only set.
    let lora = env.path("lora");
    let j = train(&env, &lora, &["--lora"]).expect_code(0).json();
    assert_eq!(j["objective"], "dpo", "{j}");
    let first = j["first_loss"].as_f64().unwrap();
    // B = 0: the adapted model is its reference, every log-ratio is 0, the loss −log σ(0).
    assert!((first - std::f64::consts::LN_2).abs() < 1e-6, "{j}");
    assert!(j["last_loss"].as_f64().unwrap() < first, "{j}");
    assert!(
        j["dpo"]["last_step"]["reward_accuracy"].as_f64().unwrap() > 0.5,
        "{j}"
    );
    let (header, rows) = loss_log(&lora);
    for col in [
        "reward_margin",
        "reward_accuracy",
        "logps_chosen",
        "logps_rejected",
    ] {
        assert!(header.contains(col), "{header}");
    }
    assert_eq!(rows.len(), 6);
    assert!(lora.join("adapter_model.safetensors").is_file());

    // The same pairs from the file: the same first step.
    let from_file = env.path("from-file");
    let j = train(
        &env,
        &from_file,
        &["--lora", "--data", data.to_str().unwrap()],
    )
    .expect_code(0)
    .json();
    assert!(
        (j["first_loss"].as_f64().unwrap() - first).abs() < 1e-6,
        "{j}"
    );

    // IPO: (0 − 1/(2β))² at the start; full fine-tuning against a frozen copy: ln 2 too.
    let ipo = env.path("ipo");
    let j = train(&env, &ipo, &["--lora", "--loss", "ipo", "--beta", "0.5"])
        .expect_code(0)
        .json();
    assert!(
        (j["first_loss"].as_f64().unwrap() - 1.0).abs() < 1e-6,
        "{j}"
    );
    let full = env.path("full");
    let j = train(&env, &full, &["--max-steps", "3"])
        .expect_code(0)
        .json();
    assert_eq!(j["mode"], "full");
    // The frozen reference runs the fast scoring pass, within ~1e-5 of the training pass.
    assert!(
        (j["first_loss"].as_f64().unwrap() - first).abs() < 1e-4,
        "{j}"
    );
    assert!(full.join("model.safetensors").is_file());

    // A resume must keep β and the loss.
    let err = train(&env, &lora, &["--lora", "--resume", "--beta", "0.3"])
        .expect_code(2)
        .stderr;
    assert!(err.contains("beta"), "{err}");
    train(&env, &lora, &["--lora", "--resume"]).expect_code(0);
}

#[test]
fn dpo_refuses_data_that_is_not_pairs_and_unknown_sets() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let out = env.path("o");
    let alpaca = env.write(
        "alpaca.jsonl",
        "{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}\n",
    );
    let err = train(&env, &out, &["--lora", "--data", alpaca.to_str().unwrap()])
        .expect_code(2)
        .stderr;
    assert!(
        err.contains("alpaca.jsonl:1") && err.contains("pair"),
        "{err}"
    );
    let bad = env.write(
        "bad.jsonl",
        "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n{\"prompt\": \"p\", \"chosen\": \"a\"}\n",
    );
    let err = train(&env, &out, &["--lora", "--data", bad.to_str().unwrap()])
        .expect_code(2)
        .stderr;
    assert!(
        err.contains("bad.jsonl:2") && err.contains("rejected"),
        "{err}"
    );
    let err = train(&env, &out, &["--lora"]).expect_code(2).stderr;
    assert!(err.contains("instill pairs"), "{err}");
    let data = pairs_jsonl(&env, 4);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let err = train(&env, &out, &["--lora", "--pairs", "nosuch"])
        .expect_code(2)
        .stderr;
    assert!(err.contains("nosuch"), "{err}");
    assert!(!out.exists(), "a refused run wrote {out:?}");
}
