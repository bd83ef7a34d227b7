//! Selection by score (`instill select`): keep records whose score passes the thresholds, then
//! the best k (or the best fraction), optionally diversity-aware in Deita's way: best-scored
//! first, each candidate dropped when its similarity to a record already kept is above the
//! threshold (ROUGE-L of the instructions, or MinHash Jaccard of the whole record).
//!
//! Order is by score, best first (the scorer says whether higher or lower is better), ties by
//! record id, so a selection is a function of the scores alone.

use instill_core::Reason;
use rustc_hash::FxHashMap;

use crate::batch::Rejection;
use crate::lsh::optimal_bands;
use crate::minhash::{MinHasher, Shingling, estimate_jaccard};
use crate::rouge_pool::RougePool;
use crate::rouge_rule::RougeConfig;

/// How many records to keep, after the thresholds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Budget {
    /// Every record that passes.
    All,
    /// The best k.
    TopK(usize),
    /// The best fraction (0–1) of the scored candidates, rounded down.
    TopFraction(f64),
}

/// How two records' similarity is measured for diversity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Similarity {
    /// ROUGE-L F1 of the instructions (self-instruct's measure).
    RougeL(RougeConfig),
    /// Estimated Jaccard similarity of MinHash signatures of the whole record's text.
    MinHash {
        /// Permutations per signature.
        num_perm: usize,
        /// Shingles.
        shingling: Shingling,
    },
}

/// What `select` is told.
#[derive(Debug, Clone, PartialEq)]
pub struct SelectConfig {
    /// Keep only scores at or above this.
    pub min_score: Option<f64>,
    /// Keep only scores at or below this.
    pub max_score: Option<f64>,
    /// How many of those to keep.
    pub budget: Budget,
    /// Whether a higher score is better (false for perplexity).
    pub higher_is_better: bool,
    /// Drop a candidate more similar than the threshold to a record kept before it.
    pub diverse: Option<(Similarity, f64)>,
    /// Leave records without a score alone instead of rejecting them as `unscored`.
    pub keep_unscored: bool,
}

/// One candidate: a record's id, its score (None: not scored, or no score in the reply), and
/// the texts diversity compares.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// `records.id`.
    pub id: i64,
    /// Its score.
    pub score: Option<f64>,
    /// Its instruction (ROUGE-L).
    pub instruction: &'a str,
    /// Its whole text (MinHash).
    pub text: &'a str,
}

/// The records `cfg` does not keep, with the reason (`low_score`, `not_diverse` with the kept
/// record it is too similar to and the similarity, `unscored`) and, for a score reason, the
/// score.
pub fn select(candidates: &[Candidate<'_>], cfg: &SelectConfig) -> Vec<Rejection> {
    let mut out = Vec::new();
    let mut scored: Vec<(f64, i64, usize)> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match c.score.filter(|s| s.is_finite()) {
            Some(s) => scored.push((s, c.id, i)),
            None if cfg.keep_unscored => {}
            None => out.push(rejection(c.id, Reason::Unscored, None, None)),
        }
    }
    let budget = match cfg.budget {
        Budget::All => usize::MAX,
        Budget::TopK(k) => k,
        Budget::TopFraction(f) => (f * scored.len() as f64).floor() as usize,
    };
    scored.sort_by(|a, b| {
        let by_score = if cfg.higher_is_better {
            b.0.total_cmp(&a.0)
        } else {
            a.0.total_cmp(&b.0)
        };
        by_score.then(a.1.cmp(&b.1))
    });
    let mut pool = cfg.diverse.map(|(sim, t)| Pool::new(sim, t));
    let mut kept = 0usize;
    for (score, id, i) in scored {
        let passes =
            cfg.min_score.is_none_or(|m| score >= m) && cfg.max_score.is_none_or(|m| score <= m);
        if !passes || kept >= budget {
            out.push(rejection(id, Reason::LowScore, None, Some(score)));
            continue;
        }
        if let Some(pool) = &mut pool
            && let Some((near, sim)) = pool.too_close(id, &candidates[i])
        {
            out.push(rejection(id, Reason::NotDiverse, Some(near), Some(sim)));
            continue;
        }
        kept += 1;
    }
    out.sort_by_key(|r| r.id);
    out
}

