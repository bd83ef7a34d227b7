//! Reading one JSON object of a pair layout into a [`Pair`], with errors that name the field:
//! trl's preference format (`dpo`) in every shape it takes — prompt, chosen and rejected as
//! texts, or as message lists with the prompt explicit (`prompt` a list of messages, each answer
//! one assistant message) or implicit (each answer the whole conversation, the prompt what the
//! two share before their last message; the UltraFeedback-binarized layout on the Hub is this
//! shape, with a `prompt` text beside it and `score_chosen` / `score_rejected`) — and
//! LLaMA-Factory's ranking layouts (`lf-ranking`): alpaca-style (`instruction`, `input`,
//! `chosen`, `rejected` texts, optional `system` and `history`) or sharegpt-style
//! (`conversations` ending with the user's turn, `chosen` and `rejected` one `{from, value}`
//! each).

use serde::Deserialize;
use serde_json::Value;

use super::InputFormat;
use super::parse::{
    FieldError, Role, TurnRaw, check_no_nul, conversation_record, deserialize, message_content,
    required, sharegpt_role, sharegpt_turns, value_kind,
};
use crate::pair::{Answer, Pair};
use crate::reasoning::split_think;
use crate::record::{Exchange, Record};

/// Reads one JSON object of a pair layout (`format` is [`InputFormat::Dpo`] or
/// [`InputFormat::Ranking`]) into a [`Pair`] whose prompt has no output. A `<think>` block at the
/// start of an answer, or a message's `reasoning_content` (`reasoning`), is its reasoning.
pub fn parse_pair(json: &[u8], format: InputFormat) -> Result<Pair, FieldError> {
    let pair = match format {
        InputFormat::Dpo => dpo_pair(deserialize(json)?)?,
        InputFormat::Ranking => ranking_pair(deserialize(json)?)?,
        other => {
            return Err(FieldError {
                line: 1,
                column: None,
                field: None,
                message: format!("the {other} layout holds no preference pairs"),
            });
        }
    };
    check_no_nul(&pair.prompt)?;
    for (name, a) in [("chosen", &pair.chosen), ("rejected", &pair.rejected)] {
        if a.text.contains('\0') || a.reasoning.contains('\0') {
            return Err(FieldError::field(
                name,
                "contains a NUL character (\\u0000), which databases cannot store",
            ));
        }
    }
    Ok(pair)
}

#[derive(Deserialize)]
struct DpoRaw {
    prompt: Option<Value>,
    chosen: Option<Value>,
    rejected: Option<Value>,
    score_chosen: Option<f64>,
    score_rejected: Option<f64>,
}

#[derive(Deserialize)]
struct RankingRaw {
    instruction: Option<String>,
    input: Option<String>,
    system: Option<String>,
    history: Option<Vec<(String, String)>>,
    conversations: Option<Vec<TurnRaw>>,
    chosen: Option<Value>,
    rejected: Option<Value>,
}

/// What a message list's entries hold, after checking.
struct Message {
    role: Role,
    content: String,
    reasoning: String,
}

/// An answer's text and reasoning: a leading `<think>` block moves into the reasoning, after
/// the reasoning a field gave.
fn answer(text: String, mut reasoning: String, score: Option<f64>) -> Answer {
    let text = match split_think(&text) {
        Some((thought, rest)) => {
            crate::reasoning::append_reasoning(&mut reasoning, thought);
            rest.to_string()
        }
        None => text,
    };
    Answer {
        text,
        reasoning,
        score,
    }
}

/// `value` of the required `field`: present and not null.
fn present(value: Option<Value>, field: &str, expected: &str) -> Result<Value, FieldError> {
    match value {
        None | Some(Value::Null) => Err(FieldError::field(
            field,
            format!("missing (expected {expected})"),
        )),
        Some(v) => Ok(v),
    }
}

const ANSWER_KINDS: &str = "a string or a list of messages";

fn dpo_pair(raw: DpoRaw) -> Result<Pair, FieldError> {
    let chosen = present(raw.chosen, "chosen", ANSWER_KINDS)?;
    let rejected = present(raw.rejected, "rejected", ANSWER_KINDS)?;
    let scores = (raw.score_chosen, raw.score_rejected);
    match (chosen, rejected) {
        (Value::String(c), Value::String(r)) => {
            let prompt = match raw.prompt {
                Some(Value::String(p)) => p,
                None | Some(Value::Null) => {
                    return Err(FieldError::field(
                        "prompt",
                        "missing (expected a string: chosen and rejected are texts)",
                    ));
                }
                Some(other) => {
                    return Err(FieldError::field(
                        "prompt",
                        format!(
                            "invalid type: {}, expected a string (chosen and rejected are texts)",
                            value_kind(&other)
                        ),
                    ));
                }
            };
            Ok(Pair {
                prompt: Record {
                    instruction: prompt,
                    ..Record::default()
                },
                chosen: answer(c, String::new(), scores.0),
                rejected: answer(r, String::new(), scores.1),
            })
        }
        (Value::Array(c), Value::Array(r)) => messages_pair(raw.prompt, c, r, scores),
        (c, r) => {
            let wrong = |v: &Value| !matches!(v, Value::String(_) | Value::Array(_));
            let (field, message) = if wrong(&c) {
                (
                    "chosen",
                    format!("invalid type: {}, expected {ANSWER_KINDS}", value_kind(&c)),
                )
            } else if wrong(&r) {
                (
                    "rejected",
                    format!("invalid type: {}, expected {ANSWER_KINDS}", value_kind(&r)),
                )
            } else {
                (
                    "rejected",
                    format!(
                        "a {} while `chosen` is a {}: both are texts or both are message lists",
                        kind_name(&r),
                        kind_name(&c)
                    ),
                )
            };
            Err(FieldError::field(field, message))
        }
    }
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "list",
        other => value_kind(other),
    }
}

