//! `instill score` and `instill select` against the fake server playing a judge whose grades
//! the test plants in the records: scores read from replies in any reasonable form, a rerun
//! that sends nothing, SIGKILL and resume, selection that keeps exactly what was rated at or
//! above the threshold and re-decides only its own verdicts, and the errors users hit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::fake_openai::{FakeConfig, FakeServer, prompt_hash};
use crate::util::{Env, block_on, run_bounded};

/// The planted grade of record `i` (0 is off the 1–10 scale: the judge's reply is refused),
/// or None for a record the judge cannot grade.
fn planted(i: usize) -> Option<u32> {
    (i % 13 != 12).then_some((i % 11) as u32)
}

/// `n` records, Chinese and English, each carrying its planted grade in its answer.
fn dataset(env: &Env, n: usize) -> std::path::PathBuf {
    let mut lines = String::new();
    for i in 0..n {
        let mark = planted(i).map_or("(nograde)".to_string(), |g| format!("(grade {g})"));
        let row = if i % 2 == 0 {
            serde_json::json!({"instruction": format!("Explain topic number {i} to a beginner"), "input": "", "output": format!("Here is an explanation {mark}.")})
        } else {
            serde_json::json!({"instruction": format!("请解释第{i}个主题"), "input": "给初学者", "output": format!("这是解释 {mark}。")})
        };
        lines.push_str(&row.to_string());
        lines.push('\n');
    }
    env.write("data.jsonl", lines)
}

/// The judge: finds the planted grade in the prompt and answers in one of several styles.
fn planted_judge(prompt: &str) -> String {
    let Some(i) = prompt.find("(grade ") else {
        return "I cannot judge this example.".into();
    };
    let g: String = prompt[i + 7..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    match g.parse::<u32>().unwrap_or(0) % 4 {
        0 => format!("The answer is fine, though 2 details are missing.\nScore: {g}"),
        1 => format!("回答基本正确，有1处小问题。\n评分：{g}分"),
        2 => format!("```json\n{{\"rationale\": \"clear, 3 steps\", \"score\": {g}}}\n```"),
        _ => format!("Rationale: decent.\n**Score:** {g}/10"),
    }
}

fn judge_server(latency: Duration) -> FakeServer {
    FakeServer::start(FakeConfig {
        answer: Some(planted_judge),
        latency,
        ..FakeConfig::default()
    })
}

fn score_args<'a>(server: &'a FakeServer, name: &'a str) -> Vec<&'a str> {
    vec![
        "score",
        "--judge-model",
        "fake-judge",
        "--base-url",
        &server.base_url,
        "--name",
        name,
        "--concurrency",
        "4",
        "--json",
    ]
}

/// (record id → score) of a scorer, straight from the database.
fn stored_scores(env: &Env, scorer: &str) -> BTreeMap<i64, Option<f64>> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let s = db.scores(scorer).await.unwrap();
        db.close().await;
        s.into_iter().map(|s| (s.record_id, s.score)).collect()
    })
}

