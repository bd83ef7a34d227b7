//! The bulk read of the curation commands: every record a filter selects, in id order, stepped
//! straight off a SQLite file by rusqlite on blocking threads (one per core, up to four, each
//! over a range of ids, for a large table). sqlx hands SQLite rows over a channel with a copy
//! of every value, and the JSON-aggregate pages of `read.rs` cost about as much again in
//! encoding and decoding: on the 52k Alpaca records one reader takes a third of the CPU time
//! the pages took.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use crate::db::Db;
use crate::error::StorageError;
use crate::read::{PAGE_COLUMNS, StatusFilter, StoredRecord, stored};

/// Rows between two progress reports.
const REPORT_EVERY: usize = 5000;

impl Db {
    /// Every record that passes `filter`, in id order, read from the SQLite file on threads of
    /// its own; `progress` hears how many rows were read, every few thousand. `None`
    /// where there is no file to read this way (Postgres, `:memory:`): read pages instead
    /// ([`Db::records_between`]).
    pub async fn records_bulk(
        &self,
        filter: StatusFilter,
        progress: impl Fn(usize) + Send + Sync + 'static,
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

/// Records reserved ahead at most per reader: the span of ids bounds the rows (ids only grow),
/// but a span of mostly deleted ids should not reserve gigabytes.
const RESERVE_AT_MOST: usize = 1 << 20;

/// Readers at most, each a connection and a thread of its own over a range of ids.
const READERS_AT_MOST: usize = 4;

/// Ranges of ids per reader: a reader done with one takes the next left.
const RANGES_PER_READER: usize = 4;

/// Ids per reader at least: a smaller table is read by one.
const IDS_PER_READER: usize = 16_384;

/// The smallest and largest id, if any: each one B-tree descent (a `MIN` and a `MAX` in one
/// query would be a scan).
fn id_range(conn: &Connection) -> Result<Option<(i64, i64)>, StorageError> {
    let range: (Option<i64>, Option<i64>) = conn.query_row(
        "SELECT (SELECT MIN(id) FROM records), (SELECT MAX(id) FROM records)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    Ok(match range {
        (Some(lo), Some(hi)) => Some((lo, hi)),
        _ => None,
    })
}

fn open(file: &Path) -> Result<Connection, StorageError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(file, flags)?;
    // As long as sqlx's connections wait for a writer (see `db.rs`).
    conn.busy_timeout(Duration::from_secs(10))?;
    // Pages read straight from the kernel's cache of the file, not copied into SQLite's.
    conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
    Ok(conn)
}

/// Bytes of the file a reader maps (SQLite reads beyond them as usual).
const MMAP_BYTES: i64 = 1 << 30;

/// `lo..=hi` cut into `parts` ranges of about equal size, in order.
fn split(lo: i64, hi: i64, parts: usize) -> Vec<(i64, i64)> {
    let span = hi - lo + 1;
    let parts = i64::try_from(parts).unwrap_or(1).clamp(1, span.max(1));
    (0..parts)
        .map(|k| (lo + span * k / parts, lo + span * (k + 1) / parts - 1))
        .collect()
}

/// The rows of `file` passing `filter`, in id order. A large table is read by several
/// connections at once, each taking the next of a few ranges of ids per reader until none is
/// left (one reader slowed down, by page faults or another process, holds up no other):
/// decoding rows into records is most of the time, and it divides. Each range is its own read
/// transaction: a write committed between them shows in the later ones, as it would in a read
/// of pages.
fn read_file(
    file: &Path,
    filter: StatusFilter,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<StoredRecord>, StorageError> {
    let conn = open(file)?;
    let Some((lo, hi)) = id_range(&conn)? else {
        return Ok(Vec::new());
    };
    let span = usize::try_from(hi - lo + 1).unwrap_or(usize::MAX);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let readers = cores.min(READERS_AT_MOST).min(span / IDS_PER_READER).max(1);
    let ranges = split(
        lo,
        hi,
        if readers > 1 {
            readers * RANGES_PER_READER
        } else {
            1
        },
    );
    let next = AtomicUsize::new(0);
    // Ranges in the order taken, with what reading each gave.
    let take = |conn: &Connection| {
        let mut done = Vec::new();
        while let Some(&(a, b)) = ranges.get(next.fetch_add(1, Ordering::Relaxed)) {
            // The first range's vector takes the others after it: room for all of them.
            let reserve = if a == lo {
                span
            } else {
                usize::try_from(b - a + 1).unwrap_or(0)
            };
            let part = read_range(conn, filter, (a, b), reserve, progress);
            let failed = part.is_err();
            done.push((a, part));
            if failed {
                break;
            }
        }
        done
    };
    let mut parts = std::thread::scope(|s| {
        // A reader that cannot open the file takes no range: the others read them all.
        let others: Vec<_> = (1..readers)
            .map(|_| s.spawn(|| open(file).map(|c| take(&c)).unwrap_or_default()))
            .collect();
        let mut parts = take(&conn);
        for reader in others {
            match reader.join() {
                Ok(done) => parts.extend(done),
                Err(_) => parts.push((lo, Err(StorageError::Reader("a reader panicked".into())))),
            }
        }
        parts
    });
    parts.sort_by_key(|(start, _)| *start);
    let mut out: Vec<StoredRecord> = Vec::new();
    for (_, part) in parts {
        let mut part = part?;
        if out.is_empty() {
            out = part;
        } else {
            out.append(&mut part);
        }
    }
    Ok(out)
}

/// The rows with ids in `lo..=hi` passing `filter`, in id order, in a vector with room for
/// `reserve` (at most [`RESERVE_AT_MOST`]).
fn read_range(
    conn: &Connection,
    filter: StatusFilter,
    (lo, hi): (i64, i64),
    reserve: usize,
    progress: &(dyn Fn(usize) + Sync),
) -> Result<Vec<StoredRecord>, StorageError> {
    let sql = format!(
        "SELECT {PAGE_COLUMNS} FROM records WHERE id BETWEEN ?1 AND ?2 {} ORDER BY id",
        filter.sql()
    );
    let mut statement = conn.prepare(&sql)?;
    let mut rows = statement.query([lo, hi])?;
    let mut out = Vec::with_capacity(reserve.min(RESERVE_AT_MOST));
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

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn ranges_cover_the_ids_once_in_order() {
        for (lo, hi, parts) in [
            (1, 52_002, 2),
            (1, 10, 3),
            (5, 5, 4),
            (-3, 100, 4),
            (1, 2, 4),
        ] {
            let ranges = split(lo, hi, parts);
            assert_eq!(ranges[0].0, lo);
            assert_eq!(ranges.last().unwrap().1, hi);
            for w in ranges.windows(2) {
                assert_eq!(w[1].0, w[0].1 + 1, "{lo}..={hi} in {parts}: {ranges:?}");
            }
            assert!(ranges.iter().all(|r| r.0 <= r.1), "{ranges:?}");
        }
    }
}
