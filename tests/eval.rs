//! `instill eval` against two fake servers: a candidate that answers each question and a judge
//! whose grades the test plants. Per-class means must match the planted grades, a rerun sends
//! nothing, class labels are normalised, and a class without a judge prompt is reported.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::Env;

const CLASSES: [&str; 4] = ["math", "open qa", "closed\u{a0}QA", "Code"];

/// The planted grade of question `i` (0–1).
fn planted(i: usize) -> f64 {
    [0.0, 0.5, 1.0, 0.8, 0.3][i % 5]
}

/// The number in the first `Q<n>` of `text`.
fn question_number(text: &str) -> Option<usize> {
    let at = text.find("[Q")?;
    text[at + 2..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

fn candidate(prompt: &str) -> String {
    match question_number(prompt) {
        Some(i) => format!("这是对问题 [Q{i}] 的回答。"),
        None => "不知道。".into(),
    }
}

fn better_candidate(prompt: &str) -> String {
    format!("更好的回答 [Q{}]。", question_number(prompt).unwrap_or(0))
}

fn judge(prompt: &str) -> String {
    if let (Some(a), Some(end)) = (prompt.find("【回答 A】"), prompt.find("【回答 A 结束】"))
    {
        // Pairwise: position-biased on every third question, else the better answer.
        let i = question_number(prompt).unwrap_or(0);
        if i.is_multiple_of(3) || prompt[a..end].contains("更好") {
            return "A 更完整。\n[[A]]".into();
        }
        return "B 更完整。\n[[B]]".into();
    }
    let Some(i) = question_number(prompt) else {
        return "得分: 0.5".into();
    };
    let g = planted(i);
    if i % 2 == 0 {
        format!("理由：回答与标准答案基本一致，但有 2 处遗漏。\n得分: {g}")
    } else {
        format!("The answer covers 3 of the 4 points.\n得分：{g}分")
    }
}

fn eval_set(env: &Env, n: usize, extra_class: Option<&str>) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let class = CLASSES[i % CLASSES.len()];
        let row = serde_json::json!({"question": format!("问题 [Q{i}]：请回答。"), "std_answer": format!("标准答案 {i}"), "class": class});
        text.push_str(&row.to_string());
        text.push('\n');
    }
    if let Some(c) = extra_class {
        let row =
            serde_json::json!({"question": format!("问题 [Q{n}]"), "std_answer": "", "class": c});
        text.push_str(&row.to_string());
        text.push('\n');
    }
    env.write("eval_set.jsonl", text)
}

fn eval_args<'a>(
    set: &'a str,
    cand: &'a FakeServer,
    judge: &'a FakeServer,
    label: &'a str,
) -> Vec<&'a str> {
    vec![
        "eval",
        "--eval-set",
        set,
        "--model",
        "cand",
        "--base-url",
        &cand.base_url,
        "--judge-model",
        "fake-judge",
        "--judge-base-url",
        &judge.base_url,
        "--name",
        label,
        "--concurrency",
        "4",
        "--json",
    ]
}

fn server(answer: fn(&str) -> String) -> FakeServer {
    FakeServer::start(FakeConfig {
        answer: Some(answer),
        latency: Duration::ZERO,
        ..FakeConfig::default()
    })
}

#[test]
fn eval_gives_the_planted_per_class_means_and_a_rerun_sends_nothing() {
    let (cand, jdg) = (server(candidate), server(judge));
    for env in Env::both() {
        let n = 23;
        let set = eval_set(&env, n, None);
        let set = set.to_str().unwrap();
        let out = env
            .run(eval_args(set, &cand, &jdg, "base"))
            .expect_code(0)
            .json();
        // The expected means, by normalised class.
        let mut want: BTreeMap<String, (f64, u64)> = BTreeMap::new();
        for i in 0..n {
            let class = CLASSES[i % CLASSES.len()]
                .replace('\u{a0}', " ")
                .to_lowercase();
            let e = want.entry(class).or_default();
            e.0 += planted(i);
            e.1 += 1;
        }
        let classes = out["classes"].as_object().unwrap();
        assert_eq!(classes.len(), want.len(), "{}: {out}", env.backend());
        for (class, (sum, k)) in &want {
            let got = &classes[class];
            assert_eq!(got["n"], *k, "{class}");
            assert!(
                (got["mean"].as_f64().unwrap() - sum / *k as f64).abs() < 1e-9,
                "{class}: {got}"
            );
        }
        let overall: f64 = (0..n).map(planted).sum::<f64>() / n as f64;
        assert!(
            (out["overall"].as_f64().unwrap() - overall).abs() < 1e-9,
            "{out}"
        );
        assert_eq!(out["answered"], n as u64);
        assert_eq!(out["requests_sent_now"], 2 * n as u64);

        let before = (cand.requests().len(), jdg.requests().len());
        let again = env
            .run(eval_args(set, &cand, &jdg, "base"))
            .expect_code(0)
            .json();
        assert_eq!(
            (cand.requests().len(), jdg.requests().len()),
            before,
            "a rerun sent requests"
        );
        assert_eq!(again["requests_sent_now"], 0);
        assert_eq!(again["classes"], out["classes"]);

        // Another judge under the same name is refused; under another name it lives beside.
        let mut other = eval_args(set, &cand, &jdg, "base");
        other[8] = "another-judge";
        let r = env.run(&other).expect_code(2);
        assert!(
            r.stderr
                .contains("evaluation `base` was made with other settings"),
            "{}",
            r.stderr
        );
    }
}

