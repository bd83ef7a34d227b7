//! MinHash signatures of shingle sets: character n-grams of normalised text by default (Chinese
//! needs no segmenter), or word n-grams.

use instill_core::normalize;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

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
    pub fn hashes(self, text: &str, mut emit: impl FnMut(u64)) {
        let text = normalize(text);
        if text.is_empty() {
            return;
        }
        match self {
            Shingling::Char(n) => {
                let n = n.max(1);
                let bounds: Vec<usize> = text
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(text.len()))
                    .collect();
                let chars = bounds.len() - 1;
                if chars <= n {
                    emit(xxh3_64(text.as_bytes()));
                    return;
                }
                for i in 0..=chars - n {
                    emit(xxh3_64(&text.as_bytes()[bounds[i]..bounds[i + n]]));
                }
            }
            Shingling::Word(n) => {
                let n = n.max(1);
                let words = Tokenizer::Char.tokens(&text);
                if words.is_empty() {
                    return;
                }
                let hashes: Vec<u64> = words.iter().map(|w| xxh3_64(w.as_bytes())).collect();
                let shingle = |ws: &[u64]| {
                    let mut bytes = Vec::with_capacity(ws.len() * 8);
                    for w in ws {
                        bytes.extend_from_slice(&w.to_le_bytes());
                    }
                    xxh3_64(&bytes)
                };
                if hashes.len() <= n {
                    emit(shingle(&hashes));
                    return;
                }
                for win in hashes.windows(n) {
                    emit(shingle(win));
                }
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

/// Computes MinHash signatures with `num_perm` hash functions of the multiply-shift family
/// `h(x) = (a·x + b) >> 32` over 64-bit shingle hashes (a odd), seeded deterministically.
#[derive(Debug, Clone)]
pub struct MinHasher {
    a: Vec<u64>,
    b: Vec<u64>,
    shingling: Shingling,
}

impl MinHasher {
    /// A hasher of `num_perm` functions over `shingling`, from `seed`.
    pub fn new(num_perm: usize, shingling: Shingling, seed: u64) -> MinHasher {
        let a = (0..num_perm as u64)
            .map(|i| xxh3_64_with_seed(&i.to_le_bytes(), seed) | 1)
            .collect();
        let b = (0..num_perm as u64)
            .map(|i| xxh3_64_with_seed(&i.to_le_bytes(), seed ^ 0x9E37_79B9_7F4A_7C15))
            .collect();
        MinHasher { a, b, shingling }
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
        sig.fill(u32::MAX);
        let mut any = false;
        self.shingling.hashes(text, |x| {
            any = true;
            for ((s, &a), &b) in sig.iter_mut().zip(&self.a).zip(&self.b) {
                let h = (a.wrapping_mul(x).wrapping_add(b) >> 32) as u32;
                *s = (*s).min(h);
            }
        });
        any
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

    #[test]
    fn exact_jaccard_of_sets() {
        assert_eq!(jaccard(&[1, 2, 3], &[2, 3, 4]), 0.5);
        assert_eq!(jaccard(&[1], &[1]), 1.0);
        assert_eq!(jaccard(&[], &[]), 0.0);
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
