//! `instill pairs` against the fake server playing both the sampled model (its answer to an
//! instruction drawn from the request's seed, each carrying a planted quality) and the judge
//! (grading the planted quality): every chosen answer is the best graded of its K, every
//! rejected the worst, instructions without a pair say why, a rerun sends nothing, a run
//! interrupted by SIGINT resumes to the rows of an uninterrupted one, and the errors users hit.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, block_on};

/// `n` instructions (Chinese and English), a few of them marked to draw equal answers or
/// answers the judge cannot grade, and one conversation (left out by pairs).
fn dataset(env: &Env, n: usize) -> std::path::PathBuf {
    let mut lines = String::new();
    for i in 0..n {
        let mark = match i % 7 {
            5 => " (same)",
            6 => " (ungradable)",
            _ => "",
        };
        let row = if i % 2 == 0 {
            serde_json::json!({"instruction": format!("Explain topic number {i}{mark}"), "input": "", "output": "old"})
        } else {
            serde_json::json!({"instruction": format!("请解释第{i}个主题{mark}"), "input": "给初学者", "output": "旧"})
        };
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    lines.push_str(r#"{"instruction": "and then?", "input": "", "output": "end", "history": [["hi", "hello"]]}"#);
    lines.push('\n');
    env.write("data.jsonl", lines)
}

/// The model and the judge: a judge's prompt (the rubric's markers around the answer) gets the
/// planted quality back as a grade; an instruction gets an answer whose quality its seed draws.
fn model(prompt: &str, h: u64) -> String {
    if prompt.contains("[Start of the instruction]") || prompt.contains("【指令开始】") {
        return match prompt.find("(quality ") {
            Some(i) => {
                let q: String = prompt[i + 9..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if q.is_empty() {
                    "I cannot grade this answer.".into()
                } else {
                    format!("Clear enough.\nScore: {q}")
                }
            }
            None => "I cannot grade this answer.".into(),
        };
    }
    if prompt.contains("(same)") {
        return "The one answer (quality 5).".into();
    }
    if prompt.contains("(ungradable)") {
        return format!("Answer {} (quality ?).", h % 1000);
    }
    format!("Answer {} (quality {}).", h % 100_000, 1 + h % 10)
}

fn server(latency: Duration) -> FakeServer {
    FakeServer::start(FakeConfig {
        answer_seeded: Some(model),
        latency,
        ..FakeConfig::default()
    })
}

fn args<'a>(server: &'a FakeServer, name: &'a str) -> Vec<&'a str> {
    vec![
        "pairs",
        "--model",
        "fake-model",
        "--judge-model",
        "fake-judge",
        "--k",
        "4",
        "--base-url",
        &server.base_url,
        "--name",
        name,
        "--concurrency",
        "4",
        "--json",
    ]
}

/// The planted quality of an answer.
fn quality(answer: &str) -> Option<f64> {
    let i = answer.find("(quality ")?;
    answer[i + 9..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()
}

/// (record id → (chosen, rejected, chosen score, rejected score)) of a set's pairs.
type Pairs = BTreeMap<i64, (String, String, Option<f64>, Option<f64>)>;

fn stored_pairs(env: &Env, set: &str) -> Pairs {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let page = db
            .pairs_page(Some(set), instill_storage::StatusFilter::All, 0, 10_000)
            .await
            .unwrap();
        db.close().await;
        page.into_iter()
            .map(|p| {
                let (c, r) = (p.pair.chosen, p.pair.rejected);
                (p.record_id, (c.text, r.text, c.score, r.score))
            })
            .collect()
    })
}

/// Every sampled answer of a record, from the stored requests of the run (idx = id·K + k).
fn samples(env: &Env, run: &str, k: i64) -> BTreeMap<i64, Vec<String>> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let run = db.find_run(run).await.unwrap().expect("the sampling run");
        let rows = db.requests_in(run.id, 0..i64::MAX).await.unwrap();
        db.close().await;
        let mut out: BTreeMap<i64, Vec<String>> = BTreeMap::new();
        for r in rows {
            let texts: Vec<String> =
                serde_json::from_str(r.response.as_deref().unwrap_or("[]")).unwrap();
            out.entry(r.idx / k).or_default().push(texts[0].clone());
        }
        out
    })
}

