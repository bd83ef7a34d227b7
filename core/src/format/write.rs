//! Writing a [`Record`] as one JSONL line in an output layout. The JSON is written by hand
//! (the layouts are fixed), escaping exactly as serde_json does, which the tests check against
//! serde_json itself: an export spends a good part of its time escaping text, and a scan of
//! eight bytes at a time skips Chinese and plain English runs that need no escape.

use super::{Columns, OutputFormat};
use crate::record::{Exchange, Record};

/// Appends `record` to `out` as one line of JSON (UTF-8, no escaping of non-ASCII text) in
/// `format`, newline included. Alpaca's `system` and `history` are written when the record has
/// them, and when `columns` asks for them on every line.
///
/// Alpaca keeps `input` in its own field; the chat layouts have no such field, so the user turn
/// carries `instruction`, a blank line, and `input` ([`Record::user_turn`]). A system prompt is
/// Alpaca's `system` field, ShareGPT's first `{"from": "system"}` turn, and the first
/// `{"role": "system"}` message.
///
/// A record's reasoning is written only as `messages`' `reasoning_content` (on the last
/// assistant message; on every one with `columns.reasoning`): apply the export's
/// [`crate::ReasoningMode`] first, which inlines it where a layout has no field.
pub fn write_record(record: &Record, format: OutputFormat, columns: Columns, out: &mut Vec<u8>) {
    match format {
        OutputFormat::Alpaca => {
            out.extend_from_slice(b"{\"instruction\":");
            push_json_str(out, &record.instruction);
            out.extend_from_slice(b",\"input\":");
            push_json_str(out, &record.input);
            out.extend_from_slice(b",\"output\":");
            push_json_str(out, &record.output);
            push_alpaca_context(record, columns, out);
            out.push(b'}');
        }
        OutputFormat::ShareGpt => write_turns(
            record,
            columns,
            out,
            b"{\"conversations\":[",
            format,
            (b"{\"from\":", b",\"value\":"),
        ),
        OutputFormat::Messages => write_turns(
            record,
            columns,
            out,
            b"{\"messages\":[",
            format,
            (b"{\"role\":", b",\"content\":"),
        ),
    }
    out.push(b'\n');
}

/// Alpaca's optional context fields, `system` and `history` (`[[user, assistant], …]`), each
/// written when the export has the column or this record has a value.
pub(crate) fn push_alpaca_context(record: &Record, columns: Columns, out: &mut Vec<u8>) {
    if columns.system || !record.system.is_empty() {
        out.extend_from_slice(b",\"system\":");
        push_json_str(out, &record.system);
    }
    if columns.history || !record.history.is_empty() {
        out.extend_from_slice(b",\"history\":[");
        for (i, Exchange(user, assistant)) in record.history.iter().enumerate() {
            out.extend_from_slice(if i == 0 { b"[" } else { b",[" });
            push_json_str(out, user);
            out.push(b',');
            push_json_str(out, assistant);
            out.push(b']');
        }
        out.push(b']');
    }
}

/// The `reasoning_content` a `messages` row gives turn `i` of the `turns` of
/// [`chat_turns`] (spoken by `name`): the record's reasoning on the last turn (its output), `""`
/// on the other assistant turns when `every` asks for the field on each, nothing otherwise.
/// The JSONL and Parquet writers both take it from here.
pub fn turn_reasoning<'a>(
    record: &'a Record,
    every: bool,
    (i, turns): (usize, usize),
    name: &str,
) -> Option<&'a str> {
    if name != "assistant" {
        return None;
    }
    if i + 1 == turns && !record.reasoning.is_empty() {
        Some(&record.reasoning)
    } else {
        every.then_some("")
    }
}

