//! `instill dedup` and `instill filter` through the real binary: Python's kept list on the
//! synthetic set, Chinese near-duplicates that only the CJK-aware tokenizer sees, exact and
//! MinHash clusters, idempotence and dry runs, and one test per quality rule in both languages.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::util::{Env, block_on, shared};

fn verdicts(env: &Env) -> Vec<instill_storage::StoredVerdict> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let v = db.verdicts().await.unwrap();
        db.close().await;
        v
    })
}

/// The first `n` records of ../shared/bench/make_synthetic.py's set (any prefix of the 1M set is
/// self-contained), made with the machine's python3.
fn synthetic(env: &Env, n: usize) -> PathBuf {
    let out = env.path(&format!("synthetic_{n}.jsonl"));
    let status = std::process::Command::new("python3")
        .arg(shared("bench/make_synthetic.py"))
        .args(["--n", &n.to_string(), "--data"])
        .arg(shared("data/alpaca_data.json"))
        .arg("--out")
        .arg(&out)
        .env("BENCH_OUT", env.dir.path())
        .output()
        .expect("python3 runs ../shared/bench/make_synthetic.py");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

#[test]
fn rouge_l_reproduces_pythons_kept_list_on_the_synthetic_set() {
    for env in Env::both() {
        env.run([
            "seeds",
            "import",
            shared("data/seed_tasks.jsonl").to_str().unwrap(),
        ])
        .expect_code(0);
        let data = synthetic(&env, 2000);
        env.run(["import", data.to_str().unwrap()]).expect_code(0);
        let alpaca_rule = [
            "dedup",
            "--rouge-threshold",
            "0.7",
            "--tokenizer",
            "alpaca",
            "--with-seeds",
            "--json",
        ];
        let j = env.run(alpaca_rule).expect_code(0).json();
        assert_eq!(j["rouge_l"]["rejected"], 382, "{}", env.backend());
        let kept: Vec<u64> = verdicts(&env)
            .iter()
            .filter(|v| v.status.as_str() != "rejected")
            .map(|v| (v.id - 1) as u64)
            .collect();
        let reference =
            std::fs::read_to_string(shared("bench/ref/synthetic_rougeL_kept_2000.json")).unwrap();
        let reference: serde_json::Value = serde_json::from_str(&reference).unwrap();
        let want: Vec<u64> = reference["kept_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(kept, want, "{}", env.backend());
        // Every rejection names an earlier record (or a seed) and a score above 0.7.
        for v in verdicts(&env)
            .iter()
            .filter(|v| v.status.as_str() == "rejected")
        {
            assert_eq!(v.reason.as_deref(), Some("rouge_l"));
            assert!(v.score.unwrap() > 0.7);
            assert!(v.dup_of.is_none_or(|d| d < v.id));
        }
        // Idempotent: a second run finds nothing new.
        assert_eq!(env.run(alpaca_rule).expect_code(0).json()["rejected"], 0);
    }
}

/// Near-duplicates of Chinese instructions (a character changed, inserted or deleted): the
/// `auto` tokenizer rejects them; `alpaca`, like Python's rouge_score, sees no tokens at all.
#[test]
fn chinese_near_duplicates_need_the_cjk_aware_tokenizer() {
    let zh: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared("data/alpaca_zh_part00.json")).unwrap(),
    )
    .unwrap();
    let originals: Vec<String> = zh.as_array().unwrap()[..600]
        .iter()
        .map(|r| r["instruction"].as_str().unwrap().to_string())
        // Purely Chinese instructions (no Latin letters or digits, which rouge_score would keep).
        .filter(|s| s.chars().count() >= 12 && !s.chars().any(|c| c.is_ascii_alphanumeric()))
        .take(60)
        .collect();
    let mut lines = Vec::new();
    for (k, s) in originals.iter().enumerate() {
        lines.push(serde_json::json!({"instruction": s, "output": format!("答案{k}")}).to_string());
    }
    for (k, s) in originals.iter().enumerate() {
        let mut chars: Vec<char> = s.chars().collect();
        match k % 3 {
            0 => chars[3] = '某',
            1 => chars.insert(5, '们'),
            _ => {
                chars.remove(4);
            }
        }
        let variant: String = chars.into_iter().collect();
        lines.push(
            serde_json::json!({"instruction": variant, "output": format!("另一个答案{k}")})
                .to_string(),
        );
    }
    for env in Env::both() {
        env.run([
            "seeds",
            "import",
            shared("data/zh_seed_tasks.json").to_str().unwrap(),
        ])
        .expect_code(0);
        let file = env.write("zh.jsonl", lines.join("\n"));
        env.run(["import", file.to_str().unwrap()]).expect_code(0);
        let n = originals.len() as i64;
        let python_like = env
            .run([
                "dedup",
                "--rouge-threshold",
                "0.7",
                "--tokenizer",
                "alpaca",
                "--with-seeds",
                "--dry-run",
                "--json",
            ])
            .expect_code(0);
        assert_eq!(
            python_like.json()["rouge_l"]["rejected"],
            0,
            "alpaca erases Chinese: nothing is ever similar"
        );
        let auto = env
            .run([
                "dedup",
                "--rouge-threshold",
                "0.7",
                "--with-seeds",
                "--json",
            ])
            .expect_code(0);
        assert_eq!(auto.json()["rouge_l"]["tokenizer"], "auto");
        let v = verdicts(&env);
        for k in 0..n as usize {
            let variant = &v[n as usize + k];
            assert_eq!(
                variant.status.as_str(),
                "rejected",
                "variant {k} of {:?}",
                originals[k]
            );
            assert_eq!(variant.dup_of, Some(k as i64 + 1));
            assert!(variant.score.unwrap() > 0.7);
        }
        assert!(
            v[..n as usize]
                .iter()
                .all(|x| x.status.as_str() != "rejected")
        );
    }
}

