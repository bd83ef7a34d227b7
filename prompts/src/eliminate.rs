//! Evol-Instruct's elimination rules on the text (the paper's §3; its released code has none):
//! a rewrite that copies the prompt's words, an answer that is an apology and short, an
//! answer of only punctuation and stop words, in English and Chinese. The fourth rule, no
//! information gain, is the judge's ([`crate::parse_equality`]).

use instill_core::Reason;

use crate::evolve::PROMPT_MARKERS;

/// Fewer words than this makes an apology "short" (the paper's 80); a Han character counts as
/// half a word, so 160 characters of Chinese.
const SHORT_WORDS: usize = 80;

/// Words of an English answer that apologise or decline.
const EN_APOLOGY: [&str; 9] = [
    "sorry",
    "apologize",
    "apologise",
    "i cannot help",
    "i can't help",
    "i cannot assist",
    "i can't assist",
    "i am unable to",
    "i'm unable to",
];

/// The same in Chinese.
const ZH_APOLOGY: [&str; 11] = [
    "抱歉",
    "对不起",
    "很遗憾",
    "无法回答",
    "无法提供",
    "无法完成",
    "无法满足",
    "无法帮助",
    "无法协助",
    "不能回答",
    "不能提供",
];

/// English stop words (function words and pronouns; `don't` counts as `don` + `t`).
const EN_STOP: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "d",
    "did",
    "do",
    "does",
    "doing",
    "don",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "itself",
    "just",
    "ll",
    "m",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "ok",
    "okay",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "re",
    "s",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "t",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "ve",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

/// Chinese stop words (particles, pronouns, conjunctions, fillers).
const ZH_STOP: &[&str] = &[
    "的", "了", "是", "在", "我", "你", "您", "他", "她", "它", "们", "这", "那", "就", "也", "都",
    "和", "与", "及", "或", "而", "吗", "呢", "吧", "啊", "呀", "哦", "嗯", "哈", "么", "个", "之",
    "其", "着", "过", "被", "把", "给", "对", "从", "向", "于", "以", "为", "所", "很", "还", "又",
    "再", "已", "不", "没", "有", "好", "一", "些", "嘛", "啦", "哎", "唉", "我们", "你们", "他们",
    "这个", "那个", "这些", "那些", "什么", "怎么", "如何", "可以", "因为", "所以", "但是", "如果",
    "然后", "是的", "好的", "没有", "一个",
];

/// The elimination a rewrite and its answer fall under, checked in this order: the rewrite
/// is empty, it copies the prompt's words ([`rewrite_elimination`]), the answer is only
/// punctuation and stop words, the answer is a short apology ([`answer_elimination`]).
/// `None`: the text rules keep it (the judge decides the rest).
pub fn text_elimination(rewrite: &str, answer: &str) -> Option<Reason> {
    rewrite_elimination(rewrite).or_else(|| answer_elimination(answer))
}

/// The rules on the rewrite alone (checked before it is answered): empty, or copying the
/// prompt's words.
pub fn rewrite_elimination(rewrite: &str) -> Option<Reason> {
    if rewrite.trim().is_empty() {
        Some(Reason::EvolEmpty)
    } else if copies_prompt(rewrite) {
        Some(Reason::EvolCopiedPrompt)
    } else {
        None
    }
}

/// The rules on the answer: only punctuation and stop words, or a short apology.
pub fn answer_elimination(answer: &str) -> Option<Reason> {
    if only_stop_words(answer) {
        Some(Reason::EvolStopWords)
    } else if is_short_apology(answer) {
        Some(Reason::EvolApology)
    } else {
        None
    }
}

/// Whether `text` holds a word of the rewrite prompts ([`PROMPT_MARKERS`]), in any case.
pub fn copies_prompt(text: &str) -> bool {
    let lower = text.to_lowercase();
    PROMPT_MARKERS.iter().any(|m| lower.contains(m))
}

/// Whether `answer` apologises or declines and is short: fewer than 80 words, a Han character
/// counting as half a word.
pub fn is_short_apology(answer: &str) -> bool {
    let lower = answer.to_lowercase();
    let apology = EN_APOLOGY.iter().any(|w| lower.contains(w))
        || ZH_APOLOGY.iter().any(|w| answer.contains(w));
    apology && words(answer) < SHORT_WORDS
}

/// Whether `answer` holds nothing but punctuation, symbols, spaces and stop words (English
/// words from a stop list; each run of Han characters wholly made of Chinese stop words).
/// An empty answer holds nothing else either.
pub fn only_stop_words(answer: &str) -> bool {
    tokens(answer).iter().all(|t| match t {
        Token::Word(w) => EN_STOP.contains(&w.as_str()),
        Token::Han(run) => made_of_stop_words(run),
    })
}

/// A word or a run of Han characters.
#[derive(Debug, PartialEq)]
enum Token {
    /// Letters and digits, lowercased (apostrophes and hyphens split words).
    Word(String),
    /// Han characters, in a row.
    Han(Vec<char>),
}

