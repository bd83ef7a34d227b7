//! Scores of records by named scorers: the `scorers` and `scores` tables (migration 0007). A
//! judge scorer's scores are read from the replies its stage run stored; a metric's are
//! computed locally. One score per (scorer, record); a second scorer lives beside the first.

use instill_core::ScoreMethod;
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Backend, Db, on_pool, placeholders};
use crate::error::{StorageError, decode};
use crate::runs::{StoredRequest, stored_request};
use crate::writer::{Tx, Writer, on_tx};

/// A scorer as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Scorer {
    /// Its unique name.
    pub name: String,
    /// Judge or metric.
    pub method: ScoreMethod,
    /// The judge's or the metric's model.
    pub model: String,
    /// The judge's rubric (content hash); None for metrics.
    pub rubric_hash: Option<String>,
    /// The rubric's scale (min, max); None for metrics.
    pub scale: Option<(f64, f64)>,
    /// The judge's stage run.
    pub run_id: Option<i64>,
    /// What decided the scores (JSON).
    pub settings_json: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A score about to be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScore {
    /// `records.id`.
    pub record_id: i64,
    /// The score; None when the reply held none.
    pub score: Option<f64>,
    /// The judge's rationale (the reply, when no score could be read).
    pub rationale: String,
    /// Why there is no score.
    pub reason: Option<String>,
    /// The judge's request.
    pub request_id: Option<i64>,
    /// Its prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Its completion tokens.
    pub completion_tokens: Option<i64>,
    /// Unix ms.
    pub created_at: i64,
}

/// One stored score, as selection reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreOf {
    /// `records.id`.
    pub record_id: i64,
    /// The score; None when the reply held none.
    pub score: Option<f64>,
}

const SCORER_COLUMNS: &str =
    "name, method, model, rubric_hash, scale_min, scale_max, run_id, settings_json, created_at";

impl Db {
    /// The scorer named `name`, if it exists.
    pub async fn scorer(&self, name: &str) -> Result<Option<Scorer>, StorageError> {
        let sql = format!("SELECT {SCORER_COLUMNS} FROM scorers WHERE name = $1");
        Ok(self
            .scorers_where(&sql, Some(name))
            .await?
            .into_iter()
            .next())
    }

    /// Every scorer, oldest first.
    pub async fn scorers(&self) -> Result<Vec<Scorer>, StorageError> {
        let sql = format!("SELECT {SCORER_COLUMNS} FROM scorers ORDER BY created_at, name");
        self.scorers_where(&sql, None).await
    }

    async fn scorers_where(
        &self,
        sql: &str,
        name: Option<&str>,
    ) -> Result<Vec<Scorer>, StorageError> {
        on_pool!(&self.pool, p => {
            let mut q = sqlx::query(AssertSqlSafe(sql.to_string()));
            if let Some(n) = name {
                q = q.bind(n);
            }
            let rows = q.fetch_all(p).await?;
            rows.iter().map(|r| {
                let min: Option<f64> = r.try_get("scale_min")?;
                let max: Option<f64> = r.try_get("scale_max")?;
                Ok(Scorer {
                    name: r.try_get("name")?,
                    method: decode("scorers.method", r.try_get("method")?)?,
                    model: r.try_get("model")?,
                    rubric_hash: r.try_get("rubric_hash")?,
                    scale: min.zip(max),
                    run_id: r.try_get("run_id")?,
                    settings_json: r.try_get("settings_json")?,
                    created_at: r.try_get("created_at")?,
                })
            }).collect()
        })
    }

    /// Stores a new scorer.
    pub async fn create_scorer(&self, s: &Scorer) -> Result<(), StorageError> {
        let sql = format!(
            "INSERT INTO scorers ({SCORER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        );
        on_pool!(&self.pool, p => {
            sqlx::query(AssertSqlSafe(sql))
                .bind(&s.name)
                .bind(s.method.as_str())
                .bind(&s.model)
                .bind(s.rubric_hash.as_deref())
                .bind(s.scale.map(|x| x.0))
                .bind(s.scale.map(|x| x.1))
                .bind(s.run_id)
                .bind(&s.settings_json)
                .bind(s.created_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Up to `limit` stored replies of `run_id` with `idx > after` (idx: the record's id) that
    /// have no score of `scorer` yet, in idx order.
    pub async fn unscored_replies(
        &self,
        scorer: &str,
        run_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredRequest>, StorageError> {
        let sql = "SELECT q.id, q.idx, q.status, q.payload_hash, q.response, q.finish_reason, q.reasoning, q.attempts, q.prompt_tokens, q.completion_tokens
FROM requests q LEFT JOIN scores s ON s.scorer = $1 AND s.record_id = q.idx
WHERE q.run_id = $2 AND q.idx > $3 AND q.status = 'done' AND s.record_id IS NULL
ORDER BY q.idx LIMIT $4";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(scorer).bind(run_id).bind(after).bind(limit).fetch_all(p).await?;
            rows.iter().map(stored_request).collect()
        })
    }

    /// The scores of `scorer`, in record id order.
    pub async fn scores(&self, scorer: &str) -> Result<Vec<ScoreOf>, StorageError> {
        let sql = "SELECT record_id, score FROM scores WHERE scorer = $1 ORDER BY record_id";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(scorer).fetch_all(p).await?;
            rows.iter().map(|r| Ok(ScoreOf {
                record_id: r.try_get("record_id")?,
                score: r.try_get("score")?,
            })).collect()
        })
    }

    /// Why replies of `scorer` held no score, with how many each.
    pub async fn unscored_reasons(&self, scorer: &str) -> Result<Vec<(String, i64)>, StorageError> {
        let sql = "SELECT COALESCE(reason, '') AS reason, COUNT(*) AS n FROM scores
WHERE scorer = $1 AND score IS NULL GROUP BY reason ORDER BY n DESC, reason";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(scorer).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get("reason")?, r.try_get("n")?))).collect()
        })
    }
}

/// Score rows per INSERT statement (9 values each).
const SCORES_PER_STATEMENT: usize = 400;

impl Writer {
    /// Stores scores of `scorer`; a record it already scored keeps its first score.
    pub async fn insert_scores(
        &mut self,
        scorer: &str,
        rows: &[NewScore],
    ) -> Result<(), StorageError> {
        let backend = match self.tx {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        };
        for chunk in rows.chunks(SCORES_PER_STATEMENT) {
            let values = placeholders(backend, chunk.len(), 9);
            let sql = format!(
                "INSERT INTO scores (scorer, record_id, score, rationale, reason, request_id, prompt_tokens, completion_tokens, created_at)
VALUES {values} ON CONFLICT (scorer, record_id) DO NOTHING"
            );
            on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q
                        .bind(scorer)
                        .bind(r.record_id)
                        .bind(r.score)
                        .bind(r.rationale.as_str())
                        .bind(r.reason.as_deref())
                        .bind(r.request_id)
                        .bind(r.prompt_tokens)
                        .bind(r.completion_tokens)
                        .bind(r.created_at);
                }
                q.execute(c).await?;
            });
        }
        Ok(())
    }
}
