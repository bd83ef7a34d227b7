//! Reading one JSON object in a given layout into [`Record`]s, with errors that name the field.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::InputFormat;
use crate::reasoning::take_think;
use crate::record::{Exchange, Record, Seed};

/// Why one record could not be read: where in the record (line and column counted from the
/// record's first character, 1-based) and which field, when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Line within the record's text, 1 for the line it starts on.
    pub line: u64,
    /// Column within that line (bytes, 1-based), when the JSON parser knows it.
    pub column: Option<u64>,
    /// The field path, such as `output` or `conversations[2].from`.
    pub field: Option<String>,
    /// What is wrong, without position.
    pub message: String,
}

impl FieldError {
    pub(super) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            line: 1,
            column: None,
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// Reads one JSON object (`json`, the raw bytes of one record) in `format`, appending the
/// records it holds to `out` (self-instruct tasks hold one per instance; every other layout one).
///
/// The reasoning of the answer is kept: `messages`' `reasoning_content` (or vLLM's `reasoning`)
/// on the last assistant message, and in every layout a `<think>…</think>` block at the start of
/// the output (what `export --reasoning inline` writes), moved into [`Record::reasoning`].
/// Earlier turns keep their text as it is.
pub fn parse_records(
    json: &[u8],
    format: InputFormat,
    out: &mut Vec<Record>,
) -> Result<(), FieldError> {
    let first = out.len();
    parse_into(json, format, out)?;
    for r in &mut out[first..] {
        take_think(r);
        check_no_nul(r)?;
    }
    Ok(())
}

/// Databases cannot store U+0000 in text (Postgres refuses it, SQLite truncates at it in some
/// functions): a record holding one is invalid rather than silently altered.
pub(super) fn check_no_nul(r: &Record) -> Result<(), FieldError> {
    let fields = [
        ("instruction", &r.instruction),
        ("input", &r.input),
        ("output", &r.output),
        ("system", &r.system),
        ("reasoning", &r.reasoning),
    ];
    let history = r
        .history
        .iter()
        .flat_map(|e| [("history", &e.0), ("history", &e.1)]);
    for (name, text) in fields.into_iter().chain(history) {
        if text.contains('\0') {
            return Err(FieldError::field(
                name,
                "contains a NUL character (\\u0000), which databases cannot store",
            ));
        }
    }
    Ok(())
}

fn parse_into(json: &[u8], format: InputFormat, out: &mut Vec<Record>) -> Result<(), FieldError> {
    match format {
        InputFormat::Dpo | InputFormat::Ranking => {
            out.push(super::parse_pair(json, format)?.into_record());
        }
        InputFormat::SelfInstruct => {
            let task: SelfInstructRaw = deserialize(json)?;
            let instruction = required(task.instruction, "instruction")?;
            let instances = task
                .instances
                .ok_or_else(|| FieldError::field("instances", "missing (expected an array)"))?;
            if instances.is_empty() {
                return Err(FieldError::field(
                    "instances",
                    "empty (a task needs at least one instance)",
                ));
            }
            for (i, inst) in instances.into_iter().enumerate() {
                let output = required(inst.output, &format!("instances[{i}].output"))?;
                out.push(Record::new(
                    instruction.clone(),
                    inst.input.unwrap_or_default(),
                    output,
                ));
            }
        }
        InputFormat::Alpaca | InputFormat::Belle => {
            let raw: AlpacaRaw = deserialize(json)?;
            out.push(alpaca_record(raw, format)?);
        }
        InputFormat::ShareGpt => {
            let raw: ShareGptRaw = deserialize(json)?;
            let turns = raw
                .conversations
                .ok_or_else(|| FieldError::field("conversations", "missing (expected an array)"))?;
            let parsed = sharegpt_turns(turns)?;
            out.push(conversation_record(
                raw.system.unwrap_or_default(),
                parsed,
                "conversations",
                ("from", "human", "gpt"),
            )?);
        }
        InputFormat::Messages => {
            let raw: MessagesRaw = deserialize(json)?;
            let messages = raw
                .messages
                .ok_or_else(|| FieldError::field("messages", "missing (expected an array)"))?;
            let mut parsed = Vec::with_capacity(messages.len());
            let mut reasoning = None;
            for (i, m) in messages.into_iter().enumerate() {
                let role_name = required(m.role, &format!("messages[{i}].role"))?;
                let role = match role_name.as_str() {
                    "system" | "developer" => Role::System,
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(FieldError::field(
                            format!("messages[{i}].role"),
                            format!(
                                "unsupported role `{other}` (expected system, user or assistant)"
                            ),
                        ));
                    }
                };
                let content = message_content(m.content, &format!("messages[{i}].content"))?;
                if role == Role::Assistant {
                    reasoning = m.reasoning_content.or(m.reasoning);
                }
                parsed.push((role, content));
            }
            let mut record = conversation_record(
                String::new(),
                parsed,
                "messages",
                ("role", "user", "assistant"),
            )?;
            record.reasoning = reasoning.unwrap_or_default();
            out.push(record);
        }
    }
    Ok(())
}

