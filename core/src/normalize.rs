//! Text normalisation for exact dedup and hashing: NFKC, lowercase, ASCII and CJK punctuation
//! removed, whitespace collapsed; plus the script tests (Han, kana, hangul) the rest of instill
//! shares.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};
use xxhash_rust::xxh3::xxh3_128;

use crate::record::Record;

/// Normalises `text` for exact comparison: NFKC, lowercase, punctuation (ASCII and CJK, see
/// [`is_punctuation`]) removed, every run of whitespace or control characters collapsed to one
/// space, leading and trailing space trimmed.
///
/// ```
/// assert_eq!(instill_core::normalize("  Hello,   WORLD!\n"), "hello world");
/// assert_eq!(instill_core::normalize("你好，世界！"), "你好世界");
/// assert_eq!(instill_core::normalize("ＡＢＣ　１２３"), "abc 123");
/// ```
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_into(text, &mut out);
    out
}

/// [`normalize`], appending to `out` (which is not cleared) to reuse one buffer.
///
/// Most text instill sees is ASCII, Han characters and CJK or full-width punctuation, for which
/// NFKC is a per-character mapping (full-width forms to ASCII; the rest unchanged or punctuation
/// that is dropped anyway): that path runs without the NFKC machinery. The first character
/// outside that set (kana, accented letters, combining marks…) sends the whole text through the
/// full NFKC path instead; a test checks the two agree.
pub fn normalize_into(text: &str, out: &mut String) {
    let start = out.len();
    let mut sink = Sink {
        out,
        pending_space: false,
        started: false,
    };
    if sink.push_fast_text(text) {
        return;
    }
    out.truncate(start);
    normalize_full(text, out);
}

/// The reference path: full NFKC, then the same case folding, punctuation removal and spacing.
fn normalize_full(text: &str, out: &mut String) {
    let mut sink = Sink {
        out,
        pending_space: false,
        started: false,
    };
    if is_nfkc_quick(text.chars()) == IsNormalized::Yes {
        for c in text.chars() {
            sink.push(c);
        }
    } else {
        for c in text.nfkc() {
            sink.push(c);
        }
    }
}

/// CJK unified ideographs of the basic block: NFKC-stable and caseless.
fn is_common_han(c: char) -> bool {
    ('\u{4E00}'..='\u{9FFF}').contains(&c)
}

/// Punctuation whose NFKC form is itself (or only) punctuation or space: dropping it before or
/// after NFKC gives the same text, so [`normalize_into`] drops it on its own, wherever it
/// stands, like ASCII punctuation (curly quotes, dashes, bullets, CJK brackets…). (‗ U+2017 and
/// ‾ U+203E are not: NFKC turns them into a space and a combining mark.)
pub fn is_fast_punctuation(c: char) -> bool {
    matches!(c,
        '\u{2010}'..='\u{2016}' | '\u{2018}'..='\u{2027}' | '\u{2030}'..='\u{203D}'
        | '\u{203F}'..='\u{205E}'
        | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301F}'
        | '\u{3030}' | '\u{303D}' | '\u{30FB}')
}

struct Sink<'a> {
    out: &'a mut String,
    pending_space: bool,
    started: bool,
}

impl Sink<'_> {
    fn push_ascii(&mut self, b: u8) {
        if b.is_ascii_alphanumeric() {
            self.emit(char::from(b.to_ascii_lowercase()));
        } else if b.is_ascii_punctuation() {
            // dropped
        } else {
            // space, tab, newline and every other control character
            self.pending_space = true;
        }
    }

    /// The fast path over a whole text, copying runs of ASCII letters and digits (lowercased in
    /// place) and runs of Han characters whole. `false` at the first character it cannot take.
    fn push_fast_text(&mut self, text: &str) -> bool {
        let bytes = text.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b.is_ascii_alphanumeric() {
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let from = self.emit_str(&text[start..i]);
                self.out[from..].make_ascii_lowercase();
            } else if b.is_ascii() {
                self.push_ascii(b);
                i += 1;
            } else {
                let Some(c) = text[i..].chars().next() else {
                    return false;
                };
                if is_common_han(c) {
                    let start = i;
                    i += c.len_utf8();
                    while let Some(next) = text[i..].chars().next().filter(|&n| is_common_han(n)) {
                        i += next.len_utf8();
                    }
                    self.emit_str(&text[start..i]);
                } else if self.push_fast(c) {
                    i += c.len_utf8();
                } else {
                    return false;
                }
            }
        }
        true
    }

    /// Handles `c` if NFKC maps it on its own (see [`normalize_into`]); `false` if it does not.
    fn push_fast(&mut self, c: char) -> bool {
        match c {
            _ if c.is_ascii() => self.push_ascii(c as u8),
            _ if is_common_han(c) => self.emit(c),
            // Full-width ASCII: NFKC maps each to its ASCII twin.
            '\u{FF01}'..='\u{FF5E}' => self.push_ascii((u32::from(c) - 0xFEE0) as u8),
            // Ideographic space.
            '\u{3000}' => self.pending_space = true,
            _ if is_fast_punctuation(c) => {}
            _ => return false,
        }
        true
    }

    fn push(&mut self, c: char) {
        if c.is_ascii() {
            // `c` fits in one byte here.
            self.push_ascii(c as u8);
        } else if c.is_whitespace() || c.is_control() {
            self.pending_space = true;
        } else if is_punctuation(c) {
            // dropped
        } else {
            for l in c.to_lowercase() {
                self.emit(l);
            }
        }
    }

    /// Appends `s` (already normalised) and returns where it starts in the output.
    fn emit_str(&mut self, s: &str) -> usize {
        if self.pending_space && self.started {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.started = true;
        let from = self.out.len();
        self.out.push_str(s);
        from
    }

    fn emit(&mut self, c: char) {
        if self.pending_space && self.started {
            self.out.push(' ');
        }
        self.pending_space = false;
        self.started = true;
        self.out.push(c);
    }
}

