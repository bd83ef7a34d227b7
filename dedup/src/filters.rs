//! Quality filters: Alpaca's English rules, BELLE-style Chinese rules, and checks both languages
//! need (empty output, a model talking about itself, instruction and output in different
//! languages, output that repeats the instruction). Every rule can be switched off or retuned
//! from TOML; `instill filter` and the generator use the same [`Rules`].

use instill_core::{Lang, Reason, Record, detect_lang, has_cjk, is_cjk};
use serde::{Deserialize, Serialize};

use crate::lcs::LcsQuery;
use crate::rouge_rule::rouge_l_f1;
use crate::tokenize::Tokenizer;
use crate::vocab::Sequences;

/// Why a rules file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(String);

/// Every rule and its settings. `Rules::default()` is instill's default set; a TOML file
/// overrides any part of it (`[blacklist] extra = ["…"]`, `[empty_output] enabled = false`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Instruction length: words for English (Alpaca: more than 3, at most 150), characters for
    /// Chinese.
    pub instruction_length: LengthRule,
    /// Tasks a text model cannot do or should not name (images, files, links, GPT…), matched as
    /// whole words in English and as substrings in Chinese, in the instruction and input.
    pub blacklist: BlacklistRule,
    /// Alpaca: English instructions starting with "Write a program".
    pub write_a_program: Toggle,
    /// Alpaca: instructions starting with ASCII punctuation.
    pub leading_punctuation: Toggle,
    /// Alpaca: English instructions starting with a non-ASCII character.
    pub leading_non_ascii: Toggle,
    /// Outputs (or instructions) where a model talks about itself ("As an AI language model",
    /// "作为一个AI").
    pub self_reference: PhraseRule,
    /// Outputs that are empty or only whitespace.
    pub empty_output: Toggle,
    /// A Chinese instruction answered in English or the reverse (translation requests and code
    /// answers are exempt; short answers are not judged).
    pub language_mismatch: MismatchRule,
    /// Outputs that merely repeat the instruction: ROUGE-L F1 of the two at least `threshold`.
    pub repeats_instruction: RepeatRule,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            instruction_length: LengthRule::default(),
            blacklist: BlacklistRule::default(),
            write_a_program: Toggle::on(),
            leading_punctuation: Toggle::on(),
            leading_non_ascii: Toggle::on(),
            self_reference: PhraseRule::default(),
            empty_output: Toggle::on(),
            language_mismatch: MismatchRule::default(),
            repeats_instruction: RepeatRule::default(),
        }
    }
}

/// A rule with nothing to tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Toggle {
    /// Whether the rule runs.
    pub enabled: bool,
}

impl Toggle {
    fn on() -> Toggle {
        Toggle { enabled: true }
    }
}

/// Instruction length bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LengthRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// English: fewer words is too short (Alpaca rejects 3 or fewer).
    pub min_words: usize,
    /// English: more words is too long.
    pub max_words: usize,
    /// Chinese: fewer characters is too short.
    pub min_chars: usize,
    /// Chinese: more characters is too long.
    pub max_chars: usize,
}

impl Default for LengthRule {
    fn default() -> Self {
        LengthRule {
            enabled: true,
            min_words: 4,
            max_words: 150,
            min_chars: 4,
            max_chars: 300,
        }
    }
}

/// Words and phrases that disqualify an instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlacklistRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// The list (defaults: Alpaca's English words and a Chinese counterpart).
    pub words: Vec<String>,
    /// Words added to the list (the usual way to extend it from a rules file).
    pub extra: Vec<String>,
}

