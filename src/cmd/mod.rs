//! One module per command: each parses nothing (clap did), opens the database, does the work
//! through the library crates, prints a summary.

pub mod backend;
pub mod dedup;
pub mod eval;
pub mod eval_compare;
pub mod evolve;
pub mod export;
pub mod export_pairs;
pub mod filter;
pub mod flags;
pub mod generate;
pub mod import;
pub mod magpie;
pub mod pairs;
pub mod report;
pub mod scope;
pub mod score;
pub mod score_metric;
pub mod seeds;
pub mod select;
pub mod sent;
pub mod stage;
pub mod stats;
pub mod train;
pub mod train_out;
pub mod train_pairs;
