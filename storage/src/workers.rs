//! Many generate workers on one run (Postgres): request claims with leases (`FOR UPDATE SKIP
//! LOCKED`), the acceptor's advisory lock, and the worker registry `instill stats` shows.

use sqlx::{Connection, Row};

use crate::db::{Db, Pool, on_pool};
use crate::error::StorageError;

/// An advisory lock (a run's acceptor's, or a command's on what it writes): a connection of
/// its own, outside the pool. It is released when this value drops (the connection closes) or
/// when the process dies.
#[derive(Debug)]
pub struct AcceptorLock {
    _conn: sqlx::PgConnection,
}

/// One worker of a run, as `instill stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRow {
    /// The run's name.
    pub run: String,
    /// `host-pid`.
    pub worker: String,
    /// Whether it holds the acceptor lock.
    pub acceptor: bool,
    /// Start, Unix ms.
    pub started_at: i64,
    /// Last heartbeat, Unix ms.
    pub heartbeat_at: i64,
    /// Requests it sent.
    pub sent: i64,
    /// Replies it stored.
    pub stored: i64,
    /// Requests it holds a live lease on now.
    pub leases: i64,
}

/// Which advisory lock.
#[derive(Debug, Clone, Copy)]
enum LockKey<'a> {
    /// A run's acceptor.
    Run(i64),
    /// A run's driver (the one process a chat run takes).
    Driver(i64),
    /// A command's, by name.
    Named(&'a str),
}

impl LockKey<'_> {
    /// The one-key form's key of a run's lock (0 for a named lock, which has two keys).
    fn one_key(self) -> i64 {
        match self {
            LockKey::Run(run_id) => lock_key(run_id),
            LockKey::Driver(run_id) => driver_lock_key(run_id),
            LockKey::Named(_) => 0,
        }
    }
}

/// What a worker asks for when it claims requests ([`Db::claim_requests`]).
#[derive(Debug, Clone)]
pub struct Claim<'a> {
    /// The worker's name.
    pub worker: &'a str,
    /// Requests wanted at most.
    pub n: i64,
    /// Until when the claims live (Unix ms) without a heartbeat.
    pub lease_until: i64,
    /// The window claims are taken from.
    pub range: std::ops::Range<i64>,
    /// Requests per unit whose requests go in order (a conversation's turns): an index gets a
    /// first claim only when it opens a unit (`idx % chain == 0`) or the request before it has
    /// its reply. 1: every index is independent.
    pub chain: i64,
}

/// The first key of the named locks (two-key form).
const NAMED_LOCKS: i32 = 0x01e5_7112;

/// Key of a run's advisory lock (a namespace in the high bits, the run id in the low ones).
fn lock_key(run_id: i64) -> i64 {
    0x01e5_7111_i64 << 32 | (run_id & 0xffff_ffff)
}

/// Key of a run's driver lock (another namespace: it never meets the acceptor's).
fn driver_lock_key(run_id: i64) -> i64 {
    0x01e5_7112_i64 << 32 | (run_id & 0xffff_ffff)
}

