//! The `records` table: batched inserts (multi-row INSERT on SQLite, COPY on Postgres) and
//! reading back in id order by keyset pages.

use std::fmt::Write as _;
use std::sync::Arc;

use instill_core::{Lang, Origin, Record, Status};
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Db, on_pool};
use crate::error::StorageError;

/// A record about to be stored, with its provenance and verdict.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The instruction pair.
    pub record: Record,
    /// Its language.
    pub lang: Lang,
    /// Imported or generated.
    pub origin: Origin,
    /// The dataset or run it came from.
    pub source: Arc<str>,
    /// The import it came from (`imports.id`).
    pub import_id: Option<i64>,
    /// The generation run it came from (`runs.id`).
    pub run_id: Option<i64>,
    /// The request that produced it (`requests.id`).
    pub request_id: Option<i64>,
    /// Its position among that request's items.
    pub item_idx: Option<i64>,
    /// Pending, accepted or rejected.
    pub status: Status,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// The record it duplicates.
    pub dup_of: Option<i64>,
    /// The similarity score behind the verdict.
    pub score: Option<f64>,
    /// [`instill_core::norm_hash`] of the record.
    pub norm_hash: String,
    /// When it was stored, unix ms.
    pub created_at: i64,
}

/// A record read back from the database.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    /// `records.id`: insertion order.
    pub id: i64,
    /// The instruction pair.
    pub record: Record,
    /// Its language.
    pub lang: Lang,
    /// The dataset or run it came from.
    pub source: String,
    /// `pending`, `accepted` or `rejected`.
    pub status: String,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// [`instill_core::norm_hash`] of the record.
    pub norm_hash: String,
}

/// Which records a read selects by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    /// Every record that is not rejected.
    Kept,
    /// Only `accepted`.
    Accepted,
    /// Only `pending`.
    Pending,
    /// Only `rejected`.
    Rejected,
    /// Everything.
    All,
}

impl StatusFilter {
    /// The name used on the command line and in manifests.
    pub fn name(self) -> &'static str {
        match self {
            StatusFilter::Kept => "kept",
            StatusFilter::Accepted => "accepted",
            StatusFilter::Pending => "pending",
            StatusFilter::Rejected => "rejected",
            StatusFilter::All => "all",
        }
    }

    fn sql(self) -> &'static str {
        match self {
            StatusFilter::Kept => "AND status <> 'rejected'",
            StatusFilter::Accepted => "AND status = 'accepted'",
            StatusFilter::Pending => "AND status = 'pending'",
            StatusFilter::Rejected => "AND status = 'rejected'",
            StatusFilter::All => "",
        }
    }
}

const COLUMNS: &str = "instruction, input, output, system, history, lang, origin, source, import_id, run_id, request_id, item_idx, status, reason, dup_of, score, norm_hash, created_at";
const NUM_COLUMNS: usize = 18;
/// Rows per multi-row INSERT on SQLite (18 columns × 500 rows stays far below its 32766
/// parameter limit, and one statement per 500 rows makes the per-statement cost vanish).
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

