//! The `records` table: batched inserts (multi-row INSERT on SQLite, COPY on Postgres) and
//! reading back in id order by keyset pages.

use std::fmt::Write as _;
use std::sync::{Arc, LazyLock};

use instill_core::{Evolution, EvolvedFrom, Lang, Origin, Reason, Record, Status};
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
    /// What it rewrites, when `instill evolve` wrote it.
    pub evolution: Option<Evolution>,
}

impl NewRecord {
    /// The provenance columns: `evolved_from`, `evolved_from_seed`, `evolve_round`,
    /// `evolve_op`.
    fn evolution_columns(&self) -> (Option<i64>, Option<i64>, Option<i64>, Option<&'static str>) {
        match self.evolution {
            None => (None, None, None, None),
            Some(e) => {
                let (record, seed) = match e.from {
                    EvolvedFrom::Record(id) => (Some(id), None),
                    EvolvedFrom::Seed(id) => (None, Some(id)),
                };
                (record, seed, Some(i64::from(e.round)), Some(e.op.as_str()))
            }
        }
    }
}

const COLUMNS: &str = "instruction, input, output, system, history, reasoning, lang, origin, source, import_id, run_id, request_id, item_idx, status, reason, dup_of, score, norm_hash, created_at";
const NUM_COLUMNS: usize = 19;
/// The provenance columns of evolved records, written only by a batch that has some (an
/// import's rows leave them NULL without binding them).
const EVOLUTION_COLUMNS: &str = "evolved_from, evolved_from_seed, evolve_round, evolve_op";
const NUM_EVOLUTION_COLUMNS: usize = 4;
/// Rows per multi-row INSERT on SQLite: one statement per 500 rows makes sqlx's per-statement
/// cost vanish, and 24 × 500 parameters stay far below SQLite's 32766. (Parameters must stay
/// anonymous `?`: sqlx looks every named or numbered one up by name, which SQLite answers in
/// time linear in the parameter count.)
const SQLITE_ROWS_PER_STATEMENT: usize = 500;

/// Which columns a batch writes: `id` when its ids are reserved, the provenance columns when
/// a row of it is evolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    with_id: bool,
    evolved: bool,
}

impl Shape {
    fn of(rows: &[NewRecord]) -> Shape {
        Shape {
            with_id: rows.first().is_some_and(|r| r.id.is_some()),
            evolved: rows.iter().any(|r| r.evolution.is_some()),
        }
    }

    fn index(self) -> usize {
        usize::from(self.with_id) + 2 * usize::from(self.evolved)
    }

    fn columns(self) -> String {
        let id = if self.with_id { "id, " } else { "" };
        let evolved = if self.evolved {
            format!(", {EVOLUTION_COLUMNS}")
        } else {
            String::new()
        };
        format!("{id}{COLUMNS}{evolved}")
    }

    fn per_row(self) -> usize {
        NUM_COLUMNS + usize::from(self.with_id) + NUM_EVOLUTION_COLUMNS * usize::from(self.evolved)
    }
}

/// The INSERT for a full statement's worth of rows, built once per [`Shape`].
static SQLITE_INSERT_FULL: LazyLock<[String; 4]> = LazyLock::new(|| {
    [0, 1, 2, 3].map(|i| {
        let shape = Shape {
            with_id: i & 1 == 1,
            evolved: i & 2 == 2,
        };
        sqlite_insert_sql(SQLITE_ROWS_PER_STATEMENT, shape)
    })
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
        let shape = Shape::of(&chunk);
        let mut q = if chunk.len() == SQLITE_ROWS_PER_STATEMENT {
            sqlx::query(SQLITE_INSERT_FULL[shape.index()].as_str())
        } else {
            sqlx::query(AssertSqlSafe(sqlite_insert_sql(chunk.len(), shape)))
        };
        // Owned values move into the arguments: the texts are not copied on the way to SQLite.
        for r in chunk {
            let history = r.record.history_json();
            let (from, from_seed, round, op) = r.evolution_columns();
            if shape.with_id {
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
            if shape.evolved {
                q = q.bind(from).bind(from_seed).bind(round).bind(op);
            }
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

fn sqlite_insert_sql(rows: usize, shape: Shape) -> String {
    let per_row = shape.per_row();
    let mut sql = String::with_capacity(64 + rows * (per_row * 2 + 5));
    let _ = write!(sql, "INSERT INTO records ({}) VALUES ", shape.columns());
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
    let shape = Shape::of(&rows);
    let mut data = Vec::with_capacity(rows.len() * 512);
    for r in &rows {
        if shape.with_id {
            copy_num(r.id, &mut data);
            data.push(b'\t');
        }
        copy_row(r, shape.evolved, &mut data);
    }
    let mut copy = conn
        .copy_in_raw(&format!("COPY records ({}) FROM STDIN", shape.columns()))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    Ok(())
}

/// One row in COPY's text format: tab-separated, `\N` for NULL, backslash escapes.
fn copy_row(r: &NewRecord, evolved: bool, out: &mut Vec<u8>) {
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
    if evolved {
        let (from, from_seed, round, op) = r.evolution_columns();
        for n in [from, from_seed, round] {
            out.push(b'\t');
            copy_num(n, out);
        }
        out.push(b'\t');
        copy_text(op, out);
    }
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
        let plain = Shape {
            with_id: false,
            evolved: false,
        };
        let sql = sqlite_insert_sql(3, plain);
        assert_eq!(sql.matches('?').count(), 3 * NUM_COLUMNS);
        let with_id = Shape {
            with_id: true,
            ..plain
        };
        let sql = sqlite_insert_sql(2, with_id);
        assert_eq!(sql.matches('?').count(), 2 * (NUM_COLUMNS + 1));
        assert!(sql.starts_with("INSERT INTO records (id, instruction,"));
        assert_eq!(COLUMNS.split(", ").count(), NUM_COLUMNS);
        let evolved = Shape {
            with_id: true,
            evolved: true,
        };
        let sql = sqlite_insert_sql(1, evolved);
        assert_eq!(
            sql.matches('?').count(),
            NUM_COLUMNS + 1 + NUM_EVOLUTION_COLUMNS
        );
        assert!(
            sql.contains("created_at, evolved_from, evolved_from_seed, evolve_round, evolve_op)")
        );
        assert_eq!(EVOLUTION_COLUMNS.split(", ").count(), NUM_EVOLUTION_COLUMNS);
        assert_eq!(
            SQLITE_INSERT_FULL[evolved.index()],
            sqlite_insert_sql(500, evolved)
        );
    }
}
