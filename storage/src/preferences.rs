//! Preference pairs: the `preferences` table (migration 0011). `instill pairs` writes one row
//! per instruction it finished (a pair, or why there is none); an import of a DPO or ranking
//! layout writes one pair per row it read. Exports and `train --dpo` read the pairs with their
//! prompts (the records they answer).

use instill_core::{Answer, Lang, NoPair, Pair, Record};
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Backend, Db, on_pool, placeholders};
use crate::error::{StorageError, decode};
use crate::read::StatusFilter;
use crate::writer::{Tx, Writer, on_tx};

/// A preference row about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPreference {
    /// `records.id`: the prompt.
    pub record_id: i64,
    /// The sampling run (`instill pairs`); None when imported.
    pub run_id: Option<i64>,
    /// `imports.id` when imported.
    pub import_id: Option<i64>,
    /// None for a pair; otherwise why there is none.
    pub no_pair: Option<NoPair>,
    /// The best graded answer and which sample it is.
    pub chosen: Option<(Answer, Option<i64>)>,
    /// The worst graded answer and which sample it is.
    pub rejected: Option<(Answer, Option<i64>)>,
    /// Answers sampled.
    pub samples: i64,
    /// Answers graded.
    pub graded: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// A stored pair with its prompt.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredPair {
    /// `preferences.id`: the read order.
    pub id: i64,
    /// The set it belongs to.
    pub pair_set: String,
    /// `records.id` of the prompt.
    pub record_id: i64,
    /// The prompt's language.
    pub lang: Lang,
    /// The pair (the prompt record's output and reasoning left empty).
    pub pair: Pair,
}

/// A set of pairs, as `stats` and exports list them.
#[derive(Debug, Clone, PartialEq)]
pub struct PairSet {
    /// The `instill pairs` run's name or the import's source label.
    pub name: String,
    /// The sampling run, when the set was sampled.
    pub run_id: Option<i64>,
    /// Whether its pairs were imported.
    pub imported: bool,
    /// Stored pairs.
    pub pairs: i64,
    /// Instructions without a pair, by why.
    pub no_pair: Vec<(NoPair, i64)>,
    /// The mean chosen-minus-rejected grade over pairs graded on both sides.
    pub mean_margin: Option<f64>,
}

/// Preference rows per INSERT statement (16 values each).
const ROWS_PER_STATEMENT: usize = 250;

impl Writer {
    /// Stores preference rows of `pair_set`; an instruction the set already has a row for keeps
    /// its first row.
    pub async fn insert_preferences(
        &mut self,
        pair_set: &str,
        rows: &[NewPreference],
    ) -> Result<(), StorageError> {
        let backend = match self.tx {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        };
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let values = placeholders(backend, chunk.len(), 16);
            let sql = format!(
                "INSERT INTO preferences (pair_set, record_id, run_id, import_id, no_pair,
chosen, chosen_reasoning, chosen_score, chosen_sample,
rejected, rejected_reasoning, rejected_score, rejected_sample, samples, graded, created_at)
VALUES {values} ON CONFLICT (pair_set, record_id) DO NOTHING"
            );
            on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    let (chosen, chosen_sample) = side(&r.chosen);
                    let (rejected, rejected_sample) = side(&r.rejected);
                    q = q
                        .bind(pair_set)
                        .bind(r.record_id)
                        .bind(r.run_id)
                        .bind(r.import_id)
                        .bind(r.no_pair.map(NoPair::as_str))
                        .bind(chosen.map(|a| a.text.as_str()))
                        .bind(chosen.map_or("", |a| a.reasoning.as_str()))
                        .bind(chosen.and_then(|a| a.score))
                        .bind(chosen_sample)
                        .bind(rejected.map(|a| a.text.as_str()))
                        .bind(rejected.map_or("", |a| a.reasoning.as_str()))
                        .bind(rejected.and_then(|a| a.score))
                        .bind(rejected_sample)
                        .bind(r.samples)
                        .bind(r.graded)
                        .bind(r.created_at);
                }
                q.execute(c).await?;
            });
        }
        Ok(())
    }
}

/// One side of a row to bind: the answer and its sample number.
fn side(s: &Option<(Answer, Option<i64>)>) -> (Option<&Answer>, Option<i64>) {
    match s {
        Some((a, n)) => (Some(a), *n),
        None => (None, None),
    }
}

/// The columns a pair read takes, preference then prompt record.
const PAIR_COLUMNS: &str = "p.id, p.pair_set, p.record_id, p.chosen, p.chosen_reasoning, p.chosen_score,
p.rejected, p.rejected_reasoning, p.rejected_score, r.instruction, r.input, r.system, r.history, r.lang";

