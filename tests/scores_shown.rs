//! What `stats` and the export's dataset card show of scores and evaluations (the report's side
//! is in `report.rs`, on the same database): two scorers — a judge run through `instill score`
//! against the fake server, with grades planted in the records, and a perplexity metric stored
//! through storage — and two evaluations whose grades are planted through storage. Every number
//! is checked against the planted values, worked out here.

use std::collections::BTreeMap;

use instill_core::ScoreMethod;
use instill_storage::{Db, Evaluation, Grade, NewScore, Scorer};
use serde_json::Value;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, block_on};

/// Records in the test database.
pub const N: usize = 30;

/// The judge's planted grade of record `i` (1–10), or None where it cannot judge.
pub fn grade(i: usize) -> Option<f64> {
    (i % 10 != 9).then(|| (1 + (i * 7) % 10) as f64)
}

/// The planted perplexity of record `i`, or None (its reason: `empty answer`).
pub fn ppl(i: usize) -> Option<f64> {
    (i != 4).then_some(2.0 + (i % 5) as f64 * 0.5)
}

/// The eval set's classes; question `q` is in `CLASSES[q % 3]`.
pub const CLASSES: [&str; 3] = ["closed qa", "math", "open qa"];
/// Questions per evaluation.
pub const QUESTIONS: i64 = 12;

/// The planted grades of evaluation `label`: (question, repeat, grade). `base` is graded once
/// and its last question has no grade; `tuned` twice per question.
pub fn eval_grades(label: &str) -> Vec<(i64, i64, Option<f64>)> {
    let mut out = Vec::new();
    for q in 0..QUESTIONS {
        let g = (q % 4) as f64 / 4.0;
        if label == "base" {
            out.push((q, 0, (q != QUESTIONS - 1).then_some(g)));
        } else {
            out.push((q, 0, Some((g + 0.25).min(1.0))));
            out.push((q, 1, Some(g)));
        }
    }
    out
}

/// (questions graded, mean grade).
pub type Mean = (u64, f64);

/// Per class and overall (n, mean) of `label`'s planted grades, repeats averaged first.
pub fn expected_means(label: &str) -> (BTreeMap<&'static str, Mean>, Mean) {
    let mut per_q: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for (q, _, g) in eval_grades(label) {
        if let Some(g) = g {
            per_q.entry(q).or_default().push(g);
        }
    }
    let mut classes: BTreeMap<&str, Mean> = BTreeMap::new();
    let (mut n, mut sum) = (0u64, 0.0);
    for (q, gs) in &per_q {
        let g = gs.iter().sum::<f64>() / gs.len() as f64;
        let e = classes.entry(CLASSES[(*q % 3) as usize]).or_default();
        e.0 += 1;
        e.1 += g;
        n += 1;
        sum += g;
    }
    for e in classes.values_mut() {
        e.1 /= e.0 as f64;
    }
    (classes, (n, sum / n as f64))
}