impl Default for BlacklistRule {
    fn default() -> Self {
        let words = [
            // Alpaca's list.
            "image",
            "images",
            "graph",
            "graphs",
            "picture",
            "pictures",
            "file",
            "files",
            "map",
            "maps",
            "draw",
            "plot",
            "go to",
            "video",
            "audio",
            "music",
            "flowchart",
            "diagram",
            // Links and models, in both languages.
            "http",
            "https",
            "www",
            "url",
            "chatgpt",
            "openai",
            "gpt-3",
            "gpt-3.5",
            "gpt-4",
            "图片",
            "图像",
            "照片",
            "图表",
            "图形",
            "画图",
            "绘制",
            "曲线图",
            "折线图",
            "柱状图",
            "饼图",
            "流程图",
            "示意图",
            "视频",
            "音频",
            "音乐",
            "链接",
            "网址",
            "网页",
            "附件",
            "文件",
        ];
        BlacklistRule {
            enabled: true,
            words: words.iter().map(|w| w.to_string()).collect(),
            extra: Vec::new(),
        }
    }
}

/// Phrases that disqualify a record wherever they appear.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhraseRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Phrases, matched case-insensitively as substrings.
    pub phrases: Vec<String>,
    /// Phrases added to the list.
    pub extra: Vec<String>,
}

impl Default for PhraseRule {
    fn default() -> Self {
        let phrases = [
            "as an ai language model",
            "as an ai model",
            "as a language model",
            "i am an ai language model",
            "i'm an ai language model",
            "as an ai assistant",
            "openai",
            "chatgpt",
            "作为一个ai",
            "作为一个人工智能",
            "作为ai语言模型",
            "作为一个语言模型",
            "我是一个ai",
            "我是一个人工智能",
            "我是一个语言模型",
            "我是chatgpt",
        ];
        PhraseRule {
            enabled: true,
            phrases: phrases.iter().map(|p| p.to_string()).collect(),
            extra: Vec::new(),
        }
    }
}

/// Instruction and output in different languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MismatchRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// Outputs with fewer words (a CJK character counts as one) are not judged.
    pub min_output_words: usize,
}

impl Default for MismatchRule {
    fn default() -> Self {
        MismatchRule {
            enabled: true,
            min_output_words: 6,
        }
    }
}

/// Output that repeats the instruction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RepeatRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// ROUGE-L F1 (auto tokenizer) between instruction and output at or above which the output
    /// is a repetition.
    pub threshold: f64,
}

impl Default for RepeatRule {
    fn default() -> Self {
        RepeatRule {
            enabled: true,
            threshold: 0.9,
        }
    }
}

impl Rules {
    /// Parses a rules file's text: every table and key optional, unknown keys refused.
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        toml::from_str(text).map_err(|e| RulesError(e.to_string().trim().replace('\n', " ")))
    }

    /// The rules as TOML (to start a rules file from the defaults).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The first rule `record` fails, or `None` when it passes them all: the rejection reason
    /// stored for it.
    pub fn check(&self, record: &Record) -> Option<Reason> {
        let ins = record.instruction.trim();
        let lang = detect_lang(ins);
        let chinese = lang == Lang::Zh || has_cjk(ins) && lang != Lang::En;
        if self.empty_output.enabled && record.output.trim().is_empty() {
            return Some(Reason::EmptyOutput);
        }
        if self.instruction_length.enabled {
            let r = &self.instruction_length;
            let (n, min, max) = if chinese {
                (
                    ins.chars().filter(|c| !c.is_whitespace()).count(),
                    r.min_chars,
                    r.max_chars,
                )
            } else {
                (ins.split_whitespace().count(), r.min_words, r.max_words)
            };
            if n < min {
                return Some(Reason::InstructionTooShort);
            }
            if n > max {
                return Some(Reason::InstructionTooLong);
            }
        }
        if self.blacklist.enabled {
            let text = format!("{}\n{}", ins, record.input).to_lowercase();
            let words = self.blacklist.words.iter().chain(&self.blacklist.extra);
            if words
                .into_iter()
                .any(|w| contains_term(&text, &w.to_lowercase()))
            {
                return Some(Reason::Blacklist);
            }
        }
        if self.write_a_program.enabled && !chinese && ins.starts_with("Write a program") {
            return Some(Reason::WriteAProgram);
        }
        if self.leading_punctuation.enabled && ins.starts_with(|c: char| c.is_ascii_punctuation()) {
            return Some(Reason::LeadingPunctuation);
        }
        if self.leading_non_ascii.enabled && !chinese && ins.starts_with(|c: char| !c.is_ascii()) {
            return Some(Reason::LeadingNonAscii);
        }
        if self.self_reference.enabled {
            let text = format!("{}\n{}", ins, record.output).to_lowercase();
            let phrases = self
                .self_reference
                .phrases
                .iter()
                .chain(&self.self_reference.extra);
            if phrases
                .into_iter()
                .any(|p| text.contains(&p.to_lowercase()))
            {
                return Some(Reason::SelfReference);
            }
        }
        if self.language_mismatch.enabled && self.mismatched(record, lang) {
            return Some(Reason::LanguageMismatch);
        }
        if self.repeats_instruction.enabled
            && repeats(ins, &record.output, self.repeats_instruction.threshold)
        {
            return Some(Reason::RepeatsInstruction);
        }
        None
    }

    fn mismatched(&self, record: &Record, ins_lang: Lang) -> bool {
        let out = record.output.trim();
        if ins_lang == Lang::Other || looks_like_code(out) || asks_for_translation(record) {
            return false;
        }
        let words = out.chars().filter(|&c| is_cjk(c)).count()
            + out
                .split(|c: char| !c.is_alphanumeric() || is_cjk(c))
                .filter(|w| !w.is_empty())
                .count();
        if words < self.language_mismatch.min_output_words {
            return false;
        }
        let out_lang = detect_lang(out);
        matches!(
            (ins_lang, out_lang),
            (Lang::Zh, Lang::En) | (Lang::En, Lang::Zh)
        )
    }
}