fn is_han(c: char) -> bool {
    matches!(c as u32, 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x2FA1F)
}

/// The words and Han runs of `text`; everything else separates them.
fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut han = Vec::new();
    for c in text.chars() {
        if is_han(c) {
            if !word.is_empty() {
                out.push(Token::Word(std::mem::take(&mut word)));
            }
            han.push(c);
        } else {
            if !han.is_empty() {
                out.push(Token::Han(std::mem::take(&mut han)));
            }
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else if !word.is_empty() {
                out.push(Token::Word(std::mem::take(&mut word)));
            }
        }
    }
    if !word.is_empty() {
        out.push(Token::Word(word));
    }
    if !han.is_empty() {
        out.push(Token::Han(han));
    }
    out
}

/// Words in `text`: each word, plus half the Han characters.
fn words(text: &str) -> usize {
    tokens(text)
        .iter()
        .map(|t| match t {
            Token::Word(_) => 2,
            Token::Han(run) => run.len(),
        })
        .sum::<usize>()
        / 2
}

/// Whether a run of Han characters splits wholly into Chinese stop words.
fn made_of_stop_words(run: &[char]) -> bool {
    // can[i]: the first i characters split into stop words.
    let mut can = vec![false; run.len() + 1];
    can[0] = true;
    for i in 0..run.len() {
        if !can[i] {
            continue;
        }
        for w in ZH_STOP {
            let w: Vec<char> = w.chars().collect();
            if run[i..].starts_with(&w) {
                can[i + w.len()] = true;
            }
        }
    }
    can[run.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_that_copies_the_prompt_is_caught_in_either_language() {
        for text in [
            "Here is the #Rewritten Prompt#: write a poem.",
            "Write a poem, as the given prompt asks.",
            "根据给定的指令，写一首诗。",
            "改写后的指令：写一首诗",
            "Rewritten prompt - write a haiku.",
        ] {
            assert!(copies_prompt(text), "{text}");
            assert_eq!(
                text_elimination(text, "A full answer."),
                Some(Reason::EvolCopiedPrompt)
            );
        }
        for text in ["Write a poem about prompts.", "写一首关于指令的诗。"] {
            assert!(!copies_prompt(text), "{text}");
        }
    }

    #[test]
    fn a_short_apology_is_eliminated_and_a_long_answer_that_apologises_is_not() {
        for answer in [
            "I'm sorry, but I can't help with that.",
            "I apologize, I do not have that information.",
            "抱歉，我无法回答这个问题。",
            "对不起，这个我不知道。",
            "很遗憾，我不能提供这方面的信息。",
        ] {
            assert!(is_short_apology(answer), "{answer}");
        }
        let long_en = format!(
            "Sorry for the wait. {}",
            "The river is long and wide. ".repeat(14)
        );
        assert!(!is_short_apology(&long_en), "{} words", words(&long_en));
        let long_zh = format!(
            "抱歉久等了。{}",
            "长江是中国最长的河流，流经多个省份。".repeat(10)
        );
        assert!(!is_short_apology(&long_zh), "{} words", words(&long_zh));
        assert!(!is_short_apology("The capital of France is Paris."));
        assert!(!is_short_apology("如果无法入睡，可以试试听轻音乐。"));
    }

    #[test]
    fn counting_words_counts_half_a_word_per_han_character() {
        assert_eq!(words("one two three"), 3);
        assert_eq!(words("一二三四"), 2);
        assert_eq!(words("don't stop"), 3);
        assert_eq!(words(&"字".repeat(159)), 79);
    }

    #[test]
    fn an_answer_of_punctuation_or_stop_words_only_is_eliminated() {
        for answer in [
            "",
            "...",
            "？！",
            "It is what it is.",
            "It is, and I don't.",
            "好的。",
            "是的，我们可以。",
            "嗯嗯……那个",
        ] {
            assert!(only_stop_words(answer), "{answer:?}");
            assert_eq!(text_elimination("Q?", answer), Some(Reason::EvolStopWords));
        }
        for answer in [
            "Paris.",
            "42",
            "It is blue.",
            "北京。",
            "我们可以去公园。",
            "好的，地址是上海。",
        ] {
            assert!(!only_stop_words(answer), "{answer:?}");
        }
    }

    #[test]
    fn the_rules_apply_in_order_and_keep_a_good_pair() {
        assert_eq!(text_elimination("  ", "Sorry."), Some(Reason::EvolEmpty));
        assert_eq!(
            text_elimination("Given prompt: write", "..."),
            Some(Reason::EvolCopiedPrompt)
        );
        assert_eq!(
            text_elimination("Q?", "Sorry, no."),
            Some(Reason::EvolApology)
        );
        assert_eq!(text_elimination("写一首诗。", "秋风起，落叶黄。"), None);
        assert_eq!(text_elimination("Name a river.", "The Nile."), None);
    }
}