#[test]
fn exact_and_minhash_dedup_mark_clusters_and_runs_are_idempotent() {
    let base = [
        "Write a short story about a lighthouse keeper who finds a message in a bottle on the shore.",
        "Explain how photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
        "列出五种适合初学者的室内植物，并说明它们各自需要的光照和浇水频率。",
    ];
    let mut lines = Vec::new();
    for (i, b) in base.iter().enumerate() {
        lines.push(serde_json::json!({"instruction": b, "output": format!("Answer number {i} with plenty of detail about the topic at hand.")}));
    }
    // 4: exact duplicate of 1 after normalisation; 5: near duplicate of 2; 6: near duplicate of 3.
    lines.push(serde_json::json!({"instruction": base[0].to_uppercase(), "output": "answer number 0 with plenty of detail about the topic at hand"}));
    lines.push(serde_json::json!({"instruction": base[1].replace("sugar", "glucose"), "output": "Answer number 1 with plenty of detail about the topic at hand."}));
    lines.push(serde_json::json!({"instruction": base[2].replace("五种", "五个"), "output": "Answer number 2 with plenty of detail about the topic at hand."}));
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    for env in Env::both() {
        let file = env.write("d.jsonl", &text);
        env.run(["import", file.to_str().unwrap()]).expect_code(0);
        let dry = env
            .run([
                "dedup",
                "--exact",
                "--minhash-threshold",
                "0.6",
                "--dry-run",
                "--json",
            ])
            .expect_code(0)
            .json();
        assert_eq!(
            (
                dry["exact"]["rejected"].as_u64(),
                dry["minhash"]["rejected"].as_u64()
            ),
            (Some(1), Some(2))
        );
        assert!(
            verdicts(&env)
                .iter()
                .all(|v| v.status.as_str() == "pending"),
            "a dry run changes nothing"
        );
        let run = env
            .run(["dedup", "--exact", "--minhash-threshold", "0.6", "--json"])
            .expect_code(0)
            .json();
        assert_eq!(run["rejected"], 3, "{}", env.backend());
        let v = verdicts(&env);
        let by_id: BTreeMap<i64, _> = v.iter().map(|x| (x.id, x)).collect();
        assert_eq!(
            (
                by_id[&4].reason.as_deref(),
                by_id[&4].dup_of,
                by_id[&4].score
            ),
            (Some("exact"), Some(1), Some(1.0))
        );
        for (dup, orig) in [(5, 2), (6, 3)] {
            let d = by_id[&dup];
            assert_eq!(
                (d.reason.as_deref(), d.dup_of, d.cluster_id),
                (Some("minhash"), Some(orig), Some(orig)),
                "{dup}"
            );
            assert!(d.score.unwrap() >= 0.6);
            assert_eq!(by_id[&orig].cluster_id, Some(orig));
        }
        assert_eq!(by_id[&1].cluster_id, None);
        let again = env.run(["dedup", "--json"]).expect_code(0).json();
        assert_eq!(again["rejected"], 0);
        assert_eq!(again["scope"], 3);
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(stats["by_reason"]["minhash"], 2);
        assert_eq!(stats["by_reason"]["exact"], 1);
    }
}

