//! Judging generated tasks in order: the quality rules (the module `instill filter` uses), then
//! exact and ROUGE-L dedup against the seeds and everything the run accepted before. A
//! conversation is judged by its opening: the rules read its first exchange, ROUGE-L its first
//! user turn (exact dedup compares the whole conversation); an empty turn anywhere rejects it.

use instill_core::{Lang, Reason, Record, norm_hash, record_lang};
use instill_dedup::{ExactIndex, RougeConfig, RougePool, Rules};
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
    pub reason: Option<Reason>,
    /// The task it duplicates (a seed's key for seeds).
    pub dup_of: Option<Key>,
    /// The similarity behind the verdict.
    pub score: Option<f64>,
    /// Its normalised-content hash.
    pub norm_hash: String,
    /// Its language.
    pub lang: Lang,
}

impl Judged {
    /// The verdict on `record` rejected for `reason` before the rules and dedup saw it (a
    /// generated instruction cut off, an empty one): it does not join the pool.
    pub fn refused(record: &Record, reason: Reason) -> Judged {
        Judged {
            accepted: false,
            reason: Some(reason),
            dup_of: None,
            score: None,
            norm_hash: norm_hash(record),
            lang: record_lang(record),
        }
    }
}

/// The accept/reject state of a run: rules, the exact-hash set and the ROUGE-L pool.
#[derive(Debug)]
pub struct Acceptor {
    rules: Rules,
    pool: RougePool,
    exact: ExactIndex<String, Key>,
    /// Rule verdicts by raw-text hash: a reply repeated word for word is judged once.
    rule_cache: FxHashMap<u64, Option<Reason>>,
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
            exact: ExactIndex::default(),
            rule_cache: FxHashMap::default(),
        };
        for (i, s) in seeds.iter().enumerate() {
            a.pool.insert(SEED | i as u64, &s.instruction);
            a.exact.insert(norm_hash(s), SEED | i as u64);
        }
        a
    }

    /// Adds a task accepted earlier (when a run resumes): its instruction (a conversation's
    /// first user turn) and its normalised-content hash.
    pub fn restore(&mut self, key: Key, instruction: &str, norm_hash: String) {
        self.pool.insert(key, instruction);
        self.exact.insert(norm_hash, key);
    }

    /// How many tasks the pool holds, seeds included.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Judges `record` (task `key`); when accepted it joins the pool. Text no database stores
    /// (see [`storable`]) is rejected first, as [`Reason::Unstorable`]: store [`storable`]'s copy.
    pub fn judge(&mut self, key: Key, record: &Record) -> Judged {
        if !is_storable(record) {
            let clean = storable(record.clone());
            return Judged {
                accepted: false,
                reason: Some(Reason::Unstorable),
                dup_of: None,
                score: None,
                norm_hash: norm_hash(&clean),
                lang: record_lang(&clean),
            };
        }
        let hash = norm_hash(record);
        let lang = record_lang(record);
        let opening = record.opening();
        let raw = raw_hash(&opening);
        let rule = match self.rule_cache.get(&raw) {
            Some(&r) => r,
            None => {
                let r = self.rules.check(&opening);
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
        if !record.history.is_empty() && record.has_empty_turn() {
            return reject(Reason::EmptyTurn, None, None, hash);
        }
        if let Some(first) = self.exact.first(&hash) {
            return reject(Reason::Exact, Some(first), Some(1.0), hash);
        }
        let v = self.pool.judge(key, record.first_user_turn());
        if !v.kept {
            let (dup, score) = v.nearest.map_or((None, None), |(k, s)| (Some(k), Some(s)));
            return reject(Reason::RougeL, dup, score, hash);
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

/// The one character Rust strings may hold that a store refuses: Postgres rejects U+0000 in
/// text (COPY and parameters alike), and SQLite's C string functions (the JSON of an export)
/// stop at it. Both engines judge it the same way, so they keep the same records.
const UNSTORABLE_CHAR: char = '\0';

/// Whether every text of `r` can be stored.
fn is_storable(r: &Record) -> bool {
    let ok = |s: &str| !s.contains(UNSTORABLE_CHAR);
    ok(&r.instruction)
        && ok(&r.input)
        && ok(&r.output)
        && ok(&r.system)
        && r.history.iter().all(|e| ok(&e.0) && ok(&e.1))
}

/// `text` with every unstorable character replaced by U+FFFD.
pub fn storable_text(text: &str) -> String {
    text.replace(UNSTORABLE_CHAR, "\u{fffd}")
}

/// `r` with every unstorable character replaced by U+FFFD (the rejected task is kept, readable).
pub fn storable(mut r: Record) -> Record {
    if is_storable(&r) {
        return r;
    }
    for s in [
        &mut r.instruction,
        &mut r.input,
        &mut r.output,
        &mut r.system,
    ] {
        *s = storable_text(s);
    }
    for e in &mut r.history {
        e.0 = storable_text(&e.0);
        e.1 = storable_text(&e.1);
    }
    r
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
        assert_eq!(short.reason, Some(Reason::InstructionTooShort));
        let same = a.judge(
            key(0, 2),
            &Record::new(
                "explain how RAINBOWS form after rain",
                "",
                "Sunlight is refracted by droplets!",
            ),
        );
        assert_eq!(
            (same.reason, same.dup_of),
            (Some(Reason::Exact), Some(key(0, 0)))
        );
        let seed_copy = a.judge(key(1, 0), &seeds[0]);
        assert_eq!(
            (seed_copy.reason, seed_copy.dup_of),
            (Some(Reason::Exact), Some(SEED))
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
            (Some(Reason::RougeL), Some(key(0, 0)))
        );
        assert!(near.score.unwrap() > 0.7);
        assert_eq!(a.pool_len(), 2);
    }

    #[test]
    fn a_conversation_is_judged_by_its_opening() {
        let mut a = Acceptor::new(Rules::default(), RougeConfig::default(), &[]);
        let conv = |first: &str, last: &str| {
            let mut r = Record::new(last, "", "Sure, here is more detail on that.");
            r.history = vec![instill_core::Exchange(
                first.into(),
                "Sunlight is refracted by droplets.".into(),
            )];
            r
        };
        // The last user turn alone would fail the length rule; the opening passes.
        let first = a.judge(
            key(1, 0),
            &conv("Explain how rainbows form after rain.", "More?"),
        );
        assert!(first.accepted, "{first:?}");
        // Another conversation with the same opening is a ROUGE-L duplicate of the first,
        // whatever its follow-ups.
        let same = a.judge(
            key(3, 0),
            &conv("Explain how rainbows form after the rain.", "And at night?"),
        );
        assert_eq!(
            (same.reason, same.dup_of),
            (Some(Reason::RougeL), Some(key(1, 0)))
        );
        // The same follow-up after another opening is not.
        let other = a.judge(
            key(5, 0),
            &conv("Describe how glaciers carve valleys.", "More?"),
        );
        assert!(other.accepted);
        let mut blank = conv("List three uses of copper wire.", "More?");
        blank.output = "  ".into();
        assert_eq!(a.judge(key(7, 0), &blank).reason, Some(Reason::EmptyTurn));
    }

    #[test]
    fn a_nul_is_rejected_as_unstorable_before_any_rule_and_stored_replaced() {
        let mut a = Acceptor::new(Rules::default(), RougeConfig::default(), &[]);
        let mut nul = Record::new(
            "Explain how rainbows\0 form after rain.",
            "",
            "Sunlight\0 is refracted.",
        );
        nul.history = vec![instill_core::Exchange("a\0".into(), "b".into())];
        let j = a.judge(key(0, 0), &nul);
        assert_eq!((j.accepted, j.reason), (false, Some(Reason::Unstorable)));
        // Not in the pool: the same task without the NUL is new.
        let clean = storable(nul);
        assert_eq!(
            clean.instruction,
            "Explain how rainbows\u{fffd} form after rain."
        );
        assert_eq!(clean.output, "Sunlight\u{fffd} is refracted.");
        assert_eq!(clean.history[0].0, "a\u{fffd}");
        assert_eq!(j.norm_hash, norm_hash(&clean));
        let ok = Record::new("Explain how rainbows form after rain.", "", "Sunlight.");
        assert!(a.judge(key(0, 1), &ok).accepted);
        assert_eq!(storable(ok.clone()), ok);
        // Short and unstorable: the NUL decides (whatever else is wrong, it cannot be stored).
        let short = a.judge(key(0, 2), &Record::new("x\0", "", "y"));
        assert_eq!(short.reason, Some(Reason::Unstorable));
    }
}
