//! Generation runs and their request cache: the `runs` and `requests` tables, and what a run
//! needs to resume (where acceptance stopped, the stored replies after it, the accepted pool).

use instill_core::{Record, RequestStatus, RunKind, RunStatus, Status};
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Backend, Db, on_pool, placeholders};
use crate::error::{StorageError, decode};
use crate::writer::{Tx, Writer, on_tx};

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    /// `runs.id`.
    pub id: i64,
    /// Its unique name.
    pub name: String,
    /// What the run does.
    pub kind: RunKind,
    /// The settings it was started with (JSON).
    pub config_json: String,
    /// Running, done or stopped.
    pub status: RunStatus,
    /// Unix ms.
    pub started_at: i64,
}

/// A finished request about to be stored: its reply (or its failure).
#[derive(Debug, Clone, Default)]
pub struct NewRequest {
    /// The run.
    pub run_id: i64,
    /// Its position in the run; fully determines its prompt.
    pub idx: i64,
    /// Hash of the payload sent (model, prompt, parameters).
    pub payload_hash: String,
    /// The prompt text.
    pub prompt: String,
    /// The sampling parameters (JSON).
    pub params_json: String,
    /// Done (a reply is stored: never sent again) or failed.
    pub status: RequestStatus,
    /// The reply text(s) (JSON array of choices' texts).
    pub response: Option<String>,
    /// The finish reasons (JSON array).
    pub finish_reason: Option<String>,
    /// The choices' reasoning (JSON array, as `response`); `None` when no choice had any.
    pub reasoning: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// Prompt tokens reported by the server.
    pub prompt_tokens: Option<i64>,
    /// Completion tokens reported by the server.
    pub completion_tokens: Option<i64>,
    /// Wall time of the successful attempt.
    pub latency_ms: Option<i64>,
    /// The process that sent it.
    pub worker: Option<String>,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub finished_at: i64,
}

/// A stored request with its reply.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRequest {
    /// `requests.id`.
    pub id: i64,
    /// Position in the run.
    pub idx: i64,
    /// Done or failed.
    pub status: RequestStatus,
    /// The payload hash.
    pub payload_hash: String,
    /// The reply text(s) (JSON array).
    pub response: Option<String>,
    /// The finish reasons (JSON array).
    pub finish_reason: Option<String>,
    /// The choices' reasoning (JSON array), `None` when no choice had any.
    pub reasoning: Option<String>,
    /// Attempts made.
    pub attempts: i64,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Completion tokens.
    pub completion_tokens: Option<i64>,
}

/// Totals of a run, for its progress and summary.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunTotals {
    /// Records accepted.
    pub accepted: i64,
    /// Records rejected, by reason.
    pub rejected: Vec<(String, i64)>,
    /// Requests with a stored reply.
    pub requests_done: i64,
    /// Requests that failed for good.
    pub requests_failed: i64,
    /// Attempts beyond the first, over all stored requests.
    pub retries: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Completion tokens.
    pub completion_tokens: i64,
}

/// One member of a run's accepted pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolMember {
    /// `records.id`.
    pub id: i64,
    /// The instruction (a conversation's first user turn: what generation's ROUGE-L pool holds).
    pub instruction: String,
    /// The record's normalised-content hash.
    pub norm_hash: String,
}

