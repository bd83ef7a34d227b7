//! Opening a database from its URL (SQLite file or Postgres server), running the migrations, and
//! the two-dialect dispatch every query goes through.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use instill_core::{redact_url, redact_urls_in};

use crate::error::StorageError;
use crate::migrations;

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A Postgres server.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the concrete pool (or connection) of either dialect. The body
/// is compiled once per dialect, so one SQL text serves both where their syntax agrees.
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::db::Pool::Sqlite($p) => $body,
            $crate::db::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// An open, migrated instill database.
#[derive(Debug, Clone)]
pub struct Db {
    pub(crate) pool: Pool,
    url: String,
    /// The SQLite file, for the bulk reader (`bulk.rs`); `None` for Postgres, `:memory:` and a
    /// URL with query options (which only sqlx's connection would honour).
    pub(crate) sqlite_file: Option<std::path::PathBuf>,
}

impl Db {
    /// Opens the database at `url` and brings its schema up to date.
    ///
    /// - `sqlite://PATH` (or `sqlite:PATH`, or a bare path): the file is created if missing, in
    ///   WAL mode with `synchronous=NORMAL`, foreign keys on, a 10 s busy timeout.
    /// - `postgres://…` / `postgresql://…`: a connection pool to the server.
    pub async fn open(url: &str) -> Result<Db, StorageError> {
        let cannot_open = |e: sqlx::Error| StorageError::Open {
            url: redact_url(url),
            message: redact_urls_in(&e.to_string()),
        };
        let pool = match parse_url(url)? {
            Target::Sqlite(opts) => {
                let pool = SqlitePoolOptions::new()
                    .max_connections(4)
                    .connect_with(opts)
                    .await
                    .map_err(cannot_open)?;
                Pool::Sqlite(pool)
            }
            Target::Postgres(opts) => {
                // One direct connection first: a refused connection or a bad password fails at
                // once, where the pool would retry until its acquire timeout.
                let probe = sqlx::PgConnection::connect_with(&opts)
                    .await
                    .map_err(cannot_open)?;
                let _ = probe.close().await;
                let pool = PgPoolOptions::new()
                    .max_connections(8)
                    .acquire_timeout(Duration::from_secs(10))
                    .connect_with(opts)
                    .await
                    .map_err(cannot_open)?;
                Pool::Postgres(pool)
            }
        };
        let sqlite_file = sqlite_path(url)
            .filter(|p| *p != ":memory:" && !url.contains('?'))
            .map(std::path::PathBuf::from);
        let db = Db {
            pool,
            url: redact_url(url),
            sqlite_file,
        };
        db.migrate().await?;
        Ok(db)
    }

    /// The engine behind this database.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The URL it was opened with, password removed.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes every connection (SQLite checkpoints its WAL on the last close).
    pub async fn close(&self) {
        on_pool!(&self.pool, p => p.close().await)
    }

    async fn migrate(&self) -> Result<(), StorageError> {
        let list = match self.backend() {
            Backend::Sqlite => migrations::SQLITE,
            Backend::Postgres => migrations::POSTGRES,
        };
        let migrator = Migrator::with_migrations(migrations::to_sqlx(list));
        on_pool!(&self.pool, p => migrator.run(p).await)?;
        Ok(())
    }
}

enum Target {
    Sqlite(SqliteConnectOptions),
    Postgres(PgConnectOptions),
}

fn parse_url(url: &str) -> Result<Target, StorageError> {
    let bad = |message: String| StorageError::Open {
        url: redact_url(url),
        message: redact_urls_in(&message),
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let opts = PgConnectOptions::from_str(url).map_err(|e| bad(e.to_string()))?;
        return Ok(Target::Postgres(opts));
    }
    let Some(path) = sqlite_path(url) else {
        let scheme = url.split_once("://").map_or(url, |(s, _)| s);
        return Err(bad(format!(
            "unsupported database `{scheme}`: use sqlite://PATH or postgres://USER@HOST/DB"
        )));
    };
    if path.is_empty() {
        return Err(bad("no file path after `sqlite://`".into()));
    }
    if path != ":memory:" && std::path::Path::new(path).is_dir() {
        return Err(bad(format!("`{path}` is a directory, not a database file")));
    }
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // New files only (an existing database keeps its page size): 16 KiB pages hold several
        // instruction records each, halving B-tree and WAL-frame overhead on bulk writes.
        .page_size(16384)
        // 16 MiB of page cache per connection (the pool has up to 4). 64 MiB bought nothing on
        // 1M-record imports and exports (bulk work streams through the OS page cache anyway)
        // and cost ~50 MB of peak RSS on an import, ~200 MB on an export.
        .pragma("cache_size", "-16384");
    Ok(Target::Sqlite(opts))
}

/// The file of a SQLite URL (`sqlite://PATH`, `sqlite:PATH` or a bare path, query removed);
/// `None` for Postgres and other schemes.
pub fn sqlite_path(url: &str) -> Option<&str> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return None;
    }
    let path = if let Some(rest) = url.strip_prefix("sqlite://") {
        rest
    } else if let Some(rest) = url.strip_prefix("sqlite:") {
        rest
    } else if url.contains("://") {
        return None;
    } else {
        url
    };
    Some(path.split_once('?').map_or(path, |(p, _)| p))
}

/// `(?, ?, …), (…)` for `rows` rows of `cols` values, in the dialect's placeholders.
pub(crate) fn placeholders(backend: Backend, rows: usize, cols: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    for row in 0..rows {
        out.push_str(if row == 0 { "(" } else { ",(" });
        for c in 0..cols {
            if c > 0 {
                out.push(',');
            }
            n += 1;
            match backend {
                Backend::Sqlite => out.push('?'),
                Backend::Postgres => out.push_str(&format!("${n}")),
            }
        }
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_file_of_a_sqlite_url() {
        assert_eq!(sqlite_path("sqlite://out/x.db?mode=rwc"), Some("out/x.db"));
        assert_eq!(sqlite_path("sqlite:x.db"), Some("x.db"));
        assert_eq!(sqlite_path("x.db"), Some("x.db"));
        assert_eq!(sqlite_path("postgres://u@h/db"), None);
        assert_eq!(sqlite_path("mysql://u@h/db"), None);
    }

    #[tokio::test]
    async fn refuses_urls_it_cannot_open() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            "mysql://root@localhost/db".to_string(),
            format!("sqlite://{}", dir.path().display()),
            format!("sqlite://{}/missing/dir/x.db", dir.path().display()),
            "postgres://nobody@127.0.0.1:1/none".to_string(),
        ];
        for url in cases {
            let err = Db::open(&url).await.unwrap_err().to_string();
            assert!(err.starts_with("cannot open database"), "{url}: {err}");
        }
    }
}
