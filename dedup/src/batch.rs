//! The batch curation pipeline behind `instill dedup`: exact duplicates, then MinHash-LSH near
//! duplicates, then the ROUGE-L novelty rule, over records in id order. Each stage sees only the
//! records the earlier stages kept (the alive mask), and its verdicts are mapped back from the
//! stage's own indices to record ids. Nothing is stored here: the caller loads the records and
//! writes the [`Curation`] back.

use std::collections::BTreeMap;
use std::time::Instant;

use instill_core::{Reason, Record, text_hash};
use rayon::prelude::*;
use serde::Serialize;

use crate::exact::exact_dups;
use crate::filters::Rules;
use crate::lsh::{LshConfig, Texts, Verify, lsh_clusters};
use crate::minhash::{MinHasher, Shingling};
use crate::rouge::{
    RougeVerdict, rouge_filter_exhaustive_with_progress, rouge_filter_with_progress,
};
use crate::rouge_rule::RougeConfig;

/// What exact and MinHash dedup compare (ROUGE-L always compares instructions: a conversation's
/// first user turn, see [`Record::first_user_turn`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Field {
    /// The whole record: system, instruction, input, output and history.
    #[default]
    Record,
    /// The instruction alone (a conversation's first user turn).
    Instruction,
}

impl Field {
    /// The text MinHash shingles for `r`: the non-empty parts joined by spaces, then the history.
    pub fn text(self, r: &Record) -> String {
        let mut t = String::new();
        self.text_into(r, &mut t);
        t
    }

    /// [`Field::text`] into `t` (cleared first): one buffer reused from record to record.
    pub fn text_into(self, r: &Record, t: &mut String) {
        t.clear();
        match self {
            Field::Instruction => t.push_str(r.first_user_turn()),
            Field::Record => {
                for part in [&r.system, &r.instruction, &r.input, &r.output] {
                    if !part.is_empty() {
                        if !t.is_empty() {
                            t.push(' ');
                        }
                        t.push_str(part);
                    }
                }
                for h in &r.history {
                    t.push(' ');
                    t.push_str(h.user());
                    t.push(' ');
                    t.push_str(h.assistant());
                }
            }
        }
    }

    /// The key exact dedup compares: the stored normalised-content hash, or the instruction's.
    fn exact_key(self, item: &Item<'_>) -> String {
        match self {
            Field::Record => item.norm_hash.to_string(),
            Field::Instruction => text_hash(item.record.first_user_turn()),
        }
    }
}

/// The MinHash-LSH stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinHashStage {
    /// Jaccard similarity from which records are near duplicates (0 to 1).
    pub threshold: f64,
    /// Permutations per signature.
    pub num_perm: usize,
    /// Character or word shingles, and their size.
    pub shingling: Shingling,
    /// How candidate pairs are confirmed.
    pub verify: Verify,
}

/// The ROUGE-L stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeStage {
    /// Threshold, tokenizer and reporting floor.
    pub config: RougeConfig,
    /// Compare every candidate with every kept item (the reference path) instead of the index.
    pub exhaustive: bool,
}

/// Which stages run, in the order exact → MinHash → ROUGE-L.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CurateConfig {
    /// What exact and MinHash dedup compare.
    pub field: Field,
    /// Whether exact dedup runs.
    pub exact: bool,
    /// MinHash-LSH, when it runs.
    pub minhash: Option<MinHashStage>,
    /// ROUGE-L, when it runs.
    pub rouge: Option<RougeStage>,
}

/// A configuration the pipeline refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CurateError {
    /// A threshold or floor outside 0..=1 (or not a number).
    #[error("the {what} must be between 0 and 1, not {value}")]
    OutOfRange {
        /// Which number.
        what: &'static str,
        /// The number given.
        value: f64,
    },
    /// MinHash signatures of no permutations.
    #[error("MinHash needs at least one permutation")]
    NoPermutations,
    /// Shingles of no characters or words.
    #[error("MinHash shingles need at least one character or word")]
    EmptyShingles,
}

