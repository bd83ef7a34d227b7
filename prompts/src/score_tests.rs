//! `parse_score` over replies of every shape a judge gives: ours, MT-Bench's, BELLE's, JSON,
//! fractions, full-width forms, and the adversarial ones (numbers in the rationale, several
//! labels, ranges, values off the scale).

use proptest::prelude::*;

use crate::score::{NoScore, Scale, parse_score};

const TEN: Scale = Scale::ONE_TO_TEN;
const UNIT: Scale = Scale::UNIT;

/// Each reply and the score it must give (or the reason it gives none).
fn check(cases: &[(&str, Scale, Result<f64, &str>)]) {
    for (reply, scale, want) in cases {
        let got = parse_score(reply, *scale)
            .map(|v| v.score)
            .map_err(|e| e.to_string());
        let want = want.map_err(str::to_string);
        assert_eq!(got, want, "{reply:?} on {scale}");
    }
}

#[test]
fn labelled_scores_in_english_chinese_markdown_and_json() {
    check(&[
        ("The answer is correct.\nScore: 7", TEN, Ok(7.0)),
        ("score 7/10", TEN, Ok(7.0)),
        ("Score: 7.5", TEN, Ok(7.5)),
        ("**Score:** 8", TEN, Ok(8.0)),
        ("**Score**: 8", TEN, Ok(8.0)),
        ("### Score\n\n9", TEN, Ok(9.0)),
        ("Rating: [[7]]", TEN, Ok(7.0)),
        ("Final score = 6", TEN, Ok(6.0)),
        ("The overall rating is 4.", TEN, Ok(4.0)),
        ("SCORE: 3", TEN, Ok(3.0)),
        ("得分: 0.8", UNIT, Ok(0.8)),
        ("得分：0.8分", UNIT, Ok(0.8)),
        ("评分：8分", TEN, Ok(8.0)),
        ("评分为8分。", TEN, Ok(8.0)),
        ("评分：八分", TEN, Ok(8.0)),
        ("评分：十分", TEN, Ok(10.0)),
        ("总分（1-10）：7", TEN, Ok(7.0)),
        ("评分：８", TEN, Ok(8.0)),
        ("得分：０．５", UNIT, Ok(0.5)),
        ("{\"score\": 7, \"rationale\": \"fine\"}", TEN, Ok(7.0)),
        (
            "```json\n{\n  \"reason\": \"Step 2 is wrong.\",\n  \"score\": 3\n}\n```",
            TEN,
            Ok(3.0),
        ),
        ("{\"score\": \"8/10\"}", TEN, Ok(8.0)),
        ("{\"得分\": 1}", UNIT, Ok(1.0)),
        (
            "{\"helpfulness\": 9, \"correctness\": 4, \"overall\": 6}",
            TEN,
            Ok(6.0),
        ),
        ("Score: **8**/10", UNIT, Ok(0.8)),
        ("<score>7</score>", TEN, Ok(7.0)),
        (
            "| Criterion | Value |\n|---|---|\n| Score | 8 |",
            TEN,
            Ok(8.0),
        ),
        ("Score - 7", TEN, Ok(7.0)),
        ("The score is 7.", TEN, Ok(7.0)),
        ("Score (out of 10): 6", TEN, Ok(6.0)),
        ("我给出的评分是：8", TEN, Ok(8.0)),
        ("评分（满分10分）：8分", TEN, Ok(8.0)),
        ("最后得分为0.6分。", UNIT, Ok(0.6)),
        (
            "Helpfulness: 8\nCorrectness: 6\nOverall: 7/10",
            UNIT,
            Ok(0.7),
        ),
        ("Verdict: 3", TEN, Ok(3.0)),
        ("Score: 4 out of 5 stars", TEN, Ok(8.0)),
        ("Score: 85%", TEN, Ok(8.5)),
        ("Score: 8 (out of 10)", UNIT, Ok(0.8)),
    ]);
}

#[test]
fn fractions_and_percentages_are_rescaled_as_a_share_of_the_maximum() {
    check(&[
        ("Score: 8/10", UNIT, Ok(0.8)),
        ("Score: 0.8/1", TEN, Ok(8.0)),
        ("Score: 4/5", TEN, Ok(8.0)),
        ("Score: 7 out of 10", TEN, Ok(7.0)),
        ("得分：80%", UNIT, Ok(0.8)),
        // Unlabelled: only over the scale's maximum or 1.
        ("I would give it 7/10.", TEN, Ok(7.0)),
        ("Overall, 7 out of 10.", TEN, Ok(7.0)),
        ("The answer deserves 0.9/1", TEN, Ok(9.0)),
        (
            "It gets 3/4 of the steps right.",
            TEN,
            Err("no score in the reply"),
        ),
        ("Published on 3/10/2020.", TEN, Err("no score in the reply")),
    ]);
}

