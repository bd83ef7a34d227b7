//! Quality filters: Alpaca's English rules, BELLE's Chinese blacklist, and checks both languages
//! need (empty output, a model talking about itself, instruction and output in different
//! languages, output that repeats the instruction). Every rule can be switched off or retuned
//! from TOML; `instill filter` and the generator use the same [`Rules`].
//!
//! Where a rule comes from a source, it reads the fields its source reads: Alpaca's rules judge
//! the instruction (its blacklist too: not the input, not the output); BELLE's blacklist judges
//! the whole generated task. The word rules ([`WordRule`], [`PhraseRule`]) take their fields
//! from the rules file, so widening one is an explicit choice.

use instill_core::{Lang, Reason, Record, detect_lang, has_cjk, is_cjk};
use serde::{Deserialize, Serialize};

use crate::lcs::LcsQuery;
use crate::rouge_rule::rouge_l_f1;
use crate::tokenize::Tokenizer;
use crate::vocab::Sequences;
use crate::word_rules::{
    RuleField, WordRule, alpaca_table, belle_table, links_table, require_fields,
};

/// Why a rules file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RulesError(String);

/// Every rule and its settings. `Rules::default()` is instill's default set; a TOML file
/// overrides any part of it (`[blacklist] extra = ["…"]`, `[empty_output] enabled = false`,
/// `[blacklist] fields = ["instruction", "input"]`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Instruction length: words for English (Alpaca: more than 3, at most 150), characters for
    /// Chinese (instill's bounds).
    pub instruction_length: LengthRule,
    /// Alpaca's blacklist (images, graphs, files, maps, go to, audio…) as whole words, on the
    /// instructions of records that are not Chinese. Reason `blacklist`.
    #[serde(deserialize_with = "alpaca_table")]
    pub blacklist: WordRule,
    /// BELLE's blacklist (图片, 文件, 链接, http, chatgpt…) as substrings, on Chinese records'
    /// instruction, input and output. Reason `blacklist`.
    #[serde(deserialize_with = "belle_table")]
    pub blacklist_zh: WordRule,
    /// instill's own, off by default: links and model names (`http`, `www`, `url`, `gpt-4`…)
    /// as whole words in the instruction, any language. Reason `links_and_models`.
    #[serde(deserialize_with = "links_table")]
    pub links_and_models: WordRule,
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
            blacklist: WordRule::alpaca(),
            blacklist_zh: WordRule::belle(),
            links_and_models: WordRule::links_and_models(),
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

/// Phrases that disqualify a record wherever they appear in the fields the rule reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PhraseRule {
    /// Whether the rule runs.
    pub enabled: bool,
    /// The fields it reads (default: instruction and output).
    pub fields: Vec<RuleField>,
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
            fields: vec![RuleField::Instruction, RuleField::Output],
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
    /// Parses a rules file's text: every table and key optional, unknown keys refused, every
    /// word rule reading at least one field.
    pub fn from_toml(text: &str) -> Result<Rules, RulesError> {
        let rules: Rules = toml::from_str(text)
            .map_err(|e| RulesError(e.to_string().trim().replace('\n', " ")))?;
        for (name, fields) in [
            ("blacklist", &rules.blacklist.fields),
            ("blacklist_zh", &rules.blacklist_zh.fields),
            ("links_and_models", &rules.links_and_models.fields),
            ("self_reference", &rules.self_reference.fields),
        ] {
            require_fields(name, fields).map_err(RulesError)?;
        }
        Ok(rules)
    }

    /// The rules as TOML (to start a rules file from the defaults).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The first rule `record` fails, or `None` when it passes them all: the rejection reason
    /// stored for it. A record is Chinese when its instruction is (that picks the blacklist and
    /// the length unit).
    pub fn check(&self, record: &Record) -> Option<Reason> {
        let ins = record.instruction.trim();
        let lang = detect_lang(ins);
        let chinese = lang == Lang::Zh || has_cjk(ins) && lang != Lang::En;
        if self.empty_output.enabled && record.output.trim().is_empty() {
            return Some(Reason::EmptyOutput);
        }
        if let Some(reason) = self.length(ins, chinese) {
            return Some(reason);
        }
        if let Some(reason) = self.words(record, chinese) {
            return Some(reason);
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
        if self.self_reference.enabled && self.talks_about_itself(record) {
            return Some(Reason::SelfReference);
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

    fn length(&self, ins: &str, chinese: bool) -> Option<Reason> {
        let r = &self.instruction_length;
        if !r.enabled {
            return None;
        }
        let (n, min, max) = if chinese {
            let chars = ins.chars().filter(|c| !c.is_whitespace()).count();
            (chars, r.min_chars, r.max_chars)
        } else {
            (ins.split_whitespace().count(), r.min_words, r.max_words)
        };
        if n < min {
            return Some(Reason::InstructionTooShort);
        }
        (n > max).then_some(Reason::InstructionTooLong)
    }

    /// The blacklist of the record's language, then the links-and-models rule.
    fn words(&self, record: &Record, chinese: bool) -> Option<Reason> {
        let blacklist = if chinese {
            &self.blacklist_zh
        } else {
            &self.blacklist
        };
        if blacklist.enabled && blacklist.hits(record) {
            return Some(Reason::Blacklist);
        }
        let links = &self.links_and_models;
        (links.enabled && links.hits(record)).then_some(Reason::LinksAndModels)
    }

    fn talks_about_itself(&self, record: &Record) -> bool {
        let rule = &self.self_reference;
        let phrases: Vec<String> = rule
            .phrases
            .iter()
            .chain(&rule.extra)
            .map(|p| p.to_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        rule.fields.iter().any(|f| {
            let text = f.text(record).to_lowercase();
            phrases.iter().any(|p| text.contains(p.as_str()))
        })
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
            "[blacklist]\nextra = [\"recipe\"]\n[blacklist_zh]\nextra = [\"菜谱\"]\n[empty_output]\nenabled = false\n[instruction_length]\nmin_words = 2\n",
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
        // A table that names some keys keeps its own rule's defaults for the others.
        assert_eq!(r.blacklist.words, WordRule::alpaca().words);
        assert_eq!(r.blacklist_zh.words, WordRule::belle().words);
        assert_eq!(r.blacklist_zh.fields, WordRule::belle().fields);
        assert_eq!(r.links_and_models, WordRule::links_and_models());
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
