-- Preference pairs (`instill pairs`, or imported from a DPO / ranking layout). Keep in step with
-- migrations/postgres/.
-- pair_set: the set a pair belongs to: the `instill pairs` run's name, or the import's source
-- label. record_id: the prompt (its instruction, input, system prompt and history; an imported
-- pair's record holds the chosen answer as its output). run_id: the run that sampled the answers
-- (NULL when imported); import_id: imports.id when imported.
-- no_pair: NULL for a pair; otherwise why the instruction has none (core's NoPair codes), with
-- the best and worst answers still recorded when there were any.
-- chosen_sample / rejected_sample: which of the run's K samples each side is (0-based);
-- samples: answers sampled, graded: of those, the ones the judge gave a grade.
-- One row per (pair_set, record_id): a rerun of a run never changes a row it wrote.
CREATE TABLE preferences (
    id                 INTEGER PRIMARY KEY,
    pair_set           TEXT    NOT NULL,
    record_id          INTEGER NOT NULL,
    run_id             INTEGER REFERENCES runs(id),
    import_id          INTEGER,
    no_pair            TEXT,
    chosen             TEXT,
    chosen_reasoning   TEXT    NOT NULL DEFAULT '',
    chosen_score       REAL,
    chosen_sample      INTEGER,
    rejected           TEXT,
    rejected_reasoning TEXT    NOT NULL DEFAULT '',
    rejected_score     REAL,
    rejected_sample    INTEGER,
    samples            INTEGER NOT NULL DEFAULT 0,
    graded             INTEGER NOT NULL DEFAULT 0,
    created_at         INTEGER NOT NULL,
    UNIQUE (pair_set, record_id),
    CHECK (no_pair IS NOT NULL OR (chosen IS NOT NULL AND rejected IS NOT NULL))
);
CREATE INDEX preferences_record ON preferences (record_id);
