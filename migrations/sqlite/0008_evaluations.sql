-- Evaluations of models on an eval set (`instill eval`, BELLE's protocol): a candidate model
-- answers every question, a judge grades each answer against the reference answer with its
-- class's prompt. Keep in step with migrations/postgres/.
-- label: the evaluation's name (`--name`), its identity. answer_run_id / judge_run_id: the stage
-- runs whose requests hold the answers and the judge's replies. prompts_hash: the judge prompts'
-- content. settings_json: what decided the grades (the fingerprint a rerun must match).
CREATE TABLE evaluations (
    label           TEXT    PRIMARY KEY,
    model           TEXT    NOT NULL,
    judge_model     TEXT    NOT NULL,
    eval_set        TEXT    NOT NULL,
    eval_set_sha256 TEXT    NOT NULL,
    prompts_hash    TEXT    NOT NULL,
    questions       INTEGER NOT NULL,
    answer_run_id   INTEGER REFERENCES runs(id),
    judge_run_id    INTEGER REFERENCES runs(id),
    settings_json   TEXT    NOT NULL,
    created_at      INTEGER NOT NULL
);

-- One grade per (evaluation, question, repeat of the judge). idx: the question's position in
-- the eval set, from 0. class: normalised (lower case, spaces collapsed). grade NULL: the reply
-- held none, and `reason` says why.
CREATE TABLE eval_grades (
    evaluation TEXT    NOT NULL REFERENCES evaluations(label),
    idx        INTEGER NOT NULL,
    rep        INTEGER NOT NULL,
    class      TEXT    NOT NULL,
    grade      REAL,
    reason     TEXT,
    request_id INTEGER,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (evaluation, idx, rep)
);
