//! Seed tasks (shipped and from files) and `instill stats`, through the real binary.

use std::collections::BTreeSet;

use crate::util::{Env, repo, shared};

#[test]
fn the_shipped_seed_sets_are_large_varied_and_idempotent() {
    for env in Env::both() {
        let first = env
            .run(["seeds", "import", "--builtin", "all", "--json"])
            .expect_code(0)
            .json();
        let added: u64 = first
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["added"].as_u64().unwrap())
            .sum();
        let again = env
            .run(["seeds", "import", "--builtin", "all"])
            .expect_code(0);
        assert!(again.stdout.contains("nothing added"), "{}", again.stdout);
        let list = env.run(["seeds", "list", "--json"]).expect_code(0).json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len() as u64, added, "{}", env.backend());
        let zh = list.iter().filter(|s| s["lang"] == "zh").count();
        let en = list.iter().filter(|s| s["lang"] == "en").count();
        assert!(zh >= 40 && en >= 40, "zh {zh}, en {en}");
        let zh_only = env
            .run(["seeds", "list", "--lang", "zh", "--json"])
            .expect_code(0)
            .json();
        assert_eq!(zh_only.as_array().unwrap().len(), zh);
    }
}

#[test]
fn the_shipped_seed_files_cover_every_task_type() {
    let wanted: BTreeSet<&str> = [
        "brainstorming",
        "open_qa",
        "closed_qa",
        "rewrite",
        "extraction",
        "generation",
        "classification",
        "summarization",
        "code",
        "math",
    ]
    .into();
    for lang in ["zh", "en"] {
        let text = std::fs::read_to_string(repo(&format!("prompts/seeds/{lang}.jsonl"))).unwrap();
        let mut seen = BTreeSet::new();
        let mut names = BTreeSet::new();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            seen.insert(v["category"].as_str().unwrap().to_string());
            assert!(
                names.insert(v["name"].as_str().unwrap().to_string()),
                "duplicate name in {lang}"
            );
            assert_eq!(v["instances"].as_array().unwrap().len(), 1);
        }
        let seen: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(seen, wanted, "{lang}");
    }
}

#[test]
fn seed_files_in_other_layouts_import_too() {
    for env in Env::both() {
        let zh = shared("data/zh_seed_tasks.json");
        let run = env
            .run(["seeds", "import", zh.to_str().unwrap()])
            .expect_code(0);
        assert!(run.stdout.contains("added 175 of 175"), "{}", run.stdout);
        let alpaca = env.write(
            "alpaca_seeds.json",
            r#"[{"instruction":"Name a colour.","input":"","output":"Blue."}]"#,
        );
        env.run(["seeds", "import", alpaca.to_str().unwrap(), "--lang", "en"])
            .expect_code(0);
        let list = env.run(["seeds", "list", "--json"]).expect_code(0).json();
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 176);
        assert_eq!(list.iter().filter(|s| s["lang"] == "zh").count(), 175);
        assert_eq!(list[0]["is_classification"], false);
        assert!(list.iter().any(|s| s["is_classification"] == true));
        let multi = env.write(
            "multi.jsonl",
            r#"{"messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"},{"role":"user","content":"c"},{"role":"assistant","content":"d"}]}"#,
        );
        let run = env
            .run(["seeds", "import", multi.to_str().unwrap()])
            .expect_code(2);
        assert!(
            run.stderr
                .contains("multi.jsonl:1:1: field `messages`: a seed task must be single-turn"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn stats_counts_what_was_stored() {
    for env in Env::both() {
        let empty = env.run(["stats", "--json"]).expect_code(0);
        assert_eq!(empty.json()["records"]["total"], 0);
        assert!(empty.stdout.starts_with(
            "{\"records\":{\"total\":0,\"pending\":0,\"accepted\":0,\"rejected\":0},\"seeds\":0"
        ));
        let quick = repo("examples/quickstart.json");
        let chat = repo("examples/chat.jsonl");
        env.run(["import", quick.to_str().unwrap(), chat.to_str().unwrap()])
            .expect_code(0);
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        let s = env.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(s["records"]["total"], 25, "{}", env.backend());
        assert_eq!(s["records"]["pending"], 25);
        assert_eq!(s["seeds"], 45);
        assert_eq!(s["imports"], 2);
        assert_eq!(s["by_source"]["quickstart"], 22);
        assert_eq!(s["by_source"]["chat"], 3);
        assert_eq!(s["by_lang"]["zh"], 12);
        assert_eq!(s["by_lang"]["en"], 13);
        assert_eq!(s["by_origin"]["imported"], 25);
        // Lengths are in characters (code points), as Python's len() counts them.
        assert_eq!(s["lengths"]["input"]["max"], 133);
        assert_eq!(s["lengths"]["output"]["max"], 168);
        assert_eq!(s["lengths"]["input"]["p50"], 0);
        let text = env.run(["stats"]).expect_code(0).stdout;
        assert!(text.contains("25 total: 25 pending"), "{text}");
    }
}

/// `instill stats | true`: the reader is gone before the first line; instill exits quietly (141,
/// as a process killed by SIGPIPE would), with no panic message.
#[test]
fn a_closed_stdout_ends_a_command_quietly() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "all"])
        .expect_code(0);
    for _ in 0..3 {
        let run = env.sh("\"$INSTILL\" stats --no-progress | true; \"$INSTILL\" seeds list | true");
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}