impl Db {
    /// Claims up to `c.n` requests of the run for `c.worker` until `c.lease_until` (Unix ms),
    /// among the indices in `c.range` (from the run's frontier to a window ahead of it): first
    /// those whose lease expired or that failed, then every index with no row at all (never
    /// claimed, or released by a worker that stopped), lowest first; with `c.chain` > 1 only
    /// the indices a unit's order allows (see [`Claim::chain`]). Returns the claimed indices.
    /// Postgres only.
    pub async fn claim_requests(
        &self,
        run_id: i64,
        c: &Claim<'_>,
        now: i64,
    ) -> Result<Vec<i64>, StorageError> {
        let Claim {
            worker,
            n,
            lease_until,
            ref range,
            chain,
        } = *c;
        let Pool::Postgres(p) = &self.pool else {
            return Err(StorageError::Unsupported(
                "request claims need Postgres".into(),
            ));
        };
        if n <= 0 || range.is_empty() {
            return Ok(Vec::new());
        }
        let reclaim = "UPDATE requests SET worker = $2, lease_until = $3, status = 'claimed'
WHERE id IN (SELECT id FROM requests WHERE run_id = $1 AND idx >= $5 AND idx < $6
  AND ((status = 'claimed' AND lease_until < $7) OR status = 'failed')
  ORDER BY idx LIMIT $4 FOR UPDATE SKIP LOCKED)
RETURNING idx";
        let mut got: Vec<i64> = sqlx::query_scalar(reclaim)
            .bind(run_id)
            .bind(worker)
            .bind(lease_until)
            .bind(n)
            .bind(range.start)
            .bind(range.end)
            .bind(now)
            .fetch_all(p)
            .await?;
        // Indices with no row, holes below the largest one included; a race with another worker
        // loses rows to ON CONFLICT, and the caller simply claims again.
        let fresh = "INSERT INTO requests (run_id, idx, payload_hash, prompt, status, worker, lease_until, created_at)
SELECT $1, g, '', '', 'claimed', $2, $3, $7
FROM generate_series($5::BIGINT, $6::BIGINT - 1) AS g
WHERE NOT EXISTS (SELECT 1 FROM requests q WHERE q.run_id = $1 AND q.idx = g)
  AND ($8 <= 1 OR g % $8 = 0 OR EXISTS (SELECT 1 FROM requests d
    WHERE d.run_id = $1 AND d.idx = g - 1 AND d.status = 'done'))
ORDER BY g LIMIT $4
ON CONFLICT (run_id, idx) DO NOTHING
RETURNING idx";
        let left = n - got.len() as i64;
        if left > 0 {
            let more: Vec<i64> = sqlx::query_scalar(fresh)
                .bind(run_id)
                .bind(worker)
                .bind(lease_until)
                .bind(left)
                .bind(range.start)
                .bind(range.end)
                .bind(now)
                .bind(chain)
                .fetch_all(p)
                .await?;
            got.extend(more);
        }
        got.sort_unstable();
        Ok(got)
    }

    /// Extends `worker`'s live claims on the run to `lease_until`.
    pub async fn extend_leases(
        &self,
        run_id: i64,
        worker: &str,
        lease_until: i64,
    ) -> Result<(), StorageError> {
        let sql = "UPDATE requests SET lease_until = $3 WHERE run_id = $1 AND worker = $2 AND status = 'claimed'";
        on_pool!(&self.pool, p => {
            sqlx::query(sql).bind(run_id).bind(worker).bind(lease_until).execute(p).await?;
        });
        Ok(())
    }

    /// Gives up `worker`'s claims that got no reply (it stops): the rows go, and a claim takes
    /// any index below the frontier window that has no row, so others take them at once.
    pub async fn release_claims(&self, run_id: i64, worker: &str) -> Result<(), StorageError> {
        let sql = "DELETE FROM requests WHERE run_id = $1 AND worker = $2 AND status = 'claimed'";
        on_pool!(&self.pool, p => {
            sqlx::query(sql).bind(run_id).bind(worker).execute(p).await?;
        });
        Ok(())
    }

    /// Takes the run's acceptor lock if no other worker holds it. Postgres only.
    pub async fn try_acceptor_lock(
        &self,
        run_id: i64,
    ) -> Result<Option<AcceptorLock>, StorageError> {
        self.try_advisory_lock(LockKey::Run(run_id)).await
    }

    /// Takes the run's driver lock if no other process holds it: held for a whole invocation
    /// by a driver that must be its run's only process (`generate --mode chat`, whose turns
    /// wait on each other). Apart from the acceptor lock, which that driver's stages may take.
    /// Postgres only.
    pub async fn try_driver_lock(&self, run_id: i64) -> Result<Option<AcceptorLock>, StorageError> {
        self.try_advisory_lock(LockKey::Driver(run_id)).await
    }