impl Db {
    /// Every pair set, by name.
    pub async fn pair_sets(&self) -> Result<Vec<PairSet>, StorageError> {
        let sql = "SELECT pair_set, MIN(run_id) AS run_id, MAX(import_id) AS import_id,
SUM(CASE WHEN no_pair IS NULL THEN 1 ELSE 0 END) AS pairs,
AVG(CASE WHEN no_pair IS NULL THEN chosen_score - rejected_score END) AS mean_margin
FROM preferences GROUP BY pair_set ORDER BY pair_set";
        let reasons = "SELECT pair_set, no_pair, COUNT(*) AS n FROM preferences
WHERE no_pair IS NOT NULL GROUP BY pair_set, no_pair ORDER BY pair_set, no_pair";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            let mut sets = rows.iter().map(|r| {
                let import_id: Option<i64> = r.try_get("import_id")?;
                let pairs: Option<i64> = r.try_get("pairs")?;
                Ok(PairSet {
                    name: r.try_get("pair_set")?,
                    run_id: r.try_get("run_id")?,
                    imported: import_id.is_some(),
                    pairs: pairs.unwrap_or(0),
                    no_pair: Vec::new(),
                    mean_margin: r.try_get("mean_margin")?,
                })
            }).collect::<Result<Vec<PairSet>, StorageError>>()?;
            for r in sqlx::query(reasons).fetch_all(p).await? {
                let name: String = r.try_get("pair_set")?;
                let why: NoPair = decode("preferences.no_pair", r.try_get::<&str, _>("no_pair")?)?;
                if let Some(set) = sets.iter_mut().find(|s| s.name == name) {
                    set.no_pair.push((why, r.try_get("n")?));
                }
            }
            Ok(sets)
        })
    }

    /// The optional columns the pairs of `pair_set` (every set when None) whose prompt passes
    /// `filter` use: a system prompt, earlier turns, reasoning on either answer. A pair export
    /// writes each on every line when any pair has it.
    pub async fn pair_columns(
        &self,
        pair_set: Option<&str>,
        filter: StatusFilter,
    ) -> Result<instill_core::Columns, StorageError> {
        let set = if pair_set.is_some() {
            "AND p.pair_set = $1"
        } else {
            "AND $1 IS NULL"
        };
        let f = filter.sql_on("r");
        let any = |condition: &str| {
            format!(
                "SELECT COUNT(*) FROM (SELECT 1 FROM preferences p JOIN records r ON r.id = p.record_id
WHERE p.no_pair IS NULL {set} {f} AND {condition} LIMIT 1) x"
            )
        };
        let queries = [
            any("r.system <> ''"),
            any("r.history IS NOT NULL AND r.history <> '' AND r.history <> '[]'"),
            any("(p.chosen_reasoning <> '' OR p.rejected_reasoning <> '')"),
        ];
        let mut found = [false; 3];
        for (sql, hit) in queries.into_iter().zip(&mut found) {
            let n: i64 = on_pool!(&self.pool, p => {
                sqlx::query_scalar(AssertSqlSafe(sql)).bind(pair_set).fetch_one(p).await?
            });
            *hit = n > 0;
        }
        Ok(instill_core::Columns {
            system: found[0],
            history: found[1],
            reasoning: found[2],
        })
    }

    /// The ids of the records `pair_set` has a row for (a pair or a reason), ascending.
    pub async fn preference_records(&self, pair_set: &str) -> Result<Vec<i64>, StorageError> {
        let sql = "SELECT record_id FROM preferences WHERE pair_set = $1 ORDER BY record_id";
        on_pool!(&self.pool, p => {
            Ok(sqlx::query_scalar(sql).bind(pair_set).fetch_all(p).await?)
        })
    }

    /// Up to `limit` pairs (rows with a pair, not a reason) with `preferences.id > after_id`,
    /// in id order, of `pair_set` (every set when None), whose prompt record passes `filter`.
    pub async fn pairs_page(
        &self,
        pair_set: Option<&str>,
        filter: StatusFilter,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredPair>, StorageError> {
        let set = if pair_set.is_some() {
            "AND p.pair_set = $3"
        } else {
            "AND $3 IS NULL"
        };
        let sql = format!(
            "SELECT {PAIR_COLUMNS} FROM preferences p JOIN records r ON r.id = p.record_id
WHERE p.id > $1 AND p.no_pair IS NULL {set} {} ORDER BY p.id LIMIT $2",
            filter.sql_on("r")
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql))
                .bind(after_id)
                .bind(limit)
                .bind(pair_set)
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| {
                let id: i64 = r.try_get("id")?;
                let history: Option<String> = r.try_get("history")?;
                let prompt = Record {
                    instruction: r.try_get("instruction")?,
                    input: r.try_get("input")?,
                    system: r.try_get("system")?,
                    history: Record::parse_history(history.as_deref()).map_err(|e| {
                        StorageError::Corrupt { column: "history", id, message: e.to_string() }
                    })?,
                    ..Record::default()
                };
                let answer = |text: &str, reasoning: &str, score: &str| -> Result<Answer, StorageError> {
                    let text: Option<String> = r.try_get(text)?;
                    Ok(Answer {
                        text: text.unwrap_or_default(),
                        reasoning: r.try_get(reasoning)?,
                        score: r.try_get(score)?,
                    })
                };
                Ok(StoredPair {
                    id,
                    pair_set: r.try_get("pair_set")?,
                    record_id: r.try_get("record_id")?,
                    lang: Lang::from_code(r.try_get::<&str, _>("lang")?),
                    pair: Pair {
                        prompt,
                        chosen: answer("chosen", "chosen_reasoning", "chosen_score")?,
                        rejected: answer("rejected", "rejected_reasoning", "rejected_score")?,
                    },
                })
            }).collect()
        })
    }
}
