-- Generation workers of a run (instill generate on several processes against one Postgres).
-- Keep in step with migrations/sqlite/. One row per worker process, refreshed by its heartbeat;
-- `acceptor` marks the one holding the run's advisory lock. `sent`/`stored` count its requests.
CREATE TABLE run_workers (
    run_id       BIGINT  NOT NULL REFERENCES runs(id),
    worker       TEXT    NOT NULL,
    acceptor     BOOLEAN NOT NULL DEFAULT FALSE,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL,
    sent         BIGINT  NOT NULL DEFAULT 0,
    stored       BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, worker)
);
CREATE INDEX requests_claims ON requests (run_id, status, idx);