impl Db {
    /// The run named `name`, if it exists.
    pub async fn find_run(&self, name: &str) -> Result<Option<RunRow>, StorageError> {
        let sql =
            "SELECT id, name, kind, config_json, status, started_at FROM runs WHERE name = $1";
        on_pool!(&self.pool, p => {
            let row = sqlx::query(sql).bind(name).fetch_optional(p).await?;
            row.map(|r| Ok(RunRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                kind: decode("runs.kind", r.try_get("kind")?)?,
                config_json: r.try_get("config_json")?,
                status: decode("runs.status", r.try_get("status")?)?,
                started_at: r.try_get("started_at")?,
            })).transpose()
        })
    }

    /// Creates a run (status `running`) and returns its id; None when a run of this name exists
    /// (another process may have created it a moment ago: find it instead).
    pub async fn create_run(
        &self,
        name: &str,
        kind: RunKind,
        config_json: &str,
        now: i64,
    ) -> Result<Option<i64>, StorageError> {
        let sql = "INSERT INTO runs (name, kind, config_json, started_at, status) VALUES ($1, $2, $3, $4, 'running')
ON CONFLICT (name) DO NOTHING RETURNING id";
        let id: Option<i64> = on_pool!(&self.pool, p => {
            sqlx::query_scalar(sql).bind(name).bind(kind.as_str()).bind(config_json).bind(now).fetch_optional(p).await?
        });
        Ok(id)
    }

    /// Sets a run's status, and its finish time unless it is running again.
    pub async fn set_run_status(
        &self,
        id: i64,
        status: RunStatus,
        now: i64,
    ) -> Result<(), StorageError> {
        let sql = "UPDATE runs SET status = $1, finished_at = CASE WHEN $1 = 'running' THEN NULL ELSE $2 END WHERE id = $3";
        on_pool!(&self.pool, p => {
            sqlx::query(sql).bind(status.as_str()).bind(now).bind(id).execute(p).await?.rows_affected()
        });
        Ok(())
    }

    /// Makes the caller the run's acceptor: bumps the run's epoch and returns the new one. Every
    /// acceptor before it fails [`Writer::hold_run`] from then on (a flush of one that is under
    /// way finishes first: it holds the row).
    pub async fn take_run(&self, run_id: i64) -> Result<i64, StorageError> {
        let sql = "UPDATE runs SET epoch = epoch + 1 WHERE id = $1 RETURNING epoch";
        let epoch: i64 =
            on_pool!(&self.pool, p => sqlx::query_scalar(sql).bind(run_id).fetch_one(p).await?);
        Ok(epoch)
    }

    /// The run's status and frontier (the first request idx its acceptor has not finished).
    pub async fn run_frontier(&self, run_id: i64) -> Result<(RunStatus, i64), StorageError> {
        let sql = "SELECT status, frontier FROM runs WHERE id = $1";
        let (status, frontier): (String, i64) =
            on_pool!(&self.pool, p => sqlx::query_as(sql).bind(run_id).fetch_one(p).await?);
        Ok((decode("runs.status", &status)?, frontier))
    }

    /// Where acceptance stopped: the (request idx, item idx) of the run's last stored record.
    pub async fn run_position(&self, run_id: i64) -> Result<Option<(i64, i64)>, StorageError> {
        let sql = "SELECT requests.idx AS idx, records.item_idx AS item_idx FROM records
JOIN requests ON requests.id = records.request_id
WHERE records.run_id = $1 ORDER BY records.id DESC LIMIT 1";
        on_pool!(&self.pool, p => {
            let row = sqlx::query(sql).bind(run_id).fetch_optional(p).await?;
            row.map(|r| Ok((r.try_get::<i64, _>("idx")?, r.try_get::<Option<i64>, _>("item_idx")?.unwrap_or(0)))).transpose()
        })
    }

    /// The run's stored requests with `idx >= from`, in idx order.
    pub async fn requests_from(
        &self,
        run_id: i64,
        from: i64,
    ) -> Result<Vec<StoredRequest>, StorageError> {
        self.requests_in(run_id, from..i64::MAX).await
    }

    /// The run's requests with `idx` in `range`, in idx order.
    pub async fn requests_in(
        &self,
        run_id: i64,
        range: std::ops::Range<i64>,
    ) -> Result<Vec<StoredRequest>, StorageError> {
        let sql = "SELECT id, idx, status, payload_hash, response, finish_reason, reasoning, attempts, prompt_tokens, completion_tokens
FROM requests WHERE run_id = $1 AND idx >= $2 AND idx < $3 ORDER BY idx";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(run_id).bind(range.start).bind(range.end).fetch_all(p).await?;
            rows.iter().map(stored_request).collect()
        })
    }

    /// The indices of the run's requests whose reply is stored (never sent again).
    pub async fn answered(&self, run_id: i64) -> Result<Vec<i64>, StorageError> {
        let sql = "SELECT idx FROM requests WHERE run_id = $1 AND status = 'done' ORDER BY idx";
        let ids: Vec<i64> = on_pool!(&self.pool, p => {
            sqlx::query_scalar(sql).bind(run_id).fetch_all(p).await?
        });
        Ok(ids)
    }

    /// Up to `limit` of the run's requests whose reply is stored, with `idx > after`, in idx
    /// order: a page of replies for a stage's reader.
    pub async fn replies_page(
        &self,
        run_id: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredRequest>, StorageError> {
        let sql = "SELECT id, idx, status, payload_hash, response, finish_reason, reasoning, attempts, prompt_tokens, completion_tokens
FROM requests WHERE run_id = $1 AND idx > $2 AND status = 'done' ORDER BY idx LIMIT $3";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(run_id).bind(after).bind(limit).fetch_all(p).await?;
            rows.iter().map(stored_request).collect()
        })
    }

    /// The run's requests whose reply is stored, as (idx, prompt, first reply text's JSON),
    /// in idx order.
    pub async fn prompts_and_replies(
        &self,
        run_id: i64,
    ) -> Result<Vec<(i64, String, Option<String>)>, StorageError> {
        let sql = "SELECT idx, prompt, response FROM requests WHERE run_id = $1 AND status = 'done' ORDER BY idx";
        let rows: Vec<(i64, String, Option<String>)> = on_pool!(&self.pool, p => {
            sqlx::query_as(sql).bind(run_id).fetch_all(p).await?
        });
        Ok(rows)
    }

    /// The prompts of the run's requests whose reply is stored.
    pub async fn stored_prompts(&self, run_id: i64) -> Result<Vec<String>, StorageError> {
        let sql = "SELECT prompt FROM requests WHERE run_id = $1 AND status = 'done' ORDER BY idx";
        let prompts: Vec<String> = on_pool!(&self.pool, p => {
            sqlx::query_scalar(sql).bind(run_id).fetch_all(p).await?
        });
        Ok(prompts)
    }

    /// The run's accepted records, in id order: its pool when it resumes.
    pub async fn run_pool(&self, run_id: i64) -> Result<Vec<PoolMember>, StorageError> {
        let sql = "SELECT id, instruction, history, norm_hash FROM records WHERE run_id = $1 AND status = 'accepted' ORDER BY id";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(run_id).fetch_all(p).await?;
            rows.iter().map(|r| {
                let id: i64 = r.try_get("id")?;
                let mut record = Record::new(r.try_get::<String, _>("instruction")?, "", "");
                let history: Option<String> = r.try_get("history")?;
                record.history = Record::parse_history(history.as_deref()).map_err(|e| {
                    StorageError::Corrupt { column: "history", id, message: e.to_string() }
                })?;
                Ok(PoolMember {
                    id,
                    instruction: record.first_user_turn().to_string(),
                    norm_hash: r.try_get("norm_hash")?,
                })
            }).collect()
        })
    }

    /// Counts and token totals of a run.
    pub async fn run_totals(&self, run_id: i64) -> Result<RunTotals, StorageError> {
        let by_status = "SELECT status AS k, reason AS r, COUNT(*) AS n FROM records WHERE run_id = $1 GROUP BY status, reason";
        let req = "SELECT status AS k, COUNT(*) AS n, CAST(COALESCE(SUM(attempts - 1), 0) AS BIGINT) AS retries,
CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS pt, CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS ct
FROM requests WHERE run_id = $1 GROUP BY status";
        let mut t = RunTotals::default();
        on_pool!(&self.pool, p => {
            for r in sqlx::query(by_status).bind(run_id).fetch_all(p).await? {
                let n: i64 = r.try_get("n")?;
                match decode("records.status", r.try_get("k")?)? {
                    Status::Accepted => t.accepted += n,
                    Status::Rejected => {
                        let reason: Option<String> = r.try_get("r")?;
                        t.rejected.push((reason.unwrap_or_default(), n));
                    }
                    Status::Pending => {}
                }
            }
            for r in sqlx::query(req).bind(run_id).fetch_all(p).await? {
                let n: i64 = r.try_get("n")?;
                match decode("requests.status", r.try_get("k")?)? {
                    RequestStatus::Done => t.requests_done += n,
                    RequestStatus::Failed => t.requests_failed += n,
                    // A worker's lease on a request in flight, not a result.
                    RequestStatus::Claimed => continue,
                }
                t.retries += r.try_get::<i64, _>("retries")?;
                t.prompt_tokens = t.prompt_tokens.saturating_add(r.try_get("pt")?);
                t.completion_tokens = t.completion_tokens.saturating_add(r.try_get("ct")?);
            }
        });
        t.rejected.sort();
        Ok(t)
    }
}

