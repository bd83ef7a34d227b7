//! Parquet in and out (the `parquet` feature): the columns of each output layout, a writer of
//! records into zstd-compressed Parquet, and a reader that turns a Parquet file's rows, one row
//! group at a time, into the JSON objects the layout parser reads.
//!
//! - [`write`]: [`ParquetSink`] writes [`Record`](instill_core::Record)s in an
//!   [`OutputFormat`](instill_core::OutputFormat): Alpaca's `instruction`, `input`, `output`,
//!   `system` (`""` when none) and `history` (`list<list<utf8>>`, `[user, assistant]` pairs);
//!   ShareGPT's `conversations` (`list<struct<from, value>>`); `messages`
//!   (`list<struct<role, content>>`). The turns are [`instill_core::chat_turns`], the same the
//!   JSONL writer writes.
//! - [`read`]: [`ParquetRows`] reads a file's rows in batches; each row becomes one JSON object
//!   of the layout's columns ([`RowBatch::row_json`]), so the layout rules and field errors stay
//!   in instill-core's `parse_records`.

pub mod read;
pub mod write;

pub use read::ParquetRows;
pub use write::ParquetSink;

#[cfg(test)]
mod tests;