fn rejection(id: i64, reason: Reason, dup_of: Option<i64>, score: Option<f64>) -> Rejection {
    Rejection {
        id,
        reason,
        dup_of,
        score,
        cluster_id: None,
    }
}

/// The records kept so far, for diversity.
enum Pool {
    Rouge(Box<RougePool>),
    MinHash(MinHashPool),
}

impl Pool {
    fn new(sim: Similarity, threshold: f64) -> Pool {
        match sim {
            Similarity::RougeL(config) => Pool::Rouge(Box::new(RougePool::new(
                RougeConfig {
                    threshold,
                    floor: threshold,
                    ..config
                },
                &[],
            ))),
            Similarity::MinHash {
                num_perm,
                shingling,
            } => Pool::MinHash(MinHashPool::new(num_perm, shingling, threshold)),
        }
    }

    /// The kept record `c` is too similar to, with the similarity; otherwise `c` joins.
    fn too_close(&mut self, id: i64, c: &Candidate<'_>) -> Option<(i64, f64)> {
        match self {
            Pool::Rouge(p) => {
                let v = p.judge(id as u64, c.instruction);
                if v.kept {
                    None
                } else {
                    v.nearest.map(|(near, s)| (near as i64, s))
                }
            }
            Pool::MinHash(p) => p.judge(id, c.text),
        }
    }
}

/// Kept records' MinHash signatures in LSH buckets: a candidate is compared with the records
/// sharing a band with it, and joins when none is above the threshold.
struct MinHashPool {
    hasher: MinHasher,
    threshold: f64,
    rows: usize,
    buckets: FxHashMap<(usize, u64), Vec<usize>>,
    members: Vec<(i64, Vec<u32>)>,
}

impl MinHashPool {
    fn new(num_perm: usize, shingling: Shingling, threshold: f64) -> MinHashPool {
        let (_, rows) = optimal_bands(threshold, num_perm);
        MinHashPool {
            hasher: MinHasher::new(num_perm, shingling, 1),
            threshold,
            rows: rows.max(1),
            buckets: FxHashMap::default(),
            members: Vec::new(),
        }
    }

    fn judge(&mut self, id: i64, text: &str) -> Option<(i64, f64)> {
        let mut sig = vec![0u32; self.hasher.num_perm()];
        if !self.hasher.signature_into(text, &mut sig) {
            return None; // no shingles: nothing to compare, kept
        }
        let keys: Vec<(usize, u64)> = sig
            .chunks(self.rows)
            .enumerate()
            .map(|(b, band)| (b, band_hash(band)))
            .collect();
        let mut best: Option<(i64, f64)> = None;
        for key in &keys {
            for &m in self.buckets.get(key).map_or(&[][..], Vec::as_slice) {
                let (mid, msig) = &self.members[m];
                let j = estimate_jaccard(&sig, msig);
                if j > self.threshold && best.is_none_or(|(_, b)| j > b) {
                    best = Some((*mid, j));
                }
            }
        }
        if best.is_none() {
            let at = self.members.len();
            for key in keys {
                self.buckets.entry(key).or_default().push(at);
            }
            self.members.push((id, sig));
        }
        best
    }
}

