//! The SQLite floors of the io bench: how fast Rust (sqlx over the same bundled SQLite the
//! binary uses) inserts rows that are already in memory, with no parsing, normalising or
//! hashing in the timed part. Two jobs, each run in a child process of its own (the bench
//! re-runs itself with `--floor JOB DATA DB`) so its wall time and peak RSS are measured like
//! the others:
//!
//! - `peer`: exactly the Python peer's job: a fresh file, its 4-column table, the peer's pragmas
//!   (rollback journal, `synchronous=FULL`, 4 KiB pages), one transaction; rows bound 500 to a
//!   statement. What Rust gains over Python on the peer's own work.
//! - `records`: instill's storage path alone: a fresh instill database (migrated before the
//!   clock starts), the records already parsed, their language and hash already computed, then
//!   [`Writer::insert_records`] in 8,192-row batches, commit, close (WAL checkpoint included).
//!   What `instill import` costs minus reading the file.
//!
//! Each prints `{"insert_s": …}` on stdout; the clock starts after the data is loaded, as the
//! peer's does.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use instill_core::{Origin, Record, Status, norm_hash, record_lang};
use instill_storage::{Db, NewRecord};
use serde::Deserialize;
use sqlx::ConnectOptions as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

/// One record of the synthetic file (Alpaca layout).
#[derive(Debug, Deserialize)]
struct Alpaca {
    instruction: String,
    input: String,
    output: String,
}

/// Rows per multi-row INSERT in the `peer` job (as in instill's own writer).
const ROWS_PER_STATEMENT: usize = 500;

/// Runs floor job `job` on `data` into the fresh database file `db`; prints its insert time.
pub fn child(job: &str, data: &str, db: &str) -> Result<(), String> {
    let text = std::fs::read(data).map_err(|e| format!("{data}: {e}"))?;
    let rows: Vec<Alpaca> = serde_json::from_slice(&text).map_err(|e| format!("{data}: {e}"))?;
    drop(text);
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{db}{suffix}"));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let seconds = match job {
        "peer" => rt.block_on(peer_job(rows, db)),
        "records" => rt.block_on(records_job(rows, db)),
        other => Err(format!("unknown floor job `{other}`")),
    }?;
    println!("{{\"insert_s\": {seconds}}}");
    Ok(())
}

async fn peer_job(rows: Vec<Alpaca>, db: &str) -> Result<f64, String> {
    let err = |e: sqlx::Error| e.to_string();
    let clock = Instant::now();
    let mut conn = SqliteConnectOptions::from_str(db)
        .map_err(err)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Delete)
        .synchronous(SqliteSynchronous::Full)
        .page_size(4096)
        .connect()
        .await
        .map_err(err)?;
    sqlx::query(
        "CREATE TABLE records(id INTEGER PRIMARY KEY, instruction TEXT NOT NULL, \
         input TEXT NOT NULL, output TEXT NOT NULL)",
    )
    .execute(&mut conn)
    .await
    .map_err(err)?;
    sqlx::query("BEGIN").execute(&mut conn).await.map_err(err)?;
    let full = insert_sql(ROWS_PER_STATEMENT);
    let mut id = 0i64;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Alpaca> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let sql = if chunk.len() == ROWS_PER_STATEMENT {
            full.clone()
        } else {
            insert_sql(chunk.len())
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for r in chunk {
            q = q.bind(id).bind(r.instruction).bind(r.input).bind(r.output);
            id += 1;
        }
        q.execute(&mut conn).await.map_err(err)?;
    }
    sqlx::query("COMMIT")
        .execute(&mut conn)
        .await
        .map_err(err)?;
    sqlx::Connection::close(conn).await.map_err(err)?;
    Ok(clock.elapsed().as_secs_f64())
}

fn insert_sql(rows: usize) -> String {
    let values = vec!["(?,?,?,?)"; rows].join(",");
    format!("INSERT INTO records(id, instruction, input, output) VALUES {values}")
}

async fn records_job(rows: Vec<Alpaca>, db: &str) -> Result<f64, String> {
    let err = |e: instill_storage::StorageError| e.to_string();
    let source: Arc<str> = Arc::from("floor");
    let prepared: Vec<NewRecord> = rows
        .into_iter()
        .map(|a| {
            let record = Record {
                instruction: a.instruction,
                input: a.input,
                output: a.output,
                system: String::new(),
                history: Vec::new(),
                reasoning: String::new(),
            };
            NewRecord {
                id: None,
                lang: record_lang(&record),
                norm_hash: norm_hash(&record),
                record,
                origin: Origin::Imported,
                source: source.clone(),
                import_id: Some(1),
                run_id: None,
                request_id: None,
                item_idx: None,
                status: Status::Pending,
                reason: None,
                dup_of: None,
                score: None,
                created_at: 1_764_000_000_000,
                evolution: None,
            }
        })
        .collect();
    let db = Db::open(&format!("sqlite://{db}")).await.map_err(err)?;
    let clock = Instant::now();
    let mut writer = db.writer().await.map_err(err)?;
    let mut prepared = prepared.into_iter().peekable();
    while prepared.peek().is_some() {
        let batch: Vec<NewRecord> = prepared.by_ref().take(8192).collect();
        writer.insert_records(batch).await.map_err(err)?;
    }
    writer.commit().await.map_err(err)?;
    db.close().await;
    Ok(clock.elapsed().as_secs_f64())
}
