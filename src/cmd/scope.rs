//! Loading the records a curation command works on: every record that is not rejected, in id
//! order.

use futures::StreamExt;
use indicatif::ProgressBar;
use instill_dedup::Item;
use instill_storage::{Curation, Db, Rejection, StatusFilter, StoredRecord};

use crate::progress;

/// Ids per read window.
const WINDOW: i64 = 5000;

/// Every record that is not rejected, in id order.
pub async fn load_scope(db: &Db, show_progress: bool) -> anyhow::Result<Vec<StoredRecord>> {
    load_records(db, StatusFilter::Kept, show_progress).await
}

/// The records `filter` selects, in id order: in one pass off a SQLite file
/// ([`Db::records_bulk`]), else two id windows at a time.
pub async fn load_records(
    db: &Db,
    filter: StatusFilter,
    show_progress: bool,
) -> anyhow::Result<Vec<StoredRecord>> {
    // The count only sizes the bar, and costs a scan of the table: none when no bar is shown.
    let total = if show_progress {
        db.count_records(filter).await?
    } else {
        0
    };
    let bar = progress::rows(
        show_progress,
        u64::try_from(total).unwrap_or(0),
        "loading records".into(),
    );
    let advance = bar.clone();
    let out = match db
        .records_bulk(filter, move |n| advance.inc(n as u64))
        .await?
    {
        Some(all) => all,
        None => read_windows(db, filter, &bar).await?,
    };
    bar.finish_and_clear();
    Ok(out)
}

/// The records `filter` selects, in id order, read two id windows at a time.
async fn read_windows(
    db: &Db,
    filter: StatusFilter,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<StoredRecord>> {
    let mut out = Vec::new();
    if let Some((lo, hi)) = db.id_range(filter).await? {
        let windows = (lo - 1..hi)
            .step_by(WINDOW as usize)
            .map(|s| (s, (s + WINDOW).min(hi)));
        let mut pages = futures::stream::iter(windows)
            .map(|(a, b)| db.records_between(filter, a, b))
            .buffered(2);
        while let Some(page) = pages.next().await {
            let page = page?;
            bar.inc(page.len() as u64);
            out.extend(page);
        }
    }
    Ok(out)
}

/// The records as the curation library takes them.
pub fn items(scope: &[StoredRecord]) -> Vec<Item<'_>> {
    scope
        .iter()
        .map(|r| Item {
            id: r.id,
            norm_hash: &r.norm_hash,
            record: &r.record,
        })
        .collect()
}

/// The library's rejections as the store takes them.
pub fn stored(rejections: &[instill_dedup::Rejection]) -> Vec<Rejection> {
    rejections
        .iter()
        .map(|r| Rejection {
            id: r.id,
            reason: r.reason,
            dup_of: r.dup_of,
            score: r.score,
            cluster_id: r.cluster_id,
        })
        .collect()
}

/// What a curation command stores about itself beside its verdicts: `settings` (its summary,
/// as `--json` prints it), the records it judged and what it rejected by reason.
pub fn curation(
    command: &str,
    settings: &impl serde::Serialize,
    checked: usize,
    rejections: &[instill_dedup::Rejection],
) -> anyhow::Result<Curation> {
    let mut by_reason = std::collections::BTreeMap::<&str, u64>::new();
    for r in rejections {
        *by_reason.entry(r.reason.as_str()).or_default() += 1;
    }
    Ok(Curation {
        command: command.to_string(),
        settings_json: serde_json::to_string(settings)?,
        checked: i64::try_from(checked)?,
        rejected_json: serde_json::to_string(&by_reason)?,
        created_at: instill_core::now_ms(),
    })
}
