//! MinHash signatures of shingle sets: character n-grams of normalised text by default (Chinese
//! needs no segmenter), or word n-grams.

use instill_core::normalize_into;
use pulp::{Arch, Simd, WithSimd};
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::fast_words::{WordScratch, mix, word_hash, word_hashes};
use crate::tokenize::Tokenizer;

/// How a text becomes a set of shingles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shingling {
    /// Every run of n characters of the normalised text (spaces included).
    Char(usize),
    /// Every run of n words; a word is a CJK character or a run of other letters and digits.
    Word(usize),
}

impl Shingling {
    /// Calls `emit` with the 64-bit hash of every shingle of `text` (normalised first), in order,
    /// duplicates included. A text shorter than one shingle is one shingle; an empty text none.
    pub fn hashes(self, text: &str, emit: impl FnMut(u64)) {
        self.hashes_with(text, &mut Scratch::default(), emit);
    }

    /// [`Shingling::hashes`] with buffers reused from text to text: nothing is allocated per
    /// shingle (a word n-gram is hashed from the words' hashes laid out in one reused buffer).
    pub fn hashes_with(self, text: &str, scratch: &mut Scratch, mut emit: impl FnMut(u64)) {
        let Scratch {
            text: norm,
            bounds,
            words,
            fast,
            ..
        } = scratch;
        if let Shingling::Word(n) = self {
            words.clear();
            if word_hashes(text, fast, words) {
                return window_hashes(words, n.max(1), &mut emit);
            }
        }
        norm.clear();
        normalize_into(text, norm);
        if norm.is_empty() {
            return;
        }
        match self {
            Shingling::Char(n) => char_shingles(norm, n.max(1), bounds, &mut emit),
            Shingling::Word(n) => {
                words.clear();
                Tokenizer::Char.tokenize(norm, |w| words.push(word_hash(w.as_bytes())));
                window_hashes(words, n.max(1), &mut emit);
            }
        }
    }

    /// The distinct shingle hashes of `text`, sorted (for exact Jaccard).
    pub fn set(self, text: &str) -> Vec<u64> {
        let mut v = Vec::new();
        self.hashes(text, |h| v.push(h));
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// Every run of `n` characters of `text` (a shorter text is one shingle).
fn char_shingles(text: &str, n: usize, bounds: &mut Vec<usize>, emit: &mut impl FnMut(u64)) {
    bounds.clear();
    bounds.extend(text.char_indices().map(|(i, _)| i));
    bounds.push(text.len());
    let chars = bounds.len() - 1;
    if chars <= n {
        emit(xxh3_64(text.as_bytes()));
        return;
    }
    for w in bounds.windows(n + 1) {
        emit(xxh3_64(&text.as_bytes()[w[0]..w[n]]));
    }
}

/// Every run of `n` of the word hashes `words`, as [`shingle_hash`] (fewer words are one
/// shingle, none are none).
fn window_hashes(words: &[u64], n: usize, emit: &mut impl FnMut(u64)) {
    if words.is_empty() {
        return;
    }
    if words.len() <= n {
        emit(shingle_hash(words));
        return;
    }
    for run in words.windows(n) {
        emit(shingle_hash(run));
    }
}

/// The hash of a run of word hashes, in order: each word rotates and multiplies in, then
/// [`mix`] (a few multiplications where the xxh3 of the bytes took a few dozen instructions).
fn shingle_hash(words: &[u64]) -> u64 {
    mix(words.iter().fold(0x243F_6A88_85A3_08D3, |h, &w| {
        (h.rotate_left(27) ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15)
    }))
}

/// Buffers one thread reuses from text to text while shingling and signing.
#[derive(Debug, Default)]
pub struct Scratch {
    text: String,
    bounds: Vec<usize>,
    words: Vec<u64>,
    shingles: Vec<u32>,
    fast: WordScratch,
}

/// Computes MinHash signatures with `num_perm` hash functions `h(x) = a·x + b mod 2³²` (a
/// odd: each is a permutation of the 32-bit values) over the shingle hashes folded to 32 bits
/// ([`fold32`]), seeded deterministically.
///
/// The shingle hashes are pseudo-random, so each function's minimum is a uniformly drawn
/// element of the set and the estimate is unbiased; 32-bit lanes are what makes the fold cheap
/// (eight functions to an AVX2 multiply, unsigned minimum in one instruction, where the 64-bit
/// form needed three multiplies and a compare-and-blend for four).
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u32>,
    b: Vec<u32>,
    shingling: Shingling,
    arch: Arch,
}

/// A 64-bit shingle hash as the 32-bit value the permutations take.
#[inline(always)]
fn fold32(x: u64) -> u32 {
    (x ^ (x >> 32)) as u32
}

impl MinHasher {
    /// A hasher of `num_perm` functions over `shingling`, from `seed`.
    pub fn new(num_perm: usize, shingling: Shingling, seed: u64) -> MinHasher {
        let a = (0..num_perm as u64)
            .map(|i| fold32(xxh3_64_with_seed(&i.to_le_bytes(), seed)) | 1)
            .collect();
        let b = (0..num_perm as u64)
            .map(|i| {
                fold32(xxh3_64_with_seed(
                    &i.to_le_bytes(),
                    seed ^ 0x9E37_79B9_7F4A_7C15,
                ))
            })
            .collect();
        MinHasher {
            a,
            b,
            shingling,
            arch: Arch::new(),
        }
    }

