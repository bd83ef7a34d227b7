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

use crate::lcs::LcsQuery;
use crate::rouge_index::{Index, Matcher, Prefixes};
use crate::rouge_rule::{Nearest, RougeConfig, better, rouge_l_f1};
use crate::vocab::Sequences;

/// What the filter decided for one candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeVerdict {
    /// Whether it joined the pool.
    pub kept: bool,
    /// The highest-scoring earlier kept item (the earliest on ties), when it scores at least the
    /// floor. For a rejected candidate this is the item it duplicates.
    pub nearest: Option<Nearest>,
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
        let kept = config.keeps(best);
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
    let tau = config.prune_below();
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
            let kept = config.keeps(best);
            if kept {
                local.insert(c as u32, seq.get(c).len(), prefixes.get(c));
            }
            let nearest = best.filter(|b| config.reports(b.score, kept));
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
