-- Shared runs that cannot wedge or write twice. Keep in step with migrations/sqlite/.
-- runs.epoch: bumped by each worker that becomes a run's acceptor; every flush of accepted
-- records checks it in its own transaction (UPDATE … WHERE epoch = mine), so an acceptor that
-- lost the run (its advisory-lock connection died and another took over) writes nothing.
-- runs.frontier: the first request idx the acceptor has not finished judging; every idx below
-- it has a stored reply. Workers claim from it, so replies that yield no tasks move it too.
ALTER TABLE runs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN frontier BIGINT NOT NULL DEFAULT 0;
-- A generated record is item item_idx of request request_id: at most one record each. Imported
-- records (request_id NULL) have no such key and are left out. Copies written before this
-- migration by two acceptors at once are removed (the first one stays; dup_of pointers to a
-- removed copy point at the kept one).
UPDATE records SET dup_of = (
    SELECT MIN(k.id) FROM records k JOIN records d
    ON k.request_id = d.request_id AND k.item_idx = d.item_idx
    WHERE d.id = records.dup_of)
WHERE dup_of IN (SELECT r.id FROM records r JOIN records k
    ON r.request_id = k.request_id AND r.item_idx = k.item_idx AND k.id < r.id);
DELETE FROM records WHERE id IN (SELECT r.id FROM records r JOIN records k
    ON r.request_id = k.request_id AND r.item_idx = k.item_idx AND k.id < r.id);
CREATE UNIQUE INDEX records_request_item ON records (request_id, item_idx)
    WHERE request_id IS NOT NULL;
