//! The machinery behind the ROUGE-L filters: rarity-ordered token elements, prefixes, the
//! inverted index and the matcher that applies the length and PPJoin positional bounds before
//! any LCS.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::lcs::LcsQuery;
use crate::rouge_rule::{Nearest, better, rouge_l_f1};
use crate::vocab::Sequences;

/// Each item's prefix: the first elements of its token multiset in global rarity order, where an
/// element is (token, occurrence number) so that multiset overlap becomes set overlap.
pub(crate) struct Prefixes {
    elements: Vec<u64>,
    offsets: Vec<usize>,
}

impl Default for Prefixes {
    fn default() -> Self {
        Prefixes::empty()
    }
}

impl Prefixes {
    /// No prefixes yet.
    pub(crate) fn empty() -> Prefixes {
        Prefixes {
            elements: Vec::new(),
            offsets: vec![0],
        }
    }

    /// Every item's prefix, with rarity measured over the items themselves (tokens held by fewer
    /// items first; ties by id).
    pub(crate) fn build(seq: &Sequences, tau: f64) -> Prefixes {
        let mut df = vec![0u32; seq.vocab_len()];
        let mut seen = vec![u32::MAX; seq.vocab_len()];
        for i in 0..seq.len() {
            for &t in seq.get(i) {
                if seen[t as usize] != i as u32 {
                    seen[t as usize] = i as u32;
                    df[t as usize] += 1;
                }
            }
        }
        let mut order: Vec<u32> = (0..seq.vocab_len() as u32).collect();
        order.sort_by_key(|&t| (df[t as usize], t));
        let mut rank = vec![0u64; seq.vocab_len()];
        for (r, &t) in order.iter().enumerate() {
            rank[t as usize] = r as u64;
        }
        let per_item: Vec<Vec<u64>> = (0..seq.len())
            .into_par_iter()
            .map(|i| prefix_elements(seq.get(i), |t| rank[t as usize], tau))
            .collect();
        let mut p = Prefixes::empty();
        for elems in per_item {
            p.push(&elems);
        }
        p
    }

    pub(crate) fn push(&mut self, elems: &[u64]) {
        self.elements.extend_from_slice(elems);
        self.offsets.push(self.elements.len());
    }

    pub(crate) fn pop(&mut self) {
        if self.offsets.len() > 1 {
            self.offsets.pop();
            let end = self.offsets.last().copied().unwrap_or(0);
            self.elements.truncate(end);
        }
    }

