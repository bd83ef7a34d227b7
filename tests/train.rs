//! `instill train` and `instill merge-lora` through the binary: the tiny Llama fixture trained
//! fully and with LoRA, merged, loaded back by the candle backend; bad data and a vocabulary
//! mismatch refused; SmolLM2-135M (GGUF) LoRA-trained 30 steps, merged, still answering.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use instill_generator::local::{self, LoadOptions, SeqParams, generate_all};

use crate::local::smollm2;
use crate::util::{Env, Run, Spawned, repo, shared};

fn alpaca_jsonl(env: &Env, n: usize) -> std::path::PathBuf {
    let all: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(shared("data/alpaca_data.json")).unwrap()).unwrap();
    let lines: String = all[..n].iter().map(|r| format!("{r}\n")).collect();
    env.write("train.jsonl", lines)
}

fn greedy(max_new_tokens: usize) -> SeqParams {
    SeqParams {
        max_new_tokens,
        temperature: 0.0,
        top_p: 1.0,
        seed: 0,
        stop: vec![],
        stop_ids: Vec::new(),
    }
}

#[test]
fn the_tiny_model_trains_fully_and_with_lora_and_the_results_load() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 60);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let full = env.path("full");
    let j = env
        .run([
            "train",
            "--model",
            tiny.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            full.to_str().unwrap(),
            "--max-steps",
            "12",
            "--lr",
            "3e-3",
            "--max-len",
            "96",
            "--json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(
        (j["mode"].as_str(), j["steps"].as_u64()),
        (Some("full"), Some(12)),
        "{j}"
    );
    assert!(
        j["last_loss"].as_f64().unwrap() < j["first_loss"].as_f64().unwrap(),
        "{j}"
    );
    assert_eq!(
        std::fs::read_to_string(full.join("loss.csv"))
            .unwrap()
            .lines()
            .count(),
        13
    );
    let loaded = local::load(&full, &Device::Cpu, &LoadOptions::default()).unwrap();
    let prompt = loaded.codec.encode_prompt("Give three tips", true).unwrap();
    assert!(
        !generate_all(&loaded.model, &loaded.codec, &[(prompt, greedy(4))], 1).unwrap()[0]
            .ids
            .is_empty()
    );

    let adapter = env.path("adapter");
    env.run([
        "train",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
        "--lora",
        "--max-steps",
        "6",
        "--max-len",
        "96",
    ])
    .expect_code(0);
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(adapter.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        (
            config["peft_type"].as_str(),
            config["r"].as_u64(),
            config["lora_alpha"].as_f64()
        ),
        (Some("LORA"), Some(8), Some(16.0))
    );
    let merged = env.path("merged");
    env.run([
        "merge-lora",
        "--model",
        tiny.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ])
    .expect_code(0);
    assert!(local::load(&merged, &Device::Cpu, &LoadOptions::default()).is_ok());

    // LoRA over a bf16 base; full fine-tuning in bf16 is refused with the reason.
    let bf16 = env.path("bf16");
    env.run([
        "train",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        bf16.to_str().unwrap(),
        "--lora",
        "--dtype",
        "bf16",
        "--max-steps",
        "3",
        "--max-len",
        "96",
    ])
    .expect_code(0);
    assert!(bf16.join("adapter_model.safetensors").is_file());
    let run = env.run([
        "train",
        "--model",
        tiny.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        env.path("bf16-full").to_str().unwrap(),
        "--dtype",
        "bf16",
        "--max-steps",
        "3",
    ]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("full fine-tuning keeps f32"),
        "{}",
        run.stderr
    );

    // An adapter whose saved embedding has another vocabulary: refused, both sizes named.
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(adapter.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    tensors.insert(
        "base_model.model.model.embed_tokens.modules_to_save.default.weight".into(),
        Tensor::zeros((500, 64), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, adapter.join("adapter_model.safetensors")).unwrap();
    let out = env.path("bad-merge");
    let run = env
        .run([
            "merge-lora",
            "--model",
            tiny.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(
        run.stderr.contains("400") && run.stderr.contains("500"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing written");
}

#[test]
fn bad_training_data_names_the_file_and_line() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let bad = env.write(
        "bad.jsonl",
        "{\"instruction\": \"a\", \"input\": \"\", \"output\": \"b\"}\n{\"instruction\": 3}\n",
    );
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let run = env
        .run([
            "train",
            "--model",
            tiny.to_str().unwrap(),
            "--data",
            bad.to_str().unwrap(),
            "--out",
            env.path("o").to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(run.stderr.contains("bad.jsonl:2"), "{}", run.stderr);
    let run = env
        .run([
            "train",
            "--model",
            tiny.to_str().unwrap(),
            "--out",
            env.path("o").to_str().unwrap(),
        ])
        .expect_code(2);
    assert!(run.stderr.contains("no accepted records"), "{}", run.stderr);
}

#[test]
fn smollm2_lora_trains_merges_and_still_answers() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 200);
    let gguf = smollm2();
    let adapter = env.path("adapter");
    let j = env
        .run([
            "train",
            "--model",
            gguf.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--out",
            adapter.to_str().unwrap(),
            "--lora",
            "--max-steps",
            "30",
            "--batch-size",
            "2",
            "--grad-accum",
            "1",
            "--max-len",
            "80",
            "--val-fraction",
            "0.05",
            "--lr",
            "5e-4",
            "--json",
        ])
        .expect_code(0)
        .json();
    let (before, after) = (
        j["initial_val_loss"].as_f64().unwrap(),
        j["val_loss"].as_f64().unwrap(),
    );
    eprintln!(
        "SmolLM2 LoRA: validation loss {before:.4} → {after:.4}, {} tokens/s",
        j["tokens_per_s"]
    );
    assert!(after < before, "validation loss {before} → {after}");
    let merged = env.path("merged");
    env.run([
        "merge-lora",
        "--model",
        gguf.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        merged.to_str().unwrap(),
    ])
    .expect_code(0);
    let loaded = local::load(Path::new(&merged), &Device::Cpu, &LoadOptions::default()).unwrap();
    let chat = loaded
        .codec
        .render_chat(&[
            ("system", "You are a helpful assistant."),
            ("user", "What is the capital of France?"),
        ])
        .unwrap();
    let ids = loaded.codec.encode(&chat).unwrap();
    let answer =
        &generate_all(&loaded.model, &loaded.codec, &[(ids, greedy(32))], 1).unwrap()[0].text;
    assert!(answer.contains("Paris"), "{answer}");
}

/// Every file under `dir` (relative path, bytes), sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().display().to_string();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// `instill train` on the tiny model for 2 steps (unless `extra` sets --max-steps).
fn train_tiny(env: &Env, model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Run {
    env.run(tiny_args(model, data, out, extra))
}

/// [`train_tiny`]'s arguments.
fn tiny_args(model: &Path, data: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-len",
        "96",
        "--batch-size",
        "2",
        "--grad-accum",
        "1",
    ]
    .map(String::from)
    .to_vec();
    if !extra.contains(&"--max-steps") {
        args.extend(["--max-steps".to_string(), "2".to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn merge_tiny(env: &Env, model: &Path, adapter: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args: Vec<&str> = vec![
        "merge-lora",
        "--model",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    env.run(args)
}

#[test]
fn train_and_merge_lora_refuse_an_out_over_their_inputs() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 20);
    let m = env.path("m");
    copy_dir(&repo("tests/fixtures/local/tiny-llama"), &m);
    let model_files = snapshot(&m);
    // The reproduction (`--out m` emptied the tokenizer files), and an --out inside the model.
    for out in [m.clone(), m.join("sub"), env.path("m/../m")] {
        let run = train_tiny(&env, &m, &data, &out, &[]).expect_code(2);
        assert!(run.stderr.contains("--model"), "{}", run.stderr);
    }
    assert!(snapshot(&m) == model_files, "the model changed");
    assert!(!m.join("sub").exists());

    let adapter = env.path("adapter");
    train_tiny(&env, &m, &data, &adapter, &["--lora"]).expect_code(0);
    let adapter_files = snapshot(&adapter);
    for (out, named) in [
        (m.clone(), "--model"),
        (m.join("merged"), "--model"),
        (adapter.clone(), "--adapter"),
        (adapter.join("merged"), "--adapter"),
    ] {
        let run = merge_tiny(&env, &m, &adapter, &out, &["--overwrite"]).expect_code(2);
        assert!(run.stderr.contains(named), "{}", run.stderr);
    }
    assert!(snapshot(&m) == model_files, "the model changed");
    assert!(snapshot(&adapter) == adapter_files, "the adapter changed");

    // Nor the database's -wal, -shm or -journal file, read or not (a directory there keeps it
    // from opening).
    let db = env.db.url.trim_start_matches("sqlite://").to_string();
    for suffix in ["-wal", "-shm", "-journal"] {
        let out = std::path::PathBuf::from(format!("{db}{suffix}"));
        let run = train_tiny(&env, &m, &data, &out, &["--overwrite"]).expect_code(2);
        assert!(run.stderr.contains("--db"), "{}", run.stderr);
        let run = merge_tiny(&env, &m, &adapter, &out, &["--overwrite"]).expect_code(2);
        assert!(run.stderr.contains("--db"), "{}", run.stderr);
        assert!(!out.is_dir(), "{suffix}");
    }
}

#[test]
fn train_and_merge_lora_write_only_into_their_own_earlier_output() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 20);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    // A directory instill did not write: refused with and without --overwrite, left as it was.
    let other = env.path("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "mine").unwrap();
    for extra in [&[][..], &["--overwrite"], &["--resume"]] {
        let run = train_tiny(&env, &tiny, &data, &other, extra).expect_code(2);
        assert!(run.stderr.contains("notes.txt"), "{}", run.stderr);
    }
    assert_eq!(snapshot(&other), [("notes.txt".into(), b"mine".to_vec())]);

    // Its own earlier output: refused without a flag, replaced with --overwrite (one header in
    // loss.csv), continued with --resume only under the same settings.
    let o = env.path("o");
    train_tiny(&env, &tiny, &data, &o, &[]).expect_code(0);
    let run = train_tiny(&env, &tiny, &data, &o, &[]).expect_code(2);
    assert!(
        run.stderr.contains("--resume") && run.stderr.contains("--overwrite"),
        "{}",
        run.stderr
    );
    train_tiny(&env, &tiny, &data, &o, &["--overwrite", "--max-steps", "3"]).expect_code(0);
    let log = std::fs::read_to_string(o.join("loss.csv")).unwrap();
    assert_eq!(log.lines().count(), 4, "{log}");
    assert_eq!(log.matches("step,").count(), 1, "{log}");
    let run = train_tiny(
        &env,
        &tiny,
        &data,
        &o,
        &["--resume", "--max-steps", "3", "--lr", "1e-3"],
    )
    .expect_code(2);
    assert!(run.stderr.contains("lr"), "{}", run.stderr);
    let run = train_tiny(
        &env,
        &tiny,
        &data,
        &o,
        &["--resume", "--max-steps", "3", "--seed", "7"],
    )
    .expect_code(2);
    assert!(run.stderr.contains("seed"), "{}", run.stderr);
    train_tiny(&env, &tiny, &data, &o, &["--resume", "--max-steps", "3"]).expect_code(0);

    // merge-lora: the same rule.
    let adapter = env.path("adapter");
    train_tiny(&env, &tiny, &data, &adapter, &["--lora"]).expect_code(0);
    for extra in [&[][..], &["--overwrite"]] {
        let run = merge_tiny(&env, &tiny, &adapter, &other, extra).expect_code(2);
        assert!(run.stderr.contains("notes.txt"), "{}", run.stderr);
    }
    assert_eq!(snapshot(&other), [("notes.txt".into(), b"mine".to_vec())]);
    let merged = env.path("merged");
    merge_tiny(&env, &tiny, &adapter, &merged, &[]).expect_code(0);
    let run = merge_tiny(&env, &tiny, &adapter, &merged, &[]).expect_code(2);
    assert!(run.stderr.contains("--overwrite"), "{}", run.stderr);
    merge_tiny(&env, &tiny, &adapter, &merged, &["--overwrite"]).expect_code(0);
    assert!(local::load(&merged, &Device::Cpu, &LoadOptions::default()).is_ok());
}

#[test]
fn lora_modules_the_model_lacks_are_refused_by_name() {
    // `--target-modules bogus_proj` adapted nothing, wrote an empty adapter and exited 0.
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 8);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let out = env.path("o");
    for (extra, unknown, available) in [
        (["--target-modules", "bogus_proj"], "bogus_proj", "q_proj"),
        (
            ["--target-modules", "q_proj,bogus_proj"],
            "bogus_proj",
            "down_proj",
        ),
        (
            ["--modules-to-save", "bogus_head"],
            "bogus_head",
            "embed_tokens",
        ),
    ] {
        let mut args = vec!["--lora"];
        args.extend(extra);
        let run = train_tiny(&env, &tiny, &data, &out, &args).expect_code(2);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        for want in [unknown, available] {
            assert!(lines[0].contains(want), "`{want}` missing: {}", lines[0]);
        }
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
}

#[test]
fn a_missing_adapter_is_named_once() {
    // It printed `No such file or directory (os error 2): No such file or directory (os error 2)`.
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let missing = env.path("no-adapter");
    let out = env.path("merged");
    let run = merge_tiny(&env, &tiny, &missing, &out, &[]).expect_code(2);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
    assert!(lines[0].contains(missing.to_str().unwrap()), "{}", lines[0]);
    assert_eq!(
        lines[0].matches("No such file or directory").count(),
        1,
        "{}",
        lines[0]
    );
    assert!(!out.exists());
}
/// `--overwrite` replaces only the command's own earlier output: export over a train output,
/// merge-lora over an export, train over a merged model are refused, naming what is there.
#[test]
fn overwrite_never_replaces_another_commands_output() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 20);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let adapter = env.path("adapter");
    train_tiny(&env, &tiny, &data, &adapter, &["--lora"]).expect_code(0);
    let exported = env.path("exported");
    env.run(["export", "--out", exported.to_str().unwrap()])
        .expect_code(0);
    let merged = env.path("merged");
    merge_tiny(&env, &tiny, &adapter, &merged, &[]).expect_code(0);
    let before = [&adapter, &exported, &merged].map(|d| snapshot(d));

    let run = env
        .run(["export", "--out", adapter.to_str().unwrap(), "--overwrite"])
        .expect_code(2);
    assert!(run.stderr.contains("`instill train`"), "{}", run.stderr);
    assert!(run.stderr.contains("--out"), "{}", run.stderr);
    let run = merge_tiny(&env, &tiny, &adapter, &exported, &["--overwrite"]).expect_code(2);
    assert!(run.stderr.contains("`instill export`"), "{}", run.stderr);
    let run = train_tiny(&env, &tiny, &data, &merged, &["--overwrite"]).expect_code(2);
    assert!(
        run.stderr.contains("`instill merge-lora`"),
        "{}",
        run.stderr
    );
    let run = train_tiny(&env, &tiny, &data, &exported, &["--overwrite"]).expect_code(2);
    assert!(run.stderr.contains("`instill export`"), "{}", run.stderr);
    assert!(
        [&adapter, &exported, &merged].map(|d| snapshot(d)) == before,
        "an output changed"
    );
}

/// A refused `--resume` (LoRA switched on or off) writes nothing: the directory is as it was,
/// and is still resumed with its own settings or replaced with --overwrite.
#[test]
fn a_refused_resume_leaves_the_output_as_it_was() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 20);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    for (first, switched) in [(&[][..], &["--lora"][..]), (&["--lora"][..], &[][..])] {
        let o = env.path(if first.is_empty() { "full" } else { "lora" });
        train_tiny(&env, &tiny, &data, &o, first).expect_code(0);
        let before = snapshot(&o);
        let mut resume = vec!["--resume"];
        resume.extend(switched);
        let run = train_tiny(&env, &tiny, &data, &o, &resume).expect_code(2);
        assert!(run.stderr.contains("lora"), "{}", run.stderr);
        assert!(snapshot(&o) == before, "the refused resume changed {o:?}");
        let mut resume = vec!["--resume"];
        resume.extend(first);
        train_tiny(&env, &tiny, &data, &o, &resume).expect_code(0);
        let mut again = vec!["--overwrite"];
        again.extend(switched);
        train_tiny(&env, &tiny, &data, &o, &again).expect_code(0);
    }
}

/// Steps logged in OUT/loss.csv (its rows after the header).
fn logged_steps(out: &Path) -> usize {
    std::fs::read_to_string(out.join("loss.csv")).map_or(0, |t| t.lines().count().saturating_sub(1))
}

/// `instill train` stopped by SIGTERM, then (resumed) by SIGINT: each stops after the step
/// under way with the checkpoint at the last logged step, exits 143 / 130 naming --resume, and
/// writes no adapter; the resume goes on from where the first run stopped.
#[test]
fn a_signal_stops_training_at_a_checkpoint_that_resume_goes_on_from() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 40);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let out = env.path("run");
    let args = tiny_args(
        &tiny,
        &data,
        &out,
        &[
            "--lora",
            "--max-steps",
            "1000000",
            "--checkpoint-every",
            "1000",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut stopped_at = 0;
    for (signal, code, resume) in [("TERM", 143, &[][..]), ("INT", 130, &["--resume"][..])] {
        let child = env.spawn(&[&args[..], resume].concat());
        let started = std::time::Instant::now();
        while logged_steps(&out) < stopped_at + 3 {
            assert!(
                started.elapsed().as_secs() < 120,
                "SIG{signal}: no steps logged"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let kill = std::process::Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        let done = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&done.stderr);
        assert_eq!(done.status.code(), Some(code), "SIG{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("SIG{signal}")) && stderr.contains("--resume"),
            "{stderr}"
        );
        let state: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.join("checkpoint/state.json")).unwrap())
                .unwrap();
        let step = state["step"].as_u64().unwrap() as usize;
        assert_eq!(
            step,
            logged_steps(&out),
            "SIG{signal}: checkpoint and log differ"
        );
        assert!(
            step >= stopped_at + 3,
            "SIG{signal}: {step} after {stopped_at}"
        );
        assert!(stderr.contains(&format!("after step {step}")), "{stderr}");
        assert!(!out.join("adapter_model.safetensors").exists());
        stopped_at = step;
    }
}

/// The adapter is written into OUT/final.tmp and renamed into place: a run leaves no final.tmp,
/// and the state a kill during that write leaves (a half-written staged weights file, no final
/// files yet) is still the run's own output: `--resume` writes the adapter again, whole.
#[test]
fn final_files_are_renamed_into_place_and_a_half_written_set_is_redone() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 20);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let out = env.path("run");
    train_tiny(&env, &tiny, &data, &out, &["--lora"]).expect_code(0);
    assert!(!out.join("final.tmp").exists());
    let whole = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
    for f in ["adapter_model.safetensors", "adapter_config.json"] {
        std::fs::remove_file(out.join(f)).unwrap();
    }
    std::fs::create_dir(out.join("final.tmp")).unwrap();
    std::fs::write(
        out.join("final.tmp/adapter_model.safetensors"),
        &whole[..whole.len() / 2],
    )
    .unwrap();
    train_tiny(&env, &tiny, &data, &out, &["--lora", "--resume"]).expect_code(0);
    assert!(!out.join("final.tmp").exists());
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
        whole
    );
    instill_trainer::load_adapter(&out, &Device::Cpu).unwrap();
}

