//! End-to-end tests: the real `instill` binary against real SQLite files and the real Postgres
//! (`INSTILL_TEST_PG_URL`), on files the tests write and on the shared data sets. One test
//! binary for all, so CI links once.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[cfg(target_os = "linux")]
mod allocator;
mod bad_input;
mod chat;
mod consumers;
mod curate;
mod dpo;
mod eval;
mod evolve;
mod fake_hub;
mod fake_openai;
mod generate;
mod hub;
mod import_export;
mod local;
mod magpie;
mod model_files;
mod pair_io;
mod pairs;
#[cfg(feature = "parquet")]
mod parquet;
mod progress;
mod reasoning;
mod report;
mod rope;
mod score;
mod score_metric;
mod scores_shown;
mod secrets;
mod seeds_stats;
mod split;
mod train;
mod util;
mod whole_loop;
mod workers;