#[test]
fn every_chosen_answer_is_the_best_graded_of_its_samples_and_a_rerun_sends_nothing() {
    let server = server(Duration::ZERO);
    for env in Env::both() {
        let n = 28;
        let data = dataset(&env, n);
        env.run(["import", data.to_str().unwrap()]).expect_code(0);
        let out = env.run(args(&server, "p")).expect_code(0).json();
        let same = (0..n).filter(|i| i % 7 == 5).count() as u64;
        let ungradable = (0..n).filter(|i| i % 7 == 6).count() as u64;
        assert_eq!(out["instructions"], n as u64, "{}", env.backend());
        assert_eq!(out["skipped_conversations"], 1);
        assert_eq!(out["samples"]["sent_now"], 4 * n as u64);
        assert_eq!(out["no_pair_now"]["too_few_graded"], ungradable);
        assert_eq!(out["answers_without_grade"], 4 * ungradable);
        let small = out["no_pair_now"]["small_margin"].as_u64().unwrap_or(0);
        assert!(small >= same, "{out}");
        assert_eq!(
            out["pairs_now"].as_u64().unwrap() + small + ungradable,
            n as u64
        );

        let pairs = stored_pairs(&env, "p");
        let sampled = samples(&env, "p", 4);
        assert_eq!(pairs.len() as u64, out["pairs_now"].as_u64().unwrap());
        for (id, (chosen, rejected, cs, rs)) in &pairs {
            let qs: Vec<f64> = sampled[id].iter().filter_map(|a| quality(a)).collect();
            let best = qs.iter().copied().fold(f64::MIN, f64::max);
            let worst = qs.iter().copied().fold(f64::MAX, f64::min);
            // The judge's grade is the planted quality: chosen is the best, rejected the worst.
            assert_eq!(quality(chosen), Some(best), "record {id}");
            assert_eq!(quality(rejected), Some(worst), "record {id}");
            assert_eq!((*cs, *rs), (Some(best), Some(worst)));
            assert!(best - worst >= 1.0, "record {id}: margin below the default");
            assert!(sampled[id].contains(chosen) && sampled[id].contains(rejected));
        }
        // The K answers to one instruction were sampled with seeds of their own.
        let some = sampled
            .values()
            .find(|v| v.iter().all(|a| !a.contains("(same)")));
        let distinct: std::collections::BTreeSet<&String> = some.unwrap().iter().collect();
        assert!(distinct.len() > 1, "{some:?}");

        // A rerun sends nothing and changes nothing.
        let before = server.requests().len();
        let again = env.run(args(&server, "p")).expect_code(0).json();
        assert_eq!(server.requests().len(), before, "{}", env.backend());
        assert_eq!(again["instructions"], 0);
        assert_eq!(again["set"]["pairs"], out["pairs_now"]);
        assert_eq!(stored_pairs(&env, "p"), pairs);
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        let set = &stats["pair_sets"]["p"];
        assert_eq!(set["pairs"], out["pairs_now"], "{stats}");
        assert_eq!(set["no_pair"]["too_few_graded"], ungradable);
        assert_eq!(set["imported"], false);
        let table = env.run(["stats"]).expect_code(0).stdout;
        assert!(table.contains("preference pair sets:"), "{table}");

        // Another margin is another set: under the same name it is refused and says why.
        let mut other = args(&server, "p");
        other.extend(["--min-margin", "3"]);
        let err = env.run(other).expect_code(2).stderr;
        assert!(
            err.contains("min_margin") && err.contains("--name"),
            "{err}"
        );
    }
}

