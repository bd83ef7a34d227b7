//! The ROUGE-L rule one candidate at a time, for generation: a growing pool of kept texts (the
//! seeds first), each new candidate judged against it and added when kept.

use rustc_hash::FxHashMap;

use crate::rouge_index::{Index, Matcher, Prefixes, prefix_elements};
use crate::rouge_rule::RougeConfig;
use crate::vocab::Sequences;

/// What the pool decided for a candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PoolVerdict {
    /// Whether the candidate joined the pool.
    pub kept: bool,
    /// The most similar pool member (its caller-given id) and the F1, when it reaches the floor
    /// or, for a rejected candidate, always.
    pub nearest: Option<(u64, f64)>,
}

/// A ROUGE-L pool that grows one text at a time, with the same decisions as the batch filter.
///
/// Token rarity (which decides what is indexed, not what is decided) is fixed up front from
/// reference texts, usually the seeds: tokens they use rarely, and tokens they never use, come
/// first.
#[derive(Default)]
pub struct RougePool {
    config: RougeConfig,
    tau: f64,
    seq: Sequences,
    prefixes: Prefixes,
    index: Index,
    matcher: Matcher,
    /// Reference document frequency per token id (0 for tokens the reference never used).
    ref_df: Vec<u32>,
    /// The caller's id of every pool member, by position.
    ids: Vec<u64>,
    scratch: Vec<u32>,
}

impl std::fmt::Debug for RougePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RougePool")
            .field("members", &self.ids.len())
            .finish()
    }
}

impl RougePool {
    /// An empty pool deciding by `config`, with token rarity taken from `reference`.
    pub fn new(config: RougeConfig, reference: &[&str]) -> RougePool {
        let mut pool = RougePool {
            config,
            tau: config.prune_below(),
            seq: Sequences::empty(),
            ..RougePool::default()
        };
        let mut counts: FxHashMap<u32, u32> = FxHashMap::default();
        for text in reference {
            let mut seen = Vec::new();
            let seq = &mut pool.seq;
            config
                .tokenizer
                .tokenize(text, |t| seen.push(seq.intern(t)));
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                *counts.entry(t).or_default() += 1;
            }
        }
        pool.ref_df = vec![0; pool.seq.vocab_len()];
        for (t, n) in counts {
            pool.ref_df[t as usize] = n;
        }
        pool
    }

    /// How many texts the pool holds.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds `text` (with the caller's `id`) to the pool unconditionally (seeds, or members known
    /// to be kept when a run resumes).
    pub fn insert(&mut self, id: u64, text: &str) {
        let elems = self.stage(text);
        self.commit(id, &elems);
    }

    /// Judges `text` against the pool: rejected when its highest F1 with a member is greater than
    /// the threshold, otherwise added (as `id`).
    pub fn judge(&mut self, id: u64, text: &str) -> PoolVerdict {
        let elems = self.stage(text);
        let c = self.seq.len() - 1;
        let best = self
            .matcher
            .best(&self.seq, &self.prefixes, &self.index, c, self.tau);
        let kept = self.config.keeps(best);
        let nearest = best
            .filter(|b| self.config.reports(b.score, kept))
            .map(|b| (self.ids[b.index], b.score));
        if kept {
            self.commit(id, &elems);
        } else {
            self.seq.pop();
            self.prefixes.pop();
        }
        PoolVerdict { kept, nearest }
    }

    /// Tokenizes `text` and appends it (and its prefix) as the last sequence; returns the prefix.
    fn stage(&mut self, text: &str) -> Vec<u64> {
        self.scratch.clear();
        let (seq, scratch) = (&mut self.seq, &mut self.scratch);
        self.config
            .tokenizer
            .tokenize(text, |t| scratch.push(seq.intern(t)));
        self.seq.push(&self.scratch);
        // Rank: reference frequency, then id; tokens never seen in the reference are rarest.
        let ref_df = &self.ref_df;
        let rank = |t: u32| {
            let df = u64::from(ref_df.get(t as usize).copied().unwrap_or(0));
            (df.min(0xFF_FFFF) << 24) | u64::from(t).min(0xFF_FFFF)
        };
        let elems = prefix_elements(&self.scratch, rank, self.tau);
        self.prefixes.push(&elems);
        elems
    }

    fn commit(&mut self, id: u64, elems: &[u64]) {
        let c = self.seq.len() - 1;
        self.index.insert(c as u32, self.seq.get(c).len(), elems);
        self.ids.push(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rouge::rouge_filter;
    use crate::tokenize::Tokenizer;

    #[test]
    fn one_at_a_time_equals_the_batch_filter() {
        let items = crate::rouge_tests::alpaca_items(1200);
        let texts: Vec<&str> = items.iter().map(String::as_str).collect();
        for threshold in [0.7, 0.4] {
            let config = RougeConfig {
                threshold,
                floor: 0.3,
                tokenizer: Tokenizer::Alpaca,
            };
            let batch = rouge_filter(&texts, 175, &config);
            let mut pool = RougePool::new(config, &texts[..175]);
            for (i, t) in texts[..175].iter().enumerate() {
                pool.insert(i as u64, t);
            }
            for (k, t) in texts[175..].iter().enumerate() {
                let v = pool.judge((175 + k) as u64, t);
                assert_eq!(v.kept, batch[k].kept, "candidate {k}");
                assert_eq!(
                    v.nearest,
                    batch[k].nearest.map(|n| (n.index as u64, n.score)),
                    "candidate {k}"
                );
            }
            assert_eq!(pool.len(), 175 + batch.iter().filter(|v| v.kept).count());
        }
    }
}