/// While `instill train` writes into OUT, a second one into the same OUT — fresh, `--resume`
/// or `--overwrite` — stops at once, naming the directory, and leaves the first run's files as
/// they are; once the first has stopped, `--resume` takes over.
#[test]
fn a_second_train_into_the_same_out_is_refused_while_the_first_runs() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = alpaca_jsonl(&env, 40);
    let tiny = repo("tests/fixtures/local/tiny-llama");
    let out = env.path("run");
    let long = [
        "--lora",
        "--max-steps",
        "1000000",
        "--checkpoint-every",
        "2",
    ];
    let args = tiny_args(&tiny, &data, &out, &long);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = env.spawn(&args);
    let started = std::time::Instant::now();
    while !out.join("checkpoint/state.json").exists() {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint written");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    for extra in [&[][..], &["--resume"][..], &["--overwrite"][..]] {
        let second = train_tiny(&env, &tiny, &data, &out, &[&long[..], extra].concat());
        let second = second.expect_code(2);
        assert!(
            second.stderr.contains(&format!(
                "{}: another `instill train` is writing into this directory",
                out.display()
            )),
            "{extra:?}: {}",
            second.stderr
        );
        assert!(out.join("checkpoint/state.json").exists(), "{extra:?}");
    }
    let before = logged_steps(&out);
    while logged_steps(&out) < before + 2 {
        assert!(started.elapsed().as_secs() < 120, "the first run stopped");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let stop = |child: Spawned| {
        let kill = std::process::Command::new("kill")
            .args(["-s", "TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        child.wait_with_output().unwrap().status.code()
    };
    assert_eq!(stop(first), Some(143));
    let stopped_at = logged_steps(&out);
    let resumed = env.spawn(&[&args[..], &["--resume"]].concat());
    while logged_steps(&out) <= stopped_at {
        assert!(
            started.elapsed().as_secs() < 240,
            "the resume logged no step"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(stop(resumed), Some(143));
}