pub(crate) async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    rows: &[NewRecord],
) -> Result<(), StorageError> {
    for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let sql = sqlite_insert_sql(chunk.len());
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for r in chunk {
            q = q
                .bind(r.record.instruction.as_str())
                .bind(r.record.input.as_str())
                .bind(r.record.output.as_str())
                .bind(r.record.system.as_str())
                .bind(r.record.history_json())
                .bind(r.lang.as_str())
                .bind(r.origin.as_str())
                .bind(&*r.source)
                .bind(r.import_id)
                .bind(r.run_id)
                .bind(r.request_id)
                .bind(r.item_idx)
                .bind(r.status.as_str())
                .bind(r.reason.as_deref())
                .bind(r.dup_of)
                .bind(r.score)
                .bind(r.norm_hash.as_str())
                .bind(r.created_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

fn sqlite_insert_sql(rows: usize) -> String {
    let mut sql = String::with_capacity(64 + rows * (NUM_COLUMNS * 2 + 3));
    let _ = write!(sql, "INSERT INTO records ({COLUMNS}) VALUES ");
    let one_row = format!("({})", vec!["?"; NUM_COLUMNS].join(","));
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&one_row);
    }
    sql
}

pub(crate) async fn insert_postgres(
    conn: &mut sqlx::PgConnection,
    rows: &[NewRecord],
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut data = Vec::with_capacity(rows.len() * 512);
    for r in rows {
        copy_row(r, &mut data);
    }
    let mut copy = conn
        .copy_in_raw(&format!("COPY records ({COLUMNS}) FROM STDIN"))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
fn copy_row(r: &NewRecord, out: &mut Vec<u8>) {
    let history = r.record.history_json();
    let texts: [Option<&str>; 5] = [
        Some(&r.record.instruction),
        Some(&r.record.input),
        Some(&r.record.output),
        Some(&r.record.system),
        history.as_deref(),
    ];
    for t in texts {
        copy_text(t, out);
        out.push(b'\t');
    }
    for t in [
        Some(r.lang.as_str()),
        Some(r.origin.as_str()),
        Some(&*r.source),
    ] {
        copy_text(t, out);
        out.push(b'\t');
    }
    for n in [r.import_id, r.run_id, r.request_id, r.item_idx] {
        copy_num(n, out);
        out.push(b'\t');
    }
    copy_text(Some(r.status.as_str()), out);
    out.push(b'\t');
    copy_text(r.reason.as_deref(), out);
    out.push(b'\t');
    copy_num(r.dup_of, out);
    out.push(b'\t');
    match r.score {
        Some(s) => out.extend_from_slice(s.to_string().as_bytes()),
        None => out.extend_from_slice(b"\\N"),
    }
    out.push(b'\t');
    copy_text(Some(&r.norm_hash), out);
    out.push(b'\t');
    out.extend_from_slice(r.created_at.to_string().as_bytes());
    out.push(b'\n');
}

fn copy_text(text: Option<&str>, out: &mut Vec<u8>) {
    let Some(text) = text else {
        out.extend_from_slice(b"\\N");
        return;
    };
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let esc: &[u8] = match b {
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

fn copy_num(n: Option<i64>, out: &mut Vec<u8>) {
    match n {
        Some(n) => out.extend_from_slice(n.to_string().as_bytes()),
        None => out.extend_from_slice(b"\\N"),
    }
}

impl Db {
    /// Up to `limit` records with id greater than `after_id` that pass `filter`, in id order:
    /// one keyset page, so reading millions of rows holds one page in memory at a time.
    pub async fn records_page(
        &self,
        filter: StatusFilter,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        let sql = format!(
            "SELECT id, instruction, input, output, system, history, lang, source, status, reason, norm_hash
FROM records WHERE id > $1 {} ORDER BY id LIMIT $2",
            filter.sql()
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).bind(after_id).bind(limit).fetch_all(p).await?;
            rows.iter().map(|row| {
                let id: i64 = row.try_get("id")?;
                let history: Option<String> = row.try_get("history")?;
                let history = Record::parse_history(history.as_deref()).map_err(|e| {
                    StorageError::Corrupt { column: "history", id, message: e.to_string() }
                })?;
                let lang: String = row.try_get("lang")?;
                Ok(StoredRecord {
                    id,
                    record: Record {
                        instruction: row.try_get("instruction")?,
                        input: row.try_get("input")?,
                        output: row.try_get("output")?,
                        system: row.try_get("system")?,
                        history,
                    },
                    lang: Lang::from_code(&lang),
                    source: row.try_get("source")?,
                    status: row.try_get("status")?,
                    reason: row.try_get("reason")?,
                    norm_hash: row.try_get("norm_hash")?,
                })
            }).collect()
        })
    }

    /// How many records pass `filter`.
    pub async fn count_records(&self, filter: StatusFilter) -> Result<i64, StorageError> {
        let sql = format!("SELECT COUNT(*) FROM records WHERE 1 = 1 {}", filter.sql());
        let n: i64 = on_pool!(&self.pool, p => {
            sqlx::query_scalar(AssertSqlSafe(sql)).fetch_one(p).await?
        });
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_escapes_what_the_text_format_needs() {
        let mut out = Vec::new();
        copy_text(Some("a\tb\nc\\d\re"), &mut out);
        copy_text(None, &mut out);
        copy_text(Some("中文"), &mut out);
        assert_eq!(String::from_utf8_lossy(&out), "a\\tb\\nc\\\\d\\re\\N中文");
    }

    #[test]
    fn sqlite_statement_has_one_placeholder_per_value() {
        let sql = sqlite_insert_sql(3);
        assert_eq!(sql.matches('?').count(), 3 * NUM_COLUMNS);
        assert_eq!(COLUMNS.split(", ").count(), NUM_COLUMNS);
    }
}