/// Whether normalisation drops `c`: ASCII punctuation and symbols, Latin-1 punctuation, the
/// General Punctuation block (curly quotes, dashes, ellipsis…), CJK punctuation (、。「」《》【】〜…),
/// the katakana middle dot, and the vertical, small and full-width punctuation forms.
pub fn is_punctuation(c: char) -> bool {
    matches!(c,
        '!'..='/' | ':'..='@' | '['..='`' | '{'..='~'
        | '\u{A1}' | '\u{A7}' | '\u{AB}' | '\u{B6}' | '\u{B7}' | '\u{BB}' | '\u{BF}'
        | '\u{2010}'..='\u{2027}' | '\u{2030}'..='\u{205E}'
        | '\u{3001}'..='\u{3003}' | '\u{3008}'..='\u{3011}' | '\u{3014}'..='\u{301F}'
        | '\u{3030}' | '\u{303D}' | '\u{30FB}'
        | '\u{FE10}'..='\u{FE19}' | '\u{FE30}'..='\u{FE4F}' | '\u{FE50}'..='\u{FE6B}'
        | '\u{FF01}'..='\u{FF0F}' | '\u{FF1A}'..='\u{FF20}' | '\u{FF3B}'..='\u{FF40}'
        | '\u{FF5B}'..='\u{FF65}')
}

/// Whether `c` is a Han character (CJK unified ideographs with extensions A–H, compatibility
/// ideographs, and the ideographic iteration mark and zero 々 〇).
pub fn is_han(c: char) -> bool {
    matches!(c,
        '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}'
        | '\u{20000}'..='\u{2EBEF}' | '\u{2F800}'..='\u{2FA1F}' | '\u{30000}'..='\u{323AF}'
        | '\u{3005}' | '\u{3007}')
}

/// Whether `c` is Japanese kana (hiragana, katakana and their extensions, half-width katakana).
pub fn is_kana(c: char) -> bool {
    matches!(c,
        '\u{3041}'..='\u{309F}' | '\u{30A0}'..='\u{30FA}' | '\u{30FC}'..='\u{30FF}'
        | '\u{31F0}'..='\u{31FF}' | '\u{FF66}'..='\u{FF9F}')
}

/// Whether `c` is Korean hangul (syllables and jamo).
pub fn is_hangul(c: char) -> bool {
    matches!(c, '\u{AC00}'..='\u{D7AF}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}')
}

/// Whether `c` is a CJK character in the sense of ROUGE's `char` tokenizer: Han, kana or hangul.
pub fn is_cjk(c: char) -> bool {
    is_han(c) || is_kana(c) || is_hangul(c)
}

/// Whether `text` holds at least one CJK character.
pub fn has_cjk(text: &str) -> bool {
    !text.is_ascii() && text.chars().any(is_cjk)
}

/// The content hash of a record: xxh3-128 of its normalised fields (instruction, input, output,
/// system prompt and every earlier turn, each normalised on its own and kept apart by a separator
/// that normalisation cannot produce), as 32 lowercase hex digits. Two records that differ only
/// in case, width, punctuation or spacing share it.
pub fn norm_hash(record: &Record) -> String {
    let mut buf = String::with_capacity(
        record.instruction.len() + record.input.len() + record.output.len() + 8,
    );
    let fields = [
        &record.instruction,
        &record.input,
        &record.output,
        &record.system,
    ];
    for (i, field) in fields.into_iter().enumerate() {
        if i > 0 {
            buf.push('\u{1F}');
        }
        normalize_into(field, &mut buf);
    }
    for turn in &record.history {
        buf.push('\u{1E}');
        normalize_into(turn.user(), &mut buf);
        buf.push('\u{1F}');
        normalize_into(turn.assistant(), &mut buf);
    }
    hash_hex(&buf)
}

