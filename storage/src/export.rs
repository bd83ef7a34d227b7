//! The lean read of an export: only what a JSONL line and the train/validation split need, in
//! id windows. Reading fewer columns is most of what makes an export fast on SQLite, where the
//! page is a JSON array SQLite builds column by column.

use instill_core::Record;
use sqlx::{AssertSqlSafe, Row};

use crate::db::{Db, Pool};
use crate::error::StorageError;
use crate::read::{StatusFilter, parse_page, sqlite_page_json};

/// A record as an export reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRecord {
    /// `records.id`: insertion order.
    pub id: i64,
    /// The instruction pair.
    pub record: Record,
    /// [`instill_core::norm_hash`] of the record, or empty when not asked for.
    pub norm_hash: String,
}

/// One row of the SQLite page: id, the record's six fields, the hash.
type JsonRow = (
    i64,
    String,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
);

impl Db {
    /// The records with `lo < id <= hi` that pass `filter`, in id order, with their hash only
    /// when `with_hash` (a validation split needs it, a plain export does not).
    pub async fn export_between(
        &self,
        filter: StatusFilter,
        lo: i64,
        hi: i64,
        with_hash: bool,
    ) -> Result<Vec<ExportRecord>, StorageError> {
        let hash = if with_hash { "norm_hash" } else { "''" };
        const BASE: &str = "id, instruction, input, output, system, history, reasoning";
        let rows: Vec<JsonRow> = match &self.pool {
            Pool::Sqlite(p) => {
                let limit = hi.saturating_sub(lo).max(0);
                let columns = format!("{BASE}, {hash}");
                let json = sqlite_page_json(p, &columns, filter, lo, hi, limit).await?;
                parse_page(&json, lo, |r: &JsonRow| r.0)?
            }
            Pool::Postgres(p) => {
                let sql = format!(
                    "SELECT {BASE}, {hash} AS norm_hash FROM records WHERE id > $1 AND id <= $2 {} ORDER BY id",
                    filter.sql()
                );
                let rows = sqlx::query(AssertSqlSafe(sql))
                    .bind(lo)
                    .bind(hi)
                    .fetch_all(p)
                    .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            row.try_get("id")?,
                            row.try_get("instruction")?,
                            row.try_get("input")?,
                            row.try_get("output")?,
                            row.try_get("system")?,
                            row.try_get("history")?,
                            row.try_get("reasoning")?,
                            row.try_get("norm_hash")?,
                        ))
                    })
                    .collect::<Result<_, sqlx::Error>>()?
            }
        };
        rows.into_iter()
            .map(
                |(id, instruction, input, output, system, history, reasoning, norm_hash)| {
                    let history = Record::parse_history(history.as_deref()).map_err(|e| {
                        StorageError::Corrupt {
                            column: "history",
                            id,
                            message: e.to_string(),
                        }
                    })?;
                    Ok(ExportRecord {
                        id,
                        record: Record {
                            instruction,
                            input,
                            output,
                            system,
                            history,
                            reasoning,
                        },
                        norm_hash,
                    })
                },
            )
            .collect()
    }
}
