//! The words of a text as [`normalize_into`](instill_core::normalize_into) then
//! [`Tokenizer::Char`](crate::Tokenizer::Char) see them, hashed in one pass over the original
//! text without the normalised copy, for the common case: ASCII text, possibly with punctuation
//! that normalising drops on its own ([`is_fast_punctuation`]: curly quotes, dashes, bullets).
//!
//! A word is then a run of letters, digits and punctuation between spaces and control
//! characters, lowercased, its punctuation dropped (`don't` is `dont`); a run of punctuation
//! alone is no word. One table lookup per ASCII byte decides. The hash of a word is
//! [`word_hash`], shared with the normalising path.

use instill_core::is_fast_punctuation;

/// Buffers reused from text to text.
#[derive(Debug, Default)]
pub(crate) struct WordScratch {
    /// The running hash of every word so far (not yet [`mix`]ed), with room for one per two
    /// bytes read.
    raw: Vec<u64>,
}

/// The multiplier of the per-byte step (FNV-1a's 64-bit prime).
const WORD_MUL: u64 = 0x0000_0100_0000_01B3;

/// One byte into a word's running hash.
#[inline(always)]
fn step(h: u64, byte: u64, mul: u64) -> u64 {
    (h ^ byte).wrapping_mul(mul)
}

/// Spreads every bit of a running hash over the whole word (murmur3's finaliser).
#[inline(always)]
pub(crate) fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The 64-bit hash of one word's bytes: FNV-1a from 0, then [`mix`]. Both word paths (this one
/// and normalising then tokenising) hash a word with it, so a word has one hash whichever path
/// read it.
pub(crate) fn word_hash(word: &[u8]) -> u64 {
    mix(word.iter().fold(0, |h, &b| step(h, u64::from(b), WORD_MUL)))
}

/// What normalising does with each ASCII byte, as the step of the running hash: a letter or
/// digit is hashed lowercased (multiplier [`WORD_MUL`]); punctuation is dropped (`h ^ 0` times
/// 1 leaves the hash as it was); space and control characters end the word (times 0 starts the
/// next one from 0).
const ASCII_STEP: [(u8, u64); 128] = ascii_steps();

const fn ascii_steps() -> [(u8, u64); 128] {
    let mut table = [(0, 0); 128];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        table[b] = if c.is_ascii_alphanumeric() {
            (c.to_ascii_lowercase(), WORD_MUL)
        } else if c.is_ascii_punctuation() {
            (0, 1)
        } else {
            (0, 0)
        };
        b += 1;
    }
    table
}

/// Pushes the [`word_hash`] of every word of `text` onto `words`; `false` at the first character
/// this path does not know (accents, CJK, other spaces…), when the caller normalises instead.
///
/// No branch per byte that depends on the text: every byte is one step of the running hash from
/// the table, the running hash is written at the end of the list each time, and the list grows
/// by one only where a word ends. (A loop that branched at every word end spent as long
/// mispredicting as hashing.)
pub(crate) fn word_hashes(text: &str, scratch: &mut WordScratch, words: &mut Vec<u64>) -> bool {
    let bytes = text.as_bytes();
    let raw = &mut scratch.raw;
    raw.clear();
    // A word takes at least two bytes (a letter and what ends it), the last one at least one.
    raw.resize(bytes.len() / 2 + 2, 0);
    let (mut h, mut in_word, mut n) = (0u64, false, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !b.is_ascii() {
            match text.get(i..).and_then(|t| t.chars().next()) {
                Some(c) if is_fast_punctuation(c) => i += c.len_utf8(),
                _ => return false,
            }
            continue;
        }
        let (byte, mul) = ASCII_STEP[usize::from(b)];
        let ends = mul == 0;
        if let Some(slot) = raw.get_mut(n) {
            *slot = h;
        }
        n += usize::from(ends & in_word);
        in_word = !ends & (in_word | (mul == WORD_MUL));
        h = step(h, u64::from(byte), mul);
        i += 1;
    }
    if in_word && let Some(slot) = raw.get_mut(n) {
        *slot = h;
        n += 1;
    }
    words.extend(raw[..n].iter().map(|&h| mix(h)));
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Tokenizer;

    fn slow(text: &str) -> Vec<u64> {
        let mut v = Vec::new();
        Tokenizer::Char.tokenize(&instill_core::normalize(text), |w| {
            v.push(word_hash(w.as_bytes()));
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
