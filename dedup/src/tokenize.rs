//! ROUGE tokenizers: `alpaca` (Google rouge_score's default, bit for bit), `char` (every CJK
//! character a token, Latin words and digit runs as tokens) and `auto` (`char` when the text has
//! CJK, else `alpaca`).

use instill_core::{has_cjk, is_cjk};

/// Which tokenizer ROUGE uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tokenizer {
    /// rouge_score's `DefaultTokenizer(use_stemmer=False)`: lowercase, every run of characters
    /// outside `[a-z0-9]` separates tokens. It erases every CJK character, so Chinese text has no
    /// tokens: use it to reproduce Alpaca's filter, not for Chinese.
    Alpaca,
    /// Each Han, kana or hangul character is a token; runs of other letters and digits
    /// (lowercased) are tokens; everything else separates.
    Char,
    /// `Char` for text with CJK characters, `Alpaca` otherwise (the two agree on ASCII text).
    Auto,
}

impl Tokenizer {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Tokenizer::Alpaca => "alpaca",
            Tokenizer::Char => "char",
            Tokenizer::Auto => "auto",
        }
    }

    /// Splits `text` into tokens, calling `emit` with each in order.
    pub fn tokenize(self, text: &str, mut emit: impl FnMut(&str)) {
        match self {
            Tokenizer::Alpaca => alpaca(text, &mut emit),
            Tokenizer::Char => char_tokens(text, &mut emit),
            Tokenizer::Auto if has_cjk(text) => char_tokens(text, &mut emit),
            Tokenizer::Auto => alpaca(text, &mut emit),
        }
    }

    /// The tokens of `text` as owned strings (convenient for tests and small inputs).
    pub fn tokens(self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.tokenize(text, |t| out.push(t.to_string()));
        out
    }
}

impl std::str::FromStr for Tokenizer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "alpaca" => Ok(Tokenizer::Alpaca),
            "char" => Ok(Tokenizer::Char),
            "auto" => Ok(Tokenizer::Auto),
            other => Err(format!(
                "unknown tokenizer `{other}` (expected auto, alpaca or char)"
            )),
        }
    }
}

/// rouge_score: `text.lower()`, `re.sub(r"[^a-z0-9]+", " ", …)`, split on spaces. Python's
/// `str.lower()` is the full Unicode lowercase mapping, as is Rust's `char::to_lowercase`: the
/// Kelvin sign becomes `k` and `İ` becomes `i` plus a combining dot, both of which the regex then
/// treats as rouge_score does.
fn alpaca(text: &str, emit: &mut impl FnMut(&str)) {
    if text.is_ascii() {
        ascii_words(text, emit);
        return;
    }
    let mut word = String::new();
    for c in text.chars() {
        for l in c.to_lowercase() {
            if l.is_ascii_lowercase() || l.is_ascii_digit() {
                word.push(l);
            } else if !word.is_empty() {
                emit(&word);
                word.clear();
            }
        }
    }
    if !word.is_empty() {
        emit(&word);
    }
}

/// ASCII text, where both tokenizers agree: every run of ASCII letters and digits, lowercased
/// (copied only when it has capitals).
fn ascii_words(text: &str, emit: &mut impl FnMut(&str)) {
    let bytes = text.as_bytes();
    let mut word = String::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_alphanumeric() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let token = &text[start..i];
            if token.bytes().any(|b| b.is_ascii_uppercase()) {
                word.clear();
                word.push_str(token);
                word.make_ascii_lowercase();
                emit(&word);
            } else {
                emit(token);
            }
        } else {
            i += 1;
        }
    }
}

fn char_tokens(text: &str, emit: &mut impl FnMut(&str)) {
    if text.is_ascii() {
        // No CJK; `is_alphanumeric` and `to_lowercase` are their ASCII forms.
        ascii_words(text, emit);
        return;
    }
    let mut word = String::new();
    let mut buf = [0u8; 4];
    for c in text.chars() {
        if is_cjk(c) {
            if !word.is_empty() {
                emit(&word);
                word.clear();
            }
            emit(c.encode_utf8(&mut buf));
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            emit(&word);
            word.clear();
        }
    }
    if !word.is_empty() {
        emit(&word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn tokenizers_on_english_chinese_and_mixed_text() {
        let cases = [
            "Give three tips for staying healthy.",
            "Don't use 3.14 as π; it's e-mail, not E_MAIL!",
            "写一首关于春天的诗。",
            "用Python写一个quick sort函数",
            "Café naïve résumé",
            "Kelvin \u{212A} and İstanbul",
            "春のうた 봄노래",
        ];
        let mut out = String::new();
        for text in cases {
            for t in [Tokenizer::Alpaca, Tokenizer::Char, Tokenizer::Auto] {
                out.push_str(&format!("{:<6} {:?}\n", t.name(), t.tokens(text)));
            }
        }
        expect![[r#"
            alpaca ["give", "three", "tips", "for", "staying", "healthy"]
            char   ["give", "three", "tips", "for", "staying", "healthy"]
            auto   ["give", "three", "tips", "for", "staying", "healthy"]
            alpaca ["don", "t", "use", "3", "14", "as", "it", "s", "e", "mail", "not", "e", "mail"]
            char   ["don", "t", "use", "3", "14", "as", "π", "it", "s", "e", "mail", "not", "e", "mail"]
            auto   ["don", "t", "use", "3", "14", "as", "it", "s", "e", "mail", "not", "e", "mail"]
            alpaca []
            char   ["写", "一", "首", "关", "于", "春", "天", "的", "诗"]
            auto   ["写", "一", "首", "关", "于", "春", "天", "的", "诗"]
            alpaca ["python", "quick", "sort"]
            char   ["用", "python", "写", "一", "个", "quick", "sort", "函", "数"]
            auto   ["用", "python", "写", "一", "个", "quick", "sort", "函", "数"]
            alpaca ["caf", "na", "ve", "r", "sum"]
            char   ["café", "naïve", "résumé"]
            auto   ["caf", "na", "ve", "r", "sum"]
            alpaca ["kelvin", "k", "and", "i", "stanbul"]
            char   ["kelvin", "k", "and", "i\u{307}stanbul"]
            auto   ["kelvin", "k", "and", "i", "stanbul"]
            alpaca []
            char   ["春", "の", "う", "た", "봄", "노", "래"]
            auto   ["春", "の", "う", "た", "봄", "노", "래"]
        "#]]
        .assert_eq(&out);
    }
}
