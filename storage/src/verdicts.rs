//! Writing curation verdicts back: rejections (reason, `dup_of`, score, cluster), MinHash
//! cluster ids and ROUGE-L nearest neighbours, in batches of multi-row `UPDATE … FROM (VALUES …)`.

use instill_core::Status;
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Backend, Db, on_pool};
use crate::error::{StorageError, decode};
use crate::writer::{Tx, Writer, on_tx};

/// A record to mark rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// `records.id`.
    pub id: i64,
    /// The rule or method: an [`instill_core::Reason`]'s code (`exact`, `minhash`, `rouge_l`,
    /// or a filter rule). Text still: `instill dedup` builds these, and moves to the enum with
    /// its pipeline.
    pub reason: instill_core::Reason,
    /// The record it duplicates, if any.
    pub dup_of: Option<i64>,
    /// The similarity behind the verdict, if any.
    pub score: Option<f64>,
    /// Its MinHash cluster, if any.
    pub cluster_id: Option<i64>,
}

/// A record's curation state, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredVerdict {
    /// `records.id`.
    pub id: i64,
    /// Pending, accepted or rejected.
    pub status: Status,
    /// Why it was rejected: a [`instill_core::Reason`]'s code, kept as text (see
    /// [`crate::StoredRecord::reason`]).
    pub reason: Option<String>,
    /// The record it duplicates.
    pub dup_of: Option<i64>,
    /// The similarity behind the verdict.
    pub score: Option<f64>,
    /// Its MinHash cluster.
    pub cluster_id: Option<i64>,
    /// Its most similar earlier kept record by ROUGE-L.
    pub rouge_nn_id: Option<i64>,
    /// That record's ROUGE-L F1.
    pub rouge_nn_score: Option<f64>,
}

impl Db {
    /// Every record's curation state, in id order.
    pub async fn verdicts(&self) -> Result<Vec<StoredVerdict>, StorageError> {
        let sql =
            "SELECT id, status, reason, dup_of, score, cluster_id, rouge_nn_id, rouge_nn_score
FROM records ORDER BY id";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(|r| Ok(StoredVerdict {
                id: r.try_get("id")?,
                status: decode("status", r.try_get("status")?)?,
                reason: r.try_get("reason")?,
                dup_of: r.try_get("dup_of")?,
                score: r.try_get("score")?,
                cluster_id: r.try_get("cluster_id")?,
                rouge_nn_id: r.try_get("rouge_nn_id")?,
                rouge_nn_score: r.try_get("rouge_nn_score")?,
            })).collect()
        })
    }
}

/// Rows per UPDATE statement.
const ROWS_PER_STATEMENT: usize = 500;

impl Writer {
    fn backend(&self) -> Backend {
        match self.tx {
            Tx::Sqlite(_) => Backend::Sqlite,
            Tx::Postgres(_) => Backend::Postgres,
        }
    }

    /// Marks records rejected, with reason, `dup_of`, score and cluster.
    pub async fn reject(&mut self, rows: &[Rejection]) -> Result<(), StorageError> {
        let backend = self.backend();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = update_sql(
                backend,
                "status = 'rejected', reason = v.column2, dup_of = v.column3, score = v.column4, cluster_id = v.column5",
                &["BIGINT", "TEXT", "BIGINT", "DOUBLE PRECISION", "BIGINT"],
                chunk.len(),
            );
            on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for r in chunk {
                    q = q.bind(r.id).bind(r.reason.as_str()).bind(r.dup_of).bind(r.score).bind(r.cluster_id);
                }
                q.execute(c).await?;
            });
        }
        Ok(())
    }

    /// Takes back earlier rejections for `reasons` (a command re-deciding what it decided
    /// before): each such record returns to where it stood before any verdict, `accepted` for
    /// a generated record and `pending` for an imported one, with no reason, `dup_of`, score or
    /// cluster. Returns how many records it took back.
    pub async fn unreject(
        &mut self,
        reasons: &[instill_core::Reason],
    ) -> Result<u64, StorageError> {
        let mut n = 0;
        for reason in reasons {
            let sql = "UPDATE records SET status = CASE origin WHEN 'generated' THEN 'accepted' ELSE 'pending' END,
reason = NULL, dup_of = NULL, score = NULL, cluster_id = NULL WHERE status = 'rejected' AND reason = $1";
            n += on_tx!(&mut self.tx, c => {
                sqlx::query(sql).bind(reason.as_str()).execute(c).await?.rows_affected()
            });
        }
        Ok(n)
    }

    /// Records the MinHash cluster of kept records (`(id, cluster_id)`).
    pub async fn set_clusters(&mut self, rows: &[(i64, i64)]) -> Result<(), StorageError> {
        let backend = self.backend();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = update_sql(
                backend,
                "cluster_id = v.column2",
                &["BIGINT", "BIGINT"],
                chunk.len(),
            );
            on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (id, cluster) in chunk {
                    q = q.bind(*id).bind(*cluster);
                }
                q.execute(c).await?;
            });
        }
        Ok(())
    }

    /// Records each record's most similar earlier kept record by ROUGE-L
    /// (`(id, nearest id or None for a seed task, F1)`).
    pub async fn set_rouge_nearest(
        &mut self,
        rows: &[(i64, Option<i64>, f64)],
    ) -> Result<(), StorageError> {
        let backend = self.backend();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let sql = update_sql(
                backend,
                "rouge_nn_id = v.column2, rouge_nn_score = v.column3",
                &["BIGINT", "BIGINT", "DOUBLE PRECISION"],
                chunk.len(),
            );
            on_tx!(&mut self.tx, c => {
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (id, nn, score) in chunk {
                    q = q.bind(*id).bind(*nn).bind(*score);
                }
                q.execute(c).await?;
            });
        }
        Ok(())
    }
}

/// `UPDATE records SET {set} FROM (VALUES (…), …) AS v WHERE records.id = v.column1`, with one
/// typed placeholder per value (`?` on SQLite, `$n` on Postgres, whose VALUES need the casts).
fn update_sql(backend: Backend, set: &str, types: &[&str], rows: usize) -> String {
    let mut sql = format!("UPDATE records SET {set} FROM (VALUES ");
    let mut n = 0;
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for (k, ty) in types.iter().enumerate() {
            if k > 0 {
                sql.push(',');
            }
            n += 1;
            match backend {
                Backend::Sqlite => sql.push('?'),
                Backend::Postgres => sql.push_str(&format!("CAST(${n} AS {ty})")),
            }
        }
        sql.push(')');
    }
    sql.push_str(") AS v WHERE records.id = v.column1");
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_statements_per_dialect() {
        assert_eq!(
            update_sql(Backend::Sqlite, "x = v.column2", &["BIGINT", "TEXT"], 2),
            "UPDATE records SET x = v.column2 FROM (VALUES (?,?),(?,?)) AS v WHERE records.id = v.column1"
        );
        assert_eq!(
            update_sql(Backend::Postgres, "x = v.column2", &["BIGINT", "TEXT"], 1),
            "UPDATE records SET x = v.column2 FROM (VALUES (CAST($1 AS BIGINT),CAST($2 AS TEXT))) AS v WHERE records.id = v.column1"
        );
    }
}
