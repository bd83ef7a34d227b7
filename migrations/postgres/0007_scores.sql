-- Scores of records by named scorers (`instill score`): an LLM judge with a rubric, or a local
-- metric (ppl, ifd). Keep in step with migrations/sqlite/.
-- A scorer's name is its identity: a second judge or rubric is a second scorer, beside the first.
-- method: judge | ppl | ifd. model: the judge's or the metric's model. rubric_hash: the judge's
-- rubric (content hash); NULL for metrics. scale_min/scale_max: the rubric's scale (every score
-- and threshold of a judge scorer is in it); NULL for metrics. run_id: the judge's stage run,
-- whose requests hold the replies the scores were read from. settings_json: what decided the
-- scores (the fingerprint a rerun must match).
CREATE TABLE scorers (
    name          TEXT    PRIMARY KEY,
    method        TEXT    NOT NULL,
    model         TEXT    NOT NULL,
    rubric_hash   TEXT,
    scale_min     DOUBLE PRECISION,
    scale_max     DOUBLE PRECISION,
    run_id        BIGINT REFERENCES runs(id),
    settings_json TEXT    NOT NULL,
    created_at    BIGINT NOT NULL
);

-- One score per (scorer, record). score NULL: the reply held no score, and `reason` says why
-- (the rationale keeps the reply). Tokens are the judge request's; NULL for metrics.
CREATE TABLE scores (
    scorer            TEXT    NOT NULL REFERENCES scorers(name),
    record_id         BIGINT NOT NULL,
    score             DOUBLE PRECISION,
    rationale         TEXT    NOT NULL DEFAULT '',
    reason            TEXT,
    request_id        BIGINT,
    prompt_tokens     BIGINT,
    completion_tokens BIGINT,
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (scorer, record_id)
);
