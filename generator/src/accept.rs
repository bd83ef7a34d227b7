//! Judging generated tasks in order: the quality rules (the module `instill filter` uses), then
//! exact and ROUGE-L dedup against the seeds and everything the run accepted before.

use instill_core::{Lang, Record, norm_hash, record_lang};
use instill_dedup::{RougeConfig, RougePool, Rules};
use rustc_hash::FxHashMap;
use xxhash_rust::xxh3::xxh3_64;

/// Identifies a judged task before it has a record id: `(request idx << 20) | item idx`, or a
/// seed (`SEED | position`).
pub type Key = u64;

/// The bit that marks a seed's key.
pub const SEED: Key = 1 << 63;

/// The key of item `item` of request `idx`.
pub fn key(idx: i64, item: usize) -> Key {
    ((idx as u64) << 20) | (item as u64 & 0xF_FFFF)
}

/// What happened to a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Whether it was accepted.
    pub accepted: bool,
    /// The rule or method that rejected it.
    pub reason: Option<&'static str>,
    /// The task it duplicates (a seed's key for seeds).
    pub dup_of: Option<Key>,
    /// The similarity behind the verdict.
    pub score: Option<f64>,
    /// Its normalised-content hash.
    pub norm_hash: String,
    /// Its language.
    pub lang: Lang,
}

/// The accept/reject state of a run: rules, the exact-hash set and the ROUGE-L pool.
#[derive(Debug)]
pub struct Acceptor {
    rules: Rules,
    pool: RougePool,
    exact: FxHashMap<String, Key>,
    /// Rule verdicts by raw-text hash: a reply repeated word for word is judged once.
    rule_cache: FxHashMap<u64, Option<&'static str>>,
}

/// Entries kept in the rule cache before it is cleared (bounds its memory).
const RULE_CACHE_MAX: usize = 1 << 20;

impl Acceptor {
    /// An acceptor whose pool starts with `seeds` (their instructions also fix token rarity).
    pub fn new(rules: Rules, rouge: RougeConfig, seeds: &[Record]) -> Acceptor {
        let reference: Vec<&str> = seeds.iter().map(|s| s.instruction.as_str()).collect();
        let mut a = Acceptor {
            rules,
            pool: RougePool::new(rouge, &reference),
            exact: FxHashMap::default(),
            rule_cache: FxHashMap::default(),
        };
        for (i, s) in seeds.iter().enumerate() {
            a.pool.insert(SEED | i as u64, &s.instruction);
            a.exact.entry(norm_hash(s)).or_insert(SEED | i as u64);
        }
        a
    }

    /// Adds a task accepted earlier (when a run resumes).
    pub fn restore(&mut self, key: Key, instruction: &str, norm_hash: String) {
        self.pool.insert(key, instruction);
        self.exact.entry(norm_hash).or_insert(key);
    }

    /// How many tasks the pool holds, seeds included.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Judges `record` (task `key`); when accepted it joins the pool.
    pub fn judge(&mut self, key: Key, record: &Record) -> Judged {
        let hash = norm_hash(record);
        let lang = record_lang(record);
        let raw = raw_hash(record);
        let rule = match self.rule_cache.get(&raw) {
            Some(&r) => r,
            None => {
                let r = self.rules.check(record);
                if self.rule_cache.len() >= RULE_CACHE_MAX {
                    self.rule_cache.clear();
                }
                self.rule_cache.insert(raw, r);
                r
            }
        };
        let reject = |reason, dup_of, score, norm_hash| Judged {
            accepted: false,
            reason: Some(reason),
            dup_of,
            score,
            norm_hash,
            lang,
        };
        if let Some(rule) = rule {
            return reject(rule, None, None, hash);
        }
        if let Some(&first) = self.exact.get(&hash) {
            return reject("exact", Some(first), Some(1.0), hash);
        }
        let v = self.pool.judge(key, &record.instruction);
        if !v.kept {
            let (dup, score) = v.nearest.map_or((None, None), |(k, s)| (Some(k), Some(s)));
            return reject("rouge_l", dup, score, hash);
        }
        self.exact.insert(hash.clone(), key);
        Judged {
            accepted: true,
            reason: None,
            dup_of: None,
            score: v.nearest.map(|(_, s)| s),
            norm_hash: hash,
            lang,
        }
    }
}

fn raw_hash(r: &Record) -> u64 {
    let mut buf = Vec::with_capacity(r.instruction.len() + r.input.len() + r.output.len() + 2);
    buf.extend_from_slice(r.instruction.as_bytes());
    buf.push(0x1f);
    buf.extend_from_slice(r.input.as_bytes());
    buf.push(0x1f);
    buf.extend_from_slice(r.output.as_bytes());
    xxh3_64(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_then_exact_then_rouge() {
        let seeds = vec![Record::new(
            "Give three tips for staying healthy.",
            "",
            "Eat well, sleep well, move.",
        )];
        let mut a = Acceptor::new(Rules::default(), RougeConfig::default(), &seeds);
        let ok = a.judge(
            key(0, 0),
            &Record::new(
                "Explain how rainbows form after rain.",
                "",
                "Sunlight is refracted by droplets.",
            ),
        );
        assert!(ok.accepted);
        let short = a.judge(key(0, 1), &Record::new("Explain.", "", "x y z"));
        assert_eq!(short.reason, Some("instruction_too_short"));
        let same = a.judge(
            key(0, 2),
            &Record::new(
                "explain how RAINBOWS form after rain",
                "",
                "Sunlight is refracted by droplets!",
            ),
        );
        assert_eq!((same.reason, same.dup_of), (Some("exact"), Some(key(0, 0))));
        let seed_copy = a.judge(key(1, 0), &seeds[0]);
        assert_eq!(
            (seed_copy.reason, seed_copy.dup_of),
            (Some("exact"), Some(SEED))
        );
        let near = a.judge(
            key(1, 1),
            &Record::new(
                "Explain how rainbows form after a rain.",
                "",
                "Different words here.",
            ),
        );
        assert_eq!(
            (near.reason, near.dup_of),
            (Some("rouge_l"), Some(key(0, 0)))
        );
        assert!(near.score.unwrap() > 0.7);
        assert_eq!(a.pool_len(), 2);
    }
}
