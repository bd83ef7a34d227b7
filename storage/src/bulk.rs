//! The bulk read of the curation commands: every record a filter selects, in id order, stepped
//! straight off a SQLite file by rusqlite on a blocking thread. sqlx hands SQLite rows over a
//! channel with a copy of every value, and the JSON-aggregate pages of `read.rs` cost about as
//! much again in encoding and decoding: on the 52k Alpaca records this read takes a third of
//! the CPU time the pages took.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::db::Db;
use crate::error::StorageError;
use crate::read::{PAGE_COLUMNS, StatusFilter, StoredRecord, stored};

/// Rows between two progress reports.
const REPORT_EVERY: usize = 5000;

impl Db {
    /// Every record that passes `filter`, in id order, read in one pass from the SQLite file on
    /// a thread of its own; `progress` hears how many rows were read, every few thousand. `None`
    /// where there is no file to read this way (Postgres, `:memory:`): read pages instead
    /// ([`Db::records_between`]).
    pub async fn records_bulk(
        &self,
        filter: StatusFilter,
        progress: impl Fn(usize) + Send + 'static,
    ) -> Result<Option<Vec<StoredRecord>>, StorageError> {
        let Some(file) = self.sqlite_file.clone() else {
            return Ok(None);
        };
        let read = tokio::task::spawn_blocking(move || read_file(&file, filter, &progress));
        match read.await {
            Ok(rows) => rows.map(Some),
            Err(e) => Err(StorageError::Reader(e.to_string())),
        }
    }
}

/// Records reserved ahead at most: the span of ids bounds the rows (ids only grow), but a span
/// of mostly deleted ids should not reserve gigabytes.
const RESERVE_AT_MOST: usize = 1 << 20;

/// How many records the table can hold at most, up to [`RESERVE_AT_MOST`]: growing the vector
/// of records by doubling copied and touched about twice its size. Each end of the id range is
/// one B-tree descent (a `MIN` and a `MAX` in one query would be a scan).
fn id_span(conn: &Connection) -> Result<usize, StorageError> {
    let span: Option<i64> = conn.query_row(
        "SELECT (SELECT MAX(id) FROM records) - (SELECT MIN(id) FROM records) + 1",
        [],
        |row| row.get(0),
    )?;
    Ok(span.map_or(0, |n| usize::try_from(n).unwrap_or(0).min(RESERVE_AT_MOST)))
}

/// The rows of `file` passing `filter`, in id order.
fn read_file(
    file: &Path,
    filter: StatusFilter,
    progress: &dyn Fn(usize),
) -> Result<Vec<StoredRecord>, StorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file, flags)?;
    // As long as sqlx's connections wait for a writer (see `db.rs`).
    conn.busy_timeout(Duration::from_secs(10))?;
    let sql = format!(
        "SELECT {PAGE_COLUMNS} FROM records WHERE 1 = 1 {} ORDER BY id",
        filter.sql()
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([])?;
    let mut out = Vec::with_capacity(id_span(&conn)?);
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let record = instill_core::Record {
            instruction: row.get(1)?,
            input: row.get(2)?,
            output: row.get(3)?,
            system: row.get(4)?,
            history: Vec::new(),
            reasoning: row.get(6)?,
        };
        let lang: String = row.get(7)?;
        let status: String = row.get(9)?;
        out.push(stored(
            id,
            record,
            row.get(5)?,
            &lang,
            row.get(8)?,
            &status,
            row.get(10)?,
            row.get(11)?,
        )?);
        if out.len() % REPORT_EVERY == 0 {
            progress(REPORT_EVERY);
        }
    }
    progress(out.len() % REPORT_EVERY);
    Ok(out)
}