/// trl's conversational shapes: the prompt explicit (a list of messages) or implicit (what
/// `chosen` and `rejected` share before their last message; a `prompt` text, as UltraFeedback
/// has, is then only a label unless `chosen` holds nothing but the answer).
fn messages_pair(
    prompt: Option<Value>,
    chosen: Vec<Value>,
    rejected: Vec<Value>,
    scores: (Option<f64>, Option<f64>),
) -> Result<Pair, FieldError> {
    let mut chosen = messages(chosen, "chosen")?;
    let mut rejected = messages(rejected, "rejected")?;
    let (turns, array) = match prompt {
        Some(Value::Array(p)) => {
            for (list, name) in [(&chosen, "chosen"), (&rejected, "rejected")] {
                if list.len() != 1 {
                    return Err(FieldError::field(
                        name,
                        format!(
                            "holds {} messages; after a `prompt` list it is one assistant message",
                            list.len()
                        ),
                    ));
                }
            }
            (messages(p, "prompt")?, "prompt")
        }
        None | Some(Value::Null) | Some(Value::String(_)) if chosen.len() > 1 => {
            let turns: Vec<Message> = chosen.drain(..chosen.len() - 1).collect();
            let theirs: Vec<Message> = rejected.drain(..rejected.len().saturating_sub(1)).collect();
            let same = theirs.len() == turns.len()
                && turns
                    .iter()
                    .zip(&theirs)
                    .all(|(a, b)| a.role == b.role && a.content == b.content);
            if !same {
                return Err(FieldError::field(
                    "rejected",
                    "its messages before the last differ from chosen's: both hold the same \
                     conversation up to their answers",
                ));
            }
            (turns, "chosen")
        }
        Some(Value::String(p)) => {
            let user = Message {
                role: Role::User,
                content: p,
                reasoning: String::new(),
            };
            (vec![user], "prompt")
        }
        None | Some(Value::Null) => {
            return Err(FieldError::field(
                "prompt",
                "missing: without a prompt, chosen and rejected each hold the conversation up \
                 to and including their answer",
            ));
        }
        Some(other) => {
            return Err(FieldError::field(
                "prompt",
                format!(
                    "invalid type: {}, expected a list of messages or a string",
                    value_kind(&other)
                ),
            ));
        }
    };
    let chosen_last = last_answer(chosen, "chosen", scores.0)?;
    let rejected_last = last_answer(rejected, "rejected", scores.1)?;
    let prompt = prompt_record_from(turns, array)?;
    Ok(Pair {
        prompt,
        chosen: chosen_last,
        rejected: rejected_last,
    })
}

/// The one assistant message left in `list`, as an answer.
fn last_answer(list: Vec<Message>, name: &str, score: Option<f64>) -> Result<Answer, FieldError> {
    let n = list.len();
    let Some(m) = list.into_iter().last() else {
        return Err(FieldError::field(
            name,
            "empty (expected an assistant message)",
        ));
    };
    if m.role != Role::Assistant {
        return Err(FieldError::field(
            format!("{name}[{}].role", n - 1),
            "expected an assistant message (the answer)",
        ));
    }
    Ok(answer(m.content, m.reasoning, score))
}

/// A prompt's turns (a system turn first or a `system` field, then user and assistant turns
/// alternating, ending with the user's) as a record without output.
fn prompt_record(
    system: String,
    turns: Vec<(Role, String)>,
    array: &str,
    names: (&str, &str, &str),
) -> Result<Record, FieldError> {
    let (key, user, _) = names;
    match turns.last() {
        Some((Role::User, _)) => {}
        Some(_) => {
            return Err(FieldError::field(
                format!("{array}[{}].{key}", turns.len() - 1),
                format!("the prompt ends with this turn; it must end with a {user} turn"),
            ));
        }
        None => {
            return Err(FieldError::field(
                array,
                format!("empty (expected a {user} turn)"),
            ));
        }
    }
    let mut turns = turns;
    turns.push((Role::Assistant, String::new()));
    conversation_record(system, turns, array, names)
}

