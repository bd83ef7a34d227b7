-- Generation workers of a run. Keep in step with migrations/postgres/. SQLite runs have one
-- worker (a second concurrent `generate` on the same file is refused), recorded the same way.
CREATE TABLE run_workers (
    run_id       INTEGER NOT NULL REFERENCES runs(id),
    worker       TEXT    NOT NULL,
    acceptor     INTEGER NOT NULL DEFAULT 0,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    sent         INTEGER NOT NULL DEFAULT 0,
    stored       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, worker)
);
CREATE INDEX requests_claims ON requests (run_id, status, idx);