/// Whether `text` contains `term`: as a whole word for Latin terms (Alpaca's `\b…\b`), as a
/// substring for terms with CJK characters (Chinese has no spaces between words).
fn contains_term(text: &str, term: &str) -> bool {
    if term.is_empty() {
        return false;
    }
    if has_cjk(term) {
        return text.contains(term);
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(pos) = text[from..].find(term) {
        let start = from + pos;
        let end = start + term.len();
        let before = text[..start].chars().next_back();
        let after = text[end..].chars().next();
        let starts_word = term.starts_with(is_word);
        let ends_word = term.ends_with(is_word);
        let left_ok = !starts_word || before.is_none_or(|c| !is_word(c) || is_cjk(c));
        let right_ok = !ends_word || after.is_none_or(|c| !is_word(c) || is_cjk(c));
        if left_ok && right_ok {
            return true;
        }
        from = start + text[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

fn asks_for_translation(record: &Record) -> bool {
    let text = format!("{} {}", record.instruction, record.input).to_lowercase();
    [
        "translat", "翻译", "译成", "译为", "英文", "中文", "english", "chinese", "英语", "汉语",
    ]
    .iter()
    .any(|k| text.contains(k))
}

/// Code answers carry few natural-language cues: fenced blocks, or a high share of brackets,
/// semicolons and operators.
fn looks_like_code(text: &str) -> bool {
    if text.contains("```") {
        return true;
    }
    let visible = text.chars().filter(|c| !c.is_whitespace()).count();
    let symbols = text
        .chars()
        .filter(|c| "{}()[];=<>_#*/+-|&$".contains(*c))
        .count();
    visible > 0 && symbols * 100 >= visible * 8
}

fn repeats(instruction: &str, output: &str, threshold: f64) -> bool {
    let seq = Sequences::tokenize(&[instruction, output], Tokenizer::Auto);
    let (a, b) = (seq.get(0), seq.get(1));
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let mut q = LcsQuery::new();
    q.set(b);
    rouge_l_f1(q.lcs(a), b.len(), a.len()) >= threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(ins: &str, input: &str, out: &str) -> Option<Reason> {
        Rules::default().check(&Record::new(ins, input, out))
    }

    #[test]
    fn each_rule_in_both_languages() {
        let cases: &[(&str, &str, &str, Option<Reason>)] = &[
            (
                "Give three tips for staying healthy.",
                "",
                "Eat well, sleep, move.",
                None,
            ),
            (
                "给出三条保持健康的建议。",
                "",
                "均衡饮食，充足睡眠，适量运动。",
                None,
            ),
            (
                "Summarize this.",
                "",
                "ok",
                Some(Reason::InstructionTooShort),
            ),
            ("总结", "", "好的", Some(Reason::InstructionTooShort)),
            (
                "Describe the image below.",
                "",
                "A cat.",
                Some(Reason::Blacklist),
            ),
            (
                "Plot the data as a line chart.",
                "",
                "Done.",
                Some(Reason::Blacklist),
            ),
            (
                "请描述这张图片的内容。",
                "",
                "一只猫。",
                Some(Reason::Blacklist),
            ),
            (
                "打开这个链接并总结内容",
                "",
                "好的。",
                Some(Reason::Blacklist),
            ),
            ("Explain how maple trees grow.", "", "Slowly.", None),
            (
                "Write a program that prints primes.",
                "",
                "for ...",
                Some(Reason::WriteAProgram),
            ),
            (
                "\"Quote\" this sentence properly.",
                "",
                "Done.",
                Some(Reason::LeadingPunctuation),
            ),
            (
                "Éxplain the rule of thirds.",
                "",
                "It divides.",
                Some(Reason::LeadingNonAscii),
            ),
            (
                "Tell me about yourself please.",
                "",
                "As an AI language model, I cannot.",
                Some(Reason::SelfReference),
            ),
            (
                "介绍一下你自己吧。",
                "",
                "作为一个AI，我没有个人经历。",
                Some(Reason::SelfReference),
            ),
            (
                "Name the capital of France.",
                "",
                "   ",
                Some(Reason::EmptyOutput),
            ),
            ("法国的首都是哪里？", "", "", Some(Reason::EmptyOutput)),
            (
                "法国的首都是哪里？请详细说明。",
                "",
                "The capital of France is Paris, a city on the Seine.",
                Some(Reason::LanguageMismatch),
            ),
            (
                "What is the capital of France?",
                "",
                "法国的首都是巴黎，位于塞纳河畔。",
                Some(Reason::LanguageMismatch),
            ),
            (
                "把下面的句子翻译成英文。",
                "今天天气很好。",
                "The weather is very nice today.",
                None,
            ),
            (
                "用Python写一个函数，返回列表中的最大值。",
                "",
                "def largest(xs):\n    return max(xs)",
                None,
            ),
            (
                "Repeat after me: the sky is blue.",
                "",
                "Repeat after me: the sky is blue.",
                Some(Reason::RepeatsInstruction),
            ),
            (
                "请重复这句话：今天是星期一。",
                "",
                "请重复这句话：今天是星期一。",
                Some(Reason::RepeatsInstruction),
            ),
        ];
        for (ins, input, out, want) in cases {
            assert_eq!(check(ins, input, out), *want, "{ins:?} -> {out:?}");
        }
    }

    #[test]
    fn rules_turn_off_retune_and_extend_from_toml() {
        let r = Rules::from_toml(
            "[blacklist]\nextra = [\"菜谱\", \"recipe\"]\n[empty_output]\nenabled = false\n[instruction_length]\nmin_words = 2\n",
        )
        .unwrap();
        assert_eq!(
            r.check(&Record::new("Share a recipe for soup today.", "", "x")),
            Some(Reason::Blacklist)
        );
        assert_eq!(
            r.check(&Record::new("给我一个红烧肉的菜谱", "", "好")),
            Some(Reason::Blacklist)
        );
        assert_eq!(
            r.check(&Record::new("Name three colours please.", "", "")),
            None
        );
        assert_eq!(r.check(&Record::new("Summarize this.", "", "ok")), None);
        assert!(r.blacklist.words.contains(&"image".to_string()));
        let err = Rules::from_toml("[blacklist]\nextras = []\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `extras`"), "{err}");
        assert_eq!(
            Rules::from_toml(&Rules::default().to_toml()).unwrap(),
            Rules::default()
        );
    }
}
