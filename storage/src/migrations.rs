//! The schema migrations of both dialects, embedded in the binary (same versions in both; a test
//! checks them against `migrations/sqlite/` and `migrations/postgres/`).

/// One migration: its version, name and SQL text.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedMigration {
    /// The version, the number the file name starts with.
    pub version: i64,
    /// The name, the rest of the file name.
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// SQLite migrations, oldest first.
pub const SQLITE: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    EmbeddedMigration {
        version: 2,
        name: "curation",
        sql: include_str!("../../migrations/sqlite/0002_curation.sql"),
    },
    EmbeddedMigration {
        version: 3,
        name: "workers",
        sql: include_str!("../../migrations/sqlite/0003_workers.sql"),
    },
    EmbeddedMigration {
        version: 4,
        name: "records_checks",
        sql: include_str!("../../migrations/sqlite/0004_records_checks.sql"),
    },
    EmbeddedMigration {
        version: 5,
        name: "fencing",
        sql: include_str!("../../migrations/sqlite/0005_fencing.sql"),
    },
    EmbeddedMigration {
        version: 6,
        name: "curations",
        sql: include_str!("../../migrations/sqlite/0006_curations.sql"),
    },
    EmbeddedMigration {
        version: 7,
        name: "scores",
        sql: include_str!("../../migrations/sqlite/0007_scores.sql"),
    },
    EmbeddedMigration {
        version: 8,
        name: "evaluations",
        sql: include_str!("../../migrations/sqlite/0008_evaluations.sql"),
    },
    EmbeddedMigration {
        version: 9,
        name: "reasoning",
        sql: include_str!("../../migrations/sqlite/0009_reasoning.sql"),
    },
    EmbeddedMigration {
        version: 10,
        name: "evolution",
        sql: include_str!("../../migrations/sqlite/0010_evolution.sql"),
    },
    EmbeddedMigration {
        version: 11,
        name: "preferences",
        sql: include_str!("../../migrations/sqlite/0011_preferences.sql"),
    },
];

/// Postgres migrations, oldest first.
pub const POSTGRES: &[EmbeddedMigration] = &[
    EmbeddedMigration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    EmbeddedMigration {
        version: 2,
        name: "curation",
        sql: include_str!("../../migrations/postgres/0002_curation.sql"),
    },
    EmbeddedMigration {
        version: 3,
        name: "workers",
        sql: include_str!("../../migrations/postgres/0003_workers.sql"),
    },
    EmbeddedMigration {
        version: 4,
        name: "records_checks",
        sql: include_str!("../../migrations/postgres/0004_records_checks.sql"),
    },
    EmbeddedMigration {
        version: 5,
        name: "fencing",
        sql: include_str!("../../migrations/postgres/0005_fencing.sql"),
    },
    EmbeddedMigration {
        version: 6,
        name: "curations",
        sql: include_str!("../../migrations/postgres/0006_curations.sql"),
    },
    EmbeddedMigration {
        version: 7,
        name: "scores",
        sql: include_str!("../../migrations/postgres/0007_scores.sql"),
    },
    EmbeddedMigration {
        version: 8,
        name: "evaluations",
        sql: include_str!("../../migrations/postgres/0008_evaluations.sql"),
    },
    EmbeddedMigration {
        version: 9,
        name: "reasoning",
        sql: include_str!("../../migrations/postgres/0009_reasoning.sql"),
    },
    EmbeddedMigration {
        version: 10,
        name: "evolution",
        sql: include_str!("../../migrations/postgres/0010_evolution.sql"),
    },
    EmbeddedMigration {
        version: 11,
        name: "preferences",
        sql: include_str!("../../migrations/postgres/0011_preferences.sql"),
    },
];

/// `list` as sqlx migrations (checksums from the SQL text, each in a transaction).
pub(crate) fn to_sqlx(list: &[EmbeddedMigration]) -> Vec<sqlx::migrate::Migration> {
    use sqlx::SqlSafeStr as _;
    list.iter()
        .map(|m| {
            sqlx::migrate::Migration::new(
                m.version,
                m.name.into(),
                sqlx::migrate::MigrationType::Simple,
                m.sql.into_sql_str(),
                false,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_disk(dialect: &str) -> Vec<(i64, String)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../migrations")
            .join(dialect);
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let stem = name
                .strip_suffix(".sql")
                .unwrap_or_else(|| panic!("{name}: not .sql"));
            let (version, rest) = stem.split_once('_').unwrap();
            found.push((version.parse().unwrap(), rest.to_string()));
        }
        found.sort();
        found
    }

    fn embedded(list: &[EmbeddedMigration]) -> Vec<(i64, String)> {
        list.iter()
            .map(|m| (m.version, m.name.to_string()))
            .collect()
    }

    #[test]
    fn both_dialects_have_the_same_versions_and_all_are_embedded() {
        assert_eq!(on_disk("sqlite"), on_disk("postgres"));
        assert_eq!(on_disk("sqlite"), embedded(SQLITE));
        assert_eq!(on_disk("postgres"), embedded(POSTGRES));
        for (s, p) in SQLITE.iter().zip(POSTGRES) {
            assert!(!s.sql.trim().is_empty() && !p.sql.trim().is_empty());
        }
    }
}
