//! Aggregate counts for `instill stats`: records by status, reason, source, run, language and
//! origin; length distributions; request and token totals.

use instill_core::Status;
use sqlx::Row;

use crate::db::{Db, on_pool};
use crate::error::{StorageError, decode};

/// Records by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Every record.
    pub total: i64,
    /// Not judged yet.
    pub pending: i64,
    /// Accepted by a run.
    pub accepted: i64,
    /// Rejected by a filter or dedup.
    pub rejected: i64,
}

/// How many records have each length (in characters) of one field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LengthHistogram {
    /// (length, records), by length.
    pub counts: Vec<(i64, i64)>,
}

impl LengthHistogram {
    /// Records counted.
    pub fn total(&self) -> i64 {
        self.counts.iter().map(|(_, n)| n).sum()
    }

    /// The smallest length such that at least `p` (0–1) of the records are no longer: the
    /// nearest-rank percentile. `None` when there are no records.
    pub fn percentile(&self, p: f64) -> Option<i64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        // Nearest rank: ceil(p * total), at least 1. Counts fit comfortably in f64.
        let rank = ((p.clamp(0.0, 1.0) * total as f64).ceil() as i64).max(1);
        let mut seen = 0;
        for &(len, n) in &self.counts {
            seen += n;
            if seen >= rank {
                return Some(len);
            }
        }
        self.counts.last().map(|&(len, _)| len)
    }

    /// The mean length, `None` when there are no records.
    pub fn mean(&self) -> Option<f64> {
        let total = self.total();
        (total > 0).then(|| {
            self.counts
                .iter()
                .map(|&(l, n)| l as f64 * n as f64)
                .sum::<f64>()
                / total as f64
        })
    }
}

/// Everything `instill stats` shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Records by status.
    pub records: StatusCounts,
    /// Seed tasks.
    pub seeds: i64,
    /// Imported files.
    pub imports: i64,
    /// Rejected records by reason, most frequent first.
    pub by_reason: Vec<(String, i64)>,
    /// Records by source, most frequent first.
    pub by_source: Vec<(String, i64)>,
    /// Records by generation run name, most frequent first.
    pub by_run: Vec<(String, i64)>,
    /// Records by language, most frequent first.
    pub by_lang: Vec<(String, i64)>,
    /// Records by origin (imported, generated).
    pub by_origin: Vec<(String, i64)>,
    /// Instruction lengths, in characters.
    pub instruction_len: LengthHistogram,
    /// Input lengths, in characters.
    pub input_len: LengthHistogram,
    /// Output lengths, in characters.
    pub output_len: LengthHistogram,
    /// Records that carry reasoning beside their answer.
    pub with_reasoning: i64,
    /// Requests sent to models.
    pub requests: i64,
    /// Prompt tokens over all requests.
    pub prompt_tokens: i64,
    /// Completion tokens over all requests.
    pub completion_tokens: i64,
}

impl Db {
    /// Computes [`Stats`] over the whole database.
    pub async fn stats(&self) -> Result<Stats, StorageError> {
        let by_status = self
            .group_counts(
                "SELECT status AS k, COUNT(*) AS n FROM records GROUP BY status ORDER BY n DESC, k",
            )
            .await?;
        let mut records = StatusCounts::default();
        for (status, n) in &by_status {
            records.total += n;
            match decode("records.status", status)? {
                Status::Pending => records.pending = *n,
                Status::Accepted => records.accepted = *n,
                Status::Rejected => records.rejected = *n,
            }
        }
        Ok(Stats {
            records,
            seeds: self.scalar("SELECT COUNT(*) FROM seeds").await?,
            imports: self.scalar("SELECT COUNT(*) FROM imports").await?,
            by_reason: self
                .group_counts("SELECT reason AS k, COUNT(*) AS n FROM records WHERE status = 'rejected' AND reason IS NOT NULL GROUP BY reason ORDER BY n DESC, k")
                .await?,
            by_source: self
                .group_counts("SELECT source AS k, COUNT(*) AS n FROM records GROUP BY source ORDER BY n DESC, k")
                .await?,
            by_run: self
                .group_counts("SELECT runs.name AS k, COUNT(*) AS n FROM records JOIN runs ON runs.id = records.run_id GROUP BY runs.name ORDER BY n DESC, k")
                .await?,
            by_lang: self
                .group_counts("SELECT lang AS k, COUNT(*) AS n FROM records GROUP BY lang ORDER BY n DESC, k")
                .await?,
            by_origin: self
                .group_counts("SELECT origin AS k, COUNT(*) AS n FROM records GROUP BY origin ORDER BY n DESC, k")
                .await?,
            instruction_len: self
                .histogram("SELECT CAST(LENGTH(instruction) AS BIGINT) AS l, COUNT(*) AS n FROM records GROUP BY l ORDER BY l")
                .await?,
            input_len: self
                .histogram("SELECT CAST(LENGTH(input) AS BIGINT) AS l, COUNT(*) AS n FROM records GROUP BY l ORDER BY l")
                .await?,
            output_len: self
                .histogram("SELECT CAST(LENGTH(output) AS BIGINT) AS l, COUNT(*) AS n FROM records GROUP BY l ORDER BY l")
                .await?,
            with_reasoning: self
                .scalar("SELECT COUNT(*) FROM records WHERE reasoning <> ''")
                .await?,
            requests: self.scalar("SELECT COUNT(*) FROM requests WHERE status <> 'claimed'").await?,
            prompt_tokens: self
                .scalar("SELECT CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) FROM requests")
                .await?,
            completion_tokens: self
                .scalar("SELECT CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) FROM requests")
                .await?,
        })
    }

    async fn scalar(&self, sql: &'static str) -> Result<i64, StorageError> {
        let n: i64 = on_pool!(&self.pool, p => sqlx::query_scalar(sql).fetch_one(p).await?);
        Ok(n)
    }

    async fn group_counts(&self, sql: &'static str) -> Result<Vec<(String, i64)>, StorageError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get::<String, _>("k")?, r.try_get::<i64, _>("n")?))).collect()
        })
    }

    async fn histogram(&self, sql: &'static str) -> Result<LengthHistogram, StorageError> {
        let counts = on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i64, _>("l")?, r.try_get::<i64, _>("n")?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()?
        });
        Ok(LengthHistogram { counts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let h = LengthHistogram {
            counts: vec![(1, 1), (2, 1), (3, 1), (10, 1)],
        };
        assert_eq!(h.percentile(0.5), Some(2));
        assert_eq!(h.percentile(0.75), Some(3));
        assert_eq!(h.percentile(0.76), Some(10));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.percentile(1.0), Some(10));
        assert_eq!(h.mean(), Some(4.0));
        assert_eq!(LengthHistogram::default().percentile(0.5), None);
    }
}
