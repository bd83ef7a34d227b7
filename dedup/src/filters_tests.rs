//! The word rules read the fields their sources read: the examples (a blacklisted word
//! in the input is Alpaca's business only when a rules file says so), BELLE's fields, the
//! links-and-models rule, and Alpaca's rules over Alpaca's own 52,002 records (read from
//! `INSTILL_SHARED`; skipped with a message when it is unset).

use std::collections::BTreeMap;
use std::path::PathBuf;

use instill_core::{InputFormat, Reason, Record, parse_records};
use serde_json::value::RawValue;

use crate::filters::Rules;
use crate::word_rules::{Matching, RuleField, WordRule};

fn rules(toml: &str) -> Rules {
    Rules::from_toml(toml).unwrap()
}

/// Regression: `instill filter` rejected these Alpaca records as `blacklist` because it read
/// the input, where Alpaca's rule reads only the instruction.
#[test]
fn a_blacklisted_word_in_the_input_is_kept_unless_the_rules_widen_the_fields() {
    let cases = [
        Record::new(
            "Rewrite the following sentence in the passive voice.",
            "I had to go to the store to buy milk.",
            "The store had to be gone to by me to buy milk.",
        ),
        Record::new(
            "Summarize the following article in two sentences.",
            "City planners released new maps of the flood zones. The files show that many \
             homes built after 1990 sit on land the old maps marked as safe.",
            "New flood maps show that many homes built after 1990 are at risk. The old maps had \
             marked their land as safe.",
        ),
        Record::new(
            "Suggest a good name for the dataset described below.",
            "A collection of 10,000 labelled images of garden birds, taken across Europe.",
            "EuroGardenBirds-10k",
        ),
    ];
    let default = Rules::default();
    let widened = rules("[blacklist]\nfields = [\"instruction\", \"input\"]\n");
    for r in &cases {
        assert_eq!(default.check(r), None, "{:?}", r.instruction);
        assert_eq!(
            widened.check(r),
            Some(Reason::Blacklist),
            "{:?}",
            r.instruction
        );
    }
    // The instruction itself is still Alpaca's business.
    let own = Record::new("Draw a map of the route to school.", "", "I cannot draw.");
    assert_eq!(default.check(&own), Some(Reason::Blacklist));
}

#[test]
fn belles_list_reads_the_whole_chinese_task_and_a_rules_file_can_narrow_it() {
    let in_output = Record::new(
        "如何在Python中读取一个文本？",
        "",
        "可以用 open() 打开文件，再调用 read() 读取全部内容。",
    );
    let default = Rules::default();
    assert_eq!(default.check(&in_output), Some(Reason::Blacklist));
    let narrowed = rules("[blacklist_zh]\nfields = [\"instruction\"]\n");
    assert_eq!(narrowed.check(&in_output), None);
    // Substrings, as BELLE's `word in text`: `http` inside a longer word, any case.
    let link = Record::new("总结下面这篇文章的要点。", "https://example.com/a", "……");
    assert_eq!(default.check(&link), Some(Reason::Blacklist));
    let model = Record::new("介绍一下ChatGPT的训练方法。", "", "它先预训练再微调。");
    assert_eq!(default.check(&model), Some(Reason::Blacklist));
    // Alpaca's English words are not BELLE's: a Chinese task mentioning a map passes.
    let map = Record::new(
        "解释一下什么是map函数。",
        "",
        "map 把函数作用到每个元素上。",
    );
    assert_eq!(default.check(&map), None);
}

#[test]
fn links_and_models_is_off_by_default_and_its_own_reason_when_on() {
    let r = Record::new(
        "Summarize the article at https://example.com/news in three sentences.",
        "",
        "It says that…",
    );
    assert_eq!(Rules::default().check(&r), None);
    let on = rules("[links_and_models]\nenabled = true\n");
    assert_eq!(on.check(&r), Some(Reason::LinksAndModels));
    let about = Record::new("Explain how GPT-3 was trained.", "", "On web text.");
    assert_eq!(on.check(&about), Some(Reason::LinksAndModels));
    let topic = Record::new("Explain what a URLConnection object does.", "", "It…");
    assert_eq!(on.check(&topic), None, "whole words only");
}