    /// How many hash functions.
    pub fn num_perm(&self) -> usize {
        self.a.len()
    }

    /// The shingling in use.
    pub fn shingling(&self) -> Shingling {
        self.shingling
    }

    /// The signature of `text` into `sig` (`num_perm` values); `false` when the text has no
    /// shingles (an empty text), in which case `sig` is left all `u32::MAX`.
    pub fn signature_into(&self, text: &str, sig: &mut [u32]) -> bool {
        self.signature_with(text, &mut Scratch::default(), sig)
    }

    /// [`MinHasher::signature_into`] with reused buffers: the text's shingle hashes are gathered
    /// first, then folded into the signature by one loop over the permutations that the
    /// compiler vectorises (with AVX2 where the CPU has it, chosen at run time).
    pub fn signature_with(&self, text: &str, scratch: &mut Scratch, sig: &mut [u32]) -> bool {
        let mut xs = std::mem::take(&mut scratch.shingles);
        xs.clear();
        self.shingling
            .hashes_with(text, scratch, |x| xs.push(fold32(x)));
        self.arch.dispatch(MinFold {
            a: &self.a,
            b: &self.b,
            xs: &xs,
            sig,
        });
        let any = !xs.is_empty();
        scratch.shingles = xs;
        any
    }
}

/// `sig[k] = min over x of a[k]·x + b[k] (mod 2³²)`, starting from `u32::MAX`.
struct MinFold<'a> {
    a: &'a [u32],
    b: &'a [u32],
    xs: &'a [u32],
    sig: &'a mut [u32],
}

/// Permutations folded together: their running minima, multipliers and offsets stay in
/// registers while every shingle of the text passes (12 of AVX2's 16 registers).
const BLOCK: usize = 32;

impl WithSimd for MinFold<'_> {
    type Output = ();

    // Inlined into pulp's per-instruction-set copies, so LLVM vectorises it for each.
    #[inline(always)]
    fn with_simd<S: Simd>(self, _: S) {
        let blocks = self
            .sig
            .chunks_mut(BLOCK)
            .zip(self.a.chunks(BLOCK).zip(self.b.chunks(BLOCK)));
        for (sig, (a, b)) in blocks {
            if let (Ok(whole), Ok(a), Ok(b)) = (
                <&mut [u32; BLOCK]>::try_from(&mut *sig),
                <&[u32; BLOCK]>::try_from(a),
                <&[u32; BLOCK]>::try_from(b),
            ) {
                fold_block(a, b, self.xs, whole);
            } else {
                fold_tail(a, b, self.xs, sig);
            }
        }
    }
}

/// One block of [`BLOCK`] permutations.
#[inline(always)]
fn fold_block(a: &[u32; BLOCK], b: &[u32; BLOCK], xs: &[u32], sig: &mut [u32; BLOCK]) {
    let mut acc = [u32::MAX; BLOCK];
    for &x in xs {
        for k in 0..BLOCK {
            acc[k] = acc[k].min(a[k].wrapping_mul(x).wrapping_add(b[k]));
        }
    }
    *sig = acc;
}

/// The permutations after the last whole block.
#[inline(always)]
fn fold_tail(a: &[u32], b: &[u32], xs: &[u32], sig: &mut [u32]) {
    sig.fill(u32::MAX);
    for &x in xs {
        for ((m, &a), &b) in sig.iter_mut().zip(a).zip(b) {
            *m = (*m).min(a.wrapping_mul(x).wrapping_add(b));
        }
    }
}

/// The MinHash estimate of Jaccard similarity: the fraction of positions where two signatures
/// agree.
pub fn estimate_jaccard(a: &[u32], b: &[u32]) -> f64 {
    if a.is_empty() {
        return 0.0;
    }
    let same = a.iter().zip(b).filter(|(x, y)| x == y).count();
    same as f64 / a.len() as f64
}

