//! What `instill report` reads beyond [`crate::Stats`]: runs of every kind with their requests
//! and tokens,
//! acceptance over time, nearest-neighbour ROUGE-L scores, MinHash cluster sizes, and the texts
//! (page by page) for length and diversity charts.

use instill_core::{RunKind, RunStatus, Status};
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Db, on_pool};
use crate::error::{StorageError, decode};

/// One run (generation, or a score or eval stage), as the report shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// `runs.id`.
    pub id: i64,
    /// The run's name.
    pub name: String,
    /// What it did: generate, or a score or eval stage (which make no records).
    pub kind: RunKind,
    /// Running, done or stopped.
    pub status: RunStatus,
    /// Start, Unix milliseconds.
    pub started_at: i64,
    /// End, Unix milliseconds, once finished.
    pub finished_at: Option<i64>,
    /// Requests stored.
    pub requests: i64,
    /// Prompt tokens over its requests.
    pub prompt_tokens: i64,
    /// Completion tokens over its requests.
    pub completion_tokens: i64,
    /// Its accepted records.
    pub accepted: i64,
    /// Its rejected records.
    pub rejected: i64,
}

/// Judged records of a run in one time bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBucket {
    /// Bucket start, milliseconds after the run's first record.
    pub offset_ms: i64,
    /// Accepted in the bucket.
    pub accepted: i64,
    /// Judged (accepted + rejected) in the bucket.
    pub judged: i64,
}

/// The fields of a record the report's text charts need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordText {
    /// `records.id`.
    pub id: i64,
    /// Instruction.
    pub instruction: String,
    /// Input.
    pub input: String,
    /// Output.
    pub output: String,
    /// `zh`, `en` or `other`.
    pub lang: String,
    /// Pending, accepted or rejected.
    pub status: Status,
}

impl Db {
    /// Every run, of every kind, with its request, token and record counts, oldest first.
    pub async fn run_summaries(&self) -> Result<Vec<RunSummary>, StorageError> {
        let sql = "SELECT r.id, r.name, r.kind, r.status, r.started_at, r.finished_at, \
                   (SELECT COUNT(*) FROM requests q WHERE q.run_id = r.id AND q.status <> 'claimed') AS requests, \
                   (SELECT CAST(COALESCE(SUM(q.prompt_tokens), 0) AS BIGINT) FROM requests q WHERE q.run_id = r.id) AS pt, \
                   (SELECT CAST(COALESCE(SUM(q.completion_tokens), 0) AS BIGINT) FROM requests q WHERE q.run_id = r.id) AS ct, \
                   (SELECT COUNT(*) FROM records x WHERE x.run_id = r.id AND x.status = 'accepted') AS acc, \
                   (SELECT COUNT(*) FROM records x WHERE x.run_id = r.id AND x.status = 'rejected') AS rej \
                   FROM runs r ORDER BY r.id";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(RunSummary {
                        id: r.try_get("id")?,
                        name: r.try_get("name")?,
                        kind: decode("runs.kind", r.try_get("kind")?)?,
                        status: decode("runs.status", r.try_get("status")?)?,
                        started_at: r.try_get("started_at")?,
                        finished_at: r.try_get("finished_at")?,
                        requests: r.try_get("requests")?,
                        prompt_tokens: r.try_get("pt")?,
                        completion_tokens: r.try_get("ct")?,
                        accepted: r.try_get("acc")?,
                        rejected: r.try_get("rej")?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()
        })
    }

    /// A run's judged records per `bucket_ms` of storage time, from its first record.
    pub async fn run_timeline(
        &self,
        run_id: i64,
        bucket_ms: i64,
    ) -> Result<Vec<TimeBucket>, StorageError> {
        let bucket = bucket_ms.max(1);
        let sql = format!(
            "SELECT (created_at - (SELECT MIN(created_at) FROM records WHERE run_id = $1)) / {bucket} AS b, \
             SUM(CASE WHEN status = 'accepted' THEN 1 ELSE 0 END) AS acc, COUNT(*) AS n \
             FROM records WHERE run_id = $1 AND status <> 'pending' GROUP BY b ORDER BY b"
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).bind(run_id).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    let acc: i64 = r.try_get("acc")?;
                    Ok(TimeBucket {
                        offset_ms: r.try_get::<i64, _>("b")? * bucket,
                        accepted: acc,
                        judged: r.try_get("n")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StorageError::from)
        })
    }

    /// Milliseconds between a run's first and last stored record (0 when it has none).
    pub async fn run_span_ms(&self, run_id: i64) -> Result<i64, StorageError> {
        let sql = "SELECT COALESCE(MAX(created_at) - MIN(created_at), 0) AS s FROM records WHERE run_id = $1";
        let s: i64 =
            on_pool!(&self.pool, p => sqlx::query_scalar(sql).bind(run_id).fetch_one(p).await?);
        Ok(s)
    }

    /// Every stored nearest-neighbour ROUGE-L score (records `instill dedup` or a run compared).
    pub async fn rouge_nn_scores(&self, run_id: Option<i64>) -> Result<Vec<f64>, StorageError> {
        let sql = "SELECT rouge_nn_score FROM records WHERE rouge_nn_score IS NOT NULL AND ($1 IS NULL OR run_id = $1)";
        let scores: Vec<f64> =
            on_pool!(&self.pool, p => sqlx::query_scalar(sql).bind(run_id).fetch_all(p).await?);
        Ok(scores)
    }

    /// MinHash clusters by size: (records in the cluster, clusters of that size), by size.
    pub async fn cluster_sizes(&self) -> Result<Vec<(i64, i64)>, StorageError> {
        let sql = "SELECT n, COUNT(*) AS c FROM (SELECT COUNT(*) AS n FROM records WHERE cluster_id IS NOT NULL GROUP BY cluster_id) t GROUP BY n ORDER BY n";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>("n")?, r.try_get::<i64, _>("c")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StorageError::from)
        })
    }

    /// Up to `limit` records after `after_id` (of one run, when given), in id order.
    pub async fn record_texts(
        &self,
        run_id: Option<i64>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<RecordText>, StorageError> {
        let sql = "SELECT id, instruction, input, output, lang, status FROM records \
                   WHERE id > $1 AND ($2 IS NULL OR run_id = $2) ORDER BY id LIMIT $3";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(after_id).bind(run_id).bind(limit).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(RecordText {
                        id: r.try_get("id")?,
                        instruction: r.try_get("instruction")?,
                        input: r.try_get("input")?,
                        output: r.try_get("output")?,
                        lang: r.try_get("lang")?,
                        status: decode("records.status", r.try_get("status")?)?,
                    })
                })
                .collect::<Result<Vec<_>, StorageError>>()
        })
    }
}
