-- Provenance of an evolved record (`instill evolve`). Keep in step with the other dialect.
-- evolved_from: the records.id it rewrites (an imported or generated record, or an earlier
-- round's evolution); evolved_from_seed: the seeds.id it rewrites (round 1 of a run evolving the
-- seed tasks); exactly one of the two is set on an evolved record, neither on any other.
-- evolve_round: 1 for the first rewrite; evolve_op: the operation (core's EvolveOp codes).
-- Filters, dedup and norm_hash never read these columns.
ALTER TABLE records ADD COLUMN evolved_from INTEGER;
ALTER TABLE records ADD COLUMN evolved_from_seed INTEGER;
ALTER TABLE records ADD COLUMN evolve_round INTEGER;
ALTER TABLE records ADD COLUMN evolve_op TEXT;