/// Exact Jaccard similarity of two sorted, deduplicated shingle sets.
pub fn jaccard(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut both) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    both as f64 / (a.len() + b.len() - both) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(h: &MinHasher, text: &str) -> Vec<u32> {
        let mut s = vec![0; h.num_perm()];
        h.signature_into(text, &mut s);
        s
    }

    #[test]
    fn shingles_of_short_chinese_and_english_text() {
        assert_eq!(Shingling::Char(5).set("你好").len(), 1);
        assert_eq!(Shingling::Char(2).set("春眠不觉晓").len(), 4);
        assert_eq!(
            Shingling::Word(3)
                .set("Give three tips for staying healthy")
                .len(),
            4
        );
        assert_eq!(Shingling::Word(3).set("春眠不觉晓").len(), 3);
        assert!(Shingling::Char(5).set("  ").is_empty());
        // Normalisation first: case and punctuation do not change the set.
        assert_eq!(
            Shingling::Char(4).set("Hello, World!"),
            Shingling::Char(4).set("hello world")
        );
    }

    /// The signature as first written: a `String` per word and a `Vec` per shingle, one
    /// scalar loop per shingle. The reused buffers and the dispatched loop must give the same
    /// bits.
    fn reference_signature(h: &MinHasher, text: &str) -> Vec<u32> {
        let text = instill_core::normalize(text);
        let mut xs: Vec<u64> = Vec::new();
        if !text.is_empty() {
            match h.shingling {
                Shingling::Char(n) => {
                    let b: Vec<usize> = text
                        .char_indices()
                        .map(|(i, _)| i)
                        .chain(std::iter::once(text.len()))
                        .collect();
                    if b.len() - 1 <= n {
                        xs.push(xxh3_64(text.as_bytes()));
                    } else {
                        for i in 0..b.len() - n {
                            xs.push(xxh3_64(&text.as_bytes()[b[i]..b[i + n]]));
                        }
                    }
                }
                Shingling::Word(n) => {
                    let words: Vec<u64> = Tokenizer::Char
                        .tokens(&text)
                        .iter()
                        .map(|w| word_hash(w.as_bytes()))
                        .collect();
                    let shingle = |ws: &[u64]| shingle_hash(ws);
                    if !words.is_empty() && words.len() <= n {
                        xs.push(shingle(&words));
                    } else {
                        xs.extend(words.windows(n).map(shingle));
                    }
                }
            }
        }
        let mut sig = vec![u32::MAX; h.num_perm()];
        for x in xs {
            for ((s, &a), &b) in sig.iter_mut().zip(&h.a).zip(&h.b) {
                *s = (*s).min(a.wrapping_mul(fold32(x)).wrapping_add(b));
            }
        }
        sig
    }

    /// The scalar fallback and each x86 level the CPU offers.
    fn archs() -> Vec<Arch> {
        let mut v = vec![Arch::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            v.extend(pulp::x86::V3::try_new().map(Arch::V3));
            v.extend(pulp::x86::V4::try_new().map(Arch::V4));
        }
        v
    }

    /// Real English and Chinese records (Alpaca and its Chinese translation), word and character
    /// shingles of several sizes, a permutation count that is not a multiple of the vector
    /// width: every signature equals the reference bit for bit, through one reused scratch.
    #[test]
    fn signatures_are_bit_identical_to_the_reference() {
        let mut texts: Vec<String> = Vec::new();
        for (file, take) in [
            ("data/alpaca_data.json", 1500),
            ("data/alpaca_zh_part00.json", 500),
        ] {
            let data: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(crate::rouge_tests::shared(file)).unwrap(),
            )
            .unwrap();
            texts.extend(data.as_array().unwrap()[..take].iter().map(|r| {
                format!(
                    "{} {} {}",
                    r["instruction"].as_str().unwrap(),
                    r["input"].as_str().unwrap(),
                    r["output"].as_str().unwrap()
                )
            }));
        }
        texts.extend(
            [
                "",
                "  ",
                "a",
                "one two",
                "Ｆｕｌｌ-width ＡＢＣ",
                "春",
                // ASCII edge cases of the one-pass word path: punctuation inside and between
                // words, runs of punctuation alone, tabs, NUL and DEL, capitals, digits.
                "Don't stop -- it's 3:45\tPM\u{0}now\u{7f}THEN ... e.g. (x-ray) A.B.C. 1,000,000 !!!",
                "-- ... !!!",
                "x",
                "x,y",
            ]
            .map(String::from),
        );
        let mut scratch = Scratch::default();
        let mut compared = 0;
        for shingling in [
            Shingling::Word(1),
            Shingling::Word(3),
            Shingling::Word(5),
            Shingling::Char(5),
        ] {
            for num_perm in [128, 100] {
                let h = MinHasher::new(num_perm, shingling, 1);
                let mut sig = vec![0; num_perm];
                for text in &texts {
                    let want = reference_signature(&h, text);
                    // Every instruction set this CPU has, not only the one chosen.
                    for arch in archs() {
                        let h = MinHasher { arch, ..h.clone() };
                        let any = h.signature_with(text, &mut scratch, &mut sig);
                        assert_eq!(sig, want, "{shingling:?} {num_perm} {arch:?}: {text:?}");
                        assert_eq!(any, want.iter().any(|&v| v != u32::MAX), "{text:?}");
                    }
                    compared += 1;
                }
            }
        }
        assert_eq!(compared, 8 * texts.len());
        // An empty text has no shingles.
        let h = MinHasher::new(128, Shingling::Word(3), 1);
        assert!(!h.signature_with(" ,. ", &mut scratch, &mut vec![0; 128]));
    }

    #[test]
    fn exact_jaccard_of_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[1], &[1]), 1.0);
        assert_eq!(jaccard(&[], &[]), 0.0);
    }

    /// The 32-bit permutations behave as independent random ones: over 400 random pairs of
    /// 50-element sets with Jaccard 9/11 (45 shared), the estimates' mean is the truth within
    /// 0.01 and their spread within 15% of sqrt(J(1-J)/128), the spread of ideal MinHash (a
    /// family whose functions were correlated would spread far wider: with all 128 alike, by
    /// sqrt(128)).
    #[test]
    fn estimates_spread_as_ideal_minhash_does() {
        let h = MinHasher::new(128, Shingling::Word(1), 1);
        let mut state = 7u64;
        let mut draw = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            xxh3_64(&state.to_le_bytes())
        };
        let sign = |xs: &[u64]| {
            let xs: Vec<u32> = xs.iter().map(|&x| fold32(x)).collect();
            let mut sig = vec![0; 128];
            h.arch.dispatch(MinFold {
                a: &h.a,
                b: &h.b,
                xs: &xs,
                sig: &mut sig,
            });
            sig
        };
        let truth = 45.0 / 55.0;
        let (mut sum, mut squares) = (0.0, 0.0);
        let trials = 400;
        for _ in 0..trials {
            let shared: Vec<u64> = (0..45).map(|_| draw()).collect();
            let (mut a, mut b) = (shared.clone(), shared);
            a.extend((0..5).map(|_| draw()));
            b.extend((0..5).map(|_| draw()));
            let est = estimate_jaccard(&sign(&a), &sign(&b));
            sum += est;
            squares += (est - truth) * (est - truth);
        }
        let mean = sum / f64::from(trials);
        let rmse = (squares / f64::from(trials)).sqrt();
        let ideal = (truth * (1.0 - truth) / 128.0).sqrt();
        assert!((mean - truth).abs() < 0.01, "mean {mean} vs {truth}");
        assert!(rmse < 1.15 * ideal, "spread {rmse} vs ideal {ideal}");
    }

    /// MinHash estimates agree with true Jaccard: with 256 functions the standard error is
    /// sqrt(J(1-J)/256) <= 0.032, so every estimate lies within 0.13 (4 standard errors) and the
    /// mean absolute error stays below 0.03.
    #[test]
    fn estimates_track_true_jaccard() {
        let h = MinHasher::new(256, Shingling::Word(1), 7);
        let mut total = 0.0;
        let mut n = 0;
        for overlap in (0..=100).step_by(5) {
            // Sets {0..100} and {100-overlap .. 200-overlap}: true Jaccard overlap/(200-overlap).
            let a: String = (0..100).map(|i| format!("w{i} ")).collect();
            let b: String = (100 - overlap..200 - overlap)
                .map(|i| format!("w{i} "))
                .collect();
            let truth = jaccard(&Shingling::Word(1).set(&a), &Shingling::Word(1).set(&b));
            assert!((truth - overlap as f64 / (200 - overlap) as f64).abs() < 1e-12);
            let est = estimate_jaccard(&sig(&h, &a), &sig(&h, &b));
            assert!(
                (est - truth).abs() < 0.13,
                "overlap {overlap}: {est} vs {truth}"
            );
            total += (est - truth).abs();
            n += 1;
        }
        assert!(
            total / f64::from(n) < 0.03,
            "mean error {}",
            total / f64::from(n)
        );
    }
}