/// The instructions in an export, in order.
fn exported(env: &Env, dir: &str) -> Vec<String> {
    let text =
        std::fs::read_to_string(env.path(&format!("{dir}/data/train/train-00000-of-00001.jsonl")))
            .unwrap_or_default();
    text.lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["instruction"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn score_then_select_keeps_exactly_what_the_judge_rated_at_or_above_the_threshold() {
    let server = judge_server(Duration::ZERO);
    for env in Env::both() {
        let n = 40;
        let data = dataset(&env, n);
        env.run(["import", data.to_str().unwrap()]).expect_code(0);
        let first = env.run(score_args(&server, "j1")).expect_code(0).json();
        let no_grade = (0..n).filter(|&i| planted(i).is_none()).count() as u64;
        let zero = (0..n).filter(|&i| planted(i) == Some(0)).count() as u64;
        assert_eq!(first["requests_sent_now"], n as u64, "{}", env.backend());
        assert_eq!(first["scored_now"], n as u64 - no_grade - zero);
        assert_eq!(first["no_score_now"], no_grade + zero);
        assert_eq!(first["no_score_by_reason"]["score outside the scale"], zero);
        assert_eq!(first["scale"], serde_json::json!([1.0, 10.0]));

        // Every score is the planted one, whatever the reply's form.
        let scores = stored_scores(&env, "j1");
        let records = env.records();
        for (i, r) in records.iter().enumerate() {
            let want = planted(i).filter(|&g| g >= 1).map(f64::from);
            assert_eq!(scores.get(&r.id).copied().flatten(), want, "record {i}");
        }

        // A rerun sends nothing and changes nothing.
        let before = server.requests().len();
        let again = env.run(score_args(&server, "j1")).expect_code(0).json();
        assert_eq!(
            server.requests().len(),
            before,
            "{}: a rerun sent requests",
            env.backend()
        );
        assert_eq!(again["requests_sent_now"], 0);
        assert_eq!(stored_scores(&env, "j1"), scores);

        // Select at 6 → export: exactly the records rated 6 or more.
        let sel = env
            .run(["select", "--scorer", "j1", "--min-score", "6", "--json"])
            .expect_code(0)
            .json();
        let want_kept: Vec<String> = records
            .iter()
            .enumerate()
            .filter(|(i, _)| planted(*i).is_some_and(|g| g >= 6))
            .map(|(_, r)| r.record.instruction.clone())
            .collect();
        assert_eq!(sel["kept"], want_kept.len() as u64);
        assert_eq!(sel["by_reason"]["unscored"], no_grade + zero);
        env.run(["export", "--out", "at6"]).expect_code(0);
        assert_eq!(exported(&env, "at6"), want_kept, "{}", env.backend());

        // Stricter, then looser: select re-decides its own verdicts only.
        env.run(["select", "--scorer", "j1", "--min-score", "9"])
            .expect_code(0);
        env.run(["select", "--scorer", "j1", "--min-score", "6"])
            .expect_code(0);
        env.run(["export", "--out", "again6"]).expect_code(0);
        assert_eq!(exported(&env, "again6"), want_kept, "{}", env.backend());
        let low = env
            .records()
            .iter()
            .filter(|r| r.reason.as_deref() == Some("low_score"))
            .count();
        let want_low = (0..n)
            .filter(|&i| planted(i).is_some_and(|g| (1..6).contains(&g)))
            .count();
        assert_eq!(low, want_low, "{}", env.backend());

        // A second scorer lives beside the first; a changed rubric under the same name is refused.
        let rubric = env.write(
            "strict.j2",
            "{#- instill: min=0 max=1 -#}\nGrade {{ instruction }} / {{ output }} from 0 to 1.",
        );
        let mut other = score_args(&server, "j1");
        other.extend(["--rubric", rubric.to_str().unwrap()]);
        let refused = env.run(&other).expect_code(2);
        assert!(
            refused
                .stderr
                .contains("scorer `j1` was made with other settings"),
            "{}",
            refused.stderr
        );
        assert!(refused.stderr.contains("--name"), "{}", refused.stderr);
        assert_eq!(
            stored_scores(&env, "j1"),
            scores,
            "a refused run changes nothing"
        );
    }
}

#[test]
fn a_killed_score_run_resumes_without_sending_a_stored_reply_again() {
    let server = judge_server(Duration::from_millis(30));
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let n = 120;
    let data = dataset(&env, n);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);
    let args = score_args(&server, "k");
    let mut kills = 0;
    loop {
        let stored: BTreeSet<u64> = stored_judge_prompts(&env);
        let seen = server.requests().len();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
            .args(&args)
            .arg("--no-progress")
            .env("INSTILL_DB", &env.db.url)
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(250 + 90 * kills));
        let done = match child.try_wait().unwrap() {
            Some(s) => Some(s),
            None if kills < 4 => {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                None
            }
            None => Some(child.wait().unwrap()),
        };
        for (h, _) in &server.requests()[seen..] {
            assert!(
                !stored.contains(h),
                "a prompt whose reply was stored was sent again"
            );
        }
        if let Some(status) = done {
            assert_eq!(status.code(), Some(0));
            break;
        }
    }
    assert!(
        kills >= 2,
        "only {kills} kills: the run was too fast to interrupt"
    );
    let scores = stored_scores(&env, "k");
    assert_eq!(scores.len(), n, "every record has a score row");
    for (i, r) in env.records().iter().enumerate() {
        let want = planted(i).filter(|&g| g >= 1).map(f64::from);
        assert_eq!(scores[&r.id], want, "record {i}");
    }
}