/// Reads one JSON object as a seed task. Self-instruct tasks contribute their first instance (as
/// the Alpaca and BELLE generators do); other layouts must hold a single-turn record.
pub fn parse_seeds(json: &[u8], format: InputFormat) -> Result<Seed, FieldError> {
    let (name, is_classification) = if format == InputFormat::SelfInstruct {
        let meta: SeedMetaRaw = deserialize(json)?;
        (
            meta.name.unwrap_or_default(),
            meta.is_classification.unwrap_or(false),
        )
    } else {
        (String::new(), false)
    };
    let mut records = Vec::with_capacity(1);
    parse_records(json, format, &mut records)?;
    let mut records = records.into_iter();
    let record = records
        .next()
        .ok_or_else(|| FieldError::field("instances", "empty"))?;
    if !record.history.is_empty() {
        return Err(FieldError::field(
            if format == InputFormat::Messages {
                "messages"
            } else {
                "conversations"
            },
            "a seed task must be single-turn (one user turn and one answer)",
        ));
    }
    Ok(Seed {
        name,
        record,
        is_classification,
    })
}

impl InputFormat {
    /// The top-level keys a record of this layout is read from (the fields of the raw structs
    /// below): a reader of columnar files reads these columns and leaves the others unread.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            InputFormat::SelfInstruct => &["instruction", "instances", "name", "is_classification"],
            InputFormat::Alpaca => &["instruction", "input", "output", "system", "history"],
            InputFormat::Belle => &[
                "instruction",
                "input",
                "output",
                "target",
                "system",
                "history",
            ],
            InputFormat::ShareGpt => &["conversations", "system"],
            InputFormat::Messages => &["messages"],
            InputFormat::Dpo => &[
                "prompt",
                "chosen",
                "rejected",
                "score_chosen",
                "score_rejected",
            ],
            InputFormat::Ranking => &[
                "instruction",
                "input",
                "system",
                "history",
                "conversations",
                "chosen",
                "rejected",
            ],
        }
    }
}

#[derive(Deserialize)]
struct SelfInstructRaw {
    instruction: Option<String>,
    instances: Option<Vec<InstanceRaw>>,
}

#[derive(Deserialize)]
struct SeedMetaRaw {
    name: Option<String>,
    is_classification: Option<bool>,
}

#[derive(Deserialize)]
struct InstanceRaw {
    input: Option<String>,
    output: Option<String>,
}

#[derive(Deserialize)]
struct AlpacaRaw {
    instruction: Option<String>,
    input: Option<String>,
    output: Option<String>,
    target: Option<String>,
    system: Option<String>,
    history: Option<Vec<(String, String)>>,
}

/// ShareGPT's `conversations` as (role, text) pairs, each speaker checked.
pub(crate) fn sharegpt_turns(turns: Vec<TurnRaw>) -> Result<Vec<(Role, String)>, FieldError> {
    let mut parsed = Vec::with_capacity(turns.len());
    for (i, turn) in turns.into_iter().enumerate() {
        let from = required(turn.from, &format!("conversations[{i}].from"))?;
        let role = sharegpt_role(&from).ok_or_else(|| {
            FieldError::field(
                format!("conversations[{i}].from"),
                format!("unknown speaker `{from}` (expected human, gpt or system)"),
            )
        })?;
        parsed.push((
            role,
            required(turn.value, &format!("conversations[{i}].value"))?,
        ));
    }
    Ok(parsed)
}