#[test]
fn a_class_without_a_judge_prompt_is_reported_not_guessed() {
    let (cand, jdg) = (server(candidate), server(judge));
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let set = eval_set(&env, 8, Some("poetry"));
    let set = set.to_str().unwrap();
    let r = env.run(eval_args(set, &cand, &jdg, "p")).expect_code(2);
    assert!(
        r.stderr
            .contains("no prompt for class `poetry` (1 questions)"),
        "{}",
        r.stderr
    );
    assert!(
        cand.requests().is_empty(),
        "nothing is sent before the classes are checked"
    );
    let mut skip = eval_args(set, &cand, &jdg, "p");
    skip.push("--skip-missing-classes");
    let out = env.run(&skip).expect_code(0).json();
    assert_eq!(out["skipped_classes"]["poetry"], 1);
    assert_eq!(out["questions"], 8);

    // A broken eval set names its line and field.
    let bad = env.write("bad.jsonl", "{\"question\": \"q\", \"std_answer\": \"a\", \"class\": \"math\"}\n{\"question\": \"q2\", \"class\": \"math\"}\n");
    let r = env
        .run(eval_args(bad.to_str().unwrap(), &cand, &jdg, "b"))
        .expect_code(2);
    assert!(
        r.stderr.contains("bad.jsonl")
            && r.stderr.contains("line 2")
            && r.stderr.contains("std_answer"),
        "{}",
        r.stderr
    );
}

#[test]
fn belle_eval_set_classes_all_have_a_builtin_prompt() {
    let path = crate::util::shared("data/eval_set.json");
    let (cand, jdg) = (server(candidate), server(judge));
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let mut args = eval_args(path.to_str().unwrap(), &cand, &jdg, "belle");
    args.extend(["--limit", "60"]);
    let out = env.run(&args).expect_code(0).json();
    assert_eq!(out["questions"], 60);
    assert!(
        out["skipped_classes"].as_object().unwrap().is_empty(),
        "{out}"
    );
    let classes: Vec<&String> = out["classes"].as_object().unwrap().keys().collect();
    assert!(classes.len() >= 5, "{classes:?}");
    assert!(
        classes
            .iter()
            .all(|c| *c == &c.to_lowercase() && !c.contains('\u{a0}')),
        "{classes:?}"
    );
    assert!(
        classes.contains(&&"closed qa".to_string()) || classes.contains(&&"open qa".to_string())
    );
}

#[test]
fn compare_reports_wins_agreement_and_position_bias() {
    let (base, better, jdg) = (server(candidate), server(better_candidate), server(judge));
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let n = 23;
    let set = eval_set(&env, n, None);
    let set = set.to_str().unwrap();
    env.run(eval_args(set, &base, &jdg, "base")).expect_code(0);
    env.run(eval_args(set, &better, &jdg, "tuned"))
        .expect_code(0);
    let args = [
        "eval",
        "--compare",
        "base",
        "tuned",
        "--judge-model",
        "fake-judge",
        "--base-url",
        &jdg.base_url,
        "--json",
    ];
    let out = env.run(args).expect_code(0).json();
    let biased = (0..n).filter(|i| i % 3 == 0).count() as u64;
    let o = &out["overall"];
    assert_eq!(o["questions"], n as u64, "{out}");
    assert_eq!(o["b_wins"], n as u64 - biased);
    assert_eq!(o["a_wins"], 0);
    assert_eq!(o["inconsistent"], biased);
    assert_eq!(o["decisive"], 2 * n as u64);
    assert_eq!(o["first_shown_won"], 2 * biased + (n as u64 - biased));
    assert_eq!(out["requests_sent_now"], 2 * n as u64);
    let before = jdg.requests().len();
    let again = env.run(args).expect_code(0).json();
    assert_eq!(jdg.requests().len(), before, "a rerun sent requests");
    assert_eq!(again["overall"], out["overall"]);
    let r = env
        .run(["eval", "--compare", "base", "nobody", "--judge-model", "j"])
        .expect_code(2);
    assert!(
        r.stderr.contains("no evaluation named `nobody`"),
        "{}",
        r.stderr
    );
}