/// A `requests` row as [`StoredRequest`] (the columns [`Db::requests_from`] selects).
pub(crate) fn stored_request<R>(r: &R) -> Result<StoredRequest, StorageError>
where
    R: Row,
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'q> i64: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<i64>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> String: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> Option<String>: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
    for<'q> &'q str: sqlx::Decode<'q, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredRequest {
        id: r.try_get("id")?,
        idx: r.try_get("idx")?,
        status: decode("requests.status", r.try_get("status")?)?,
        payload_hash: r.try_get("payload_hash")?,
        response: r.try_get("response")?,
        finish_reason: r.try_get("finish_reason")?,
        reasoning: r.try_get("reasoning")?,
        attempts: r.try_get("attempts")?,
        prompt_tokens: r.try_get("prompt_tokens")?,
        completion_tokens: r.try_get("completion_tokens")?,
    })
}

const REQUEST_COLUMNS: &str = "run_id, idx, payload_hash, prompt, params_json, status, response, finish_reason, reasoning, error, attempts, prompt_tokens, completion_tokens, latency_ms, worker, created_at, finished_at";

/// Request rows per INSERT statement (17 values each).
const REQUESTS_PER_STATEMENT: usize = 200;

impl Writer {
    /// Proves, inside this transaction, that the caller still is the run's acceptor (the run's
    /// epoch is still `epoch`), and sets the run's frontier. Returns false when another worker
    /// took the run over: the caller must then drop this transaction and stop accepting. The
    /// run's row stays locked until the transaction ends, so a takeover waits for this flush.
    pub async fn hold_run(
        &mut self,
        run_id: i64,
        epoch: i64,
        frontier: i64,
    ) -> Result<bool, StorageError> {
        let sql = "UPDATE runs SET frontier = $1 WHERE id = $2 AND epoch = $3";
        let n = on_tx!(&mut self.tx, c => {
            sqlx::query(sql).bind(frontier).bind(run_id).bind(epoch).execute(c).await?.rows_affected()
        });
        Ok(n == 1)
    }