#[derive(Deserialize)]
struct ShareGptRaw {
    conversations: Option<Vec<TurnRaw>>,
    system: Option<String>,
}

#[derive(Deserialize)]
pub(super) struct TurnRaw {
    pub(super) from: Option<String>,
    pub(super) value: Option<String>,
}

#[derive(Deserialize)]
struct MessagesRaw {
    messages: Option<Vec<MessageRaw>>,
}

#[derive(Deserialize)]
struct MessageRaw {
    role: Option<String>,
    content: Option<Value>,
    /// DeepSeek's and the chat templates' name for an assistant's reasoning.
    reasoning_content: Option<String>,
    /// vLLM's newer name for it.
    reasoning: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    System,
    User,
    Assistant,
}

fn alpaca_record(raw: AlpacaRaw, format: InputFormat) -> Result<Record, FieldError> {
    let (instruction, input, output) = match (raw.instruction, raw.target) {
        // BELLE's older layout: `input` is the instruction, `target` the answer.
        (None, Some(target)) if format == InputFormat::Belle => {
            (required(raw.input, "input")?, String::new(), target)
        }
        (instruction, target) => {
            let output = match (raw.output, target) {
                (Some(o), _) => o,
                (None, Some(t)) if format == InputFormat::Belle => t,
                (None, _) => {
                    let expected = if format == InputFormat::Belle {
                        "output` or `target"
                    } else {
                        "output"
                    };
                    return Err(FieldError::field(expected, "missing (expected a string)"));
                }
            };
            (
                required(instruction, "instruction")?,
                raw.input.unwrap_or_default(),
                output,
            )
        }
    };
    Ok(Record {
        instruction,
        input,
        output,
        system: raw.system.unwrap_or_default(),
        history: raw
            .history
            .unwrap_or_default()
            .into_iter()
            .map(|(u, a)| Exchange(u, a))
            .collect(),
        reasoning: String::new(),
    })
}

pub(super) fn sharegpt_role(from: &str) -> Option<Role> {
    match from {
        "system" => Some(Role::System),
        "human" | "user" => Some(Role::User),
        "gpt" | "assistant" | "chatgpt" | "bard" | "bing" | "model" => Some(Role::Assistant),
        _ => None,
    }
}

pub(super) fn message_content(content: Option<Value>, field: &str) -> Result<String, FieldError> {
    match content {
        Some(Value::String(s)) => Ok(s),
        // The content-parts form: text parts are joined, anything else is refused.
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match (
                    part.get("type").and_then(Value::as_str),
                    part.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    _ => {
                        return Err(FieldError::field(
                            format!("{field}[{i}]"),
                            "only text parts ({\"type\": \"text\", \"text\": …}) are supported",
                        ));
                    }
                }
            }
            Ok(text)
        }
        None | Some(Value::Null) => Err(FieldError::field(field, "missing (expected a string)")),
        Some(other) => Err(FieldError::field(
            field,
            format!("invalid type: {}, expected a string", value_kind(&other)),
        )),
    }
}

pub(super) fn value_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Turns a list of turns into a record: an optional system turn first, then strictly alternating
/// user and assistant turns, ending with the assistant. `names` = (role key, user name, assistant
/// name) for the error messages.
pub(super) fn conversation_record(
    mut system: String,
    turns: Vec<(Role, String)>,
    array: &str,
    names: (&str, &str, &str),
) -> Result<Record, FieldError> {
    let (key, user_name, assistant_name) = names;
    let mut turns = turns.into_iter().enumerate().peekable();
    if let Some((_, (Role::System, _))) = turns.peek()
        && let Some((_, (_, text))) = turns.next()
    {
        system = text;
    }
    let mut pairs: Vec<Exchange> = Vec::new();
    let mut pending_user: Option<String> = None;
    let mut last_index = None;
    for (i, (role, text)) in turns {
        last_index = Some(i);
        match (role, pending_user.take()) {
            (Role::User, None) => pending_user = Some(text),
            (Role::Assistant, Some(user)) => pairs.push(Exchange(user, text)),
            (Role::System, _) => {
                return Err(FieldError::field(
                    format!("{array}[{i}].{key}"),
                    "a system turn may only come first",
                ));
            }
            (Role::User, Some(_)) => {
                return Err(FieldError::field(
                    format!("{array}[{i}].{key}"),
                    format!("two {user_name} turns in a row (expected {assistant_name})"),
                ));
            }
            (Role::Assistant, None) => {
                return Err(FieldError::field(
                    format!("{array}[{i}].{key}"),
                    format!("expected a {user_name} turn, found {assistant_name}"),
                ));
            }
        }
    }
    if pending_user.is_some() {
        let i = last_index.unwrap_or(0);
        return Err(FieldError::field(
            format!("{array}[{i}]"),
            format!(
                "the conversation ends with a {user_name} turn that has no {assistant_name} answer"
            ),
        ));
    }
    let Some(Exchange(instruction, output)) = pairs.pop() else {
        return Err(FieldError::field(
            array,
            format!("no {user_name} turn answered by {assistant_name}"),
        ));
    };
    Ok(Record {
        instruction,
        input: String::new(),
        output,
        system,
        history: pairs,
        reasoning: String::new(),
    })
}

