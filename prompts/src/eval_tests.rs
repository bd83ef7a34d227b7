//! Evaluation files: BELLE's format read with errors naming line and field, class labels
//! normalised, a class with no prompt reported, the judge request; and BELLE's own two files
//! (read from `INSTILL_SHARED`; skipped with a message when it is unset).

use std::path::PathBuf;

use crate::eval_prompts::{JudgePrompts, JudgeRequestError, judge_request};
use crate::eval_set::{EvalFileError, class_counts, normalize_class, parse_eval_set};
use crate::score::{Scale, parse_score};

#[test]
fn class_labels_normalise_case_width_and_whitespace() {
    for (label, want) in [
        ("open QA", "open qa"),
        ("open qa", "open qa"),
        ("closed\u{a0}qa", "closed qa"),
        ("  Closed \t QA ", "closed qa"),
        ("ｍａｔｈ", "math"),
        ("Brainstorming", "brainstorming"),
        ("", ""),
    ] {
        assert_eq!(normalize_class(label), want, "{label:?}");
    }
}

#[test]
fn an_eval_set_reads_as_jsonl_or_an_array_with_errors_naming_line_and_field() {
    let jsonl = "{\"question\": \"1+1=?\", \"std_answer\": \"2\", \"class\": \"math\"}\n\n{\"question\": \"写一首诗\", \"std_answer\": \"\", \"class\": \"Open\u{a0}QA\", \"id\": 7}\n";
    let items = parse_eval_set(jsonl).unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!((items[1].line, items[1].class.as_str()), (3, "open qa"));
    assert_eq!(items[1].raw_class, "Open\u{a0}QA");
    let array = "[\n  {\"question\": \"a?\", \"std_answer\": \"b\", \"class\": \"x\"},\n  {\n    \"question\": \"c?\", \"std_answer\": \"\", \"class\": \"y\"}\n]";
    let items = parse_eval_set(array).unwrap();
    assert_eq!(
        items.iter().map(|i| i.line).collect::<Vec<_>>(),
        [2, 3],
        "{items:?}"
    );
    let err = |text: &str| parse_eval_set(text).unwrap_err().to_string();
    let ok = "{\"question\": \"q\", \"std_answer\": \"\", \"class\": \"c\"}\n";
    assert_eq!(
        err(&format!("{ok}{{\"question\": \"q\", \"class\": \"c\"}}\n")),
        "line 2: no `std_answer` field"
    );
    assert_eq!(
        err(&format!(
            "{ok}{ok}{{\"question\": 3, \"std_answer\": \"\", \"class\": \"c\"}}"
        )),
        "line 3: `question` is a number, expected a string"
    );
    assert_eq!(
        err("{\"question\": \" \", \"std_answer\": \"\", \"class\": \"c\"}"),
        "line 1: `question` is empty"
    );
    assert_eq!(
        err("{\"question\": \"q\", \"std_answer\": \"\", \"class\": \"\u{a0}\"}"),
        "line 1: `class` is empty"
    );
    assert!(err(&format!("{ok}{{\"question\": ")).starts_with("line 2: not JSON ("));
    assert_eq!(
        err("[1, 2]"),
        "line 1: expected a JSON object, found a number"
    );
    assert_eq!(err("\n \n"), "no records in the file");
    assert_eq!(
        parse_eval_set("\u{feff}{\"question\": \"q\", \"std_answer\": \"\", \"class\": \"c\"}")
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn judge_prompts_are_keyed_by_normalised_class_and_a_missing_class_is_reported() {
    let file = "{\"class\": \"open QA\", \"prompt\": \"比较模型回答与标准答案。\"}\n{\"class\": \"math\", \"prompt\": \"判断解答是否正确。\"}\n";
    let prompts = JudgePrompts::parse("mine.json", file).unwrap();
    assert_eq!(prompts.classes().collect::<Vec<_>>(), ["math", "open qa"]);
    assert_eq!(prompts.prompt("Open\u{a0}qa").unwrap().line, 1);
    assert_eq!(prompts.scale(), Scale::UNIT);
    let set = "{\"question\": \"1+1=?\", \"std_answer\": \"2\", \"class\": \"math\"}\n{\"question\": \"天为什么是蓝的？\", \"std_answer\": \"瑞利散射。\", \"class\": \"open qa\"}\n{\"question\": \"把这句话译成英文：你好\", \"std_answer\": \"Hello\", \"class\": \"translation\"}\n";
    let items = parse_eval_set(set).unwrap();
    assert_eq!(
        prompts.missing(&items).into_iter().collect::<Vec<_>>(),
        [("translation".to_string(), 1)]
    );
    assert_eq!(
        prompts.request(&items[2], "Hello").unwrap_err(),
        JudgeRequestError::NoPrompt {
            class: "translation".into(),
            known: "math, open qa".into()
        }
    );
    let request = prompts.request(&items[1], "因为光的散射。").unwrap();
    for part in [
        "比较模型回答与标准答案。",
        "天为什么是蓝的？",
        "【标准答案】\n瑞利散射。",
        "因为光的散射。",
    ] {
        assert!(request.contains(part), "{part:?} in\n{request}");
    }
    assert!(request.trim_end().ends_with("得分: X"), "{request}");
    // Same prompts, other order and spelling: same hash; another prompt: another hash.
    let reordered = "{\"class\": \"math\", \"prompt\": \"判断解答是否正确。\"}\n{\"class\": \"open qa\", \"prompt\": \"比较模型回答与标准答案。\"}\n";
    let same = JudgePrompts::parse("other.json", reordered).unwrap();
    assert_eq!(same.hash(), prompts.hash());
    let other = JudgePrompts::parse("x", &reordered.replace("正确", "对")).unwrap();
    assert_ne!(other.hash(), prompts.hash());
    let err = |text: &str| JudgePrompts::parse("x", text).unwrap_err();
    assert_eq!(
        err(&format!(
            "{file}{{\"class\": \"Open  QA\", \"prompt\": \"再来一个\"}}"
        )),
        EvalFileError::DuplicateClass {
            line: 3,
            class: "open qa".into(),
            first: 1
        }
    );
    assert_eq!(
        err("{\"class\": \"math\"}").to_string(),
        "line 1: no `prompt` field"
    );
    assert_eq!(
        err("{\"class\": \"math\", \"prompt\": \"\"}").to_string(),
        "line 1: `prompt` is empty"
    );
}

#[test]
fn a_request_without_a_reference_answer_leaves_that_part_out() {
    let r = judge_request(
        "评价这首诗。",
        "写一首关于秋天的诗",
        "  ",
        "秋风起，落叶黄。",
    )
    .unwrap();
    assert!(!r.contains("标准答案"), "{r}");
    assert!(r.contains("【问题】\n写一首关于秋天的诗\n"), "{r}");
    assert!(r.contains("【模型回答】\n秋风起，落叶黄。\n"), "{r}");
    // The reply the request asks for reads back on the prompts' scale.
    let verdict = parse_score("意境完整，用词贴切。\n得分: 0.9", Scale::UNIT).unwrap();
    assert_eq!(verdict.score, 0.9);
}

/// A shared data file, or `None` (with a message) when `INSTILL_SHARED` is unset.
fn shared(rel: &str) -> Option<String> {
    let Some(root) = std::env::var_os("INSTILL_SHARED") else {
        eprintln!("skipped: INSTILL_SHARED is unset (set it to the shared/ directory)");
        return None;
    };
    Some(std::fs::read_to_string(PathBuf::from(root).join(rel)).unwrap())
}

#[test]
fn belles_eval_set_has_a_prompt_for_every_class_in_belles_file_and_ours() {
    let (Some(set), Some(belle)) = (
        shared("data/eval_set.json"),
        shared("data/eval_prompt.json"),
    ) else {
        return;
    };
    let items = parse_eval_set(&set).unwrap();
    assert_eq!(items.len(), 1000);
    let counts: Vec<(String, usize)> = class_counts(&items).into_iter().collect();
    let want = [
        ("brainstorming", 179),
        ("classification", 65),
        ("closed qa", 52),
        ("code", 38),
        ("extract", 37),
        ("generation", 98),
        ("math", 75),
        ("open qa", 285),
        ("rewrite", 131),
        ("summarization", 40),
    ];
    let want: Vec<(String, usize)> = want.iter().map(|(c, n)| (c.to_string(), *n)).collect();
    assert_eq!(counts, want);
    assert_eq!(
        items.iter().filter(|i| i.std_answer.is_empty()).count(),
        369
    );
    assert_eq!(
        items
            .iter()
            .filter(|i| i.raw_class == "closed\u{a0}qa")
            .count(),
        52
    );
    let belle = JudgePrompts::parse("eval_prompt.json", &belle).unwrap();
    assert_eq!(belle.classes().count(), 11);
    assert!(
        belle.missing(&items).is_empty(),
        "{:?}",
        belle.missing(&items)
    );
    assert_eq!(belle.prompt("closed\u{a0}qa").unwrap().class, "closed QA");
    let ours = JudgePrompts::builtin().unwrap();
    assert_eq!(
        ours.classes().collect::<Vec<_>>(),
        belle.classes().collect::<Vec<_>>()
    );
    assert!(ours.missing(&items).is_empty());
    for item in &items {
        let request = ours.request(item, "模型的回答").unwrap();
        assert!(request.contains(&item.question));
        assert_eq!(
            request.contains("【标准答案】"),
            !item.std_answer.trim().is_empty()
        );
    }
}
