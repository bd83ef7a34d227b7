//! The `records` table: batched inserts (multi-row INSERT on SQLite, COPY on Postgres) and
//! reading back in id order by keyset pages.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use instill_core::{Lang, Origin, Reason, Record, Status};
use sqlx::AssertSqlSafe;

use crate::error::StorageError;

/// A record about to be stored, with its provenance and verdict.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// An id reserved with [`Writer::reserve_record_ids`], or `None` to let the database pick.
    /// A batch must be all one or all the other.
    pub id: Option<i64>,
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
    pub reason: Option<Reason>,
    /// The record it duplicates.
    pub dup_of: Option<i64>,
    /// The similarity score behind the verdict.
    pub score: Option<f64>,
    /// [`instill_core::norm_hash`] of the record.
    pub norm_hash: String,
    /// When it was stored, unix ms.
    pub created_at: i64,
}

const COLUMNS: &str = "instruction, input, output, system, history, reasoning, lang, origin, source, import_id, run_id, request_id, item_idx, status, reason, dup_of, score, norm_hash, created_at";
const NUM_COLUMNS: usize = 19;
/// Rows per multi-row INSERT on SQLite: one statement per 500 rows makes sqlx's per-statement
/// cost vanish, and 19 × 500 parameters stay far below SQLite's 32766. (Parameters must stay
/// anonymous `?`: sqlx looks every named or numbered one up by name, which SQLite answers in
/// time linear in the parameter count.)
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// The INSERT for a full statement's worth of rows, built once (without and with ids).
static SQLITE_INSERT_FULL: LazyLock<[String; 2]> = LazyLock::new(|| {
    [
        sqlite_insert_sql(SQLITE_ROWS_PER_STATEMENT, false),
        sqlite_insert_sql(SQLITE_ROWS_PER_STATEMENT, true),
    ]
});

/// Shared text values for the small code columns, so binding them copies nothing.
struct Codes {
    codes: Vec<(&'static str, Arc<str>)>,
}

impl Codes {
    fn new() -> Codes {
        let all = [
            "zh",
            "en",
            "other",
            "imported",
            "generated",
            "pending",
            "accepted",
            "rejected",
        ];
        Codes {
            codes: all.iter().map(|c| (*c, Arc::from(*c))).collect(),
        }
    }

    fn get(&self, code: &'static str) -> Arc<str> {
        self.codes
            .iter()
            .find(|(c, _)| *c == code)
            .map_or_else(|| Arc::from(code), |(_, a)| a.clone())
    }
}

pub(crate) async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    rows: Vec<NewRecord>,
) -> Result<(), StorageError> {
    let codes = Codes::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<NewRecord> = rows.by_ref().take(SQLITE_ROWS_PER_STATEMENT).collect();
        let with_id = chunk.first().is_some_and(|r| r.id.is_some());
        let mut q = if chunk.len() == SQLITE_ROWS_PER_STATEMENT {
            sqlx::query(SQLITE_INSERT_FULL[usize::from(with_id)].as_str())
        } else {
            sqlx::query(AssertSqlSafe(sqlite_insert_sql(chunk.len(), with_id)))
        };
        // Owned values move into the arguments: the texts are not copied on the way to SQLite.
        for r in chunk {
            let history = r.record.history_json();
            if with_id {
                q = q.bind(r.id);
            }
            q = q
                .bind(r.record.instruction)
                .bind(r.record.input)
                .bind(r.record.output)
                .bind(r.record.system)
                .bind(history)
                .bind(r.record.reasoning)
                .bind(codes.get(r.lang.as_str()))
                .bind(codes.get(r.origin.as_str()))
                .bind(r.source)
                .bind(r.import_id)
                .bind(r.run_id)
                .bind(r.request_id)
                .bind(r.item_idx)
                .bind(codes.get(r.status.as_str()))
                .bind(r.reason.map(Reason::as_str))
                .bind(r.dup_of)
                .bind(r.score)
                .bind(r.norm_hash)
                .bind(r.created_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

fn sqlite_insert_sql(rows: usize, with_id: bool) -> String {
    let mut sql = String::with_capacity(64 + rows * (NUM_COLUMNS * 2 + 5));
    let columns = if with_id {
        format!("id, {COLUMNS}")
    } else {
        COLUMNS.to_string()
    };
    let _ = write!(sql, "INSERT INTO records ({columns}) VALUES ");
    let per_row = NUM_COLUMNS + usize::from(with_id);
    let one_row = format!("({})", vec!["?"; per_row].join(","));
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
    rows: Vec<NewRecord>,
) -> Result<(), StorageError> {
    if rows.is_empty() {
        return Ok(());
    }
    let with_id = rows[0].id.is_some();
    let mut data = Vec::with_capacity(rows.len() * 512);
    for r in &rows {
        if with_id {
            copy_num(r.id, &mut data);
            data.push(b'\t');
        }
        copy_row(r, &mut data);
    }
    let columns = if with_id {
        format!("id, {COLUMNS}")
    } else {
        COLUMNS.to_string()
    };
    let mut copy = conn
        .copy_in_raw(&format!("COPY records ({columns}) FROM STDIN"))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
fn copy_row(r: &NewRecord, out: &mut Vec<u8>) {
    let history = r.record.history_json();
    let texts: [Option<&str>; 6] = [
        Some(&r.record.instruction),
        Some(&r.record.input),
        Some(&r.record.output),
        Some(&r.record.system),
        history.as_deref(),
        Some(&r.record.reasoning),
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
    copy_text(r.reason.map(Reason::as_str), out);
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
        let sql = sqlite_insert_sql(3, false);
        assert_eq!(sql.matches('?').count(), 3 * NUM_COLUMNS);
        let sql = sqlite_insert_sql(2, true);
        assert_eq!(sql.matches('?').count(), 2 * (NUM_COLUMNS + 1));
        assert!(sql.starts_with("INSERT INTO records (id, instruction,"));
        assert_eq!(COLUMNS.split(", ").count(), NUM_COLUMNS);
    }
}