pub(super) fn required(value: Option<String>, field: &str) -> Result<String, FieldError> {
    value.ok_or_else(|| FieldError::field(field, "missing (expected a string)"))
}

/// Deserialises `json`; on failure parses again tracking the path, so the error names the field.
pub(super) fn deserialize<T: DeserializeOwned>(json: &[u8]) -> Result<T, FieldError> {
    match serde_json::from_slice(json) {
        Ok(v) => Ok(v),
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(json);
            match serde_path_to_error::deserialize::<_, T>(&mut de) {
                Ok(v) => Ok(v),
                Err(e) => {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    Err(json_error(
                        &inner,
                        (path != "." && path != "?").then_some(path),
                    ))
                }
            }
        }
    }
}

fn json_error(e: &serde_json::Error, field: Option<String>) -> FieldError {
    let text = e.to_string();
    let message = match text.rsplit_once(" at line ") {
        Some((msg, _)) => msg.to_string(),
        None => text,
    };
    let message = if message == "invalid unicode code point" {
        "invalid UTF-8 in a string".to_string()
    } else {
        message
    };
    FieldError {
        line: e.line().max(1) as u64,
        column: (e.column() > 0).then_some(e.column() as u64),
        field,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{Expect, expect};

    fn check(format: InputFormat, json: &str, want: Expect) {
        let mut out = Vec::new();
        let got = match parse_records(json.as_bytes(), format, &mut out) {
            Ok(()) => format!("{out:?}"),
            Err(e) => format!("line {} col {:?}: {e}", e.line, e.column),
        };
        want.assert_eq(&got);
    }

    #[test]
    fn reads_alpaca_and_belle() {
        check(
            InputFormat::Alpaca,
            r#"{"instruction":"写诗","input":"","output":"春眠不觉晓","id":7}"#,
            expect![[
                r#"[Record { instruction: "写诗", input: "", output: "春眠不觉晓", system: "", history: [], reasoning: "" }]"#
            ]],
        );
        check(
            InputFormat::Alpaca,
            r#"{"instruction":"q2","output":"a2","system":"s","history":[["q1","a1"]]}"#,
            expect![[
                r#"[Record { instruction: "q2", input: "", output: "a2", system: "s", history: [Exchange("q1", "a1")], reasoning: "" }]"#
            ]],
        );
        check(
            InputFormat::Belle,
            r#"{"input":"介绍一下北京","target":"北京是中国的首都。"}"#,
            expect![[
                r#"[Record { instruction: "介绍一下北京", input: "", output: "北京是中国的首都。", system: "", history: [], reasoning: "" }]"#
            ]],
        );
        check(
            InputFormat::Belle,
            r#"{"instruction":"翻译","input":"hello","output":"你好"}"#,
            expect![[
                r#"[Record { instruction: "翻译", input: "hello", output: "你好", system: "", history: [], reasoning: "" }]"#
            ]],
        );
    }

    #[test]
    fn reads_self_instruct_tasks_one_record_per_instance() {
        check(
            InputFormat::SelfInstruct,
            r#"{"id":"seed_task_0","name":"t","instruction":"Add","instances":[{"input":"1 2","output":"3"},{"input":"2 2","output":"4"}],"is_classification":false}"#,
            expect![[
                r#"[Record { instruction: "Add", input: "1 2", output: "3", system: "", history: [], reasoning: "" }, Record { instruction: "Add", input: "2 2", output: "4", system: "", history: [], reasoning: "" }]"#
            ]],
        );
        let seed = parse_seeds(
            br#"{"name":"add","instruction":"Add","instances":[{"input":"1 2","output":"3"}],"is_classification":true}"#,
            InputFormat::SelfInstruct,
        );
        assert_eq!(
            seed.map(|s| (s.name, s.is_classification)),
            Ok(("add".to_string(), true))
        );
    }

    #[test]
    fn reads_multi_turn_conversations_without_flattening() {
        check(
            InputFormat::ShareGpt,
            r#"{"conversations":[{"from":"system","value":"你是助手"},{"from":"human","value":"你好"},{"from":"gpt","value":"你好！"},{"from":"human","value":"1+1?"},{"from":"gpt","value":"2"}]}"#,
            expect![[
                r#"[Record { instruction: "1+1?", input: "", output: "2", system: "你是助手", history: [Exchange("你好", "你好！")], reasoning: "" }]"#
            ]],
        );
        check(
            InputFormat::Messages,
            r#"{"messages":[{"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]},{"role":"assistant","content":"Hello"}]}"#,
            expect![[
                r#"[Record { instruction: "Hi there", input: "", output: "Hello", system: "", history: [], reasoning: "" }]"#
            ]],
        );
    }

    #[test]
    fn reasoning_is_kept_from_fields_and_think_blocks() {
        // DeepSeek's field on the last assistant message; an earlier turn's is not the record's.
        check(
            InputFormat::Messages,
            r#"{"messages":[{"role":"user","content":"q1"},{"role":"assistant","content":"a1","reasoning_content":"r1"},{"role":"user","content":"q2"},{"role":"assistant","content":"a2","reasoning_content":"先算一下"}]}"#,
            expect![[
                r#"[Record { instruction: "q2", input: "", output: "a2", system: "", history: [Exchange("q1", "a1")], reasoning: "先算一下" }]"#
            ]],
        );
        // vLLM's name, null, and an inline block in the content.
        check(
            InputFormat::Messages,
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","reasoning":"why"}]}"#,
            expect![[
                r#"[Record { instruction: "q", input: "", output: "a", system: "", history: [], reasoning: "why" }]"#
            ]],
        );
        check(
            InputFormat::Messages,
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"<think>\nhmm\n</think>\n\na","reasoning_content":null}]}"#,
            expect![[
                r#"[Record { instruction: "q", input: "", output: "a", system: "", history: [], reasoning: "hmm" }]"#
            ]],
        );
        check(
            InputFormat::Alpaca,
            r#"{"instruction":"q","output":"<think>\nstep\n</think>\n\nanswer <think> later stays"}"#,
            expect![[
                r#"[Record { instruction: "q", input: "", output: "answer <think> later stays", system: "", history: [], reasoning: "step" }]"#
            ]],
        );
        check(
            InputFormat::Messages,
            r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","reasoning_content":7}]}"#,
            expect![
                "line 1 col Some(98): field `messages[1].reasoning_content`: invalid type: integer `7`, expected a string"
            ],
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (InputFormat::Alpaca, r#"{"instruction":"x"}"#),
            (InputFormat::Alpaca, r#"{"instruction":"x","output":3}"#),
            (
                InputFormat::Alpaca,
                "{\"instruction\":\"x\",\n \"input\": [1],\n\"output\":\"y\"}",
            ),
            (InputFormat::Alpaca, r#"{"instruction":null,"output":"y"}"#),
            (InputFormat::Belle, r#"{"input":"x"}"#),
            (
                InputFormat::SelfInstruct,
                r#"{"instruction":"x","instances":[{"input":""}]}"#,
            ),
            (
                InputFormat::ShareGpt,
                r#"{"conversations":[{"from":"human","value":"a"},{"from":"robot","value":"b"}]}"#,
            ),
            (
                InputFormat::ShareGpt,
                r#"{"conversations":[{"from":"human","value":"a"}]}"#,
            ),
            (
                InputFormat::ShareGpt,
                r#"{"conversations":[{"from":"gpt","value":"a"}]}"#,
            ),
            (InputFormat::ShareGpt, r#"{"conversations":[]}"#),
            (
                InputFormat::Messages,
                r#"{"messages":[{"role":"user","content":"a"},{"role":"tool","content":"b"}]}"#,
            ),
            (
                InputFormat::Messages,
                r#"{"messages":[{"role":"user","content":5},{"role":"assistant","content":"b"}]}"#,
            ),
            (
                InputFormat::Alpaca,
                "{\"instruction\":\"x\",\"output\":\"caf\u{e9}\"\n",
            ),
            (
                InputFormat::Alpaca,
                r#"{"instruction":"x","output":"a\u0000b"}"#,
            ),
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|(f, json)| {
                let mut out = Vec::new();
                match parse_records(json.as_bytes(), *f, &mut out) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("{}:{:?}: {e}", e.line, e.column),
                }
            })
            .collect();
        expect![[r#"
            1:None: field `output`: missing (expected a string)
            1:Some(29): field `output`: invalid type: integer `3`, expected a string
            2:Some(10): field `input`: invalid type: sequence, expected a string
            1:None: field `instruction`: missing (expected a string)
            1:None: field `output` or `target`: missing (expected a string)
            1:None: field `instances[0].output`: missing (expected a string)
            1:None: field `conversations[1].from`: unknown speaker `robot` (expected human, gpt or system)
            1:None: field `conversations[0]`: the conversation ends with a human turn that has no gpt answer
            1:None: field `conversations[0].from`: expected a human turn, found gpt
            1:None: field `conversations`: no human turn answered by gpt
            1:None: field `messages[1].role`: unsupported role `tool` (expected system, user or assistant)
            1:None: field `messages[0].content`: invalid type: number, expected a string
            2:None: EOF while parsing an object
            1:None: field `output`: contains a NUL character (\u0000), which databases cannot store"#]]
        .assert_eq(&got.join("\n"));
    }

    /// A reader that reads only `fields()` (Parquet's column projection) must get the same
    /// records as one that reads every key: each layout's keys, with every optional one set.
    #[test]
    fn the_fields_of_a_layout_are_all_it_reads() {
        let cases = [
            (
                InputFormat::SelfInstruct,
                r#"{"id":"t","name":"n","instruction":"i","instances":[{"input":"a","output":"b"}],"is_classification":true,"x":1}"#,
            ),
            (
                InputFormat::Alpaca,
                r#"{"instruction":"i","input":"a","output":"o","system":"s","history":[["u","v"]],"x":1}"#,
            ),
            (
                InputFormat::Belle,
                r#"{"input":"i","target":"t","system":"s","history":[["u","v"]],"x":1}"#,
            ),
            (
                InputFormat::ShareGpt,
                r#"{"system":"s","conversations":[{"from":"human","value":"u"},{"from":"gpt","value":"v"}],"x":1}"#,
            ),
            (
                InputFormat::Messages,
                r#"{"messages":[{"role":"user","content":"u"},{"role":"assistant","content":"v"}],"x":1}"#,
            ),
        ];
        for (format, json) in cases {
            let all: serde_json::Map<String, Value> = serde_json::from_str(json).unwrap();
            let kept: serde_json::Map<String, Value> = all
                .clone()
                .into_iter()
                .filter(|(k, _)| format.fields().contains(&k.as_str()))
                .collect();
            assert_eq!(
                kept.len(),
                all.len() - 1 - usize::from(all.contains_key("id"))
            );
            let read = |m: &serde_json::Map<String, Value>| {
                let bytes = serde_json::to_vec(m).unwrap();
                let mut out = Vec::new();
                parse_records(&bytes, format, &mut out).unwrap();
                let seed = parse_seeds(&bytes, format)
                    .ok()
                    .map(|s| (s.name, s.is_classification));
                (out, seed)
            };
            assert_eq!(read(&kept), read(&all), "{format}");
        }
    }

    #[test]
    fn invalid_utf8_is_reported_with_its_field() {
        let mut json = br#"{"instruction":"x","output":"bad "#.to_vec();
        json.extend_from_slice(&[0xff, 0xfe]);
        json.extend_from_slice(br#""}"#);
        let mut out = Vec::new();
        let e = parse_records(&json, InputFormat::Alpaca, &mut out).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("output"));
        assert_eq!(e.message, "invalid UTF-8 in a string");
    }
}