#[test]
fn the_last_label_wins_over_numbers_in_the_rationale() {
    check(&[
        (
            "The answer lists 3 reasons and cites 2 studies from 1998. It misses 1 step.\nScore: 6",
            TEN,
            Ok(6.0),
        ),
        // Conflicting labels: the last one.
        (
            "Score: 4\nOn reflection the proof holds.\nScore: 8",
            TEN,
            Ok(8.0),
        ),
        // Sub-scores, then the overall one; and an overall one before sub-scores still wins.
        (
            "Helpfulness score: 9\nCorrectness score: 5\nOverall score: 6",
            TEN,
            Ok(6.0),
        ),
        (
            "Overall score: 6\nHelpfulness score: 9\nCorrectness score: 5",
            TEN,
            Ok(6.0),
        ),
        // BELLE's order: the score first, then the reasons with numbers of their own.
        (
            "得分: 0.5\n理由：模型回答的第2步错误，结果应为12而不是10。",
            UNIT,
            Ok(0.5),
        ),
        // Echoed instructions name the label with no number.
        (
            "请按照\"得分:\"的形式输出。满分为1分。\n得分: 1",
            UNIT,
            Ok(1.0),
        ),
        // MT-Bench's bare brackets, no label.
        ("The answer is accurate. [[9]]", TEN, Ok(9.0)),
        // A verdict in words.
        ("Clear and correct. I would give it a 9.", TEN, Ok(9.0)),
        ("I rate this answer 8/10 overall.", UNIT, Ok(0.8)),
        ("回答正确，但不够简洁，我给这个回答打7分。", TEN, Ok(7.0)),
        (
            "It gives 3 examples, all wrong.",
            TEN,
            Err("no score in the reply"),
        ),
        // A heading over a list is not a score; the list's items are not either.
        (
            "Score:\n1. Clarity: the task is clear.\n2. Accuracy: one slip.\nFinal score: 7",
            TEN,
            Ok(7.0),
        ),
        (
            "Score:\n1. Clarity: the task is clear.\n2. Accuracy: one slip.",
            TEN,
            Err("no score in the reply"),
        ),
        // A last line that is only a number.
        ("Accurate and complete.\n\n**9**", TEN, Ok(9.0)),
        ("回答准确完整。\n9分", TEN, Ok(9.0)),
        // "score" as an ordinary word is not a label.
        (
            "The team's score of the match was not asked for; the answer is vague.\nRating: 4",
            TEN,
            Ok(4.0),
        ),
        (
            "A helpfulness_score of 9 is not the score.\nScore: 5",
            TEN,
            Ok(5.0),
        ),
    ]);
}

#[test]
fn replies_without_one_score_say_why() {
    check(&[
        ("", TEN, Err("empty reply")),
        ("  \n ", TEN, Err("empty reply")),
        (
            "The answer is good but incomplete.",
            TEN,
            Err("no score in the reply"),
        ),
        ("Score: N", TEN, Err("no score in the reply")),
        ("Score: 11", TEN, Err("score 11 is outside the scale 1–10")),
        ("Score: 0", TEN, Err("score 0 is outside the scale 1–10")),
        ("Score: -2", TEN, Err("score -2 is outside the scale 1–10")),
        ("Score -2", TEN, Err("score -2 is outside the scale 1–10")),
        (
            "Overall 3 of the claims are wrong.",
            TEN,
            Err("no score in the reply"),
        ),
        ("得分: 8", UNIT, Err("score 8 is outside the scale 0–1")),
        ("Score: 7-8", TEN, Err("`7-8` is not one score")),
        ("评分：7到8分", TEN, Err("`7到8分` is not one score")),
        ("Score: 7/0", TEN, Err("`7/0` is not one score")),
        (
            "Score: 12/10",
            TEN,
            Err("score 12 is outside the scale 1–10"),
        ),
    ]);
    assert_eq!(parse_score("", TEN), Err(NoScore::Empty));
}

#[test]
fn the_rationale_is_the_reply_without_its_score() {
    let rationale = |reply: &str, scale| parse_score(reply, scale).unwrap().rationale;
    assert_eq!(
        rationale("The answer is right.\n\nScore: 8", TEN),
        "The answer is right."
    );
    assert_eq!(
        rationale("**Score:** 8\nClear and correct.", TEN),
        "Clear and correct."
    );
    assert_eq!(
        rationale("得分：0.5分\n理由：第二步有误，（结论）也不完整。", UNIT),
        "理由：第二步有误，（结论）也不完整。"
    );
    assert_eq!(
        rationale("I rate it Score: 7 because it is fine.", TEN),
        "I rate it because it is fine."
    );
    assert_eq!(
        rationale(
            "```json\n{\"score\": 3, \"explanation\": \"Step 2 is wrong.\"}\n```",
            TEN
        ),
        "Step 2 is wrong."
    );
    assert_eq!(rationale("Fine.\n7/10", TEN), "Fine.");
}

/// Pieces judges' replies are made of, full-width and multi-byte ones included.
fn piece() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "Score",
        "score",
        "Rating",
        "得分",
        "评分",
        "总分",
        "Overall",
        ":",
        "：",
        " ",
        "\n",
        "**",
        "[[",
        "]]",
        "7",
        "８",
        "0.5",
        "０．５",
        "/",
        "／",
        "10",
        "分",
        "-",
        "%",
        "{",
        "}",
        "\"score\"",
        "out of",
        "八",
        "（",
        "）",
        "理由",
        "é",
        "```json",
        "give it a",
    ])
}

proptest! {
    /// Whatever the reply, parsing never panics, and a score it gives is on the scale.
    #[test]
    fn any_reply_parses_to_a_score_on_the_scale_or_a_reason(
        parts in prop::collection::vec(piece(), 0..24),
        unit in any::<bool>(),
    ) {
        let reply: String = parts.concat();
        let scale = if unit { UNIT } else { TEN };
        if let Ok(v) = parse_score(&reply, scale) {
            prop_assert!(scale.contains(v.score), "{reply:?} -> {}", v.score);
            prop_assert!(v.rationale.len() <= reply.len());
        }
    }
}