impl From<Message> for (Role, String) {
    fn from(m: Message) -> Self {
        (m.role, m.content)
    }
}

fn prompt_record_from(messages: Vec<Message>, array: &str) -> Result<Record, FieldError> {
    let turns = messages.into_iter().map(<(Role, String)>::from).collect();
    prompt_record(String::new(), turns, array, ("role", "user", "assistant"))
}

/// Reads a list of `{role, content}` messages (OpenAI's roles, `reasoning_content` or
/// `reasoning` kept for an assistant message).
fn messages(list: Vec<Value>, array: &str) -> Result<Vec<Message>, FieldError> {
    list.into_iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("{array}[{i}]");
            let Value::Object(mut m) = m else {
                return Err(FieldError::field(
                    field,
                    format!(
                        "invalid type: {}, expected a message object",
                        value_kind(&m)
                    ),
                ));
            };
            let role = match m.remove("role") {
                Some(Value::String(r)) => r,
                None | Some(Value::Null) => {
                    return Err(FieldError::field(
                        format!("{field}.role"),
                        "missing (expected a string)",
                    ));
                }
                Some(other) => {
                    return Err(FieldError::field(
                        format!("{field}.role"),
                        format!("invalid type: {}, expected a string", value_kind(&other)),
                    ));
                }
            };
            let role = match role.as_str() {
                "system" | "developer" => Role::System,
                "user" => Role::User,
                "assistant" => Role::Assistant,
                other => {
                    return Err(FieldError::field(
                        format!("{field}.role"),
                        format!("unsupported role `{other}` (expected system, user or assistant)"),
                    ));
                }
            };
            let content = message_content(m.remove("content"), &format!("{field}.content"))?;
            let mut reasoning = String::new();
            for key in ["reasoning_content", "reasoning"] {
                match m.remove(key) {
                    None | Some(Value::Null) => {}
                    Some(Value::String(r)) if reasoning.is_empty() => reasoning = r,
                    Some(Value::String(_)) => {}
                    Some(other) => {
                        return Err(FieldError::field(
                            format!("{field}.{key}"),
                            format!("invalid type: {}, expected a string", value_kind(&other)),
                        ));
                    }
                }
            }
            Ok(Message {
                role,
                content,
                reasoning,
            })
        })
        .collect()
}

fn ranking_pair(raw: RankingRaw) -> Result<Pair, FieldError> {
    if let Some(turns) = raw.conversations {
        let parsed = sharegpt_turns(turns)?;
        let prompt = prompt_record(
            raw.system.unwrap_or_default(),
            parsed,
            "conversations",
            ("from", "human", "gpt"),
        )?;
        return Ok(Pair {
            prompt,
            chosen: sharegpt_answer(raw.chosen, "chosen")?,
            rejected: sharegpt_answer(raw.rejected, "rejected")?,
        });
    }
    let text = |v: Option<Value>, name: &str| -> Result<String, FieldError> {
        match present(v, name, "a string")? {
            Value::String(s) => Ok(s),
            other => Err(FieldError::field(
                name,
                format!(
                    "invalid type: {}, expected a string (a {{from, value}} answer goes with \
                     `conversations`)",
                    value_kind(&other)
                ),
            )),
        }
    };
    let chosen = text(raw.chosen, "chosen")?;
    let rejected = text(raw.rejected, "rejected")?;
    Ok(Pair {
        prompt: Record {
            instruction: required(raw.instruction, "instruction")?,
            input: raw.input.unwrap_or_default(),
            system: raw.system.unwrap_or_default(),
            history: raw
                .history
                .unwrap_or_default()
                .into_iter()
                .map(|(u, a)| Exchange(u, a))
                .collect(),
            ..Record::default()
        },
        chosen: answer(chosen, String::new(), None),
        rejected: answer(rejected, String::new(), None),
    })
}

/// LLaMA-Factory's sharegpt ranking answer: one `{"from": "gpt", "value": …}` object.
fn sharegpt_answer(v: Option<Value>, name: &str) -> Result<Answer, FieldError> {
    let Value::Object(mut m) = present(v, name, "an object {from, value}")? else {
        return Err(FieldError::field(
            name,
            "expected an object {from, value} (with `conversations`)",
        ));
    };
    let from = match m.remove("from") {
        Some(Value::String(f)) => f,
        _ => {
            return Err(FieldError::field(
                format!("{name}.from"),
                "missing (expected a string)",
            ));
        }
    };
    if sharegpt_role(&from) != Some(Role::Assistant) {
        return Err(FieldError::field(
            format!("{name}.from"),
            format!("`{from}`: the answer is the assistant's (gpt)"),
        ));
    }
    match m.remove("value") {
        Some(Value::String(text)) => Ok(answer(text, String::new(), None)),
        _ => Err(FieldError::field(
            format!("{name}.value"),
            "missing (expected a string)",
        )),
    }
}
