//! The ROUGE-L novelty filter of self-instruct / Alpaca, exact and sub-quadratic.
//!
//! Items are judged in order; each is compared with every earlier *kept* item (the seeds come
//! first and are always kept) and rejected when its highest ROUGE-L F1 is greater than the
//! threshold. F1 is rouge_score's f64 expression `2·p·r / (p + r)` with `p = lcs / |pool item|`
//! and `r = lcs / |candidate|`; the decision follows that expression, ties and rounding included.
//!
//! Why it is fast and still exact: F1 ≥ τ implies `lcs ≥ τ·(|a|+|b|)/2` and `lcs ≤ min(|a|,|b|)`
//! and `lcs ≤` the multiset token overlap. So a length filter and prefix filtering (index only
//! the rarest tokens of each item, enough of them that two items sharing that many tokens must
//! share one of those) find every pair that can reach τ; only they get an LCS, bit-parallel.
//! Pruning runs at τ a hair below the threshold (and below the reporting floor), so rounding in
//! the f64 expression can never hide a match. Candidates are judged in parallel blocks against
//! the pool as it stood before the block, then in order within the block: the result is the
//! sequential one.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::lcs::LcsQuery;
use crate::tokenize::Tokenizer;
use crate::vocab::Sequences;

/// Margin below which a bound is treated as possibly reaching the threshold.
const SLACK: f64 = 1e-9;

/// How the ROUGE-L filter decides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeConfig {
    /// Reject a candidate whose highest F1 against the kept pool is greater than this.
    pub threshold: f64,
    /// How texts become tokens.
    pub tokenizer: Tokenizer,
    /// The nearest kept item is reported only when it scores at least this much (lower floors
    /// prune less and run slower; the exhaustive path always reports it).
    pub floor: f64,
}

impl Default for RougeConfig {
    fn default() -> Self {
        RougeConfig {
            threshold: 0.7,
            tokenizer: Tokenizer::Auto,
            floor: 0.6,
        }
    }
}

/// The most similar earlier kept item.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nearest {
    /// Its index among the items passed in (seeds first).
    pub index: usize,
    /// Its ROUGE-L F1 with the candidate.
    pub score: f64,
}

/// What the filter decided for one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeVerdict {
    /// Whether it joined the pool.
    pub kept: bool,
    /// The highest-scoring earlier kept item (the earliest on ties), when it scores at least the
    /// floor. For a rejected candidate this is the item it duplicates.
    pub nearest: Option<Nearest>,
}