#[test]
fn fields_and_matching_are_typed_and_round_trip() {
    let r = rules(
        "[blacklist]\nfields = [\"output\"]\nmatching = \"substring\"\n[self_reference]\nfields = [\"output\"]\n",
    );
    assert_eq!(r.blacklist.fields, [RuleField::Output]);
    assert_eq!(r.blacklist.matching, Matching::Substring);
    assert_eq!(Rules::from_toml(&r.to_toml()).unwrap(), r);
    let text = Rules::default().to_toml();
    assert!(
        text.contains("[blacklist_zh]\nenabled = true\nfields = [\"instruction\", \"input\", \"output\"]\nmatching = \"substring\"\n"),
        "{text}"
    );
    let err = |toml: &str| Rules::from_toml(toml).unwrap_err().to_string();
    let e = err("[blacklist]\nfields = [\"title\"]\n");
    assert!(e.contains("unknown variant `title`"), "{e}");
    let e = err("[blacklist_zh]\nfields = []\n");
    assert!(e.starts_with("[blacklist_zh] fields is empty"), "{e}");
    let e = err("[self_reference]\nfields = []\n");
    assert!(e.starts_with("[self_reference] fields is empty"), "{e}");
    let e = err("[links_and_models]\nmatching = \"regex\"\n");
    assert!(e.contains("unknown variant `regex`"), "{e}");
}

/// A shared data file, or `None` (with a message) when `INSTILL_SHARED` is unset.
fn shared(rel: &str) -> Option<PathBuf> {
    let Some(root) = std::env::var_os("INSTILL_SHARED") else {
        eprintln!("skipped: INSTILL_SHARED is unset (set it to the shared/ directory)");
        return None;
    };
    Some(PathBuf::from(root).join(rel))
}

/// Records of a JSON array file (Alpaca's layout) or a JSONL file of self-instruct seeds.
fn records(path: &PathBuf) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    if text.trim_start().starts_with('[') {
        let raws: Vec<&RawValue> = serde_json::from_str(&text).unwrap();
        for raw in raws {
            parse_records(raw.get().as_bytes(), InputFormat::Alpaca, &mut out).unwrap();
        }
    } else {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            parse_records(line.as_bytes(), InputFormat::SelfInstruct, &mut out).unwrap();
        }
    }
    out
}

fn reasons(rules: &Rules, records: &[Record]) -> BTreeMap<&'static str, usize> {
    let mut by = BTreeMap::new();
    for r in records {
        if let Some(reason) = rules.check(r) {
            *by.entry(reason.as_str()).or_default() += 1;
        }
    }
    by
}

/// Regression: 737 of Alpaca's records were rejected as `blacklist` by "Alpaca's" rule.
#[test]
fn alpacas_rules_reject_none_of_alpacas_data() {
    let Some(path) = shared("data/alpaca_data.json") else {
        return;
    };
    let data = records(&path);
    assert_eq!(data.len(), 52_002);
    let by = reasons(&Rules::default(), &data);
    eprintln!("alpaca_data.json, default rules: {by:?}");
    for alpaca in [
        Reason::Blacklist,
        Reason::InstructionTooShort,
        Reason::InstructionTooLong,
        Reason::WriteAProgram,
        Reason::LeadingPunctuation,
        Reason::LeadingNonAscii,
    ] {
        assert_eq!(by.get(alpaca.as_str()), None, "{alpaca}: {by:?}");
    }
    // The rules are not blind: Alpaca's list over the input too finds the records the old
    // default rejected for it, and the links-and-models rule finds its own.
    let count = |rule: &WordRule| data.iter().filter(|r| rule.hits(r)).count();
    let mut widened = WordRule::alpaca();
    widened.fields.push(RuleField::Input);
    assert_eq!(count(&widened), 393);
    assert_eq!(count(&WordRule::links_and_models()), 100);
}

#[test]
fn belles_list_on_belles_seeds_and_a_chinese_alpaca() {
    let (Some(seeds), Some(zh)) = (
        shared("data/zh_seed_tasks.json"),
        shared("data/alpaca_zh_part00.json"),
    ) else {
        return;
    };
    let belle = WordRule::belle();
    let mut instruction_only = WordRule::belle();
    instruction_only.fields = vec![RuleField::Instruction];
    for (path, len, all_fields, instruction) in [(seeds, 175, 7, 1), (zh, 10_021, 407, 61)] {
        let data = records(&path);
        assert_eq!(data.len(), len);
        let hits = |rule: &WordRule| data.iter().filter(|r| rule.hits(r)).count();
        assert_eq!(
            (hits(&belle), hits(&instruction_only)),
            (all_fields, instruction),
            "{}",
            path.display()
        );
        let by = reasons(&Rules::default(), &data);
        eprintln!("{}, default rules: {by:?}", path.display());
    }
}
