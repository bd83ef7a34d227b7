//! Where the records of an export came from and what was done to them, for the dataset card:
//! counts by language, source and origin of the exported records, the generation runs and
//! imports behind them, the exported records `instill evolve` wrote (by run and round, from seed
//! tasks or records), every stored curation (`instill dedup`, `filter`, `select`), and every
//! scorer's scores of the exported records.

use sqlx::{AssertSqlSafe, Row};

use crate::db::{Db, on_pool};
use crate::error::StorageError;
use crate::read::StatusFilter;
use crate::scores::Scorer;
use crate::writer::{Writer, on_tx};

/// One `instill dedup`, `filter` or `select` run, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Curation {
    /// `dedup`, `filter` or `select`.
    pub command: String,
    /// Its settings and per-stage summary (JSON).
    pub settings_json: String,
    /// Records it judged.
    pub checked: i64,
    /// Records it rejected, by reason code (JSON object).
    pub rejected_json: String,
    /// When it ran, Unix milliseconds.
    pub created_at: i64,
}

/// A generation run that made some of the exported records.
#[derive(Debug, Clone, PartialEq)]
pub struct RunProvenance {
    /// The run's name.
    pub name: String,
    /// Its settings (model, template, seeds, sampling), as stored when it started (JSON).
    pub config_json: String,
    /// Start, Unix milliseconds.
    pub started_at: i64,
    /// Exported records it made.
    pub records: i64,
}

/// Exported records one evolve run wrote in one round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvolvedBehind {
    /// The evolve run's name.
    pub run: String,
    /// The round (1 = the first rewrite).
    pub round: i64,
    /// Those rewritten from a seed task.
    pub from_seeds: i64,
    /// Those rewritten from a record (an imported or generated one, or the run's own earlier
    /// rewrite).
    pub from_records: i64,
}

/// An imported file that some of the exported records came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportProvenance {
    /// The path given to `instill import`.
    pub path: String,
    /// The layout it was read as.
    pub format: String,
    /// Its SHA-256.
    pub sha256: String,
    /// Exported records read from it.
    pub records: i64,
}

/// A scorer and its scores of the exported records.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportScores {
    /// The scorer.
    pub scorer: Scorer,
    /// Its score of each exported record it scored, in record id order (None: the reply held
    /// no score). Exported records it never scored are not here.
    pub scores: Vec<Option<f64>>,
}

/// What a dataset card says about the records an export selects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    /// Exported records by language code, most frequent first.
    pub by_lang: Vec<(String, i64)>,
    /// Exported records by source, most frequent first.
    pub by_source: Vec<(String, i64)>,
    /// Exported records by origin (imported, generated), most frequent first.
    pub by_origin: Vec<(String, i64)>,
    /// The generation runs behind them, oldest first.
    pub runs: Vec<RunProvenance>,
    /// The imported files behind them, oldest first.
    pub imports: Vec<ImportProvenance>,
    /// The evolved ones among them, by run (oldest first) and round.
    pub evolved: Vec<EvolvedBehind>,
    /// Rejected records in the whole database by reason, most frequent first.
    pub rejected_by_reason: Vec<(String, i64)>,
    /// Every stored curation, oldest first.
    pub curations: Vec<Curation>,
    /// Every scorer (oldest first) with its scores of the exported records.
    pub scores: Vec<ExportScores>,
}

impl Db {
    /// The provenance of the records `filter` selects.
    pub async fn provenance(&self, filter: StatusFilter) -> Result<Provenance, StorageError> {
        let f = filter.sql();
        let grouped = |column: &str| {
            format!(
                "SELECT {column} AS k, COUNT(*) AS n FROM records WHERE 1 = 1 {f} \
                 GROUP BY {column} ORDER BY n DESC, k"
            )
        };
        Ok(Provenance {
            by_lang: self.counts(grouped("lang")).await?,
            by_source: self.counts(grouped("source")).await?,
            by_origin: self.counts(grouped("origin")).await?,
            runs: self.runs_behind(f).await?,
            imports: self.imports_behind(f).await?,
            evolved: self.evolved_behind(f).await?,
            rejected_by_reason: self
                .counts(
                    "SELECT reason AS k, COUNT(*) AS n FROM records WHERE status = 'rejected' \
                     AND reason IS NOT NULL GROUP BY reason ORDER BY n DESC, k"
                        .to_string(),
                )
                .await?,
            curations: self.curations().await?,
            scores: self.scores_behind(filter).await?,
        })
    }

    /// Every scorer with its scores of the records `filter` selects.
    async fn scores_behind(&self, filter: StatusFilter) -> Result<Vec<ExportScores>, StorageError> {
        let sql = format!(
            "SELECT score FROM scores WHERE scorer = $1 \
             AND record_id IN (SELECT id FROM records WHERE 1 = 1 {}) ORDER BY record_id",
            filter.sql()
        );
        let mut out = Vec::new();
        for scorer in self.scorers().await? {
            let scores: Vec<Option<f64>> = on_pool!(&self.pool, p => {
                sqlx::query_scalar(AssertSqlSafe(sql.clone())).bind(&scorer.name).fetch_all(p).await?
            });
            out.push(ExportScores { scorer, scores });
        }
        Ok(out)
    }