/// The hash of one normalised text (used for `--field instruction` dedup), in the same form as
/// [`norm_hash`].
pub fn text_hash(text: &str) -> String {
    hash_hex(&normalize(text))
}

fn hash_hex(normalised: &str) -> String {
    format!("{:032x}", xxh3_128(normalised.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Exchange;
    use expect_test::expect;

    #[test]
    fn normalises_case_width_punctuation_and_space() {
        let cases = [
            "Hello, World!",
            "  hello\tworld  ",
            "ＨＥＬＬＯ　ＷＯＲＬＤ",
            "请写一首关于春天的诗。",
            "「请」写一首《关于春天》的诗…",
            "“Quoted” — text…",
            "Ünïcödé ÀÉÎ",
            "ﬁle ① ㎏",
            "a\u{0}b\r\nc",
            "",
            "，。！？",
        ];
        let got: Vec<String> = cases
            .iter()
            .map(|c| format!("{c:?} -> {:?}", normalize(c)))
            .collect();
        expect![[r#"
            "Hello, World!" -> "hello world"
            "  hello\tworld  " -> "hello world"
            "ＨＥＬＬＯ\u{3000}ＷＯＲＬＤ" -> "hello world"
            "请写一首关于春天的诗。" -> "请写一首关于春天的诗"
            "「请」写一首《关于春天》的诗…" -> "请写一首关于春天的诗"
            "“Quoted” — text…" -> "quoted text"
            "Ünïcödé ÀÉÎ" -> "ünïcödé àéî"
            "ﬁle ① ㎏" -> "file 1 kg"
            "a\0b\r\nc" -> "a b c"
            "" -> ""
            "，。！？" -> """#]]
        .assert_eq(&got.join("\n"));
    }

    #[test]
    fn hash_ignores_surface_differences_but_not_field_boundaries() {
        let a = Record::new("Give three tips.", "", "Eat well");
        let b = Record::new("  give THREE tips ", "", "eat well!");
        assert_eq!(norm_hash(&a), norm_hash(&b));
        assert_eq!(norm_hash(&a).len(), 32);
        // Moving text between fields makes a different record.
        let c = Record::new("Give three tips. Eat", "", "well");
        assert_ne!(norm_hash(&a), norm_hash(&c));
        let d = Record::new("Give three tips.", "Eat well", "");
        assert_ne!(norm_hash(&a), norm_hash(&d));
        // History and system prompt count.
        let mut e = a.clone();
        e.history.push(Exchange("hi".into(), "hello".into()));
        assert_ne!(norm_hash(&a), norm_hash(&e));
        let mut f = a.clone();
        f.system = "be brief".into();
        assert_ne!(norm_hash(&a), norm_hash(&f));
    }

    #[test]
    fn the_fast_path_agrees_with_full_nfkc_for_every_character_it_takes() {
        let mut fast = String::new();
        let mut full = String::new();
        let mut taken = 0;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            // Each character between two letters, so dropped, spaced and kept characters all show.
            let text = format!("a{c}b");
            fast.clear();
            let mut sink = Sink {
                out: &mut fast,
                pending_space: false,
                started: false,
            };
            if !sink.push_fast_text(&text) {
                continue;
            }
            taken += 1;
            full.clear();
            normalize_full(&text, &mut full);
            assert_eq!(fast, full, "U+{:04X}", u32::from(c));
        }
        assert!(taken > 21_000, "{taken}");
    }

    proptest::proptest! {
        #[test]
        fn normalize_equals_the_full_nfkc_path(parts in proptest::collection::vec(
            proptest::prop_oneof![
                "[a-zA-Z0-9 ,.!?]{0,8}",
                "[\u{4E00}-\u{9FFF}]{0,6}",
                "[，。！？、：；（）「」《》…—　]{0,4}",
                "[ＡＢＣａｂｃ０１２]{0,3}",
                "[éÉüñçあいカ한\u{301}\u{308}ﬁ①]{0,3}",
            ],
            0..12,
        )) {
            let text: String = parts.concat();
            let mut full = String::new();
            normalize_full(&text, &mut full);
            proptest::prop_assert_eq!(normalize(&text), full);
        }
    }

    #[test]
    fn script_tests() {
        assert!(is_han('中') && is_han('々') && !is_han('あ'));
        assert!(is_kana('あ') && is_kana('カ') && !is_kana('・'));
        assert!(is_hangul('한') && !is_hangul('中'));
        assert!(has_cjk("用Python写") && !has_cjk("plain ascii") && !has_cjk("café"));
    }
}
