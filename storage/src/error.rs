//! The storage crate's error type.

/// What went wrong talking to the database.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The URL is malformed, names an unsupported engine, or the database cannot be reached.
    #[error("cannot open database {url}: {message}")]
    Open {
        /// The URL, password redacted.
        url: String,
        /// Why.
        message: String,
    },
    /// Bringing the schema up to date failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    /// The bulk read of a SQLite file failed (`bulk.rs`).
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The thread of the bulk read stopped before it answered.
    #[error("the database reader stopped: {0}")]
    Reader(String),
    /// A stored value does not read back (say, `history` that is not JSON).
    #[error("stored {column} of record {id} is unreadable: {message}")]
    Corrupt {
        /// The column.
        column: &'static str,
        /// The row id.
        id: i64,
        /// Why.
        message: String,
    },
    /// A stored status or reason is not one this version knows (a newer instill wrote it, or
    /// the row was edited by hand).
    #[error("stored {column} is unreadable: {source}")]
    UnknownCode {
        /// The column.
        column: &'static str,
        /// The code and its vocabulary.
        source: instill_core::UnknownCode,
    },
    /// The operation needs the other engine (e.g. worker leases need Postgres).
    #[error("{0}")]
    Unsupported(String),
}

/// Reads a stored code of `column` ([`instill_core::Reason`], a status): the one conversion from
/// the text the database holds to the enum the code matches on.
pub(crate) fn decode<T>(column: &'static str, code: &str) -> Result<T, StorageError>
where
    T: std::str::FromStr<Err = instill_core::UnknownCode>,
{
    code.parse()
        .map_err(|source| StorageError::UnknownCode { column, source })
}
