//! A write transaction: every batch of an import (or of a generation step) goes through one, so
//! a command either stores everything it read or nothing.

use sqlx::{Postgres, Sqlite, Transaction};

use crate::db::{Db, Pool};
use crate::error::StorageError;
use crate::records::{NewRecord, insert_postgres, insert_sqlite};

pub(crate) enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

/// Runs `$body` with `$c` bound to the transaction's connection of either dialect.
macro_rules! on_tx {
    ($tx:expr, $c:ident => $body:expr) => {
        match $tx {
            $crate::writer::Tx::Sqlite(t) => {
                let $c: &mut sqlx::SqliteConnection = &mut *t;
                $body
            }
            $crate::writer::Tx::Postgres(t) => {
                let $c: &mut sqlx::PgConnection = &mut *t;
                $body
            }
        }
    };
}
pub(crate) use on_tx;

/// An open write transaction. Dropping it without [`Writer::commit`] rolls everything back.
pub struct Writer {
    pub(crate) tx: Tx,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Db {
    /// Begins a write transaction (on SQLite `BEGIN IMMEDIATE`, so a second writer waits for the
    /// lock up front instead of failing half-way).
    pub async fn writer(&self) -> Result<Writer, StorageError> {
        let tx = match &self.pool {
            Pool::Sqlite(p) => Tx::Sqlite(p.begin_with("BEGIN IMMEDIATE").await?),
            Pool::Postgres(p) => Tx::Postgres(p.begin().await?),
        };
        Ok(Writer { tx })
    }
}

impl Writer {
    /// Stores a batch of records (multi-row INSERT on SQLite, COPY on Postgres), in order, so
    /// ids follow the batch order. Takes the batch by value: its texts move into the statement.
    pub async fn insert_records(&mut self, rows: Vec<NewRecord>) -> Result<(), StorageError> {
        match &mut self.tx {
            Tx::Sqlite(t) => insert_sqlite(t, rows).await,
            Tx::Postgres(t) => insert_postgres(t, rows).await,
        }
    }

    /// Reserves `n` record ids for [`crate::NewRecord::id`], in increasing order: a writer that
    /// needs to know ids before inserting (to point one new record at another) asks here. On
    /// SQLite the write lock this transaction holds keeps them free; on Postgres they come from
    /// the id sequence.
    pub async fn reserve_record_ids(&mut self, n: usize) -> Result<Vec<i64>, StorageError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        match &mut self.tx {
            Tx::Sqlite(t) => {
                let max: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM records")
                    .fetch_one(&mut **t)
                    .await?;
                Ok((max + 1..=max + n as i64).collect())
            }
            Tx::Postgres(t) => {
                let mut ids: Vec<i64> = sqlx::query_scalar(
                    "SELECT nextval(pg_get_serial_sequence('records', 'id')) FROM generate_series(1, $1)",
                )
                .bind(n as i64)
                .fetch_all(&mut **t)
                .await?;
                ids.sort_unstable();
                Ok(ids)
            }
        }
    }

    /// Makes everything written visible.
    pub async fn commit(self) -> Result<(), StorageError> {
        match self.tx {
            Tx::Sqlite(t) => t.commit().await?,
            Tx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Discards everything written.
    pub async fn rollback(self) -> Result<(), StorageError> {
        match self.tx {
            Tx::Sqlite(t) => t.rollback().await?,
            Tx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }
}
