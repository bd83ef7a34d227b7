//! instill-storage: one schema on two engines. SQLite is the embedded default (a file, no
//! server); Postgres is the same schema for many workers on many machines. This is the only
//! crate that knows SQL.
//!
//! - [`Db`]: open from a URL (`sqlite://PATH`, `postgres://…`), migrations run on open.
//! - [`Writer`]: a write transaction; records go in batches (multi-row INSERT on SQLite, COPY on
//!   Postgres), imports and seeds through the same transaction, so a command stores all or nothing.
//! - [`Db::records_page`]: keyset pages in id order, for reads of any size;
//!   [`Db::records_bulk`]: every record at once off a SQLite file, for the curation commands;
//!   [`Db::export_between`]: the lean id-window read of `instill export`.
//! - [`Db::stats`]: the aggregates of `instill stats`.
//!
//! Layout: `db.rs` (URL, pool, dialect dispatch, migrations), `writer.rs` (transactions),
//! `records.rs` (batched inserts), `read.rs` (pages in id order), `bulk.rs` (the curation commands' one-pass read), `export.rs` (the export's read), `imports.rs`, `seeds.rs`, `runs.rs` (runs and their request cache), `scores.rs` (scorers and their scores), `evals.rs` (evaluations and their grades), `preferences.rs` (preference pairs), `evolve.rs` (what `instill evolve` reads), `stats.rs`, `report.rs`, `verdicts.rs`, `workers.rs` (claims, leases, the acceptor lock) (one table or concern each), `testing.rs`
//! (throw-away databases, feature `testing`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), instill_storage::StorageError> {
//! let db = instill_storage::Db::open("sqlite://instill.db").await?;
//! let stats = db.stats().await?;
//! println!("{} records", stats.records.total);
//! # Ok(()) }
//! ```

mod bulk;
mod db;
mod error;
mod evals;
mod evolve;
mod export;
mod imports;
mod migrations;
mod preferences;
mod provenance;
mod read;
mod records;
mod report;
mod runs;
mod scores;
mod seeds;
mod stats;
mod verdicts;
mod workers;
mod writer;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use db::{Backend, Db, sqlite_path};
pub use error::StorageError;
pub use evals::{Evaluation, Grade};
pub use evolve::{EvolveCount, EvolvedRecord, PoolRecord};
pub use export::ExportRecord;
pub use imports::{ImportInfo, NewImport};
pub use preferences::{NewPreference, PairSet, StoredPair};
pub use provenance::{
    Curation, EvolvedBehind, ExportScores, ImportProvenance, Provenance, RunProvenance,
};
pub use read::{StatusFilter, StoredRecord};
pub use records::NewRecord;
pub use report::{RecordText, RunSummary, TimeBucket};
pub use runs::{NewRequest, PoolMember, RunRow, RunTotals, StoredRequest};
pub use scores::{NewScore, ScoreOf, Scorer};
pub use seeds::{NewSeed, StoredSeed};
pub use stats::{LengthHistogram, Stats, StatusCounts};
pub use verdicts::{Rejection, StoredVerdict};
pub use workers::{AcceptorLock, Claim, WorkerRow};
pub use writer::Writer;

#[cfg(test)]
mod tests;