/// Hashes of the prompts of the score run's stored replies.
fn stored_judge_prompts(env: &Env) -> BTreeSet<u64> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let out = match db.find_run("score/k").await.unwrap() {
            Some(run) => db
                .stored_prompts(run.id)
                .await
                .unwrap()
                .iter()
                .map(|p| prompt_hash(p))
                .collect(),
            None => BTreeSet::new(),
        };
        db.close().await;
        out
    })
}

#[test]
fn score_and_select_refuse_bad_input_naming_what_is_wrong() {
    let server = judge_server(Duration::ZERO);
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let data = dataset(&env, 6);
    env.run(["import", data.to_str().unwrap()]).expect_code(0);

    let mut missing = score_args(&server, "m");
    missing.extend(["--rubric", "no/such/rubric.j2"]);
    let r = env.run(&missing).expect_code(2);
    assert!(r.stderr.contains("no/such/rubric.j2"), "{}", r.stderr);

    let bad = env.write("bad.j2", "{#- instill: min=5 max=1 -#}\n{{ instruction }}");
    let mut bad_scale = score_args(&server, "m");
    bad_scale.extend(["--rubric", bad.to_str().unwrap()]);
    let r = env.run(&bad_scale).expect_code(2);
    assert!(r.stderr.contains("bad.j2:1: min=5"), "{}", r.stderr);

    let r = env
        .run(["select", "--scorer", "nobody", "--min-score", "5"])
        .expect_code(2);
    assert!(
        r.stderr.contains("run `instill score` first"),
        "{}",
        r.stderr
    );
    env.run(score_args(&server, "s")).expect_code(0);
    let r = env
        .run(["select", "--scorer", "nobody", "--top-k", "2"])
        .expect_code(2);
    assert!(r.stderr.contains("the database has: s"), "{}", r.stderr);
    let r = env
        .run(["select", "--scorer", "s", "--min-score", "45"])
        .expect_code(2);
    assert!(
        r.stderr.contains("outside scorer s's scale 1–10"),
        "{}",
        r.stderr
    );
    let r = env.run(["select", "--scorer", "s"]).expect_code(2);
    assert!(
        r.stderr.contains("--min-score"),
        "a rule is required: {}",
        r.stderr
    );
    assert!(
        env.records().iter().all(|r| r.reason.is_none()),
        "refused commands change nothing"
    );

    // No key for a remote judge: refused before anything is sent.
    let r = run_bounded(
        &env,
        &[
            "score",
            "--judge-model",
            "gpt-4o",
            "--base-url",
            "https://api.example.invalid/v1",
            "--name",
            "remote",
            "--no-progress",
        ],
        &[],
        &["OPENAI_API_KEY"],
        Duration::from_secs(60),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no API key"), "{}", r.stderr);
}

#[test]
fn a_second_process_on_the_same_score_run_is_refused_on_both_databases() {
    for db in [
        instill_storage::testing::TempDb::sqlite(),
        instill_storage::testing::TempDb::postgres(),
    ] {
        let backend = db.backend;
        let server = judge_server(Duration::from_millis(150));
        let env = Env::new(db);
        let data = dataset(&env, 40);
        env.run(["import", data.to_str().unwrap()]).expect_code(0);
        let first = std::process::Command::new(env!("CARGO_BIN_EXE_instill"))
            .args(score_args(&server, "one"))
            .arg("--no-progress")
            .env("INSTILL_DB", &env.db.url)
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the first has opened its run and sent something.
        let started = std::time::Instant::now();
        while server.requests().is_empty() && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let second = env.run(score_args(&server, "one"));
        let first = first.wait_with_output().unwrap();
        assert_eq!(first.status.code(), Some(0), "{backend}: {first:?}");
        assert_ne!(second.code, 0, "{backend}: {}", second.stdout);
        assert!(
            second.stderr.contains("another"),
            "{backend}: {}",
            second.stderr
        );
        // Every record was judged once: the refused process sent nothing.
        let sent: Vec<u64> = server.requests().iter().map(|(h, _)| *h).collect();
        let distinct: BTreeSet<u64> = sent.iter().copied().collect();
        assert_eq!((sent.len(), distinct.len()), (40, 40), "{backend}");
        assert_eq!(stored_scores(&env, "one").len(), 40, "{backend}");
    }
}