impl CurateConfig {
    /// Refuses numbers no stage can work with.
    pub fn check(&self) -> Result<(), CurateError> {
        let unit = |what, value: f64| {
            if (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(CurateError::OutOfRange { what, value })
            }
        };
        if let Some(m) = &self.minhash {
            unit("MinHash threshold", m.threshold)?;
            if m.num_perm == 0 {
                return Err(CurateError::NoPermutations);
            }
            if let Shingling::Char(0) | Shingling::Word(0) = m.shingling {
                return Err(CurateError::EmptyShingles);
            }
        }
        if let Some(r) = &self.rouge {
            unit("ROUGE-L threshold", r.config.threshold)?;
            unit("ROUGE-L floor", r.config.floor)?;
        }
        Ok(())
    }
}

/// One record to curate.
#[derive(Debug, Clone, Copy)]
pub struct Item<'a> {
    /// Its id (records are passed in id order; the earlier of two duplicates is kept).
    pub id: i64,
    /// Its normalised-content hash ([`instill_core::norm_hash`]).
    pub norm_hash: &'a str,
    /// The record.
    pub record: &'a Record,
}

/// A record the pipeline rejects.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The record.
    pub id: i64,
    /// The stage: `exact`, `minhash` or `rouge_l`.
    pub reason: Reason,
    /// The record it duplicates (none for a seed).
    pub dup_of: Option<i64>,
    /// The similarity behind the verdict.
    pub score: Option<f64>,
    /// Its MinHash cluster (the cluster's first record).
    pub cluster_id: Option<i64>,
}

/// A record's nearest earlier kept item by ROUGE-L.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeNearest {
    /// The record.
    pub id: i64,
    /// The nearest record, or `None` when the nearest item is a seed.
    pub nearest: Option<i64>,
    /// Their ROUGE-L F1.
    pub score: f64,
}

/// What one stage did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageSummary {
    /// Records the stage judged (those the earlier stages kept).
    pub checked: usize,
    /// Records it rejected.
    pub rejected: usize,
    /// Wall time of the stage.
    pub seconds: f64,
    /// Its threshold (MinHash, ROUGE-L).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// LSH bands (MinHash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bands: Option<usize>,
    /// LSH rows per band (MinHash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    /// Kept records in a cluster with others (MinHash).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clusters: Option<usize>,
    /// The tokenizer's name (ROUGE-L).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<&'static str>,
}

/// Everything the pipeline decided, for the caller to store (or only report).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Curation {
    /// Rejected records, stage by stage, each stage in id order.
    pub rejections: Vec<Rejection>,
    /// Kept records in a MinHash cluster: (record, cluster's first record).
    pub clusters: Vec<(i64, i64)>,
    /// ROUGE-L nearest neighbours (from the floor up, and always for a rejected record).
    pub nearest: Vec<RougeNearest>,
    /// The exact stage, when it ran.
    pub exact: Option<StageSummary>,
    /// The MinHash stage, when it ran.
    pub minhash: Option<StageSummary>,
    /// The ROUGE-L stage, when it ran.
    pub rouge_l: Option<StageSummary>,
}

/// A long step of the pipeline, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Computing MinHash signatures.
    MinHashSignatures,
    /// Judging candidates by ROUGE-L.
    RougeL,
}

/// Receives progress; calls may come from several threads.
pub trait Progress: Sync {
    /// `step` starts, over `total` records.
    fn begin(&self, step: Step, total: usize);
    /// `n` more records of the current step are done.
    fn advance(&self, n: usize);
    /// The current step is over.
    fn end(&self);
}

/// No progress display.
impl Progress for () {
    fn begin(&self, _: Step, _: usize) {}
    fn advance(&self, _: usize) {}
    fn end(&self) {}
}

