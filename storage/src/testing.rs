//! Throw-away databases for tests (feature `testing`): a SQLite file in a temp dir, or a fresh
//! Postgres database on the server named by `INSTILL_TEST_PG_URL`, dropped when the value is.
//! Postgres database names start with `INSTILL_TEST_DB_PREFIX` (default `instill_test_`), so a
//! CI run can find and drop exactly the databases it made, even after a killed test.

use std::sync::atomic::{AtomicU32, Ordering};

/// The environment variable naming the Postgres server tests use.
pub const PG_URL_VAR: &str = "INSTILL_TEST_PG_URL";

/// The environment variable giving the prefix of test database names.
pub const DB_PREFIX_VAR: &str = "INSTILL_TEST_DB_PREFIX";

/// A database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TempDb {
    /// The URL to open it with.
    pub url: String,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TempDb {
    /// A SQLite file (not created yet) in a fresh temp dir.
    pub fn sqlite() -> TempDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("instill.db").display());
        TempDb {
            url,
            backend: "sqlite",
            dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh, empty Postgres database. Panics when `INSTILL_TEST_PG_URL` is unset or the
    /// server cannot be reached: Postgres is part of the test contract, not optional.
    pub fn postgres() -> TempDb {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = std::env::var(PG_URL_VAR).unwrap_or_else(|_| {
            panic!("{PG_URL_VAR} is not set: run the tests through `bash .ci/run`, or set it to a Postgres URL such as postgres://postgres@127.0.0.1:5432/postgres")
        });
        let prefix = db_prefix();
        let name = format!(
            "{prefix}{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        );
        admin_exec(&admin, format!("CREATE DATABASE {name}"));
        let url = with_database(&admin, &name);
        TempDb {
            url,
            backend: "postgres",
            dir: None,
            pg: Some((admin, name)),
        }
    }

    /// One of each, SQLite first: every storage test runs on both.
    pub fn both() -> [TempDb; 2] {
        [TempDb::sqlite(), TempDb::postgres()]
    }

    /// The temp dir of a SQLite database (a handy place for test files), if this is one.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(tempfile::TempDir::path)
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            admin_exec(
                &admin,
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            );
        }
    }
}

/// The prefix of test database names: `INSTILL_TEST_DB_PREFIX` when it is a plain identifier
/// (lower-case ASCII letters, digits, `_`), else `instill_test_`.
fn db_prefix() -> String {
    match std::env::var(DB_PREFIX_VAR) {
        Ok(p)
            if !p.is_empty()
                && p.len() <= 40
                && p.starts_with(|c: char| c.is_ascii_lowercase())
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') =>
        {
            p
        }
        Ok(p) if !p.is_empty() => panic!(
            "{DB_PREFIX_VAR}={p:?} is not a plain lower-case identifier of at most 40 characters"
        ),
        _ => "instill_test_".to_string(),
    }
}

/// Runs one statement on the admin database, from a thread of its own so that it works inside
/// and outside a tokio runtime alike.
fn admin_exec(admin_url: &str, sql: String) {
    let admin_url = admin_url.to_string();
    let outcome = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .map_err(|e| std::io::Error::other(e.to_string()))
    })
    .join();
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("Postgres at {PG_URL_VAR}: {e}"),
        Err(_) => panic!("Postgres admin thread panicked"),
    }
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[scheme_end..].find('/').map(|i| scheme_end + i);
    let authority = path_start.map_or(base, |i| &base[..i]);
    match query {
        Some(q) => format!("{authority}/{name}?{q}"),
        None => format!("{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
