//! The `imports` table: one row per imported file, keyed by its SHA-256, so importing the same
//! file again adds nothing.

use sqlx::Row;

use crate::db::{Db, on_pool};
use crate::error::StorageError;
use crate::writer::{Writer, on_tx};

/// A file about to be imported.
#[derive(Debug, Clone)]
pub struct NewImport<'a> {
    /// The path as the user gave it.
    pub path: &'a str,
    /// The source name its records get.
    pub source: &'a str,
    /// The layout it was read as.
    pub format: &'a str,
    /// SHA-256 of its bytes, lowercase hex.
    pub sha256: &'a str,
    /// Its size.
    pub bytes: i64,
    /// Unix ms.
    pub created_at: i64,
}

/// An import already in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportInfo {
    /// `imports.id`.
    pub id: i64,
    /// The path it was imported from.
    pub path: String,
    /// The source name its records got.
    pub source: String,
    /// Records stored.
    pub rows: i64,
    /// Invalid records skipped (with `--skip-invalid`).
    pub invalid: i64,
    /// Unix ms.
    pub created_at: i64,
}

impl Db {
    /// The import of the file whose SHA-256 is `sha256`, if any.
    pub async fn find_import(&self, sha256: &str) -> Result<Option<ImportInfo>, StorageError> {
        let sql =
            "SELECT id, path, source, rows, invalid, created_at FROM imports WHERE sha256 = $1";
        on_pool!(&self.pool, p => {
            let row = sqlx::query(sql).bind(sha256).fetch_optional(p).await?;
            row.map(|r| Ok(ImportInfo {
                id: r.try_get("id")?,
                path: r.try_get("path")?,
                source: r.try_get("source")?,
                rows: r.try_get("rows")?,
                invalid: r.try_get("invalid")?,
                created_at: r.try_get("created_at")?,
            })).transpose()
        })
    }
}

impl Writer {
    /// Records the start of an import and returns its id (the records' `import_id`).
    pub async fn create_import(&mut self, import: &NewImport<'_>) -> Result<i64, StorageError> {
        let sql = "INSERT INTO imports (path, source, format, sha256, bytes, created_at)
VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";
        let id: i64 = on_tx!(&mut self.tx, c => {
            sqlx::query_scalar(sql)
                .bind(import.path)
                .bind(import.source)
                .bind(import.format)
                .bind(import.sha256)
                .bind(import.bytes)
                .bind(import.created_at)
                .fetch_one(c)
                .await?
        });
        Ok(id)
    }

    /// Stores the final counts of an import, and its layout once detected.
    pub async fn finish_import(
        &mut self,
        id: i64,
        format: &str,
        rows: i64,
        invalid: i64,
    ) -> Result<(), StorageError> {
        let sql = "UPDATE imports SET format = $1, rows = $2, invalid = $3 WHERE id = $4";
        on_tx!(&mut self.tx, c => {
            sqlx::query(sql).bind(format).bind(rows).bind(invalid).bind(id).execute(c).await?.rows_affected()
        });
        Ok(())
    }
}