fn band_hash(band: &[u32]) -> u64 {
    band.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::Tokenizer;

    fn cands(scores: &[Option<f64>]) -> Vec<Candidate<'static>> {
        const TEXTS: [&str; 6] = [
            "write a poem about the sea",
            "write a poem about the sea at night",
            "explain photosynthesis to a child",
            "list three prime numbers",
            "translate hello into french",
            "summarize the plot of hamlet",
        ];
        scores
            .iter()
            .enumerate()
            .map(|(i, &score)| Candidate {
                id: i as i64 + 1,
                score,
                instruction: TEXTS[i % TEXTS.len()],
                text: TEXTS[i % TEXTS.len()],
            })
            .collect()
    }

    fn cfg() -> SelectConfig {
        SelectConfig {
            min_score: None,
            max_score: None,
            budget: Budget::All,
            higher_is_better: true,
            diverse: None,
            keep_unscored: false,
        }
    }

    fn rejected(r: &[Rejection]) -> Vec<(i64, &'static str)> {
        r.iter().map(|r| (r.id, r.reason.as_str())).collect()
    }

    #[test]
    fn a_threshold_keeps_exactly_the_scores_at_or_above_it() {
        let c = cands(&[Some(4.5), Some(4.49), Some(9.0), None, Some(1.0)]);
        let r = select(
            &c,
            &SelectConfig {
                min_score: Some(4.5),
                ..cfg()
            },
        );
        assert_eq!(
            rejected(&r),
            [(2, "low_score"), (4, "unscored"), (5, "low_score")]
        );
        assert_eq!(r[0].score, Some(4.49), "the score is kept with the verdict");
        let keep = select(
            &c,
            &SelectConfig {
                min_score: Some(4.5),
                keep_unscored: true,
                ..cfg()
            },
        );
        assert_eq!(rejected(&keep), [(2, "low_score"), (5, "low_score")]);
    }

    #[test]
    fn top_k_and_fraction_take_the_best_with_ties_by_id() {
        let c = cands(&[Some(7.0), Some(9.0), Some(7.0), Some(8.0)]);
        let r = select(
            &c,
            &SelectConfig {
                budget: Budget::TopK(2),
                ..cfg()
            },
        );
        assert_eq!(rejected(&r), [(1, "low_score"), (3, "low_score")]);
        let r = select(
            &c,
            &SelectConfig {
                budget: Budget::TopK(3),
                ..cfg()
            },
        );
        assert_eq!(
            rejected(&r),
            [(3, "low_score")],
            "the tie at the edge goes to the lower id"
        );
        let r = select(
            &c,
            &SelectConfig {
                budget: Budget::TopFraction(0.5),
                ..cfg()
            },
        );
        assert_eq!(rejected(&r), [(1, "low_score"), (3, "low_score")]);
        let ppl = select(
            &c,
            &SelectConfig {
                budget: Budget::TopK(1),
                higher_is_better: false,
                ..cfg()
            },
        );
        assert_eq!(
            rejected(&ppl),
            [(2, "low_score"), (3, "low_score"), (4, "low_score")]
        );
    }

    #[test]
    fn diversity_keeps_the_better_of_two_near_duplicates() {
        // 1 and 2 are near-duplicates; 2 scores higher, so 1 goes.
        let c = cands(&[Some(6.0), Some(8.0), Some(5.0), Some(4.0)]);
        let rouge = Similarity::RougeL(RougeConfig {
            threshold: 0.7,
            tokenizer: Tokenizer::Auto,
            floor: 0.7,
        });
        let r = select(
            &c,
            &SelectConfig {
                diverse: Some((rouge, 0.7)),
                ..cfg()
            },
        );
        assert_eq!(rejected(&r), [(1, "not_diverse")]);
        assert_eq!(r[0].dup_of, Some(2));
        assert!(r[0].score.is_some_and(|s| s > 0.7));
        // With a budget of 2, the near-duplicate does not use a place.
        let r = select(
            &c,
            &SelectConfig {
                diverse: Some((rouge, 0.7)),
                budget: Budget::TopK(2),
                ..cfg()
            },
        );
        assert_eq!(rejected(&r), [(1, "not_diverse"), (4, "low_score")]);
        let mh = Similarity::MinHash {
            num_perm: 128,
            shingling: Shingling::Word(2),
        };
        let r = select(
            &c,
            &SelectConfig {
                diverse: Some((mh, 0.5)),
                ..cfg()
            },
        );
        assert_eq!(rejected(&r), [(1, "not_diverse")]);
    }
}
