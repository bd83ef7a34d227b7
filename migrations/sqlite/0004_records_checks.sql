-- records' two CHECK constraints, rewritten from `x IN ('a', 'b')` to `x = 'a' OR x = 'b'` (the
-- same rule). Keep in step with migrations/postgres/. In SQLite an IN list inside a CHECK is
-- evaluated through a temporary index built once per statement execution and probed per row;
-- the comparisons cost nothing measurable. On a 300k-row bulk insert into this table (C, WAL,
-- 500-row statements) the IN form took 0.87-0.95 s and the OR form 0.69-0.71 s.
-- SQLite cannot alter a CHECK in place: the table is rebuilt (SQLite's documented procedure),
-- which copies every record once, in this migration's transaction.
CREATE TABLE records_new (
    id          INTEGER PRIMARY KEY,
    instruction TEXT    NOT NULL,
    input       TEXT    NOT NULL DEFAULT '',
    output      TEXT    NOT NULL,
    system      TEXT    NOT NULL DEFAULT '',
    history     TEXT,
    lang        TEXT    NOT NULL,
    origin      TEXT    NOT NULL CHECK (origin = 'generated' OR origin = 'imported'),
    source      TEXT    NOT NULL,
    import_id   INTEGER, -- imports.id; no REFERENCES: see 0001_init.sql
    run_id      INTEGER REFERENCES runs(id),
    request_id  INTEGER REFERENCES requests(id),
    item_idx    INTEGER,
    status      TEXT    NOT NULL DEFAULT 'pending'
                CHECK (status = 'pending' OR status = 'accepted' OR status = 'rejected'),
    reason      TEXT,
    dup_of      INTEGER,
    score       REAL,
    norm_hash   TEXT    NOT NULL,
    created_at  INTEGER NOT NULL,
    cluster_id     INTEGER,
    rouge_nn_id    INTEGER,
    rouge_nn_score REAL
);
INSERT INTO records_new (id, instruction, input, output, system, history, lang, origin, source,
    import_id, run_id, request_id, item_idx, status, reason, dup_of, score, norm_hash, created_at,
    cluster_id, rouge_nn_id, rouge_nn_score)
SELECT id, instruction, input, output, system, history, lang, origin, source,
    import_id, run_id, request_id, item_idx, status, reason, dup_of, score, norm_hash, created_at,
    cluster_id, rouge_nn_id, rouge_nn_score
FROM records;
DROP TABLE records;
ALTER TABLE records_new RENAME TO records;
CREATE INDEX records_run ON records (run_id, request_id, item_idx) WHERE run_id IS NOT NULL;
