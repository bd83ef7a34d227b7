//! Reading records back in id order, one keyset page at a time, for exports of any size.

use instill_core::{Lang, Record, Status};
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Db, Pool, on_pool};
use crate::error::{StorageError, decode};

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
    /// Pending, accepted or rejected.
    pub status: Status,
    /// Why it was rejected: a [`instill_core::Reason`]'s code, kept as text (the column is
    /// free text: a newer instill may store reasons this one does not know).
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

    pub(crate) fn sql(self) -> &'static str {
        match self {
            StatusFilter::Kept => "AND status <> 'rejected'",
            StatusFilter::Accepted => "AND status = 'accepted'",
            StatusFilter::Pending => "AND status = 'pending'",
            StatusFilter::Rejected => "AND status = 'rejected'",
            StatusFilter::All => "",
        }
    }

    /// [`StatusFilter::sql`] on the records table aliased `alias` in a join.
    pub(crate) fn sql_on(self, alias: &str) -> String {
        self.sql().replace("status", &format!("{alias}.status"))
    }
}

/// The columns a page reads, in this order.
pub(crate) const PAGE_COLUMNS: &str = "id, instruction, input, output, system, history, reasoning, lang, source, status, reason, norm_hash";

/// One page row as SQLite's JSON aggregate spells it (see [`Db::records_page`]).
type JsonRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
);

impl Db {
    /// Up to `limit` records with id greater than `after_id` that pass `filter`, in id order:
    /// one keyset page, so reading millions of rows holds one page in memory at a time.
    ///
    /// On SQLite the page comes back as one JSON array built by SQLite itself
    /// (`json_group_array`): sqlx hands SQLite rows over one message and one copy per value,
    /// which made row-by-row paging the slowest part of an export.
    pub async fn records_page(
        &self,
        filter: StatusFilter,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        self.read_range(filter, after_id, i64::MAX, limit).await
    }

    /// The records with `lo < id <= hi` that pass `filter`, in id order. Id windows let a
    /// reader (the dedup scope) read several windows at once (ids are dense: a window of N ids
    /// holds at most N records).
    pub async fn records_between(
        &self,
        filter: StatusFilter,
        lo: i64,
        hi: i64,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        self.read_range(filter, lo, hi, hi.saturating_sub(lo).max(0))
            .await
    }

    /// The smallest and largest id among records that pass `filter`, if any. Each end is read
    /// by an ordered `LIMIT 1` scan from that end, which stops at the first match (`MIN(id),
    /// MAX(id)` together is a full scan on SQLite).
    pub async fn id_range(&self, filter: StatusFilter) -> Result<Option<(i64, i64)>, StorageError> {
        let f = filter.sql();
        let sql = format!(
            "SELECT (SELECT id FROM records WHERE 1 = 1 {f} ORDER BY id LIMIT 1),
                    (SELECT id FROM records WHERE 1 = 1 {f} ORDER BY id DESC LIMIT 1)"
        );
        let (lo, hi): (Option<i64>, Option<i64>) = on_pool!(&self.pool, p => {
            sqlx::query_as(AssertSqlSafe(sql)).fetch_one(p).await?
        });
        Ok(lo.zip(hi))
    }