fn judge(prompt: &str) -> String {
    let Some(at) = prompt.find("(grade ") else {
        return "I cannot judge this example.".into();
    };
    let g: String = prompt[at + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    format!("Clear and correct.\nScore: {g}")
}

/// Fills `env`'s database: N imported records, the judge `j1` (through `instill score`), the
/// metric `ppl-smol` and the evaluations `base` and `tuned` (through storage).
pub fn scored_database(env: &Env) {
    let mut lines = String::new();
    for i in 0..N {
        let mark = grade(i).map_or("(nograde)".into(), |g| format!("(grade {g})"));
        let row = serde_json::json!({
            "instruction": format!("Describe landmark number {i} in a sentence"),
            "input": "",
            "output": format!("Landmark {i} is tall {mark}."),
        });
        lines.push_str(&format!("{row}\n"));
    }
    let data = env.write("scored.jsonl", lines);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let server = FakeServer::start(FakeConfig {
        answer: Some(judge),
        ..FakeConfig::default()
    });
    env.run([
        "score",
        "--judge-model",
        "fake-judge",
        "--base-url",
        &server.base_url,
        "--name",
        "j1",
    ])
    .expect_code(0);
    let ids: Vec<i64> = env.records().iter().map(|r| r.id).collect();
    block_on(async {
        let db = Db::open(&env.db.url).await.unwrap();
        db.create_scorer(&Scorer {
            name: "ppl-smol".into(),
            method: ScoreMethod::Ppl,
            model: "smol".into(),
            rubric_hash: None,
            scale: None,
            run_id: None,
            settings_json: "{}".into(),
            created_at: instill_core::now_ms(),
        })
        .await
        .unwrap();
        let rows: Vec<NewScore> = ids
            .iter()
            .enumerate()
            .map(|(i, &id)| NewScore {
                record_id: id,
                score: ppl(i),
                rationale: String::new(),
                reason: ppl(i).is_none().then(|| "empty answer".into()),
                request_id: None,
                prompt_tokens: None,
                completion_tokens: None,
                created_at: 2,
            })
            .collect();
        let mut w = db.writer().await.unwrap();
        w.insert_scores("ppl-smol", &rows).await.unwrap();
        w.commit().await.unwrap();
        for (k, label) in ["base", "tuned"].into_iter().enumerate() {
            plant_evaluation(&db, label, k as i64).await;
        }
        db.close().await;
    });
}

async fn plant_evaluation(db: &Db, label: &str, k: i64) {
    db.create_evaluation(&Evaluation {
        label: label.into(),
        model: format!("{label}-model"),
        judge_model: "fake-judge".into(),
        eval_set: "eval_set.json".into(),
        eval_set_sha256: "00".into(),
        prompts_hash: "11".into(),
        questions: QUESTIONS,
        answer_run_id: None,
        judge_run_id: None,
        settings_json: "{}".into(),
        created_at: 10 + k,
    })
    .await
    .unwrap();
    let grades: Vec<Grade> = eval_grades(label)
        .into_iter()
        .map(|(idx, rep, grade)| Grade {
            idx,
            rep,
            class: CLASSES[(idx % 3) as usize].into(),
            grade,
            reason: grade.is_none().then(|| "no grade found".into()),
            request_id: None,
        })
        .collect();
    let mut w = db.writer().await.unwrap();
    w.insert_grades(label, &grades, 10).await.unwrap();
    w.commit().await.unwrap();
}

/// (n, mean, median) of `xs`.
pub fn moments(mut xs: Vec<f64>) -> (u64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    };
    (n as u64, xs.iter().sum::<f64>() / n as f64, median)
}

fn close(v: &Value, want: f64, what: &str) {
    let got = v.as_f64().unwrap_or_else(|| panic!("{what}: {v}"));
    assert!((got - want).abs() < 1e-9, "{what}: {got} != {want}");
}

