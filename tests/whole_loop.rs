//! The whole loop through the binary, as the README walks it: generate (fake model server) →
//! filter and dedup → score (a fake judge whose grades the test plants) → select → train LoRA
//! on SmolLM2 → merge → eval the base model and the tuned one with candle, graded by the fake
//! judge → compare them → report. A run with a real API is the same commands with other URLs.

use std::collections::BTreeMap;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::local::smollm2;
use crate::util::Env;

/// The grade the judge plants for a record: from its instruction alone, so the test can
/// recompute it.
fn planted(instruction: &str) -> u32 {
    (instruction.len() % 10) as u32 + 1
}

/// The planted grade of an eval question (0–1), from its number.
fn planted_eval(i: usize) -> f64 {
    [1.0, 0.25, 0.5, 0.75][i % 4]
}

/// One judge for both jobs: records (the English rubric) and eval answers (the eval request).
fn judge(prompt: &str) -> String {
    if prompt.contains("【回答 A】") {
        return "两者相当。\n[[C]]".into();
    }
    if let (Some(a), Some(b)) = (
        prompt.find("[Start of the instruction]\n"),
        prompt.find("\n[End of the instruction]"),
    ) {
        let instruction = &prompt[a + "[Start of the instruction]\n".len()..b];
        return format!("Clear enough.\nScore: {}", planted(instruction));
    }
    let i = prompt
        .find("[E")
        .and_then(|at| {
            prompt[at + 2..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    format!("理由：与标准答案相符。\n得分: {}", planted_eval(i))
}

#[test]
fn generate_curate_score_select_train_merge_eval_report() {
    let gguf = smollm2();
    let generator = FakeServer::start(FakeConfig::default());
    let grader = FakeServer::start(FakeConfig {
        answer: Some(judge),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let gen_url = generator.base_url.as_str();
    let judge_url = grader.base_url.as_str();
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    env.run([
        "generate",
        "--base-url",
        gen_url,
        "--model",
        "fake",
        "--target",
        "120",
        "--max-requests",
        "40",
    ])
    .expect_code(0);
    env.run(["filter"]).expect_code(0);
    env.run(["dedup"]).expect_code(0);

    // Score every kept record; select at 6.
    env.run([
        "score",
        "--judge-model",
        "judge",
        "--base-url",
        judge_url,
        "--name",
        "quality",
    ])
    .expect_code(0);
    let kept_before: Vec<_> = env
        .records()
        .into_iter()
        .filter(|r| r.reason.is_none())
        .collect();
    let sel = env
        .run([
            "select",
            "--scorer",
            "quality",
            "--min-score",
            "6",
            "--json",
        ])
        .expect_code(0)
        .json();
    let want: Vec<String> = kept_before
        .iter()
        .filter(|r| planted(&r.record.instruction) >= 6)
        .map(|r| r.record.instruction.clone())
        .collect();
    assert_eq!(sel["kept"], want.len() as u64, "{sel}");
    let accepted: Vec<String> = env
        .records()
        .into_iter()
        .filter(|r| r.status == instill_core::Status::Accepted)
        .map(|r| r.record.instruction)
        .collect();
    assert_eq!(
        accepted, want,
        "training reads exactly what the judge rated 6 or more"
    );

    // Train LoRA on the selected records, merge.
    let (adapter, merged) = (env.path("adapter"), env.path("merged"));
    env.run([
        "train",
        "--model",
        gguf.to_str().unwrap(),
        "--out",
        adapter.to_str().unwrap(),
        "--lora",
        "--max-steps",
        "6",
        "--batch-size",
        "2",
        "--max-len",
        "64",
        "--val-fraction",
        "0",
    ])
    .expect_code(0);
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

    // Eval base and tuned on a small set; the judge's planted grades come back per class.
    let mut set = String::new();
    let classes = ["open qa", "math"];
    for i in 0..4 {
        let row = serde_json::json!({"question": format!("[E{i}] What is {i} plus {i}?"), "std_answer": format!("{}", 2 * i), "class": classes[i % 2]});
        set.push_str(&row.to_string());
        set.push('\n');
    }
    let set = env.write("eval.jsonl", set);
    let mut means = BTreeMap::new();
    for (label, model) in [("base", gguf.to_path_buf()), ("tuned", merged.clone())] {
        let out = env
            .run([
                "eval",
                "--eval-set",
                set.to_str().unwrap(),
                "--backend",
                "candle",
                "--model",
                model.to_str().unwrap(),
                "--max-tokens",
                "12",
                "--judge-model",
                "judge",
                "--judge-base-url",
                judge_url,
                "--name",
                label,
                "--json",
            ])
            .expect_code(0)
            .json();
        let want_math = (0..4).filter(|i| i % 2 == 1).map(planted_eval).sum::<f64>() / 2.0;
        let got = out["classes"]["math"]["mean"].as_f64().unwrap();
        assert!((got - want_math).abs() < 1e-9, "{label}: {out}");
        means.insert(label, out["overall"].as_f64().unwrap());
    }
    assert_eq!(
        means["base"], means["tuned"],
        "the planted grades do not depend on the model"
    );
    let cmp = env
        .run([
            "eval",
            "--compare",
            "base",
            "tuned",
            "--judge-model",
            "judge",
            "--base-url",
            judge_url,
            "--json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(cmp["overall"]["questions"], 4, "{cmp}");
    env.run(["report", "--out", "report.html"]).expect_code(0);
    let html = std::fs::read_to_string(env.path("report.html")).unwrap();
    assert!(
        html.contains("<h3>quality</h3>") && html.contains("id=\"evaluations\""),
        "the report has the scorer's section and the evaluations"
    );
    // A bar per class and overall per model, at the planted means.
    for bar in [
        "math, base: 0.5",
        "math, tuned: 0.5",
        "open qa, tuned: 0.75",
        "overall, base: 0.625",
    ] {
        assert!(
            html.contains(&format!("<title>{bar}</title>")),
            "no bar {bar}"
        );
    }
}