    pub(crate) fn get(&self, i: usize) -> &[u64] {
        &self.elements[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// The prefix of one token sequence: its elements (token, occurrence number), so that multiset
/// overlap becomes set overlap, ordered by `rank` (rarest first, ranks below 2^48) and cut to
/// [`prefix_len`].
pub(crate) fn prefix_elements(tokens: &[u32], rank: impl Fn(u32) -> u64, tau: f64) -> Vec<u64> {
    let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
    let mut elems: Vec<u64> = tokens
        .iter()
        .map(|&t| {
            let k = counts.entry(t).or_insert(0);
            *k += 1;
            // A token repeated 65536 times in one text shares its last element number; only
            // such pathological texts could be paired late, never wrongly.
            (rank(t) << 16) | u64::from((*k - 1).min(0xFFFF))
        })
        .collect();
    elems.sort_unstable();
    elems.truncate(prefix_len(tokens.len(), tau));
    elems
}

/// How many of an item's rarest elements must be indexed so that any partner that can reach
/// `tau` shares one of them. A partner within the length bound needs an overlap of at least
/// `len·tau/(2−tau)`; rounding down keeps the prefix long enough.
pub(crate) fn prefix_len(len: usize, tau: f64) -> usize {
    if len == 0 {
        return 0;
    }
    if tau <= 0.0 {
        return len;
    }
    let min_overlap = ((len as f64) * tau / (2.0 - tau)).floor() as usize;
    len - min_overlap.clamp(1, len) + 1
}

/// Inverted index from prefix element to the items holding it, with the element's position in
/// the item's rarity-ordered element list (for the positional bound).
#[derive(Default)]
pub(crate) struct Index {
    postings: FxHashMap<u64, Vec<Posting>>,
}

/// One item in a posting list: the item, where the element sits in its order, and its length
/// (kept here so the length and position bounds need no look-up elsewhere).
#[derive(Debug, Clone, Copy)]
struct Posting {
    item: u32,
    pos: u32,
    len: u32,
}

impl Index {
    pub(crate) fn insert(&mut self, item: u32, len: usize, prefix: &[u64]) {
        for (pos, &e) in prefix.iter().enumerate() {
            let posting = Posting {
                item,
                pos: pos as u32,
                len: len as u32,
            };
            self.postings.entry(e).or_default().push(posting);
        }
    }

    /// Moves every posting of `other` (items that come after all of ours) in.
    pub(crate) fn absorb(&mut self, other: Index) {
        for (e, items) in other.postings {
            self.postings.entry(e).or_default().extend(items);
        }
    }
}

/// The least LCS (hence multiset overlap) two sequences of `m` and `n` tokens need for an F1 of
/// at least `tau`: `2·lcs/(m+n) >= tau`. Rounded so as never to ask for too much.
fn required_overlap(m: usize, n: usize, tau: f64) -> i32 {
    ((tau * (m + n) as f64 / 2.0) - 1e-7).ceil().max(1.0) as i32
}

/// Per-thread scratch space for finding a candidate's best match.
#[derive(Default)]
pub(crate) struct Matcher {
    query: LcsQuery,
    /// Overlap found so far with each item in the candidate's prefix, or -1 once the item is
    /// ruled out; valid where `stamp[item] == current`.
    overlap: Vec<i32>,
    stamp: Vec<u32>,
    current: u32,
    touched: Vec<u32>,
}

impl Matcher {
    /// The best item of `index` for candidate `c` scoring at least `tau`.
    ///
    /// Prefix filtering with PPJoin's positional bound: scanning the candidate's prefix elements
    /// in rarity order, an item met at its own position `j` while the candidate is at `i` can
    /// still share at most `found + 1 + min(m−i−1, n−j−1)` elements; when that is below the
    /// overlap the pair needs, the item is ruled out without an LCS.
    pub(crate) fn best(
        &mut self,
        seq: &Sequences,
        prefixes: &Prefixes,
        index: &Index,
        c: usize,
        tau: f64,
    ) -> Option<Nearest> {
        let cand = seq.get(c);
        if cand.is_empty() || index.postings.is_empty() {
            return None;
        }
        if self.stamp.len() < seq.len() {
            self.stamp.resize(seq.len(), 0);
            self.overlap.resize(seq.len(), 0);
        }
        self.current = self.current.wrapping_add(1);
        if self.current == 0 {
            self.stamp.fill(0);
            self.current = 1;
        }
        self.touched.clear();
        let m = cand.len();
        let mf = m as f64;
        for (i, e) in prefixes.get(c).iter().enumerate() {
            let Some(items) = index.postings.get(e) else {
                continue;
            };
            for p in items {
                let n = p.len as usize;
                let j = p.pos as usize;
                // Length bound: F1 <= 2·min/(m+n).
                let nf = n as f64;
                if 2.0 * mf.min(nf) / (mf + nf) < tau {
                    continue;
                }
                // Position bound before any look-up: whatever was found so far is at most
                // min(i, j) elements.
                let rest = (m - i - 1).min(n - j - 1);
                let need = required_overlap(m, n, tau);
                if (i.min(j) + 1 + rest) < need as usize {
                    continue;
                }
                let it = p.item as usize;
                if self.stamp[it] != self.current {
                    self.stamp[it] = self.current;
                    self.overlap[it] = 0;
                    self.touched.push(p.item);
                } else if self.overlap[it] < 0 {
                    continue;
                }
                if self.overlap[it] + 1 + rest as i32 >= need {
                    self.overlap[it] += 1;
                } else {
                    self.overlap[it] = -1;
                }
            }
        }
        let mut best: Option<Nearest> = None;
        let mut query_set = false;
        for &item in &self.touched {
            let it = item as usize;
            if self.overlap[it] <= 0 {
                continue;
            }
            if !query_set {
                self.query.set(cand);
                query_set = true;
            }
            let other = seq.get(it);
            let score = rouge_l_f1(self.query.lcs(other), m, other.len());
            if score >= tau {
                best = better(best, Some(Nearest { index: it, score }));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_long_enough_for_the_bound() {
        // tau 0.7: a 10-token item needs overlap >= 10*0.7/1.3 = 5.38 with any partner, so
        // indexing 10 - 5 + 1 = 6 elements suffices.
        assert_eq!(prefix_len(10, 0.7 - 1e-9), 6);
        assert_eq!(prefix_len(1, 0.7), 1);
        assert_eq!(prefix_len(0, 0.7), 0);
        assert_eq!(prefix_len(7, 0.0), 7);
    }
}