#[test]
fn every_quality_rule_in_both_languages_through_instill_filter() {
    // (instruction, input, output, rule that must fire or "" for none)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "Give three tips for staying healthy.",
            "",
            "Eat well, sleep enough and exercise.",
            "",
        ),
        (
            "给出三条保持健康的建议。",
            "",
            "均衡饮食，充足睡眠，适量运动。",
            "",
        ),
        (
            "Summarize this.",
            "",
            "It is short.",
            "instruction_too_short",
        ),
        ("总结", "", "好的，没问题。", "instruction_too_short"),
        (
            &"word ".repeat(151),
            "",
            "Too long.",
            "instruction_too_long",
        ),
        (&"字".repeat(301), "", "太长了。", "instruction_too_long"),
        (
            "Describe the image in the attachment.",
            "",
            "A cat.",
            "blacklist",
        ),
        ("请描述这张图片里的内容。", "", "一只猫。", "blacklist"),
        (
            "Write a program that sorts numbers.",
            "",
            "sorted(xs)",
            "write_a_program",
        ),
        (
            "\"Quote\" the following sentence properly.",
            "",
            "Done.",
            "leading_punctuation",
        ),
        ("「引用」下面这句话并加上标点。", "", "好的。", ""),
        (
            "Éxplain the rule of thirds in photography.",
            "",
            "It divides the frame.",
            "leading_non_ascii",
        ),
        (
            "Tell me something about yourself.",
            "",
            "As an AI language model, I do not have a life.",
            "self_reference",
        ),
        (
            "说说你自己的故事吧。",
            "",
            "作为一个人工智能，我没有自己的故事。",
            "self_reference",
        ),
        (
            "Name the largest planet in our solar system.",
            "",
            " ",
            "empty_output",
        ),
        ("太阳系中最大的行星是哪一颗？", "", "", "empty_output"),
        (
            "What is the boiling point of water at sea level?",
            "",
            "水在海平面的沸点是一百摄氏度，也就是二百一十二华氏度。",
            "language_mismatch",
        ),
        (
            "水在海平面上的沸点是多少度？",
            "",
            "Water boils at one hundred degrees Celsius at sea level.",
            "language_mismatch",
        ),
        (
            "Repeat the following sentence exactly once.",
            "",
            "Repeat the following sentence exactly once.",
            "repeats_instruction",
        ),
        (
            "请把这句话原样重复一遍。",
            "",
            "请把这句话原样重复一遍。",
            "repeats_instruction",
        ),
    ];
    let text: String = cases
        .iter()
        .map(|(i, inp, o, _)| {
            format!(
                "{}\n",
                serde_json::json!({"instruction": i, "input": inp, "output": o})
            )
        })
        .collect();
    for env in Env::both() {
        let file = env.write("rules.jsonl", &text);
        env.run(["import", file.to_str().unwrap()]).expect_code(0);
        let dry = env
            .run(["filter", "--dry-run", "--json"])
            .expect_code(0)
            .json();
        let want_rejected = cases.iter().filter(|c| !c.3.is_empty()).count();
        assert_eq!(dry["rejected"], want_rejected as u64);
        env.run(["filter"]).expect_code(0);
        let v = verdicts(&env);
        for ((ins, _, _, rule), got) in cases.iter().zip(&v) {
            let want = (!rule.is_empty()).then_some(*rule);
            assert_eq!(got.reason.as_deref(), want, "{} {ins:?}", env.backend());
        }
        // A rules file turns a rule off and extends the blacklist.
        let rules = env.write(
            "rules.toml",
            "[empty_output]\nenabled = false\n[blacklist]\nextra = [\"boiling\"]\n",
        );
        let more = env.write("more.jsonl", "{\"instruction\":\"Name a prime number below ten.\",\"output\":\"\"}\n{\"instruction\":\"Explain why boiling water bubbles.\",\"output\":\"Vapour forms.\"}\n");
        env.run(["import", more.to_str().unwrap()]).expect_code(0);
        let run = env
            .run(["filter", "--rules", rules.to_str().unwrap(), "--json"])
            .expect_code(0)
            .json();
        assert_eq!(run["rejected"], 1);
        assert_eq!(run["by_rule"]["blacklist"], 1);
        let bad = env.write("bad.toml", "[blacklist]\nextras = []\n");
        let run = env
            .run(["filter", "--rules", bad.to_str().unwrap()])
            .expect_code(2);
        assert!(
            run.stderr.contains("bad.toml") && run.stderr.contains("unknown field `extras`"),
            "{}",
            run.stderr
        );
    }
}
