//! The ROUGE-L rule itself, shared by the batch filter (`rouge.rs`), its index (`rouge_index.rs`)
//! and the one-at-a-time pool (`rouge_pool.rs`): rouge_score's F1 expression, the
//! configuration, and the decision (reject when the best F1 is greater than the threshold;
//! report the nearest item from the floor up). A leaf: it imports no other ROUGE-L module.

use crate::tokenize::Tokenizer;

/// Margin below which a bound is treated as possibly reaching the threshold.
pub(crate) const SLACK: f64 = 1e-9;

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

impl RougeConfig {
    /// Whether a candidate whose best match in the pool is `best` is kept: it has none, or that
    /// match's F1 is at most the threshold.
    pub fn keeps(&self, best: Option<Nearest>) -> bool {
        best.is_none_or(|b| b.score <= self.threshold)
    }

    /// Whether the nearest pool item, scoring `score`, is reported for a candidate that was
    /// `kept`: always for a rejected candidate (it is what the candidate duplicates), from the
    /// floor up for a kept one.
    pub fn reports(&self, score: f64, kept: bool) -> bool {
        score >= self.floor || !kept
    }

    /// The score the index prunes at: a hair below both the threshold and the floor, so that
    /// f64 rounding can never hide a match.
    pub(crate) fn prune_below(&self) -> f64 {
        self.threshold.min(self.floor) - SLACK
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

/// The higher score; on equal scores the earlier item.
pub(crate) fn better(a: Option<Nearest>, b: Option<Nearest>) -> Option<Nearest> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_f1_expression_is_rouge_scores() {
        // From ../shared/bench/ref/rouge_float_cases.json: exactly 7/10, but f64 says more.
        assert!(rouge_l_f1(7, 7, 13) > 0.7);
        assert_eq!(rouge_l_f1(7, 10, 10), 0.7);
        assert_eq!(rouge_l_f1(0, 5, 5), 0.0);
        assert_eq!(rouge_l_f1(3, 0, 5), 0.0);
    }

    #[test]
    fn kept_up_to_the_threshold_and_reported_from_the_floor() {
        let c = RougeConfig::default();
        let at = |score| Some(Nearest { index: 0, score });
        assert!(c.keeps(None) && c.keeps(at(0.7)) && !c.keeps(at(0.7000001)));
        assert!(c.reports(0.6, true) && !c.reports(0.59, true) && c.reports(0.1, false));
    }
}
