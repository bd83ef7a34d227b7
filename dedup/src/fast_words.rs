//! The words of a text as [`normalize_into`](instill_core::normalize_into) then
//! [`Tokenizer::Char`](crate::Tokenizer::Char) see them, hashed in one pass over the original
//! text without the normalised copy, for the common case: ASCII text, possibly with punctuation
//! that normalising drops on its own ([`is_fast_punctuation`]: curly quotes, dashes, bullets).
//!
//! A word is then a run of letters, digits and punctuation between spaces and control
//! characters, lowercased, its punctuation dropped (`don't` is `dont`); a run of punctuation
//! alone is no word. One table lookup per ASCII byte decides.

use instill_core::is_fast_punctuation;
use xxhash_rust::xxh3::xxh3_64;

/// Buffers reused from text to text.
#[derive(Debug, Default)]
pub(crate) struct WordScratch {
    /// The word being read, lowercased and stripped of punctuation.
    word: Vec<u8>,
}

/// What normalising does with each ASCII byte: 0 ends a word (space and control characters), 1
/// drops it (punctuation), anything else is the byte lowercased (letters and digits).
const ASCII_CLASS: [u8; 128] = ascii_classes();

const fn ascii_classes() -> [u8; 128] {
    let mut table = [0u8; 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else if c.is_ascii_punctuation() {
            1
        } else {
            0
        };
        b += 1;
    }
    table
}

/// Pushes the xxh3 of every word of `text` onto `words`; `false` at the first character this
/// path does not know (accents, CJK, other spaces…), when the caller normalises instead.
pub(crate) fn word_hashes(text: &str, scratch: &mut WordScratch, words: &mut Vec<u64>) -> bool {
    let bytes = text.as_bytes();
    let word = &mut scratch.word;
    word.clear();
    word.resize(bytes.len(), 0);
    // The word so far is `word[..len]`; it never outgrows the bytes read.
    let mut len = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii() {
            let m = ASCII_CLASS[usize::from(b)];
            if m == 0 {
                if len > 0 {
                    words.push(xxh3_64(&word[..len]));
                    len = 0;
                }
            } else {
                word[len] = m;
                len += usize::from(m != 1);
            }
            i += 1;
        } else {
            match text.get(i..).and_then(|t| t.chars().next()) {
                Some(c) if is_fast_punctuation(c) => i += c.len_utf8(),
                _ => return false,
            }
        }
    }
    if len > 0 {
        words.push(xxh3_64(&word[..len]));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tokenizer;

    fn slow(text: &str) -> Vec<u64> {
        let mut v = Vec::new();
        Tokenizer::Char.tokenize(&instill_core::normalize(text), |w| {
            v.push(xxh3_64(w.as_bytes()));
        });
        v
    }

    fn fast(text: &str) -> Option<Vec<u64>> {
        let mut v = Vec::new();
        word_hashes(text, &mut WordScratch::default(), &mut v).then_some(v)
    }

    /// Words at the very ends, long ones, and a word broken by a character the path leaves to
    /// normalising.
    #[test]
    fn words_at_the_ends() {
        let long = "abcdefghij".repeat(20);
        for text in [
            "",
            " ",
            "a",
            &format!("{} x", "y ".repeat(40)),
            &format!("{long} {long}"),
            &format!("{}Word’s end", " ".repeat(63)),
            &format!("{}-- ok", "z".repeat(64)),
        ] {
            assert_eq!(fast(text), Some(slow(text)), "{text:?}");
        }
        assert_eq!(fast("café"), None);
    }

    proptest::proptest! {
        /// The one-pass words equal normalising then tokenising, and the path takes exactly
        /// the texts of ASCII and lone-dropped punctuation.
        #[test]
        fn one_pass_words_equal_normalised_tokens(
            text in "[a-zA-Z0-9 \\t\\n\\r\\x00\\x1f\\x7f!-/:-@\\[-`{-~’“”‘–—•…é春\\u{a0}Ａ]{0,150}"
        ) {
            let simple = text.chars().all(|c| c.is_ascii() || is_fast_punctuation(c));
            let got = fast(&text);
            proptest::prop_assert_eq!(got.is_some(), simple);
            if let Some(got) = got {
                proptest::prop_assert_eq!(got, slow(&text));
            }
        }
    }
}
