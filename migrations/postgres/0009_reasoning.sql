-- Reasoning kept beside the answer (a reasoning model's `reasoning_content`, or the
-- `<think>…</think>` block before its answer). Keep in step with the other dialect.
-- records.reasoning: the reasoning behind `output`, '' when none (like `system`); filters,
-- dedup and `norm_hash` judge the answer alone. requests.reasoning: a reply's reasoning, a JSON
-- array with one text per choice (as `response`), NULL when no choice carried any; a resumed
-- run reads it back with the reply, so its records are the ones an uninterrupted run writes.
ALTER TABLE records ADD COLUMN reasoning TEXT NOT NULL DEFAULT '';
ALTER TABLE requests ADD COLUMN reasoning TEXT;