/// rouge_score's ROUGE-L F1 for an LCS of `lcs` between a candidate of `len_candidate` tokens
/// (the target) and a pool item of `len_pool` tokens (the prediction), in its exact f64 order of
/// operations.
pub fn rouge_l_f1(lcs: usize, len_candidate: usize, len_pool: usize) -> f64 {
    if lcs == 0 || len_candidate == 0 || len_pool == 0 {
        return 0.0;
    }
    let precision = lcs as f64 / len_pool as f64;
    let recall = lcs as f64 / len_candidate as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Judges `texts[seeds..]` in order against the pool that starts as `texts[..seeds]`. Returns one
/// verdict per candidate. Sub-quadratic; equal to [`rouge_filter_exhaustive`].
pub fn rouge_filter(texts: &[&str], seeds: usize, config: &RougeConfig) -> Vec<RougeVerdict> {
    rouge_filter_with_progress(texts, seeds, config, &|_| {})
}

/// [`rouge_filter`], calling `progress` with the number of candidates judged since the last call.
pub fn rouge_filter_with_progress(
    texts: &[&str],
    seeds: usize,
    config: &RougeConfig,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<RougeVerdict> {
    let seq = Sequences::tokenize(texts, config.tokenizer);
    filter_sequences(&seq, seeds, config, progress)
}

/// The brute-force reference: every candidate against every earlier kept item.
pub fn rouge_filter_exhaustive(
    texts: &[&str],
    seeds: usize,
    config: &RougeConfig,
) -> Vec<RougeVerdict> {
    rouge_filter_exhaustive_with_progress(texts, seeds, config, &|_| {})
}

/// [`rouge_filter_exhaustive`], calling `progress` as candidates are judged.
pub fn rouge_filter_exhaustive_with_progress(
    texts: &[&str],
    seeds: usize,
    config: &RougeConfig,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<RougeVerdict> {
    let seq = Sequences::tokenize(texts, config.tokenizer);
    let seeds = seeds.min(seq.len());
    let mut pool: Vec<usize> = (0..seeds).collect();
    let mut out = Vec::with_capacity(seq.len() - seeds);
    let mut query = LcsQuery::new();
    for c in seeds..seq.len() {
        let cand = seq.get(c);
        query.set(cand);
        let mut best: Option<Nearest> = None;
        for &p in &pool {
            let other = seq.get(p);
            let score = rouge_l_f1(query.lcs(other), cand.len(), other.len());
            if best.is_none_or(|b| score > b.score) {
                best = Some(Nearest { index: p, score });
            }
        }
        let kept = best.is_none_or(|b| b.score <= config.threshold);
        if kept {
            pool.push(c);
        }
        out.push(RougeVerdict {
            kept,
            nearest: best,
        });
        progress(1);
    }
    out
}

/// The prefix-filtered, parallel filter over already tokenized sequences.
pub(crate) fn filter_sequences(
    seq: &Sequences,
    seeds: usize,
    config: &RougeConfig,
    progress: &(dyn Fn(usize) + Sync),
) -> Vec<RougeVerdict> {
    let seeds = seeds.min(seq.len());
    let tau = config.threshold.min(config.floor) - SLACK;
    let prefixes = Prefixes::build(seq, tau);
    let mut index = Index::default();
    for s in 0..seeds {
        index.insert(s as u32, seq.get(s).len(), prefixes.get(s));
    }
    let mut out = Vec::with_capacity(seq.len() - seeds);
    let mut start = seeds;
    let mut block = 64;
    while start < seq.len() {
        let end = (start + block).min(seq.len());
        // Against the pool as it stood before this block, in parallel.
        let outer: Vec<Option<Nearest>> = (start..end)
            .into_par_iter()
            .map_init(Matcher::default, |m, c| {
                m.best(seq, &prefixes, &index, c, tau)
            })
            .collect();
        // Then in order, against what this block kept before each candidate.
        let mut local = Index::default();
        let mut matcher = Matcher::default();
        for (c, outer_best) in (start..end).zip(outer) {
            let inner_best = matcher.best(seq, &prefixes, &local, c, tau);
            let best = better(outer_best, inner_best);
            let kept = best.is_none_or(|b| b.score <= config.threshold);
            if kept {
                local.insert(c as u32, seq.get(c).len(), prefixes.get(c));
            }
            let nearest = best.filter(|b| b.score >= config.floor || b.score > config.threshold);
            out.push(RougeVerdict { kept, nearest });
        }
        index.absorb(local);
        progress(end - start);
        start = end;
        // Larger blocks once the pool is large: the parallel part dominates.
        block = (block * 2).min(4096);
    }
    out
}

/// The higher score; on equal scores the earlier item.
fn better(a: Option<Nearest>, b: Option<Nearest>) -> Option<Nearest> {
    match (a, b) {
        (Some(x), Some(y)) => {
            if y.score > x.score || (y.score == x.score && y.index < x.index) {
                Some(y)
            } else {
                Some(x)
            }
        }
        (x, None) => x,
        (None, y) => y,
    }
}

/// Each item's prefix: the first elements of its token multiset in global rarity order, where an
/// element is (token, occurrence number) so that multiset overlap becomes set overlap.
struct Prefixes {
    elements: Vec<u64>,
    offsets: Vec<usize>,
}

impl Prefixes {
    fn build(seq: &Sequences, tau: f64) -> Prefixes {
        // Rarity: how many items hold each token (fewer first; ties by id).
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
        let mut rank = vec![0u32; seq.vocab_len()];
        for (r, &t) in order.iter().enumerate() {
            rank[t as usize] = r as u32;
        }
        let per_item: Vec<Vec<u64>> = (0..seq.len())
            .into_par_iter()
            .map(|i| {
                let tokens = seq.get(i);
                let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
                let mut elems: Vec<u64> = tokens
                    .iter()
                    .map(|&t| {
                        let k = counts.entry(t).or_insert(0);
                        *k += 1;
                        (u64::from(rank[t as usize]) << 24) | u64::from(*k - 1)
                    })
                    .collect();
                elems.sort_unstable();
                elems.truncate(prefix_len(tokens.len(), tau));
                elems
            })
            .collect();
        let mut elements = Vec::with_capacity(per_item.iter().map(Vec::len).sum());
        let mut offsets = Vec::with_capacity(seq.len() + 1);
        offsets.push(0);
        for p in per_item {
            elements.extend(p);
            offsets.push(elements.len());
        }
        Prefixes { elements, offsets }
    }

    fn get(&self, i: usize) -> &[u64] {
        &self.elements[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// How many of an item's rarest elements must be indexed so that any partner that can reach
/// `tau` shares one of them. A partner within the length bound needs an overlap of at least
/// `len·tau/(2−tau)`; rounding down keeps the prefix long enough.
fn prefix_len(len: usize, tau: f64) -> usize {
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
struct Index {
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
    fn insert(&mut self, item: u32, len: usize, prefix: &[u64]) {
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
    fn absorb(&mut self, other: Index) {
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
struct Matcher {
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
    fn best(
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
        assert_eq!(prefix_len(10, 0.7 - SLACK), 6);
        assert_eq!(prefix_len(1, 0.7), 1);
        assert_eq!(prefix_len(0, 0.7), 0);
        assert_eq!(prefix_len(7, 0.0), 7);
    }

    #[test]
    fn the_f1_expression_is_rouge_scores() {
        // From ../shared/bench/ref/rouge_float_cases.json: exactly 7/10, but f64 says more.
        assert!(rouge_l_f1(7, 7, 13) > 0.7);
        assert_eq!(rouge_l_f1(7, 10, 10), 0.7);
        assert_eq!(rouge_l_f1(0, 5, 5), 0.0);
        assert_eq!(rouge_l_f1(3, 0, 5), 0.0);
    }
}