    /// Takes the lock named `name` (a command and what it writes, e.g. `score/judge`) if no
    /// other process holds it: what keeps two processes from running the same stage on one
    /// Postgres database. Postgres only.
    pub async fn try_named_lock(&self, name: &str) -> Result<Option<AcceptorLock>, StorageError> {
        self.try_advisory_lock(LockKey::Named(name)).await
    }

    async fn try_advisory_lock(
        &self,
        key: LockKey<'_>,
    ) -> Result<Option<AcceptorLock>, StorageError> {
        let Pool::Postgres(p) = &self.pool else {
            return Err(StorageError::Unsupported(
                "advisory locks need Postgres".into(),
            ));
        };
        let mut conn = p.acquire().await?.detach();
        let got: bool = match key {
            LockKey::Run(_) | LockKey::Driver(_) => {
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key.one_key())
                    .fetch_one(&mut conn)
                    .await?
            }
            // The two-key form: a key space apart from the runs' one-key locks.
            LockKey::Named(name) => {
                sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
                    .bind(NAMED_LOCKS)
                    .bind(name)
                    .fetch_one(&mut conn)
                    .await?
            }
        };
        if got {
            Ok(Some(AcceptorLock { _conn: conn }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }

    /// Records (or refreshes) `worker` in the run's registry.
    pub async fn worker_heartbeat(
        &self,
        run_id: i64,
        worker: &str,
        acceptor: bool,
        sent: i64,
        stored: i64,
        now: i64,
    ) -> Result<(), StorageError> {
        let sql = "INSERT INTO run_workers (run_id, worker, acceptor, started_at, heartbeat_at, sent, stored)
VALUES ($1, $2, $3, $4, $4, $5, $6)
ON CONFLICT (run_id, worker) DO UPDATE SET acceptor = excluded.acceptor,
heartbeat_at = excluded.heartbeat_at, sent = excluded.sent, stored = excluded.stored";
        on_pool!(&self.pool, p => {
            sqlx::query(sql).bind(run_id).bind(worker).bind(acceptor).bind(now).bind(sent).bind(stored).execute(p).await?;
        });
        Ok(())
    }

    /// Accepted records of a run (every worker watches it to stop at the target).
    pub async fn run_accepted(&self, run_id: i64) -> Result<i64, StorageError> {
        let sql = "SELECT COUNT(*) FROM records WHERE run_id = $1 AND status = 'accepted'";
        let n: i64 =
            on_pool!(&self.pool, p => sqlx::query_scalar(sql).bind(run_id).fetch_one(p).await?);
        Ok(n)
    }

    /// Workers whose heartbeat is newer than `since` (Unix ms), with their live leases.
    pub async fn live_workers(&self, since: i64, now: i64) -> Result<Vec<WorkerRow>, StorageError> {
        let sql = "SELECT r.name AS run, w.worker, w.acceptor, w.started_at, w.heartbeat_at, w.sent, w.stored,
(SELECT COUNT(*) FROM requests q WHERE q.run_id = w.run_id AND q.worker = w.worker AND q.status = 'claimed' AND q.lease_until >= $2) AS leases
FROM run_workers w JOIN runs r ON r.id = w.run_id WHERE w.heartbeat_at >= $1 ORDER BY r.name, w.worker";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(since).bind(now).fetch_all(p).await?;
            rows.iter()
                .map(|r| {
                    Ok(WorkerRow {
                        run: r.try_get("run")?,
                        worker: r.try_get("worker")?,
                        acceptor: r.try_get("acceptor")?,
                        started_at: r.try_get("started_at")?,
                        heartbeat_at: r.try_get("heartbeat_at")?,
                        sent: r.try_get("sent")?,
                        stored: r.try_get("stored")?,
                        leases: r.try_get("leases")?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StorageError::from)
        })
    }
}
