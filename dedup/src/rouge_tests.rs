//! ROUGE-L filter tests: the prefix-filtered path against the brute-force one, the f64 contract
//! against ../shared/bench/ref/rouge_float_cases.json, the kept lists of Python's reference
//! filter, and scores bit for bit against rougers (a port of Google's rouge-score).

use std::path::PathBuf;

use proptest::prelude::*;

use crate::rouge::{rouge_filter, rouge_filter_exhaustive};
use crate::rouge_rule::{RougeConfig, rouge_l_f1};
use crate::tokenize::Tokenizer;

/// A file of the shared data sets (`INSTILL_SHARED`, else `../shared` beside the repository).
pub(crate) fn shared(rel: &str) -> PathBuf {
    let root = std::env::var_os("INSTILL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared"));
    let p = root.join(rel);
    assert!(
        p.exists(),
        "{} not found: set INSTILL_SHARED (bash .ci/run does)",
        p.display()
    );
    p
}

fn json(rel: &str) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(shared(rel)).unwrap()).unwrap()
}

/// The 175 Alpaca seed instructions then the first `n` Alpaca instructions.
pub(crate) fn alpaca_items(n: usize) -> Vec<String> {
    let seeds = std::fs::read_to_string(shared("data/seed_tasks.jsonl")).unwrap();
    let mut items: Vec<String> = seeds
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["instruction"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let data = json("data/alpaca_data.json");
    items.extend(
        data.as_array()
            .unwrap()
            .iter()
            .take(n)
            .map(|r| r["instruction"].as_str().unwrap().to_string()),
    );
    items
}

fn kept_indices(verdicts: &[crate::rouge::RougeVerdict]) -> Vec<u64> {
    verdicts
        .iter()
        .enumerate()
        .filter(|(_, v)| v.kept)
        .map(|(i, _)| i as u64)
        .collect()
}

fn alpaca_config() -> RougeConfig {
    RougeConfig {
        tokenizer: Tokenizer::Alpaca,
        ..RougeConfig::default()
    }
}

#[test]
fn the_f64_formula_decides_every_float_hazard_as_python_does() {
    let cases = json("bench/ref/rouge_float_cases.json");
    let mut checked = 0;
    for key in ["flips", "ties"] {
        for c in cases[key].as_array().unwrap() {
            let lcs = c["lcs"].as_u64().unwrap() as usize;
            let target = c["len_target"].as_u64().unwrap() as usize;
            let prediction = c["len_prediction"].as_u64().unwrap() as usize;
            let f = rouge_l_f1(lcs, target, prediction);
            assert_eq!(
                format!("{f:?}").trim_end_matches(".0"),
                c["f_python"].as_str().unwrap().trim_end_matches(".0")
            );
            let decision = if f > 0.7 { "reject" } else { "keep" };
            assert_eq!(decision, c["python_decision"], "{c}");
            checked += 1;
        }
    }
    assert_eq!(checked, 54 + 44);
}

#[test]
fn reproduces_pythons_kept_lists_on_alpaca() {
    let items = alpaca_items(5000);
    let texts: Vec<&str> = items.iter().map(String::as_str).collect();
    for (n, reference) in [
        (2000, "bench/ref/alpaca_rougeL_kept_2000.json"),
        (5000, "bench/ref/alpaca_rougeL_kept_5000.json"),
    ] {
        let verdicts = rouge_filter(&texts[..175 + n], 175, &alpaca_config());
        let want: Vec<u64> = json(reference)["kept_indices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        assert_eq!(kept_indices(&verdicts), want, "first {n}");
    }
    // The six exact-0.7 ties of the first 2,000 are kept, and their score is exactly 0.7.
    let verdicts = rouge_filter(&texts[..2175], 175, &alpaca_config());
    for h in json("bench/ref/alpaca_rougeL_hazards_2000.json")
        .as_array()
        .unwrap()
    {
        let c = h["candidate"].as_u64().unwrap() as usize;
        assert!(verdicts[c].kept);
        assert_eq!(
            verdicts[c].nearest.map(|n| n.score),
            Some(0.7),
            "candidate {c}"
        );
    }
}

#[test]
fn the_fast_path_equals_the_exhaustive_one_on_real_data() {
    let items = alpaca_items(1500);
    let texts: Vec<&str> = items.iter().map(String::as_str).collect();
    // A low threshold makes many rejections, so both outcomes are exercised.
    for threshold in [0.7, 0.4] {
        let config = RougeConfig {
            threshold,
            floor: 0.3,
            ..alpaca_config()
        };
        let fast = rouge_filter(&texts, 175, &config);
        let slow = rouge_filter_exhaustive(&texts, 175, &config);
        assert_eq!(
            kept_indices(&fast),
            kept_indices(&slow),
            "threshold {threshold}"
        );
        for (f, s) in fast.iter().zip(&slow) {
            let s_nearest = s
                .nearest
                .filter(|n| n.score >= config.floor || n.score > threshold);
            assert_eq!(f.nearest, s_nearest);
        }
        if threshold < 0.5 {
            assert!(fast.iter().filter(|v| !v.kept).count() > 200);
        }
    }
}

#[test]
fn scores_equal_rougers_bit_for_bit() {
    let items = alpaca_items(400);
    let scorer = rougers::RougeScorer::new(["rougeL"], false).unwrap();
    let seq = crate::vocab::Sequences::tokenize(
        &items.iter().map(String::as_str).collect::<Vec<_>>(),
        Tokenizer::Alpaca,
    );
    let mut query = crate::lcs::LcsQuery::new();
    let mut compared = 0;
    for c in (175..items.len()).step_by(5) {
        query.set(seq.get(c));
        for p in (0..c).step_by(7) {
            let ours = rouge_l_f1(query.lcs(seq.get(p)), seq.get(c).len(), seq.get(p).len());
            let theirs = scorer
                .score(&items[c], &items[p])
                .get(rougers::RougeType::L)
                .unwrap()
                .fmeasure;
            assert_eq!(
                ours.to_bits(),
                theirs.to_bits(),
                "{:?} vs {:?}",
                items[c],
                items[p]
            );
            compared += 1;
        }
    }
    assert!(compared > 1000);
}

fn texts_from(words: &[Vec<u8>]) -> Vec<String> {
    words
        .iter()
        .map(|w| {
            w.iter()
                .map(|x| format!("w{x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_fast_path_equals_the_exhaustive_one_on_random_data(
        items in proptest::collection::vec(proptest::collection::vec(0u8..8, 0..14), 1..120),
        seeds in 0usize..10,
        threshold in prop_oneof![Just(0.3), Just(0.5), Just(0.7), Just(0.9)],
        floor in prop_oneof![Just(0.2), Just(0.5), Just(1.0)],
    ) {
        let texts = texts_from(&items);
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let config = RougeConfig { threshold, floor, tokenizer: Tokenizer::Alpaca };
        let fast = rouge_filter(&refs, seeds, &config);
        let slow = rouge_filter_exhaustive(&refs, seeds, &config);
        prop_assert_eq!(kept_indices(&fast), kept_indices(&slow));
        for (f, s) in fast.iter().zip(&slow) {
            let s_nearest = s.nearest.filter(|n| n.score >= floor || n.score > threshold);
            prop_assert_eq!(f.nearest, s_nearest);
        }
    }
}
