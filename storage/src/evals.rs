//! Evaluations of models on an eval set: the `evaluations` and `eval_grades` tables (migration
//! 0008). The answers and the judge's replies live in the requests of two stage runs; the
//! grades read from those replies live here, one per (evaluation, question, repeat).

use sqlx::{AssertSqlSafe, Row};

use crate::db::{Backend, Db, on_pool, placeholders};
use crate::error::StorageError;
use crate::runs::{StoredRequest, stored_request};
use crate::writer::{Tx, Writer, on_tx};

/// An evaluation as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// Its name, its identity.
    pub label: String,
    /// The candidate model.
    pub model: String,
    /// The judge.
    pub judge_model: String,
    /// The eval set's file name.
    pub eval_set: String,
    /// The eval set's SHA-256.
    pub eval_set_sha256: String,
    /// The judge prompts' content hash.
    pub prompts_hash: String,
    /// Questions evaluated.
    pub questions: i64,
    /// The stage run holding the answers.
    pub answer_run_id: Option<i64>,
    /// The stage run holding the judge's replies.
    pub judge_run_id: Option<i64>,
    /// What decided the grades (JSON).
    pub settings_json: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A grade about to be stored, or as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Grade {
    /// The question's position in the eval set, from 0.
    pub idx: i64,
    /// The judge's repeat, from 0.
    pub rep: i64,
    /// The question's class, normalised.
    pub class: String,
    /// The grade; None when the reply held none.
    pub grade: Option<f64>,
    /// Why there is no grade.
    pub reason: Option<String>,
    /// The judge's request.
    pub request_id: Option<i64>,
}

const EVAL_COLUMNS: &str = "label, model, judge_model, eval_set, eval_set_sha256, prompts_hash, questions, answer_run_id, judge_run_id, settings_json, created_at";

impl Db {
    /// The evaluation labelled `label`, if any.
    pub async fn evaluation(&self, label: &str) -> Result<Option<Evaluation>, StorageError> {
        let sql = format!("SELECT {EVAL_COLUMNS} FROM evaluations WHERE label = $1");
        Ok(self
            .evaluations_where(&sql, Some(label))
            .await?
            .into_iter()
            .next())
    }

    /// Every evaluation, oldest first.
    pub async fn evaluations(&self) -> Result<Vec<Evaluation>, StorageError> {
        let sql = format!("SELECT {EVAL_COLUMNS} FROM evaluations ORDER BY created_at, label");
        self.evaluations_where(&sql, None).await
    }

    async fn evaluations_where(
        &self,
        sql: &str,
        label: Option<&str>,
    ) -> Result<Vec<Evaluation>, StorageError> {
        on_pool!(&self.pool, p => {
            let mut q = sqlx::query(AssertSqlSafe(sql.to_string()));
            if let Some(l) = label {
                q = q.bind(l);
            }
            let rows = q.fetch_all(p).await?;
            rows.iter().map(|r| Ok(Evaluation {
                label: r.try_get("label")?,
                model: r.try_get("model")?,
                judge_model: r.try_get("judge_model")?,
                eval_set: r.try_get("eval_set")?,
                eval_set_sha256: r.try_get("eval_set_sha256")?,
                prompts_hash: r.try_get("prompts_hash")?,
                questions: r.try_get("questions")?,
                answer_run_id: r.try_get("answer_run_id")?,
                judge_run_id: r.try_get("judge_run_id")?,
                settings_json: r.try_get("settings_json")?,
                created_at: r.try_get("created_at")?,
            })).collect()
        })
    }

    /// Stores a new evaluation.
    pub async fn create_evaluation(&self, e: &Evaluation) -> Result<(), StorageError> {
        let sql = format!(
            "INSERT INTO evaluations ({EVAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        );
        on_pool!(&self.pool, p => {
            sqlx::query(AssertSqlSafe(sql))
                .bind(&e.label)
                .bind(&e.model)
                .bind(&e.judge_model)
                .bind(&e.eval_set)
                .bind(&e.eval_set_sha256)
                .bind(&e.prompts_hash)
                .bind(e.questions)
                .bind(e.answer_run_id)
                .bind(e.judge_run_id)
                .bind(&e.settings_json)
                .bind(e.created_at)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Up to `limit` stored judge replies of `run_id` with `idx > after` that have no grade of
    /// `label` yet (a reply's idx is `question × repeats + repeat`), in idx order.
    pub async fn ungraded_replies(
        &self,
        label: &str,
        run_id: i64,
        repeats: i64,
        after: i64,
        limit: i64,
    ) -> Result<Vec<StoredRequest>, StorageError> {
        let sql = "SELECT q.id, q.idx, q.status, q.payload_hash, q.response, q.finish_reason, q.reasoning, q.attempts, q.prompt_tokens, q.completion_tokens
FROM requests q LEFT JOIN eval_grades g ON g.evaluation = $1 AND g.idx * $2 + g.rep = q.idx
WHERE q.run_id = $3 AND q.idx > $4 AND q.status = 'done' AND g.idx IS NULL
ORDER BY q.idx LIMIT $5";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(label).bind(repeats).bind(run_id).bind(after).bind(limit).fetch_all(p).await?;
            rows.iter().map(stored_request).collect()
        })
    }

    /// Every grade of `label`, by question and repeat.
    pub async fn grades(&self, label: &str) -> Result<Vec<Grade>, StorageError> {
        let sql = "SELECT idx, rep, class, grade, reason, request_id FROM eval_grades
WHERE evaluation = $1 ORDER BY idx, rep";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(label).fetch_all(p).await?;
            rows.iter().map(|r| Ok(Grade {
                idx: r.try_get("idx")?,
                rep: r.try_get("rep")?,
                class: r.try_get("class")?,
                grade: r.try_get("grade")?,
                reason: r.try_get("reason")?,
                request_id: r.try_get("request_id")?,
            })).collect()
        })
    }
}

/// Grade rows per INSERT statement (8 values each).
const GRADES_PER_STATEMENT: usize = 500;

impl Writer {
    /// Stores grades of `label`; a (question, repeat) already graded keeps its first grade.
    pub async fn insert_grades(
        &mut self,
        label: &str,
        rows: &[Grade],
        now: i64,
    ) -> Result<(), StorageError> {
        let backend = match self.tx {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        };
        for chunk in rows.chunks(GRADES_PER_STATEMENT) {
            let values = placeholders(backend, chunk.len(), 8);
            let sql = format!(
                "INSERT INTO eval_grades (evaluation, idx, rep, class, grade, reason, request_id, created_at)
VALUES {values} ON CONFLICT (evaluation, idx, rep) DO NOTHING"
            );
            on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for g in chunk {
                    q = q
                        .bind(label)
                        .bind(g.idx)
                        .bind(g.rep)
                        .bind(g.class.as_str())
                        .bind(g.grade)
                        .bind(g.reason.as_deref())
                        .bind(g.request_id)
                        .bind(now);
                }
                q.execute(c).await?;
            });
        }
        Ok(())
    }
}
