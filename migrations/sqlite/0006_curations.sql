-- What each `instill dedup` and `instill filter` run did (dry runs are not stored), for the
-- dataset card an export writes. Keep in step with migrations/postgres/.
-- settings_json: the command's settings and per-stage summary, as its --json output gives them.
-- rejected_json: records it rejected, by reason code ({"minhash": 12, ...}).
CREATE TABLE curations (
    id            INTEGER PRIMARY KEY,
    command       TEXT    NOT NULL,
    settings_json TEXT    NOT NULL,
    checked       INTEGER NOT NULL,
    rejected_json TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