    /// Whether any record `filter` selects has a system prompt, any has earlier turns, and any
    /// has reasoning: the optional columns an export writes on every line.
    pub async fn columns_in_use(
        &self,
        filter: StatusFilter,
    ) -> Result<instill_core::Columns, StorageError> {
        let f = filter.sql();
        let any = |condition: &str| {
            format!("SELECT COUNT(*) FROM (SELECT 1 FROM records WHERE {condition} {f} LIMIT 1) x")
        };
        let system = any("system <> ''");
        let history = any("history IS NOT NULL AND history <> '' AND history <> '[]'");
        let reasoning = any("reasoning <> ''");
        let (system, history, reasoning): (i64, i64, i64) = on_pool!(&self.pool, p => (
            sqlx::query_scalar(AssertSqlSafe(system)).fetch_one(p).await?,
            sqlx::query_scalar(AssertSqlSafe(history)).fetch_one(p).await?,
            sqlx::query_scalar(AssertSqlSafe(reasoning)).fetch_one(p).await?,
        ));
        Ok(instill_core::Columns {
            system: system > 0,
            history: history > 0,
            reasoning: reasoning > 0,
        })
    }

    async fn counts(&self, sql: String) -> Result<Vec<(String, i64)>, StorageError> {
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await?;
            rows.iter().map(|r| Ok((r.try_get::<String, _>("k")?, r.try_get::<i64, _>("n")?))).collect()
        })
    }

    async fn runs_behind(&self, f: &str) -> Result<Vec<RunProvenance>, StorageError> {
        let sql = format!(
            "SELECT r.name, r.config_json, r.started_at, c.n FROM runs r JOIN \
             (SELECT run_id, COUNT(*) AS n FROM records WHERE run_id IS NOT NULL {f} GROUP BY run_id) c \
             ON c.run_id = r.id ORDER BY r.id"
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await?;
            rows.iter().map(|r| Ok(RunProvenance {
                name: r.try_get("name")?,
                config_json: r.try_get("config_json")?,
                started_at: r.try_get("started_at")?,
                records: r.try_get("n")?,
            })).collect()
        })
    }

    async fn evolved_behind(&self, f: &str) -> Result<Vec<EvolvedBehind>, StorageError> {
        let sql = format!(
            "SELECT r.name, CAST(c.evolve_round AS BIGINT) AS round, c.seeds, c.recs FROM runs r JOIN \
             (SELECT run_id, evolve_round, \
             CAST(SUM(CASE WHEN evolved_from_seed IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS seeds, \
             CAST(SUM(CASE WHEN evolved_from IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS recs \
             FROM records WHERE evolve_op IS NOT NULL {f} GROUP BY run_id, evolve_round) c \
             ON c.run_id = r.id ORDER BY r.id, round"
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await?;
            rows.iter().map(|r| Ok(EvolvedBehind {
                run: r.try_get("name")?,
                round: r.try_get::<Option<i64>, _>("round")?.unwrap_or(0),
                from_seeds: r.try_get("seeds")?,
                from_records: r.try_get("recs")?,
            })).collect()
        })
    }

    async fn imports_behind(&self, f: &str) -> Result<Vec<ImportProvenance>, StorageError> {
        let sql = format!(
            "SELECT i.path, i.format, i.sha256, c.n FROM imports i JOIN \
             (SELECT import_id, COUNT(*) AS n FROM records WHERE import_id IS NOT NULL {f} GROUP BY import_id) c \
             ON c.import_id = i.id ORDER BY i.id"
        );
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(AssertSqlSafe(sql)).fetch_all(p).await?;
            rows.iter().map(|r| Ok(ImportProvenance {
                path: r.try_get("path")?,
                format: r.try_get("format")?,
                sha256: r.try_get("sha256")?,
                records: r.try_get("n")?,
            })).collect()
        })
    }

    /// Every stored curation, oldest first.
    pub async fn curations(&self) -> Result<Vec<Curation>, StorageError> {
        let sql = "SELECT command, settings_json, checked, rejected_json, created_at \
                   FROM curations ORDER BY id";
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(|r| Ok(Curation {
                command: r.try_get("command")?,
                settings_json: r.try_get("settings_json")?,
                checked: r.try_get("checked")?,
                rejected_json: r.try_get("rejected_json")?,
                created_at: r.try_get("created_at")?,
            })).collect()
        })
    }
}

impl Writer {
    /// Stores what a curation did, in the transaction that stores its verdicts.
    pub async fn record_curation(&mut self, c: &Curation) -> Result<(), StorageError> {
        let sql = "INSERT INTO curations (command, settings_json, checked, rejected_json, created_at) \
                   VALUES ($1, $2, $3, $4, $5)";
        on_tx!(&mut self.tx, conn => {
            sqlx::query(sql)
                .bind(&c.command)
                .bind(&c.settings_json)
                .bind(c.checked)
                .bind(&c.rejected_json)
                .bind(c.created_at)
                .execute(conn)
                .await?;
        });
        Ok(())
    }
}