#[test]
fn stats_shows_every_scorer_and_evaluation() {
    for env in Env::both() {
        scored_database(&env);
        let s = env.run(["stats", "--json"]).expect_code(0).json();
        let j1 = &s["scorers"]["j1"];
        let (n, mean, median) = moments((0..N).filter_map(grade).collect());
        assert_eq!(j1["method"], "judge");
        assert_eq!(j1["model"], "fake-judge");
        assert_eq!(j1["rubric"], "builtin");
        assert_eq!(j1["scale"], serde_json::json!([1.0, 10.0]));
        assert_eq!(j1["n"], n);
        assert_eq!(j1["unscored"], N as u64 - n);
        close(&j1["mean"], mean, "j1 mean");
        close(&j1["median"], median, "j1 median");
        assert_eq!(j1["bins"].as_array().unwrap().len(), 10);
        let sevens = (0..N).filter(|&i| grade(i) == Some(7.0)).count();
        assert_eq!(j1["bins"][6]["n"], sevens as u64, "{j1}");
        let no_score: u64 = j1["unscored_by_reason"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(no_score, N as u64 - n, "{j1}");
        let p = &s["scorers"]["ppl-smol"];
        let (pn, pmean, _) = moments((0..N).filter_map(ppl).collect());
        assert_eq!(
            (p["method"].as_str(), p["scale"].is_null()),
            (Some("ppl"), true)
        );
        assert_eq!(p["n"], pn);
        close(&p["mean"], pmean, "ppl mean");
        assert_eq!(p["unscored_by_reason"]["empty answer"], 1);
        for label in ["base", "tuned"] {
            let e = &s["evaluations"][label];
            let (classes, (n, overall)) = expected_means(label);
            assert_eq!(e["model"], format!("{label}-model"));
            assert_eq!(e["questions"], QUESTIONS);
            assert_eq!(e["n"], n);
            assert_eq!(e["ungraded"], QUESTIONS as u64 - n);
            close(&e["overall"], overall, label);
            for (class, (cn, cmean)) in classes {
                assert_eq!(e["classes"][class]["n"], cn, "{label} {class}");
                close(&e["classes"][class]["mean"], cmean, class);
            }
        }
        // The earlier keys stay.
        assert_eq!(s["records"]["total"], N as u64);
        assert!(s["requests"].as_u64().unwrap() >= N as u64);

        let text = env.run(["stats"]).expect_code(0).stdout;
        for want in [
            "scorers:\n  j1: an LLM judge, fake-judge, with the rubric builtin",
            &format!("scores: {n} scored, {} without a score", N as u64 - n),
            "ppl-smol: the answer's perplexity given the instruction under smol",
            "without a score: 1 empty answer",
            "evaluations:\n  base             model base-model, judge fake-judge, 12 questions",
        ] {
            assert!(
                text.contains(want),
                "{}: no {want:?} in\n{text}",
                env.backend()
            );
        }
        let (classes, _) = expected_means("tuned");
        let math = text
            .lines()
            .find(|l| l.trim_start().starts_with("math"))
            .unwrap();
        assert!(
            math.ends_with(&format!("{} 0.5", classes["math"].0)),
            "{math}"
        );
    }
}

#[test]
fn the_card_shows_the_scores_of_the_exported_records_and_the_selection() {
    for env in Env::both() {
        scored_database(&env);
        env.run(["select", "--scorer", "j1", "--min-score", "9"])
            .expect_code(0);
        env.run(["select", "--scorer", "j1", "--min-score", "6"])
            .expect_code(0);
        env.run(["export", "--out", "out"]).expect_code(0);
        let card = std::fs::read_to_string(env.path("out/README.md")).unwrap();
        let kept: Vec<usize> = (0..N)
            .filter(|&i| grade(i).is_some_and(|g| g >= 6.0))
            .collect();
        let (n, mean, median) = moments(kept.iter().filter_map(|&i| grade(i)).collect());
        assert_eq!(n as usize, kept.len());
        let scores = &card[card.find("## Scores").expect("no Scores section")..];
        let j1 = &scores[scores.find("### `j1`").unwrap()..scores.find("### `ppl-smol`").unwrap()];
        for want in [
            "An LLM judge, `fake-judge`, with the rubric `builtin` (content hash `",
            "on a 1–10 scale; higher is better.",
            &format!("Of the {n} records in this export: {n} scored, 0 without a score"),
            ", 0 not scored.",
            &format!(
                "Mean {}, median {}, lowest 6, highest 10.",
                short(mean),
                short(median)
            ),
            "| score | records | |\n|---|---:|---|\n| 1 | 0 |  |\n",
        ] {
            assert!(j1.contains(want), "{}: no {want:?} in\n{j1}", env.backend());
        }
        for g in 6..=10 {
            let k = kept.iter().filter(|&&i| grade(i) == Some(g as f64)).count();
            assert!(j1.contains(&format!("\n| {g} | {k} | █")), "{g}: {j1}");
        }
        let (pn, pmean, _) = moments(kept.iter().filter_map(|&i| ppl(i)).collect());
        let unscored = kept.iter().filter(|&&i| ppl(i).is_none()).count();
        assert_eq!(
            unscored, 1,
            "record 4 (grade 9) is kept and has no perplexity"
        );
        let ppl_part = &scores[scores.find("### `ppl-smol`").unwrap()..];
        for want in [
            "The answer's perplexity given the instruction under `smol`; lower is better.",
            &format!("{pn} scored, 1 without a score"),
            &format!("Mean {},", short(pmean)),
            // A metric's bins are ranges: [2, 3) holds 2 and 2.5.
            &format!(
                "| 2–3 | {} |",
                kept.iter()
                    .filter(|&&i| ppl(i).is_some_and(|p| p < 3.0))
                    .count()
            ),
        ] {
            assert!(ppl_part.contains(want), "no {want:?} in\n{ppl_part}");
        }
        // The selections read as sentences in the curation section, the first superseded.
        let selects: Vec<&str> = card
            .lines()
            .filter(|l| l.starts_with("- `instill select`"))
            .collect();
        assert_eq!(selects.len(), 2, "{card}");
        assert!(
            selects[0].contains(
                "by the scores of `j1` (judge, scale 1–10): keeping scores of at least 9"
            ) && selects[0].ends_with("(a later `select` decided these records again)."),
            "{}",
            selects[0]
        );
        let rejected = N - kept.len();
        assert!(
            selects[1].contains(&format!(
                "decided over {N} records not rejected by another step"
            )) && selects[1].contains("keeping scores of at least 6; rejected ")
                && selects[1].ends_with("`unscored`.")
                && selects[1].contains(&format!(
                    "{} `low_score`",
                    rejected - (0..N).filter(|&i| grade(i).is_none()).count()
                )),
            "{}",
            selects[1]
        );
    }
}

/// The card's and report's way of showing a score.
pub fn short(x: f64) -> String {
    let s = format!("{x:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}