/// A chat layout: `open`, then one `{"<who>":name,"<what>":text}` object per turn (in
/// `messages`, with the assistant's `reasoning_content`), then `]}`.
fn write_turns(
    record: &Record,
    columns: Columns,
    out: &mut Vec<u8>,
    open: &[u8],
    format: OutputFormat,
    (who, what): (&[u8], &[u8]),
) {
    let names = format
        .turn_names()
        .unwrap_or(["system", "user", "assistant"]);
    let user_turn = record.user_turn();
    let turns = chat_turns(record, &user_turn, names).count();
    out.extend_from_slice(open);
    for (i, (name, text)) in chat_turns(record, &user_turn, names).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(who);
        push_json_str(out, name);
        out.extend_from_slice(what);
        push_json_str(out, text);
        if format.has_reasoning_field()
            && let Some(reasoning) = turn_reasoning(record, columns.reasoning, (i, turns), name)
        {
            out.extend_from_slice(b",\"reasoning_content\":");
            push_json_str(out, reasoning);
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
}

/// What each byte turns into inside a JSON string, as serde_json writes it: 0 = itself,
/// `u` = `\u00XX`, anything else = a backslash and that letter.
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of the eight bytes of `w` is a control character, `"` or `\` (exact: the
/// zero-byte tests below have no false negatives, and a false positive only sends the word
/// down the byte-by-byte path).
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q & HIGH;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b & HIGH;
    (control | quote | backslash) != 0
}

/// Appends `s` as a JSON string literal: quotes, `\"`, `\\`, the short escapes of serde_json
/// (`\b \t \n \f \r`), `\u00XX` (lowercase) for other control characters, and every other
/// character as its UTF-8 bytes.
pub(crate) fn push_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let (mut start, mut i) = (0, 0);
    while i < bytes.len() {
        if let Some(word) = bytes[i..].first_chunk::<8>()
            && !needs_escape(u64::from_le_bytes(*word))
        {
            i += 8;
            continue;
        }
        let b = bytes[i];
        let escape = ESCAPE[usize::from(b)];
        if escape != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if escape == b'u' {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.extend_from_slice(&[b'\\', escape]);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// The turns of a record in order: system (when set), then each earlier exchange, then the last
/// user turn and the output. `names` = the layout's words for system, user and assistant
/// ([`OutputFormat::turn_names`]); `user_turn` = [`Record::user_turn`]. Every writer of a chat
/// layout (JSONL here, Parquet in the binary) takes its turns from here.
pub fn chat_turns<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{InputFormat, parse_records};
    use expect_test::expect;
    use serde::Serialize;

    /// The same layouts through serde_json: the oracle the hand-written writer must equal.
    fn write_with_serde(record: &Record, format: OutputFormat) -> Vec<u8> {
        let mut out = match format {
            OutputFormat::Alpaca => serde_json::to_vec(&AlpacaOut::from(record)),
            OutputFormat::ShareGpt => {
                let user_turn = record.user_turn();
                let turns = chat_turns(record, &user_turn, ["system", "human", "gpt"])
                    .map(|(from, value)| ShareGptTurn { from, value })
                    .collect();
                serde_json::to_vec(&ShareGptOut {
                    conversations: turns,
                })
            }
            OutputFormat::Messages => {
                let user_turn = record.user_turn();
                let names = ["system", "user", "assistant"];
                let turns = chat_turns(record, &user_turn, names).count();
                let messages = chat_turns(record, &user_turn, names)
                    .enumerate()
                    .map(|(i, (role, content))| Message {
                        role,
                        content,
                        reasoning_content: turn_reasoning(record, false, (i, turns), role),
                    })
                    .collect();
                serde_json::to_vec(&MessagesOut { messages })
            }
        }
        .unwrap();
        out.push(b'\n');
        out
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
        #[serde(skip_serializing_if = "Option::is_none")]
        reasoning_content: Option<&'a str>,
    }

    fn sample() -> Record {
        Record {
            instruction: "翻译成英文".into(),
            input: "你好".into(),
            output: "Hello".into(),
            system: "你是翻译".into(),
            history: vec![Exchange("在吗？".into(), "在的。".into())],
            reasoning: String::new(),
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
            write_record(&sample(), f, Columns::default(), &mut out);
        }
        write_record(
            &Record::new("Say \"hi\"", "", "hi\n"),
            OutputFormat::Alpaca,
            Columns::default(),
            &mut out,
        );
        let every = Columns {
            system: true,
            history: true,
            reasoning: true,
        };
        write_record(
            &Record::new("x", "", "y"),
            OutputFormat::Alpaca,
            every,
            &mut out,
        );
        expect![[r#"
            {"instruction":"翻译成英文","input":"你好","output":"Hello","system":"你是翻译","history":[["在吗？","在的。"]]}
            {"conversations":[{"from":"system","value":"你是翻译"},{"from":"human","value":"在吗？"},{"from":"gpt","value":"在的。"},{"from":"human","value":"翻译成英文\n\n你好"},{"from":"gpt","value":"Hello"}]}
            {"messages":[{"role":"system","content":"你是翻译"},{"role":"user","content":"在吗？"},{"role":"assistant","content":"在的。"},{"role":"user","content":"翻译成英文\n\n你好"},{"role":"assistant","content":"Hello"}]}
            {"instruction":"Say \"hi\"","input":"","output":"hi\n"}
            {"instruction":"x","input":"","output":"y","system":"","history":[]}
        "#]]
        .assert_eq(&String::from_utf8_lossy(&out));
    }

    #[test]
    fn messages_carry_reasoning_content_on_the_assistant() {
        let mut r = sample();
        r.reasoning = "先想一想".into();
        let mut out = Vec::new();
        write_record(&r, OutputFormat::Messages, Columns::default(), &mut out);
        let every = Columns {
            reasoning: true,
            ..Columns::default()
        };
        write_record(
            &Record::new("q", "", "a"),
            OutputFormat::Messages,
            every,
            &mut out,
        );
        expect![[r#"
            {"messages":[{"role":"system","content":"你是翻译"},{"role":"user","content":"在吗？"},{"role":"assistant","content":"在的。"},{"role":"user","content":"翻译成英文\n\n你好"},{"role":"assistant","content":"Hello","reasoning_content":"先想一想"}]}
            {"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","reasoning_content":""}]}
        "#]].assert_eq(&String::from_utf8_lossy(&out));
        let mut back = Vec::new();
        let first = out.split(|b| *b == b'\n').next().unwrap_or_default();
        assert_eq!(
            parse_records(first, InputFormat::Messages, &mut back),
            Ok(())
        );
        r.instruction = r.user_turn();
        r.input.clear();
        assert_eq!(back, vec![r]);
    }

    #[test]
    fn every_layout_reads_back_what_it_wrote() {
        for f in [
            OutputFormat::Alpaca,
            OutputFormat::ShareGpt,
            OutputFormat::Messages,
        ] {
            let mut line = Vec::new();
            write_record(&sample(), f, Columns::default(), &mut line);
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

    /// A small deterministic generator for the comparison below.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }

        /// Text mixing every byte class the escaper treats differently.
        fn text(&mut self) -> String {
            const PIECES: &[&str] = &[
                "a",
                "plain words ",
                "中文文本",
                "“引号”",
                "\"",
                "\\",
                "\n",
                "\r\n",
                "\t",
                "\u{8}",
                "\u{c}",
                "\u{0}",
                "\u{1f}",
                "\u{7f}",
                "é",
                "😀",
                "</script>",
                "\u{2028}",
                "12345678",
            ];
            let n = self.below(24);
            (0..n).map(|_| PIECES[self.below(PIECES.len())]).collect()
        }
    }

    #[test]
    fn writes_exactly_what_serde_json_writes() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for case in 0..3000 {
            let history = (0..rng.below(3))
                .map(|_| Exchange(rng.text(), rng.text()))
                .collect();
            let record = Record {
                instruction: rng.text(),
                input: rng.text(),
                output: rng.text(),
                system: if rng.below(2) == 0 {
                    String::new()
                } else {
                    rng.text()
                },
                history,
                reasoning: if rng.below(2) == 0 {
                    String::new()
                } else {
                    rng.text()
                },
            };
            for f in [
                OutputFormat::Alpaca,
                OutputFormat::ShareGpt,
                OutputFormat::Messages,
            ] {
                let mut ours = Vec::new();
                write_record(&record, f, Columns::default(), &mut ours);
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&write_with_serde(&record, f)),
                    "case {case}, {f}"
                );
            }
        }
        // Every single byte value below 0x80, alone and inside a longer run.
        for b in 0u8..0x80 {
            let c = char::from(b);
            for s in [c.to_string(), format!("0123456789{c}abcdefgh")] {
                let mut ours = Vec::new();
                push_json_str(&mut ours, &s);
                assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "byte {b:#x}");
            }
        }
    }
}