/// Runs the stages `config` names over `items` (in id order). `seeds` (instructions) join the
/// ROUGE-L pool first, always kept, so records too close to a seed are rejected (`dup_of` none).
pub fn curate(
    items: &[Item<'_>],
    seeds: &[&str],
    config: &CurateConfig,
    progress: &dyn Progress,
) -> Result<Curation, CurateError> {
    config.check()?;
    let mut run = Run {
        items,
        alive: vec![true; items.len()],
        out: Curation::default(),
    };
    if config.exact {
        run.out.exact = Some(run.exact(config.field));
    }
    if let Some(stage) = &config.minhash {
        run.out.minhash = Some(run.minhash(config.field, stage, progress));
    }
    if let Some(stage) = &config.rouge {
        run.out.rouge_l = Some(run.rouge(seeds, stage, progress));
    }
    Ok(run.out)
}

/// What the quality rules decided over a batch (`instill filter`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RulesOutcome {
    /// Records failing a rule, in id order; the reason is the first rule failed.
    pub rejections: Vec<Rejection>,
    /// Rejections per rule name.
    pub by_rule: BTreeMap<&'static str, usize>,
}

/// Checks every item against `rules` (in parallel, the same [`Rules::check`] generation uses);
/// a conversation is judged by its opening exchange ([`Record::opening`]).
pub fn apply_rules(items: &[Item<'_>], rules: &Rules) -> RulesOutcome {
    let verdicts: Vec<Option<Reason>> = items
        .par_iter()
        .map(|r| rules.check(&r.record.opening()))
        .collect();
    let mut out = RulesOutcome::default();
    for (item, rule) in items.iter().zip(verdicts) {
        if let Some(rule) = rule {
            *out.by_rule.entry(rule.as_str()).or_default() += 1;
            out.rejections.push(Rejection {
                id: item.id,
                reason: rule,
                dup_of: None,
                score: None,
                cluster_id: None,
            });
        }
    }
    out
}

/// The texts MinHash signs: those of the live items, each joined when it is hashed.
struct LiveTexts<'i, 'a> {
    items: &'i [Item<'a>],
    live: &'i [usize],
    field: Field,
}

impl Texts for LiveTexts<'_, '_> {
    fn len(&self) -> usize {
        self.live.len()
    }

    fn text<'s>(&'s self, i: usize, buf: &'s mut String) -> &'s str {
        self.field.text_into(self.items[self.live[i]].record, buf);
        buf
    }
}

/// The pipeline's state between stages.
struct Run<'i, 'a> {
    items: &'i [Item<'a>],
    /// Whether each item is still kept.
    alive: Vec<bool>,
    out: Curation,
}

impl Run<'_, '_> {
    /// Indices of the items still kept.
    fn live(&self) -> Vec<usize> {
        (0..self.items.len()).filter(|&i| self.alive[i]).collect()
    }

    fn reject(&mut self, i: usize, rejection: Rejection) {
        self.alive[i] = false;
        self.out.rejections.push(rejection);
    }

    fn exact(&mut self, field: Field) -> StageSummary {
        let t = Instant::now();
        let keys: Vec<String> = self.items.par_iter().map(|r| field.exact_key(r)).collect();
        let mut m = StageSummary {
            checked: self.items.len(),
            ..StageSummary::default()
        };
        for (i, dup) in exact_dups(keys.iter()).into_iter().enumerate() {
            if let Some(first) = dup {
                m.rejected += 1;
                let rejection = Rejection {
                    id: self.items[i].id,
                    reason: Reason::Exact,
                    dup_of: Some(self.items[first].id),
                    score: Some(1.0),
                    cluster_id: None,
                };
                self.reject(i, rejection);
            }
        }
        m.seconds = t.elapsed().as_secs_f64();
        m
    }