    /// Stores finished requests (a reply or a failure each), in multi-row statements; a request
    /// already stored for the same (run, idx) is replaced only if it had failed. Returns their
    /// ids, in input order.
    pub async fn store_requests(&mut self, rows: &[NewRequest]) -> Result<Vec<i64>, StorageError> {
        let backend = match self.tx {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        };
        let mut by_idx: std::collections::HashMap<(i64, i64), i64> =
            std::collections::HashMap::with_capacity(rows.len());
        for chunk in rows.chunks(REQUESTS_PER_STATEMENT) {
            let values = placeholders(backend, chunk.len(), 17);
            let sql = format!(
                "INSERT INTO requests ({REQUEST_COLUMNS}) VALUES {values}
ON CONFLICT (run_id, idx) DO UPDATE SET payload_hash = excluded.payload_hash, prompt = excluded.prompt,
params_json = excluded.params_json, status = excluded.status, response = excluded.response,
finish_reason = excluded.finish_reason, reasoning = excluded.reasoning, error = excluded.error, attempts = requests.attempts + excluded.attempts,
prompt_tokens = excluded.prompt_tokens, completion_tokens = excluded.completion_tokens,
latency_ms = excluded.latency_ms, worker = excluded.worker, finished_at = excluded.finished_at
WHERE requests.status <> 'done'
RETURNING id, run_id, idx"
            );
            let returned: Vec<(i64, i64, i64)> = on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query_as(AssertSqlSafe(sql));
                for r in chunk {
                    q = q
                        .bind(r.run_id)
                        .bind(r.idx)
                        .bind(r.payload_hash.as_str())
                        .bind(r.prompt.as_str())
                        .bind(r.params_json.as_str())
                        .bind(r.status.as_str())
                        .bind(r.response.as_deref())
                        .bind(r.finish_reason.as_deref())
                        .bind(r.reasoning.as_deref())
                        .bind(r.error.as_deref())
                        .bind(r.attempts)
                        .bind(r.prompt_tokens)
                        .bind(r.completion_tokens)
                        .bind(r.latency_ms)
                        .bind(r.worker.as_deref())
                        .bind(r.created_at)
                        .bind(r.finished_at);
                }
                q.fetch_all(c).await?
            });
            for (id, run_id, idx) in returned {
                by_idx.insert((run_id, idx), id);
            }
        }
        // Rows that were already stored with a reply were left alone: look their ids up.
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let id = match by_idx.get(&(r.run_id, r.idx)) {
                Some(&id) => id,
                None => on_tx!(&mut self.tx, c => {
                    sqlx::query_scalar("SELECT id FROM requests WHERE run_id = $1 AND idx = $2")
                        .bind(r.run_id)
                        .bind(r.idx)
                        .fetch_one(c)
                        .await?
                }),
            };
            ids.push(id);
        }
        Ok(ids)
    }
}
