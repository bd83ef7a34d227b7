//! Parsing a model's reply into tasks: `###`-separated blocks of numbered
//! `Instruction/Input/Output` (or `指令/输入/输出`) fields, ASCII or full-width colons, the
//! no-input marker, and a truncated last task dropped. Whatever cannot be read is counted, never
//! fatal.

use std::sync::LazyLock;

use instill_core::Record;
use regex::Regex;

/// The field labels and no-input marker a reply uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyFormat {
    /// `N. Instruction:` / `N. Input:` / `N. Output:`, `<noinput>` (the Alpaca recipe).
    En,
    /// `N. 指令:` / `N. 输入:` / `N. 输出:`, `<无输入>` (the BELLE recipe).
    Zh,
}

impl ReplyFormat {
    /// `en` or `zh`.
    pub fn from_name(name: &str) -> Option<ReplyFormat> {
        match name {
            "en" => Some(ReplyFormat::En),
            "zh" => Some(ReplyFormat::Zh),
            _ => None,
        }
    }

    /// The name used in template headers.
    pub fn name(self) -> &'static str {
        match self {
            ReplyFormat::En => "en",
            ReplyFormat::Zh => "zh",
        }
    }

    /// (instruction, input, output) labels.
    pub fn labels(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ReplyFormat::En => ("Instruction", "Input", "Output"),
            ReplyFormat::Zh => ("指令", "输入", "输出"),
        }
    }

    /// The marker written for "no input".
    pub fn no_input(self) -> &'static str {
        match self {
            ReplyFormat::En => "<noinput>",
            ReplyFormat::Zh => "<无输入>",
        }
    }

    /// Writes tasks the way the format asks a model to (numbered from `first`), `###` between
    /// them: the reply a well-behaved model gives (used by tests and the fake server).
    pub fn write(self, first: usize, tasks: &[Record]) -> String {
        let (i, n, o) = self.labels();
        tasks
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let num = first + k;
                let input = if r.input.is_empty() {
                    self.no_input()
                } else {
                    &r.input
                };
                format!(
                    "{num}. {i}: {}\n{num}. {n}:\n{input}\n{num}. {o}:\n{}",
                    r.instruction, r.output
                )
            })
            .collect::<Vec<_>>()
            .join("\n###\n")
    }
}

/// What a reply yielded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    /// The tasks read, in order.
    pub items: Vec<Record>,
    /// Blocks that could not be read (no instruction or no output label, empty fields).
    pub issues: usize,
    /// Whether a last task was dropped because the reply was cut off.
    pub truncated: bool,
}

/// A label at the start of a line, optionally numbered (`3.`, `3、`, `3)`), with an ASCII or
/// full-width colon.
static LABEL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?m)^[ \t]*(?:\d+[ \t]*[.、)．][ \t]*)?(Instruction|Input|Output|指令|输入|输出)[ \t]*[:：]")
        .unwrap_or_else(|_| unreachable!("a fixed, valid pattern"))
});

/// Parses `reply` in `format`. `prefix` is what a completion-shape prompt ended with (the reply
/// continues it); `cut_off` is true when the model stopped at its token limit, in which case the
/// last task is dropped as possibly incomplete.
pub fn parse_reply(reply: &str, format: ReplyFormat, prefix: &str, cut_off: bool) -> Parsed {
    let text = if prefix.is_empty() {
        reply.to_string()
    } else {
        format!("{prefix}{reply}")
    };
    let (li, ln, lo) = format.labels();
    let mut parsed = Parsed::default();
    let blocks: Vec<&str> = text.split("###").filter(|b| !b.trim().is_empty()).collect();
    let last = blocks.len().saturating_sub(1);
    for (k, block) in blocks.iter().enumerate() {
        if cut_off && k == last {
            parsed.truncated = true;
            break;
        }
        // Field label positions within the block.
        let marks: Vec<(usize, usize, &str)> = LABEL
            .captures_iter(block)
            .filter_map(|c| {
                let whole = c.get(0)?;
                let label = c.get(1)?.as_str();
                Some((whole.start(), whole.end(), label))
            })
            .collect();
        let field = |name: &str| -> Option<String> {
            let idx = marks.iter().position(|m| m.2 == name)?;
            let start = marks[idx].1;
            let end = marks.get(idx + 1).map_or(block.len(), |m| m.0);
            Some(block[start..end].trim().to_string())
        };
        let instruction = field(li);
        let output = field(lo);
        match (instruction, output) {
            (Some(instruction), Some(output)) if !instruction.is_empty() && !output.is_empty() => {
                let input = field(ln).unwrap_or_default();
                let input = if is_no_input(&input) {
                    String::new()
                } else {
                    input
                };
                parsed.items.push(Record::new(instruction, input, output));
            }
            _ => parsed.issues += 1,
        }
    }
    parsed
}

fn is_no_input(input: &str) -> bool {
    let t = input.trim().to_lowercase();
    matches!(
        t.as_str(),
        "" | "<noinput>"
            | "<no input>"
            | "noinput"
            | "no input"
            | "<none>"
            | "none"
            | "n/a"
            | "<无输入>"
            | "无输入"
            | "无"
            | "（无）"
            | "(无)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn reads_both_formats_with_either_colon_and_odd_numbering() {
        let en = "1. Instruction: Give a tip.\n1. Input:\n<noinput>\n1. Output:\nDrink water.\n###\n2) Instruction： Sort these.\n2) Input:\n3, 1, 2\n2) Output:\n1, 2, 3";
        let p = parse_reply(en, ReplyFormat::En, "", false);
        assert_eq!(p.issues, 0);
        assert_eq!(
            p.items,
            vec![
                Record::new("Give a tip.", "", "Drink water."),
                Record::new("Sort these.", "3, 1, 2", "1, 2, 3")
            ]
        );
        let zh = "4. 指令：写一首诗。\n4. 输入：\n<无输入>\n4. 输出：\n春眠不觉晓。\n###\n5、指令: 翻译成英文\n5、输入:\n你好\n5、输出:\nHello";
        let p = parse_reply(zh, ReplyFormat::Zh, "", false);
        assert_eq!(
            p.items,
            vec![
                Record::new("写一首诗。", "", "春眠不觉晓。"),
                Record::new("翻译成英文", "你好", "Hello")
            ]
        );
    }

    #[test]
    fn completion_replies_continue_the_prompt_and_cut_off_tasks_are_dropped() {
        let reply = " Name a colour.\n4. Input:\n<noinput>\n4. Output:\nBlue\n###\n5. Instruction: Count to three.\n5. Input:\n<noinput>\n5. Output:\n1, 2";
        let p = parse_reply(reply, ReplyFormat::En, "4. Instruction:", true);
        assert_eq!(p.items, vec![Record::new("Name a colour.", "", "Blue")]);
        assert!(p.truncated);
    }

    #[test]
    fn garbage_is_counted_not_fatal() {
        let cases = [
            "",
            "I cannot help with that.",
            "###\n###",
            "1. Instruction: only an instruction\n###\n2. Output: only an output",
            "\u{0}\u{1}{{}}###\u{FFFD}",
            "1. Instruction: ok\n1. Output: fine\n###\nrandom words",
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|c| {
                let p = parse_reply(c, ReplyFormat::En, "", false);
                format!("{} items, {} issues", p.items.len(), p.issues)
            })
            .collect();
        expect![[r#"
            0 items, 0 issues
            0 items, 1 issues
            0 items, 0 issues
            0 items, 2 issues
            0 items, 2 issues
            1 items, 1 issues"#]]
        .assert_eq(&got.join("\n"));
    }
}
