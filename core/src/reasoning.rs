//! Reasoning beside an answer: the `<think>…</think>` block that reasoning models (DeepSeek-R1,
//! QwQ, Qwen3) write before their answer, split off the answer and put back before it, and
//! what an export does with a record's reasoning ([`ReasoningMode`]).
//!
//! One rule everywhere (model replies, imported files, a task's output): a `<think>` block at
//! the start of an answer is its reasoning. Filters, dedup and hashes judge the answer alone.

use crate::format::{OutputFormat, PairFormat};
use crate::pair::Pair;
use crate::record::Record;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Splits a leading `<think>…</think>` block off `text`: `(reasoning, answer)`, the reasoning
/// trimmed and the answer without the blank lines after the block. An unclosed block (a reply
/// cut off while thinking) is all reasoning and no answer. `None` when `text` does not start
/// (after whitespace) with `<think>`.
pub fn split_think(text: &str) -> Option<(&str, &str)> {
    let rest = text.trim_start().strip_prefix(OPEN)?;
    Some(match rest.split_once(CLOSE) {
        Some((reasoning, answer)) => (reasoning.trim(), answer.trim_start()),
        None => (rest.trim(), ""),
    })
}

/// [`split_think`] for a model's reply, which may also lack the opening tag: chat templates of
/// DeepSeek-R1's distilled models end the prompt with `<think>\n`, so the reply starts inside
/// the block and only `</think>` marks where the answer begins (vLLM's reasoning parser reads
/// them the same way).
pub fn split_reply(text: &str) -> Option<(&str, &str)> {
    split_think(text).or_else(|| {
        let (reasoning, answer) = text.split_once(CLOSE)?;
        (!reasoning.contains(OPEN)).then(|| (reasoning.trim(), answer.trim_start()))
    })
}

/// `answer` with `reasoning` before it in a `<think>` block (DeepSeek-R1's own spelling:
/// `<think>\nREASONING\n</think>\n\nANSWER`), which [`split_think`] reads back exactly; the
/// answer alone when there is no reasoning.
pub fn inline_think(reasoning: &str, answer: &str) -> String {
    if reasoning.is_empty() {
        answer.to_string()
    } else {
        format!("{OPEN}\n{reasoning}\n{CLOSE}\n\n{answer}")
    }
}

/// Moves a `<think>` block at the start of `record.output` into `record.reasoning` (after any
/// reasoning the record already has, a blank line between).
pub fn take_think(record: &mut Record) {
    if let Some((reasoning, answer)) = split_think(&record.output) {
        let (reasoning, answer) = (reasoning.to_string(), answer.to_string());
        append_reasoning(&mut record.reasoning, &reasoning);
        record.output = answer;
    }
}

/// Appends `more` to the reasoning `to`, a blank line between when both are non-empty.
pub fn append_reasoning(to: &mut String, more: &str) {
    if more.is_empty() {
        return;
    }
    if !to.is_empty() {
        to.push_str("\n\n");
    }
    to.push_str(more);
}

/// What an export does with a record's reasoning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum ReasoningMode {
    /// Kept: as `reasoning_content` on the assistant message in the `messages` layout; inline
    /// (as [`ReasoningMode::Inline`]) in Alpaca and ShareGPT, which have no field for it, so
    /// that no layout loses it unasked.
    #[default]
    Keep,
    /// Left out of every layout.
    Drop,
    /// Written before the answer as `<think>…</think>` in every layout.
    Inline,
}

impl ReasoningMode {
    /// Every mode, in the order `--help` lists them.
    pub const ALL: [ReasoningMode; 3] = [
        ReasoningMode::Keep,
        ReasoningMode::Drop,
        ReasoningMode::Inline,
    ];

