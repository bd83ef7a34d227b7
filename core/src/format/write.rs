//! Writing a [`Record`] as one JSONL line in an output layout.

use serde::Serialize;

use super::OutputFormat;
use crate::record::{Exchange, Record};

/// Appends `record` to `out` as one line of JSON (UTF-8, no escaping of non-ASCII text) in
/// `format`, newline included.
///
/// Alpaca keeps `input` in its own field; the chat layouts have no such field, so the user turn
/// carries `instruction`, a blank line, and `input` ([`Record::user_turn`]). A system prompt is
/// Alpaca's `system` field, ShareGPT's first `{"from": "system"}` turn, and the first
/// `{"role": "system"}` message.
pub fn write_record(record: &Record, format: OutputFormat, out: &mut Vec<u8>) {
    // Serialising plain strings into a Vec cannot fail.
    let result = match format {
        OutputFormat::Alpaca => serde_json::to_writer(&mut *out, &AlpacaOut::from(record)),
        OutputFormat::ShareGpt => {
            let user_turn = record.user_turn();
            let turns = chat_turns(record, &user_turn, ["system", "human", "gpt"])
                .map(|(from, value)| ShareGptTurn { from, value })
                .collect();
            serde_json::to_writer(
                &mut *out,
                &ShareGptOut {
                    conversations: turns,
                },
            )
        }
        OutputFormat::Messages => {
            let user_turn = record.user_turn();
            let messages = chat_turns(record, &user_turn, ["system", "user", "assistant"])
                .map(|(role, content)| Message { role, content })
                .collect();
            serde_json::to_writer(&mut *out, &MessagesOut { messages })
        }
    };
    debug_assert!(result.is_ok());
    out.push(b'\n');
}

/// The turns of a record in order: system (when set), then each earlier exchange, then the last
/// user turn and the output. `names` = the layout's words for system, user and assistant.
fn chat_turns<'a>(
    record: &'a Record,
    user_turn: &'a str,
    names: [&'static str; 3],
) -> impl Iterator<Item = (&'static str, &'a str)> {
    let [system, user, assistant] = names;
    let system_turn = (!record.system.is_empty()).then_some((system, record.system.as_str()));
    let history = record
        .history
        .iter()
        .flat_map(move |Exchange(u, a)| [(user, u.as_str()), (assistant, a.as_str())]);
    system_turn
        .into_iter()
        .chain(history)
        .chain([(user, user_turn), (assistant, record.output.as_str())])
}

#[derive(Serialize)]
struct AlpacaOut<'a> {
    instruction: &'a str,
    input: &'a str,
    output: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    system: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    history: &'a [Exchange],
}

impl<'a> From<&'a Record> for AlpacaOut<'a> {
    fn from(r: &'a Record) -> Self {
        AlpacaOut {
            instruction: &r.instruction,
            input: &r.input,
            output: &r.output,
            system: &r.system,
            history: &r.history,
        }
    }
}

#[derive(Serialize)]
struct ShareGptOut<'a> {
    conversations: Vec<ShareGptTurn<'a>>,
}

#[derive(Serialize)]
struct ShareGptTurn<'a> {
    from: &'static str,
    value: &'a str,
}

#[derive(Serialize)]
struct MessagesOut<'a> {
    messages: Vec<Message<'a>>,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::parse_records;
    use expect_test::expect;

    fn sample() -> Record {
        Record {
            instruction: "翻译成英文".into(),
            input: "你好".into(),
            output: "Hello".into(),
            system: "你是翻译".into(),
            history: vec![Exchange("在吗？".into(), "在的。".into())],
        }
    }

    #[test]
    fn writes_each_layout() {
        let mut out = Vec::new();
        for f in [
            OutputFormat::Alpaca,
            OutputFormat::ShareGpt,
            OutputFormat::Messages,
        ] {
            write_record(&sample(), f, &mut out);
        }
        write_record(
            &Record::new("Say \"hi\"", "", "hi\n"),
            OutputFormat::Alpaca,
            &mut out,
        );
        expect![[r#"
            {"instruction":"翻译成英文","input":"你好","output":"Hello","system":"你是翻译","history":[["在吗？","在的。"]]}
            {"conversations":[{"from":"system","value":"你是翻译"},{"from":"human","value":"在吗？"},{"from":"gpt","value":"在的。"},{"from":"human","value":"翻译成英文\n\n你好"},{"from":"gpt","value":"Hello"}]}
            {"messages":[{"role":"system","content":"你是翻译"},{"role":"user","content":"在吗？"},{"role":"assistant","content":"在的。"},{"role":"user","content":"翻译成英文\n\n你好"},{"role":"assistant","content":"Hello"}]}
            {"instruction":"Say \"hi\"","input":"","output":"hi\n"}
        "#]]
        .assert_eq(&String::from_utf8_lossy(&out));
    }

    #[test]
    fn every_layout_reads_back_what_it_wrote() {
        for f in [
            OutputFormat::Alpaca,
            OutputFormat::ShareGpt,
            OutputFormat::Messages,
        ] {
            let mut line = Vec::new();
            write_record(&sample(), f, &mut line);
            let mut back = Vec::new();
            assert_eq!(parse_records(&line, f.as_input(), &mut back), Ok(()));
            let mut want = sample();
            if f != OutputFormat::Alpaca {
                want.instruction = want.user_turn();
                want.input.clear();
            }
            assert_eq!(back, vec![want], "{f}");
        }
    }
}