#[test]
fn an_interrupted_pairs_run_resumes_to_the_rows_of_an_uninterrupted_one() {
    let slow = server(Duration::from_millis(60));
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = dataset(&env, 20);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let a = args(&slow, "whole");
    env.run(a).expect_code(0);
    let whole = stored_pairs(&env, "whole");

    let b = args(&slow, "cut");
    let mut child = env.spawn(&b);
    std::thread::sleep(Duration::from_millis(900));
    let sent = std::process::Command::new("kill")
        .args(["-s", "INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT's exit code");
    env.run(b).expect_code(0);
    let cut = stored_pairs(&env, "cut");
    // Same seeds, same prompts, same judge: the same pairs (the set's name is not in a seed).
    let strip = |p: &Pairs| -> Vec<(String, String)> {
        p.values().map(|v| (v.0.clone(), v.1.clone())).collect()
    };
    assert_eq!(strip(&cut), strip(&whole));
}

#[test]
fn pairs_refuses_what_cannot_make_a_pair() {
    let server = server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = dataset(&env, 4);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let mut a = args(&server, "p");
    a.extend(["--min-margin", "12"]);
    let err = env.run(a).expect_code(2).stderr;
    assert!(err.contains("--min-margin 12"), "{err}");
    let mut a = args(&server, "p");
    a[6] = "1";
    let err = env.run(a).expect_code(2).stderr;
    assert!(err.contains("--k"), "{err}");
    let mut a = args(&server, "p");
    a.extend(["--api", "completion"]);
    let err = env.run(a).expect_code(2).stderr;
    assert!(err.contains("--api completion"), "{err}");
    let mut a = args(&server, "p");
    a.extend(["--rubric", "no-such-rubric.j2"]);
    let err = env.run(a).expect_code(2).stderr;
    assert!(err.contains("no-such-rubric.j2"), "{err}");
    assert!(stored_pairs(&env, "p").is_empty());

    // Nothing in scope is not an error, but the summary says why and what to do.
    let mut a = args(&server, "p");
    a.retain(|a| *a != "--json");
    a.extend(["--status", "accepted"]);
    let out = env.run(a).expect_code(0).stdout;
    assert!(
        out.contains("nothing to pair: no record in scope (--status accepted)"),
        "{out}"
    );
}

/// A judge over HTTP grading any answer by its length (a stand-in for a real grade that a test
/// can recompute): 1 to 10.
fn length_judge(prompt: &str) -> String {
    let answer = prompt
        .split("[Start of the answer]")
        .nth(1)
        .and_then(|s| s.split("[End of the answer]").next())
        .unwrap_or("");
    format!("Score: {}", length_grade(answer.trim()))
}

fn length_grade(answer: &str) -> usize {
    1 + answer.chars().count() % 10
}

#[test]
fn smollm2_answers_on_policy_a_judge_over_http_grades_them_and_dpo_learns_the_pairs() {
    let judge = FakeServer::start(FakeConfig {
        answer: Some(length_judge),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let rows: String = [
        "Name a color.",
        "Say hello.",
        "Name a fruit.",
        "Name a city.",
    ]
    .iter()
    .map(|i| format!("{}\n", serde_json::json!({"instruction": i, "output": "x"})))
    .collect();
    let data = env.write("data.jsonl", rows);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let model = crate::local::smollm2();
    let out = env
        .run([
            "pairs",
            "--backend",
            "candle",
            "--model",
            model.to_str().unwrap(),
            "--judge-model",
            "fake-judge",
            "--judge-backend",
            "openai",
            "--judge-base-url",
            &judge.base_url,
            "--k",
            "2",
            "--max-tokens",
            "16",
            "--temperature",
            "1.0",
            "--min-margin",
            "0",
            "--json",
        ])
        .expect_code(0)
        .json();
    assert_eq!(out["samples"]["sent_now"], 8, "{out}");
    let sampled = samples(&env, "pairs", 2);
    // Seeds of their own: the two answers to one instruction are not the same.
    assert!(sampled.values().any(|v| v[0] != v[1]), "{sampled:?}");
    let pairs = stored_pairs(&env, "pairs");
    assert!(!pairs.is_empty(), "{out}");
    for (id, (chosen, rejected, cs, rs)) in &pairs {
        let grades: Vec<usize> = sampled[id].iter().map(|a| length_grade(a.trim())).collect();
        assert_eq!(*cs, grades.iter().max().map(|&g| g as f64), "record {id}");
        assert_eq!(*rs, grades.iter().min().map(|&g| g as f64), "record {id}");
        assert_eq!(length_grade(chosen.trim()) as f64, cs.unwrap());
        assert_eq!(length_grade(rejected.trim()) as f64, rs.unwrap());
    }

    // The issue's loop: pairs → export --format dpo → train --dpo --lora on SmolLM2.
    let exp = env.path("exp");
    env.run([
        "export",
        "--format",
        "dpo",
        "--out",
        exp.to_str().unwrap(),
        "--val-fraction",
        "0",
    ])
    .expect_code(0);
    let shard = exp.join("data/train/train-00000-of-00001.jsonl");
    let adapter = env.path("adapter");
    let j = env
        .run([
            "train",
            "--model",
            model.to_str().unwrap(),
            "--dpo",
            "--lora",
            "--data",
            shard.to_str().unwrap(),
            "--out",
            adapter.to_str().unwrap(),
            "--max-steps",
            "4",
            "--batch-size",
            "4",
            "--lr",
            "5e-3",
            "--max-len",
            "96",
            "--val-fraction",
            "0",
            "--json",
        ])
        .expect_code(0)
        .json();
    let first = j["first_loss"].as_f64().unwrap();
    assert!((first - std::f64::consts::LN_2).abs() < 1e-6, "{j}");
    assert!(j["last_loss"].as_f64().unwrap() < first, "{j}");
    eprintln!("SmolLM2 DPO LoRA: {} tokens/s", j["tokens_per_s"]);
}