    /// The name used on the command line and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            ReasoningMode::Keep => "keep",
            ReasoningMode::Drop => "drop",
            ReasoningMode::Inline => "inline",
        }
    }

    /// `record` as `format` writes it under this mode: its reasoning cleared (drop), or moved
    /// into the output (inline, and keep in a layout without a reasoning field).
    /// [`crate::write_record`] then writes what is left in `reasoning` as `reasoning_content`.
    pub fn apply(self, record: &mut Record, format: OutputFormat) {
        self.fold(
            &mut record.reasoning,
            &mut record.output,
            format.has_reasoning_field(),
        );
    }

    /// [`ReasoningMode::apply`] for both answers of a pair written in `format`.
    pub fn apply_pair(self, pair: &mut Pair, format: PairFormat) {
        for a in [&mut pair.chosen, &mut pair.rejected] {
            self.fold(&mut a.reasoning, &mut a.text, format.has_reasoning_field());
        }
    }

    /// The rule of both: `reasoning` beside `answer` in a layout with or without a field for it.
    fn fold(self, reasoning: &mut String, answer: &mut String, has_field: bool) {
        if reasoning.is_empty() {
            return;
        }
        match self {
            ReasoningMode::Keep if has_field => {}
            ReasoningMode::Drop => reasoning.clear(),
            ReasoningMode::Keep | ReasoningMode::Inline => {
                let taken = std::mem::take(reasoning);
                *answer = inline_think(&taken, answer);
            }
        }
    }
}

impl std::fmt::Display for ReasoningMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_blocks_split_and_join_back() {
        let cases: [(&str, Option<(&str, &str)>); 6] = [
            (
                "<think>\nstep 1\n</think>\n\nAnswer",
                Some(("step 1", "Answer")),
            ),
            ("  <think>a</think>b", Some(("a", "b"))),
            (
                "<think>cut off while thinking",
                Some(("cut off while thinking", "")),
            ),
            ("<think></think>\n\nAnswer", Some(("", "Answer"))),
            ("Answer <think>x</think>", None),
            ("no reasoning", None),
        ];
        for (text, want) in cases {
            assert_eq!(split_think(text), want, "{text:?}");
        }
        let joined = inline_think("first\nsecond", "答案");
        assert_eq!(joined, "<think>\nfirst\nsecond\n</think>\n\n答案");
        assert_eq!(split_think(&joined), Some(("first\nsecond", "答案")));
        assert_eq!(inline_think("", "answer"), "answer");
    }

    #[test]
    fn a_reply_may_start_inside_the_block() {
        assert_eq!(
            split_reply("thinking\n</think>\n\nA"),
            Some(("thinking", "A"))
        );
        assert_eq!(split_reply("<think>t</think>A"), Some(("t", "A")));
        assert_eq!(split_reply("plain"), None);
        // A closing tag after an opening one that is not at the start is not a block.
        assert_eq!(split_reply("A <think>x</think> B"), None);
    }

    #[test]
    fn modes_keep_drop_or_inline_by_layout() {
        let mut r = Record::new("q", "", "a");
        r.reasoning = "why".into();
        let applied = |mode: ReasoningMode, format| {
            let mut r = r.clone();
            mode.apply(&mut r, format);
            (r.reasoning, r.output)
        };
        let inline = (String::new(), "<think>\nwhy\n</think>\n\na".to_string());
        let kept = ("why".to_string(), "a".to_string());
        let dropped = (String::new(), "a".to_string());
        assert_eq!(applied(ReasoningMode::Keep, OutputFormat::Messages), kept);
        assert_eq!(applied(ReasoningMode::Keep, OutputFormat::Alpaca), inline);
        assert_eq!(applied(ReasoningMode::Keep, OutputFormat::ShareGpt), inline);
        assert_eq!(
            applied(ReasoningMode::Inline, OutputFormat::Messages),
            inline
        );
        for f in [OutputFormat::Alpaca, OutputFormat::Messages] {
            assert_eq!(applied(ReasoningMode::Drop, f), dropped);
        }
        let mut t = Record::new("q", "", "<think>r</think>\n\na");
        take_think(&mut t);
        assert_eq!((t.reasoning.as_str(), t.output.as_str()), ("r", "a"));
    }
}