    fn minhash(
        &mut self,
        field: Field,
        stage: &MinHashStage,
        progress: &dyn Progress,
    ) -> StageSummary {
        let t = Instant::now();
        let live = self.live();
        let items = self.items;
        // Each record's text is built in a buffer of the thread hashing it: the texts of a
        // large set are never all held (52,000 Alpaca records join to 20 MB).
        let texts = LiveTexts {
            items,
            live: &live,
            field,
        };
        let hasher = MinHasher::new(stage.num_perm, stage.shingling, 1);
        let sets: Option<Vec<Vec<u64>>> = (stage.verify == Verify::Exact).then(|| {
            live.par_iter()
                .map(|&i| stage.shingling.set(&field.text(items[i].record)))
                .collect()
        });
        let config = LshConfig::for_threshold(stage.threshold, stage.num_perm, stage.verify);
        progress.begin(Step::MinHashSignatures, live.len());
        let advance = |k| progress.advance(k);
        let verdicts = lsh_clusters(&hasher, &texts, &config, sets.as_deref(), &advance);
        progress.end();
        let mut m = StageSummary {
            checked: live.len(),
            threshold: Some(stage.threshold),
            bands: Some(config.bands),
            rows: Some(config.rows),
            ..StageSummary::default()
        };
        let mut clusters = 0;
        for (k, v) in verdicts.iter().enumerate() {
            let i = live[k];
            let cluster_id = v.in_cluster.then(|| items[live[v.cluster]].id);
            if v.kept {
                if let Some(c) = cluster_id {
                    clusters += 1;
                    self.out.clusters.push((items[i].id, c));
                }
                continue;
            }
            m.rejected += 1;
            let rejection = Rejection {
                id: items[i].id,
                reason: Reason::Minhash,
                dup_of: v.dup_of.map(|(j, _)| items[live[j]].id),
                score: v.dup_of.map(|(_, s)| s),
                cluster_id,
            };
            self.reject(i, rejection);
        }
        m.clusters = Some(clusters);
        m.seconds = t.elapsed().as_secs_f64();
        m
    }

