-- Curation results kept per record (instill dedup). Keep in step with migrations/postgres/.
-- cluster_id: the MinHash cluster (the id of its first record), for every record in a cluster.
-- rouge_nn_id / rouge_nn_score: the most similar earlier kept record by ROUGE-L and its F1, when
-- it scores at least the reporting floor (NULL otherwise, or when the match is a seed task).
ALTER TABLE records ADD COLUMN cluster_id INTEGER;
ALTER TABLE records ADD COLUMN rouge_nn_id INTEGER;
ALTER TABLE records ADD COLUMN rouge_nn_score REAL;