    async fn read_range(
        &self,
        filter: StatusFilter,
        after_id: i64,
        up_to_id: i64,
        limit: i64,
    ) -> Result<Vec<StoredRecord>, StorageError> {
        match &self.pool {
            Pool::Sqlite(p) => {
                let json =
                    sqlite_page_json(p, PAGE_COLUMNS, filter, after_id, up_to_id, limit).await?;
                let rows: Vec<JsonRow> = parse_page(&json, after_id, |r: &JsonRow| r.0)?;
                rows.into_iter()
                    .map(
                        |(
                            id,
                            instruction,
                            input,
                            output,
                            system,
                            history,
                            reasoning,
                            lang,
                            source,
                            status,
                            reason,
                            norm_hash,
                        )| {
                            stored(
                                id,
                                Record {
                                    instruction,
                                    input,
                                    output,
                                    system,
                                    history: Vec::new(),
                                    reasoning,
                                },
                                history,
                                &lang,
                                source,
                                &status,
                                reason,
                                norm_hash,
                            )
                        },
                    )
                    .collect()
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT {PAGE_COLUMNS} FROM records WHERE id > $1 AND id <= $2 {} ORDER BY id LIMIT $3",
                    filter.sql()
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(after_id)
                    .bind(up_to_id)
                    .bind(limit)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(|row| {
                        let record = Record {
                            instruction: row.try_get("instruction")?,
                            input: row.try_get("input")?,
                            output: row.try_get("output")?,
                            system: row.try_get("system")?,
                            history: Vec::new(),
                            reasoning: row.try_get("reasoning")?,
                        };
                        stored(
                            row.try_get("id")?,
                            record,
                            row.try_get("history")?,
                            row.try_get::<&str, _>("lang")?,
                            row.try_get("source")?,
                            row.try_get::<&str, _>("status")?,
                            row.try_get("reason")?,
                            row.try_get("norm_hash")?,
                        )
                    })
                    .collect()
            }
        }
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

/// Rows `after_id < id <= up_to_id` passing `filter`, at most `limit`, in id order, as one JSON
/// array of arrays of `columns`, built by SQLite itself (`json_group_array`): sqlx hands SQLite
/// rows over one message and one copy per value, which made row-by-row reading the slowest
/// part of an export. Callers check the order (SQLite does not promise it for an aggregate).
pub(crate) async fn sqlite_page_json(
    pool: &sqlx::SqlitePool,
    columns: &str,
    filter: StatusFilter,
    after_id: i64,
    up_to_id: i64,
    limit: i64,
) -> Result<String, StorageError> {
    let json = if limit >= up_to_id.saturating_sub(after_id) {
        // An id window needs no LIMIT, and without one SQLite aggregates straight off the rowid
        // scan instead of first copying every row through a subquery.
        let sql = format!(
            "SELECT json_group_array(json_array({columns})) FROM records WHERE id > $1 AND id <= $2 {}",
            filter.sql()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(after_id)
            .bind(up_to_id)
            .fetch_one(pool)
            .await?
    } else {
        let sql = format!(
            "SELECT json_group_array(json_array({columns}))
FROM (SELECT {columns} FROM records WHERE id > $1 AND id <= $2 {} ORDER BY id LIMIT $3)",
            filter.sql()
        );
        sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(after_id)
            .bind(up_to_id)
            .bind(limit)
            .fetch_one(pool)
            .await?
    };
    Ok(json)
}

/// Decodes a page from [`sqlite_page_json`] into rows in id order (`id` reads a row's id). The
/// aggregate sees the rows in scan (or subquery) order, but SQLite does not promise it (an
/// `ORDER BY` inside the aggregate would, at the price of a sort), so the order is checked and
/// restored here, which costs one pass when it holds.
pub(crate) fn parse_page<T: serde::de::DeserializeOwned>(
    json: &str,
    after_id: i64,
    id: impl Fn(&T) -> i64,
) -> Result<Vec<T>, StorageError> {
    let mut rows: Vec<T> = serde_json::from_str(json).map_err(|e| StorageError::Corrupt {
        column: "records page",
        id: after_id,
        message: e.to_string(),
    })?;
    if !rows.is_sorted_by_key(&id) {
        rows.sort_unstable_by_key(&id);
    }
    Ok(rows)
}

/// Assembles a [`StoredRecord`], parsing the stored `history` JSON.
#[allow(clippy::too_many_arguments)]
pub(crate) fn stored(
    id: i64,
    mut record: Record,
    history: Option<String>,
    lang: &str,
    source: String,
    status: &str,
    reason: Option<String>,
    norm_hash: String,
) -> Result<StoredRecord, StorageError> {
    record.history =
        Record::parse_history(history.as_deref()).map_err(|e| StorageError::Corrupt {
            column: "history",
            id,
            message: e.to_string(),
        })?;
    Ok(StoredRecord {
        id,
        record,
        lang: Lang::from_code(lang),
        source,
        status: decode("status", status)?,
        reason,
        norm_hash,
    })
}
