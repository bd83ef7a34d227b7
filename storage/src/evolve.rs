//! What `instill evolve` reads: the accepted records a run may start from, an evolve run's own
//! records with their provenance (where it resumes from), and evolved records counted by round,
//! operation and verdict (its summary, `stats` and the report).

use instill_core::{Evolution, EvolveOp, EvolvedFrom, Lang, Record, Status};
use sqlx::Row;

use crate::db::{Db, on_pool};
use crate::error::{StorageError, decode};

/// A record an evolve run starts from (`--from records`).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolRecord {
    /// `records.id`.
    pub id: i64,
    /// The pair (no history: conversations are not evolved).
    pub record: Record,
    /// Its language.
    pub lang: Lang,
}

/// One record an evolve run wrote, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct EvolvedRecord {
    /// `records.id`.
    pub id: i64,
    /// The index of the request it was judged from (the run's rewrite request).
    pub idx: i64,
    /// Accepted, or rejected (eliminated, or by the filters and dedup).
    pub status: Status,
    /// The evolved pair.
    pub record: Record,
    /// Its language.
    pub lang: Lang,
    /// What it rewrites, in which round, how.
    pub evolution: Evolution,
}

/// Evolved records of one run, round and operation with one verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvolveCount {
    /// The evolve run's name.
    pub run: String,
    /// The round (1 = the first rewrite).
    pub round: i64,
    /// The operation.
    pub op: EvolveOp,
    /// Accepted or rejected.
    pub status: Status,
    /// Why it was rejected (an elimination, a rule, dedup).
    pub reason: Option<String>,
    /// How many.
    pub n: i64,
}

impl Db {
    /// The accepted records an evolve run may start from, in id order: single-turn ones (of
    /// `lang` when given), leaving out run `exclude`'s own, at most `limit`.
    pub async fn evolve_pool_records(
        &self,
        exclude: Option<i64>,
        lang: Option<Lang>,
        limit: Option<i64>,
    ) -> Result<Vec<PoolRecord>, StorageError> {
        let sql = "SELECT id, instruction, input, output, lang FROM records
WHERE status = 'accepted' AND history IS NULL AND ($1 = '' OR lang = $1)
AND (run_id IS NULL OR run_id <> $2) ORDER BY id LIMIT $3";
        let lang_code = lang.map_or("", Lang::as_str);
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql)
                .bind(lang_code)
                .bind(exclude.unwrap_or(-1))
                .bind(limit.unwrap_or(i64::MAX))
                .fetch_all(p)
                .await?;
            rows.iter().map(|r| {
                let lang: String = r.try_get("lang")?;
                Ok(PoolRecord {
                    id: r.try_get("id")?,
                    record: Record::new(
                        r.try_get::<String, _>("instruction")?,
                        r.try_get::<String, _>("input")?,
                        r.try_get::<String, _>("output")?,
                    ),
                    lang: Lang::from_code(&lang),
                })
            }).collect()
        })
    }

    /// Every record evolve run `run_id` wrote, in id order, with its request's index and its
    /// provenance.
    pub async fn evolved_records(&self, run_id: i64) -> Result<Vec<EvolvedRecord>, StorageError> {
        let sql = "SELECT records.id AS id, requests.idx AS idx, records.status AS status,
records.instruction AS instruction, records.input AS input, records.output AS output,
records.lang AS lang, records.evolved_from AS evolved_from,
records.evolved_from_seed AS evolved_from_seed, records.evolve_round AS evolve_round,
records.evolve_op AS evolve_op
FROM records JOIN requests ON requests.id = records.request_id
WHERE records.run_id = $1 AND records.evolve_op IS NOT NULL ORDER BY records.id";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(run_id).fetch_all(p).await?;
            rows.iter().map(|r| {
                let id: i64 = r.try_get("id")?;
                let lang: String = r.try_get("lang")?;
                let from = match (
                    r.try_get::<Option<i64>, _>("evolved_from")?,
                    r.try_get::<Option<i64>, _>("evolved_from_seed")?,
                ) {
                    (Some(record), None) => EvolvedFrom::Record(record),
                    (None, Some(seed)) => EvolvedFrom::Seed(seed),
                    _ => {
                        return Err(StorageError::Corrupt {
                            column: "evolved_from",
                            id,
                            message: "an evolved record names exactly one parent".into(),
                        })
                    }
                };
                let round: i64 = r.try_get::<Option<i64>, _>("evolve_round")?.unwrap_or(0);
                let op: String = r.try_get("evolve_op")?;
                Ok(EvolvedRecord {
                    id,
                    idx: r.try_get("idx")?,
                    status: decode("records.status", r.try_get("status")?)?,
                    record: Record::new(
                        r.try_get::<String, _>("instruction")?,
                        r.try_get::<String, _>("input")?,
                        r.try_get::<String, _>("output")?,
                    ),
                    lang: Lang::from_code(&lang),
                    evolution: Evolution {
                        from,
                        round: u32::try_from(round).unwrap_or(0),
                        op: decode("records.evolve_op", &op)?,
                    },
                })
            }).collect()
        })
    }

    /// Evolved records counted by run, round, operation, status and reason (of run `run_id`, or
    /// of every run), in that order (runs oldest first).
    pub async fn evolve_counts(
        &self,
        run_id: Option<i64>,
    ) -> Result<Vec<EvolveCount>, StorageError> {
        let sql =
            "SELECT runs.name AS run, CAST(c.evolve_round AS BIGINT) AS round, c.evolve_op AS op,
c.status AS status, c.reason AS reason, c.n AS n
FROM (SELECT run_id, evolve_round, evolve_op, status, reason, COUNT(*) AS n FROM records
WHERE evolve_op IS NOT NULL AND ($1 < 0 OR run_id = $1)
GROUP BY run_id, evolve_round, evolve_op, status, reason) c
JOIN runs ON runs.id = c.run_id
ORDER BY c.run_id, round, op, status, reason";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(run_id.unwrap_or(-1)).fetch_all(p).await?;
            rows.iter().map(|r| {
                let op: String = r.try_get("op")?;
                let status: String = r.try_get("status")?;
                Ok(EvolveCount {
                    run: r.try_get("run")?,
                    round: r.try_get::<Option<i64>, _>("round")?.unwrap_or(0),
                    op: decode("records.evolve_op", &op)?,
                    status: decode("records.status", &status)?,
                    reason: r.try_get("reason")?,
                    n: r.try_get("n")?,
                })
            }).collect()
        })
    }
}
