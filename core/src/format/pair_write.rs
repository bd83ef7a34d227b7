//! Writing a [`Pair`] as one JSONL line in a pair layout, by hand like the record layouts
//! (checked against serde_json by the tests): trl's standard preference format (`dpo`), its
//! conversational one (`dpo-messages`) and LLaMA-Factory's ranking layouts, alpaca-style
//! (`lf-ranking`) and sharegpt-style (`lf-ranking-sharegpt`).

use super::write::{chat_turns, push_alpaca_context, push_json_str};
use super::{Columns, PairFormat};
use crate::pair::{Answer, Pair};

/// Why a pair has no line in a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unfit {
    /// `dpo`'s prompt is one text: a system prompt or earlier turns cannot be said in it.
    #[error(
        "the dpo layout's prompt is one text, and this prompt has a system prompt or earlier turns (dpo-messages and lf-ranking keep them)"
    )]
    NotOneText,
}

/// Whether `pair` can be written in `format`.
pub fn pair_fits(pair: &Pair, format: PairFormat) -> Result<(), Unfit> {
    let p = &pair.prompt;
    if format == PairFormat::Dpo && (!p.system.is_empty() || !p.history.is_empty()) {
        return Err(Unfit::NotOneText);
    }
    Ok(())
}

/// Appends `pair` to `out` as one line of JSON in `format`, newline included, or writes nothing
/// and says why it cannot.
///
/// - `dpo`: `{"prompt", "chosen", "rejected"}`, three texts; the prompt is the user's turn
///   ([`crate::Record::user_turn`]: the instruction, a blank line, the input).
/// - `dpo-messages`: `prompt` the messages before the answer (system, earlier turns, the user's
///   turn), `chosen` and `rejected` one assistant message each, with `reasoning_content` when
///   the answer has reasoning (on every answer with `columns.reasoning`).
/// - `lf-ranking`: `{"instruction", "input", "chosen", "rejected"}`, plus `system` and `history`
///   when the prompt has them or `columns` asks for them on every line.
/// - `lf-ranking-sharegpt`: `{"conversations": [system?, earlier turns…, human], "chosen":
///   {"from": "gpt", "value"}, "rejected": {…}}`.
///
/// Reasoning is written only as `dpo-messages`' `reasoning_content`: apply the export's
/// [`crate::ReasoningMode`] first ([`crate::ReasoningMode::apply_pair`]).
pub fn write_pair(
    pair: &Pair,
    format: PairFormat,
    columns: Columns,
    out: &mut Vec<u8>,
) -> Result<(), Unfit> {
    pair_fits(pair, format)?;
    let p = &pair.prompt;
    match format {
        PairFormat::Dpo => {
            out.extend_from_slice(b"{\"prompt\":");
            push_json_str(out, &p.user_turn());
            out.extend_from_slice(b",\"chosen\":");
            push_json_str(out, &pair.chosen.text);
            out.extend_from_slice(b",\"rejected\":");
            push_json_str(out, &pair.rejected.text);
        }
        PairFormat::DpoMessages => {
            out.extend_from_slice(b"{\"prompt\":[");
            let user_turn = p.user_turn();
            let names = ["system", "user", "assistant"];
            let turns = chat_turns(p, &user_turn, names).count();
            for (i, (role, content)) in chat_turns(p, &user_turn, names).take(turns - 1).enumerate()
            {
                if i > 0 {
                    out.push(b',');
                }
                push_message(out, role, content, None);
            }
            for (name, a) in [
                (&b"],\"chosen\":["[..], &pair.chosen),
                (b"],\"rejected\":[", &pair.rejected),
            ] {
                out.extend_from_slice(name);
                let reasoning =
                    (columns.reasoning || !a.reasoning.is_empty()).then_some(a.reasoning.as_str());
                push_message(out, "assistant", &a.text, reasoning);
            }
            out.push(b']');
        }
        PairFormat::RankingShareGpt => write_sharegpt_ranking(pair, out),
        PairFormat::Ranking => {
            out.extend_from_slice(b"{\"instruction\":");
            push_json_str(out, &p.instruction);
            out.extend_from_slice(b",\"input\":");
            push_json_str(out, &p.input);
            write_answers(out, &pair.chosen, &pair.rejected);
            push_alpaca_context(p, columns, out);
        }
    }
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// `lf-ranking-sharegpt`'s fields: the turns before the answer, then the two answers.
fn write_sharegpt_ranking(pair: &Pair, out: &mut Vec<u8>) {
    let p = &pair.prompt;
    out.extend_from_slice(b"{\"conversations\":[");
    let user_turn = p.user_turn();
    let names = ["system", "human", "gpt"];
    let turns = chat_turns(p, &user_turn, names).count();
    for (i, (from, value)) in chat_turns(p, &user_turn, names).take(turns - 1).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_turn(out, from, value);
    }
    out.extend_from_slice(b"],\"chosen\":");
    push_turn(out, "gpt", &pair.chosen.text);
    out.extend_from_slice(b",\"rejected\":");
    push_turn(out, "gpt", &pair.rejected.text);
}

fn write_answers(out: &mut Vec<u8>, chosen: &Answer, rejected: &Answer) {
    out.extend_from_slice(b",\"chosen\":");
    push_json_str(out, &chosen.text);
    out.extend_from_slice(b",\"rejected\":");
    push_json_str(out, &rejected.text);
}

/// One ShareGPT `{"from", "value"}` turn.
fn push_turn(out: &mut Vec<u8>, from: &str, value: &str) {
    out.extend_from_slice(b"{\"from\":");
    push_json_str(out, from);
    out.extend_from_slice(b",\"value\":");
    push_json_str(out, value);
    out.push(b'}');
}

/// One `{"role", "content"[, "reasoning_content"]}` message.
fn push_message(out: &mut Vec<u8>, role: &str, content: &str, reasoning: Option<&str>) {
    out.extend_from_slice(b"{\"role\":");
    push_json_str(out, role);
    out.extend_from_slice(b",\"content\":");
    push_json_str(out, content);
    if let Some(r) = reasoning {
        out.extend_from_slice(b",\"reasoning_content\":");
        push_json_str(out, r);
    }
    out.push(b'}');
}
