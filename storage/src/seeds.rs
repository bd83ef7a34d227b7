//! The `seeds` table: seed tasks, unique by normalised content.

use instill_core::{Lang, Record, Seed};
use sqlx::Row;

use crate::db::{Db, on_pool};
use crate::error::StorageError;
use crate::writer::{Writer, on_tx};

/// A seed task about to be stored.
#[derive(Debug, Clone)]
pub struct NewSeed {
    /// The task.
    pub seed: Seed,
    /// Its language.
    pub lang: Lang,
    /// The file or set it came from.
    pub source: String,
    /// [`instill_core::norm_hash`] of its record.
    pub norm_hash: String,
    /// Unix ms.
    pub created_at: i64,
}

/// A stored seed task.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredSeed {
    /// `seeds.id`.
    pub id: i64,
    /// The task.
    pub seed: Seed,
    /// Its language.
    pub lang: Lang,
    /// The file or set it came from.
    pub source: String,
}

impl Writer {
    /// Stores seed tasks, skipping any whose normalised content is already stored. Returns how
    /// many were added.
    pub async fn insert_seeds(&mut self, seeds: &[NewSeed]) -> Result<u64, StorageError> {
        let sql = "INSERT INTO seeds (name, instruction, input, output, is_classification, lang, source, norm_hash, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (norm_hash) DO NOTHING";
        let mut added = 0;
        for s in seeds {
            let r = &s.seed.record;
            added += on_tx!(&mut self.tx, c => {
                sqlx::query(sql)
                    .bind(&s.seed.name)
                    .bind(&r.instruction)
                    .bind(&r.input)
                    .bind(&r.output)
                    .bind(s.seed.is_classification)
                    .bind(s.lang.as_str())
                    .bind(&s.source)
                    .bind(&s.norm_hash)
                    .bind(s.created_at)
                    .execute(c)
                    .await?
                    .rows_affected()
            });
        }
        Ok(added)
    }
}

impl Db {
    /// Every seed task (of one language when `lang` is given), in id order.
    pub async fn list_seeds(&self, lang: Option<Lang>) -> Result<Vec<StoredSeed>, StorageError> {
        let sql = "SELECT id, name, instruction, input, output, is_classification, lang, source
FROM seeds WHERE ($1 = '' OR lang = $1) ORDER BY id";
        let lang_code = lang.map_or("", Lang::as_str);
        on_pool!(&self.pool, p => {
            let rows = sqlx::query(sql).bind(lang_code).fetch_all(p).await?;
            rows.iter().map(|r| {
                let lang: String = r.try_get("lang")?;
                Ok(StoredSeed {
                    id: r.try_get("id")?,
                    seed: Seed {
                        name: r.try_get("name")?,
                        record: Record::new(
                            r.try_get::<String, _>("instruction")?,
                            r.try_get::<String, _>("input")?,
                            r.try_get::<String, _>("output")?,
                        ),
                        is_classification: r.try_get("is_classification")?,
                    },
                    lang: Lang::from_code(&lang),
                    source: r.try_get("source")?,
                })
            }).collect()
        })
    }
}