    fn rouge(
        &mut self,
        seeds: &[&str],
        stage: &RougeStage,
        progress: &dyn Progress,
    ) -> StageSummary {
        let t = Instant::now();
        let live = self.live();
        let items = self.items;
        let mut texts: Vec<&str> = seeds.to_vec();
        texts.extend(live.iter().map(|&i| items[i].record.first_user_turn()));
        let config = &stage.config;
        progress.begin(Step::RougeL, live.len());
        let tick = |k: usize| progress.advance(k);
        let verdicts: Vec<RougeVerdict> = if stage.exhaustive {
            rouge_filter_exhaustive_with_progress(&texts, seeds.len(), config, &tick)
        } else {
            rouge_filter_with_progress(&texts, seeds.len(), config, &tick)
        };
        progress.end();
        let mut m = StageSummary {
            checked: live.len(),
            threshold: Some(config.threshold),
            tokenizer: Some(config.tokenizer.name()),
            ..StageSummary::default()
        };
        // Items are the seeds, then the live records: map an item back to a record id.
        let record_id = |item: usize| item.checked_sub(seeds.len()).map(|k| items[live[k]].id);
        for (k, v) in verdicts.iter().enumerate() {
            let i = live[k];
            // The exhaustive path reports every nearest item: keep the same ones as the index.
            if let Some(n) = v.nearest.filter(|n| config.reports(n.score, v.kept)) {
                let nearest = RougeNearest {
                    id: items[i].id,
                    nearest: record_id(n.index),
                    score: n.score,
                };
                self.out.nearest.push(nearest);
            }
            if !v.kept {
                m.rejected += 1;
                let rejection = Rejection {
                    id: items[i].id,
                    reason: Reason::RougeL,
                    dup_of: v.nearest.and_then(|n| record_id(n.index)),
                    score: v.nearest.map(|n| n.score),
                    cluster_id: None,
                };
                self.reject(i, rejection);
            }
        }
        m.seconds = t.elapsed().as_secs_f64();
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::Tokenizer;
    use instill_core::norm_hash;

    fn items<'a>(records: &'a [Record], hashes: &'a [String]) -> Vec<Item<'a>> {
        records
            .iter()
            .zip(hashes)
            .enumerate()
            .map(|(i, (record, h))| Item {
                id: 10 + i as i64,
                norm_hash: h,
                record,
            })
            .collect()
    }

    #[test]
    fn stages_see_only_what_earlier_stages_kept_and_map_back_to_ids() {
        let texts = [
            "Write a short poem about the sea in spring.",
            "write a short poem about the SEA in spring",
            "Explain how rainbows form after the rain stops.",
            "Explain how rainbows form after a rain stops.",
            "List three uses of copper in electrical wiring.",
        ];
        let records: Vec<Record> = texts.iter().map(|t| Record::new(*t, "", "ok")).collect();
        let hashes: Vec<String> = records.iter().map(norm_hash).collect();
        let items = items(&records, &hashes);
        let config = CurateConfig {
            field: Field::Record,
            exact: true,
            minhash: None,
            rouge: Some(RougeStage {
                config: RougeConfig {
                    tokenizer: Tokenizer::Alpaca,
                    ..RougeConfig::default()
                },
                exhaustive: false,
            }),
        };
        let seeds = ["List three uses of copper in electrical wiring."];
        let c = curate(&items, &seeds, &config, &()).unwrap();
        let got: Vec<(i64, &str, Option<i64>)> = c
            .rejections
            .iter()
            .map(|r| (r.id, r.reason.as_str(), r.dup_of))
            .collect();
        assert_eq!(
            got,
            vec![
                (11, "exact", Some(10)),
                (13, "rouge_l", Some(12)),
                (14, "rouge_l", None)
            ]
        );
        let (exact, rouge) = (c.exact.unwrap(), c.rouge_l.unwrap());
        assert_eq!((exact.checked, exact.rejected), (5, 1));
        assert_eq!((rouge.checked, rouge.rejected), (4, 2));
        assert!(
            c.nearest
                .iter()
                .any(|n| n.id == 13 && n.nearest == Some(12))
        );
        // The exhaustive path decides and reports the same.
        let exhaustive = CurateConfig {
            rouge: config.rouge.map(|r| RougeStage {
                exhaustive: true,
                ..r
            }),
            ..config
        };
        let e = curate(&items, &seeds, &exhaustive, &()).unwrap();
        assert_eq!((e.rejections, e.nearest), (c.rejections, c.nearest));
    }

    #[test]
    fn minhash_clusters_name_the_first_record() {
        let base = "the quick brown fox jumps over the lazy dog near the river bank today";
        let records = vec![
            Record::new(base, "", ""),
            Record::new(
                "something else entirely about cooking pasta at home",
                "",
                "",
            ),
            Record::new(format!("{base}!"), "", ""),
        ];
        let hashes: Vec<String> = (0..3).map(|i| format!("h{i}")).collect();
        let items = items(&records, &hashes);
        let config = CurateConfig {
            field: Field::Instruction,
            exact: false,
            minhash: Some(MinHashStage {
                threshold: 0.5,
                num_perm: 128,
                shingling: Shingling::Word(3),
                verify: Verify::Exact,
            }),
            rouge: None,
        };
        let c = curate(&items, &[], &config, &()).unwrap();
        assert_eq!(c.rejections.len(), 1);
        assert_eq!(
            (c.rejections[0].id, c.rejections[0].reason.as_str()),
            (12, "minhash")
        );
        assert_eq!(c.rejections[0].cluster_id, Some(10));
        assert_eq!(c.clusters, vec![(10, 10)]);
    }

    #[test]
    fn rules_reject_with_the_first_failed_rule() {
        let records = vec![
            Record::new("Explain how rainbows form after rain.", "", "Refraction."),
            Record::new("Explain how rainbows form after rain.", "", ""),
        ];
        let hashes = vec![String::new(), String::new()];
        let out = apply_rules(&items(&records, &hashes), &Rules::default());
        assert_eq!(out.rejections.len(), 1);
        assert_eq!(
            (out.rejections[0].id, out.rejections[0].reason.as_str()),
            (11, "empty_output")
        );
        assert_eq!(out.by_rule.get("empty_output"), Some(&1));
    }

    #[test]
    fn refuses_numbers_no_stage_works_with() {
        let config = CurateConfig {
            rouge: Some(RougeStage {
                config: RougeConfig {
                    threshold: 1.5,
                    ..RougeConfig::default()
                },
                exhaustive: false,
            }),
            ..CurateConfig::default()
        };
        let err = curate(&[], &[], &config, &()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the ROUGE-L threshold must be between 0 and 1, not 1.5"
        );
        assert!(!err.to_string().contains("--"));
    }
}
