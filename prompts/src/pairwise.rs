//! Pairwise judging (`instill eval --compare`): the request that shows a judge one question with
//! two answers (`templates/eval/pairwise.zh.j2`, worded by the team; MT-Bench's `[[A]]` /
//! `[[B]]` / `[[C]]` verdicts), and [`parse_preference`], which reads the verdict from any
//! reasonable reply.
//!
//! What counts, last occurrence first: `[[A]]`, `[[B]]`, `[[C]]` (tie); then a labelled verdict
//! (`Winner: A`, `Verdict: B`, `Better: A`, `结论：A`, `更好的回答：B`, `胜者：A`), where `C`, `tie`,
//! `平局` or `不相上下` after the label is a tie.

use std::sync::LazyLock;

use minijinja::{Environment, context};
use regex::Regex;

use crate::eval_prompts::JudgeRequestError;

const PAIRWISE: &str = include_str!("../templates/eval/pairwise.zh.j2");

/// Which of the two answers shown the judge prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preference {
    /// The answer shown first (A).
    First,
    /// The answer shown second (B).
    Second,
    /// Neither.
    Tie,
}

/// The judge's request comparing `first` and `second` (shown as A and B) on `question`, with
/// the reference answer when there is one.
pub fn pairwise_request(
    question: &str,
    std_answer: &str,
    first: &str,
    second: &str,
) -> Result<String, JudgeRequestError> {
    Environment::new()
        .render_str(
            PAIRWISE,
            context! { question, std_answer => std_answer.trim(), first, second },
        )
        .map_err(|e| JudgeRequestError::Render(e.to_string()))
}

static BRACKETS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\[\[\s*([ABCabc])\s*\]\]").unwrap_or_else(|e| panic!("bracket pattern: {e}"))
});

static LABELLED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:winner|verdict|better(?:\s+answer)?|final\s+verdict|结论|更好的回答|更好的是|胜者|获胜者)\s*(?:is|为|是)?\s*[:：]?\s*\**\s*(回答\s*)?(A|B|C|tie|平局|不相上下)\b",
    )
    .unwrap_or_else(|e| panic!("label pattern: {e}"))
});

/// The verdict in a judge's pairwise reply, or None when it gives none.
pub fn parse_preference(reply: &str) -> Option<Preference> {
    let pick = |s: &str| match s.to_ascii_uppercase().as_str() {
        "A" => Some(Preference::First),
        "B" => Some(Preference::Second),
        "C" | "TIE" => Some(Preference::Tie),
        "平局" | "不相上下" => Some(Preference::Tie),
        _ => None,
    };
    if let Some(c) = BRACKETS.captures_iter(reply).last() {
        return c.get(1).and_then(|m| pick(m.as_str()));
    }
    LABELLED
        .captures_iter(reply)
        .last()
        .and_then(|c| c.get(2))
        .and_then(|m| pick(m.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_in_the_forms_judges_write() {
        let cases = [
            ("A 更准确。\n[[A]]", Some(Preference::First)),
            (
                "Both fine, but [[A]] is verbose... final: [[B]]",
                Some(Preference::Second),
            ),
            ("两者相当 [[C]]", Some(Preference::Tie)),
            ("[[ b ]]", Some(Preference::Second)),
            ("Winner: A", Some(Preference::First)),
            ("**Verdict:** tie", Some(Preference::Tie)),
            ("结论：B", Some(Preference::Second)),
            ("更好的回答是：回答A", Some(Preference::First)),
            ("结论：平局", Some(Preference::Tie)),
            ("I cannot decide.", None),
            ("", None),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_preference(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn the_request_shows_both_answers_in_order_and_the_reference_only_when_given() {
        let r = pairwise_request("1+1?", "", "two", "三").unwrap();
        let (a, b) = (r.find("two").unwrap(), r.find('三').unwrap());
        assert!(a < b);
        assert!(!r.contains("参考答案"));
        assert!(
            pairwise_request("q", "2", "x", "y")
                .unwrap()
                .contains("【参考答案】\n2")
        );
    }
}
