//! Storage tests: every one runs against SQLite and Postgres.

use std::sync::Arc;

use instill_core::{
    Exchange, Lang, Origin, Reason, Record, RequestStatus, RunStatus, Seed, Status, norm_hash,
};

use crate::testing::TempDb;
use crate::{Db, NewImport, NewRecord, NewSeed, StatusFilter};

fn new_record(record: Record, status: Status) -> NewRecord {
    NewRecord {
        id: None,
        norm_hash: norm_hash(&record),
        record,
        lang: Lang::Zh,
        origin: Origin::Imported,
        source: Arc::from("test"),
        import_id: None,
        run_id: None,
        request_id: None,
        item_idx: None,
        status,
        reason: (status == Status::Rejected).then_some(Reason::Exact),
        dup_of: None,
        score: (status == Status::Rejected).then_some(0.75),
        created_at: 1,
        evolution: None,
    }
}

fn tricky_records() -> Vec<Record> {
    let mut multi = Record::new("第二问\t制表符", "", "回答\\反斜杠\r\n换行");
    multi.system = "你是一个助手。".into();
    multi.history = vec![
        Exchange("你好".into(), "你好！".into()),
        Exchange("a\"b".into(), "c\nd".into()),
    ];
    vec![
        Record::new("写一首关于春天的诗", "", "春眠不觉晓，处处闻啼鸟。"),
        Record::new(
            "Give three tips",
            "for staying healthy",
            "1. Eat well\n2. Sleep\n3. Move",
        ),
        multi,
        Record::new("emoji 🎉 and \\N literal", "", "\\N"),
    ]
}

#[tokio::test]
async fn records_round_trip_in_order_with_every_character_intact() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut w = db.writer().await.unwrap();
        let import_id = w
            .create_import(&NewImport {
                path: "x.jsonl",
                source: "x",
                format: "alpaca",
                sha256: "abc",
                bytes: 10,
                created_at: 5,
            })
            .await
            .unwrap();
        let mut rows: Vec<NewRecord> = tricky_records()
            .into_iter()
            .map(|r| new_record(r, Status::Pending))
            .collect();
        for r in &mut rows {
            r.import_id = Some(import_id);
        }
        w.insert_records(rows.clone()).await.unwrap();
        w.finish_import(import_id, "alpaca", 4, 0).await.unwrap();
        w.commit().await.unwrap();

        let page = db.records_page(StatusFilter::All, 0, 100).await.unwrap();
        let got: Vec<Record> = page.iter().map(|s| s.record.clone()).collect();
        assert_eq!(got, tricky_records(), "{}", t.backend);
        assert!(page.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(page[0].norm_hash, rows[0].norm_hash);
        // The curation commands' one-pass read gives the same records, every field, on a SQLite
        // file (and leaves Postgres to the pages).
        let bulk = db.records_bulk(StatusFilter::All, |_| {}).await.unwrap();
        match t.backend {
            "sqlite" => assert_eq!(bulk.as_ref(), Some(&page)),
            _ => assert_eq!(bulk, None),
        }
        // The export's lean read gives the same records, with the hash only when asked.
        let (lo, hi) = (page[0].id - 1, page[3].id);
        for with_hash in [false, true] {
            let lean = db
                .export_between(StatusFilter::All, lo, hi, with_hash)
                .await
                .unwrap();
            let got: Vec<(i64, Record, String)> = lean
                .into_iter()
                .map(|e| (e.id, e.record, e.norm_hash))
                .collect();
            let want: Vec<(i64, Record, String)> = page
                .iter()
                .map(|s| {
                    let hash = if with_hash {
                        s.norm_hash.clone()
                    } else {
                        String::new()
                    };
                    (s.id, s.record.clone(), hash)
                })
                .collect();
            assert_eq!(got, want, "{} with_hash={with_hash}", t.backend);
        }
        let import = db.find_import("abc").await.unwrap().unwrap();
        assert_eq!(
            (import.id, import.rows, import.path.as_str()),
            (import_id, 4, "x.jsonl")
        );
        assert_eq!(db.find_import("nope").await.unwrap(), None);
        db.close().await;
    }
}

#[tokio::test]
async fn a_transaction_that_is_not_committed_leaves_nothing() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut w = db.writer().await.unwrap();
        let rows: Vec<NewRecord> = tricky_records()
            .into_iter()
            .map(|r| new_record(r, Status::Pending))
            .collect();
        w.insert_records(rows.clone()).await.unwrap();
        w.rollback().await.unwrap();
        let mut w = db.writer().await.unwrap();
        w.insert_records(rows.clone()).await.unwrap();
        drop(w);
        assert_eq!(
            db.count_records(StatusFilter::All).await.unwrap(),
            0,
            "{}",
            t.backend
        );
        db.close().await;
    }
}

#[tokio::test]
async fn pages_filter_by_status_and_resume_after_the_last_id() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut w = db.writer().await.unwrap();
        let rows: Vec<NewRecord> = (0..1203)
            .map(|i| {
                let status = if i % 3 == 0 {
                    Status::Rejected
                } else {
                    Status::Pending
                };
                new_record(Record::new(format!("task {i}"), "", "x"), status)
            })
            .collect();
        w.insert_records(rows.clone()).await.unwrap();
        w.commit().await.unwrap();
        let mut seen = Vec::new();
        let mut after = 0;
        loop {
            let page = db
                .records_page(StatusFilter::Kept, after, 100)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = last.id;
            seen.extend(page.into_iter().map(|s| s.record.instruction));
        }
        let want: Vec<String> = (0..1203)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("task {i}"))
            .collect();
        assert_eq!(seen, want, "{}", t.backend);
        assert_eq!(db.count_records(StatusFilter::Rejected).await.unwrap(), 401);

        // Id windows cover the same records, in order, when read one after another.
        let (lo, hi) = db.id_range(StatusFilter::Kept).await.unwrap().unwrap();
        let mut windowed = Vec::new();
        let mut start = lo - 1;
        while start < hi {
            let end = (start + 250).min(hi);
            let w = db
                .records_between(StatusFilter::Kept, start, end)
                .await
                .unwrap();
            assert!(w.iter().all(|r| r.id > start && r.id <= end));
            windowed.extend(w.into_iter().map(|s| s.record.instruction));
            start = end;
        }
        assert_eq!(windowed, seen, "{}", t.backend);
        let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = counted.clone();
        let on_rows = move |n| {
            count.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        };
        if let Some(bulk) = db.records_bulk(StatusFilter::Kept, on_rows).await.unwrap() {
            let bulk: Vec<String> = bulk.into_iter().map(|s| s.record.instruction).collect();
            assert_eq!(bulk, seen, "{}", t.backend);
            assert_eq!(
                counted.load(std::sync::atomic::Ordering::Relaxed),
                seen.len()
            );
        }
        let exported = db
            .export_between(StatusFilter::Kept, lo - 1, hi, false)
            .await
            .unwrap();
        let exported: Vec<String> = exported.into_iter().map(|e| e.record.instruction).collect();
        assert_eq!(exported, seen, "{}", t.backend);
        assert_eq!(db.id_range(StatusFilter::Accepted).await.unwrap(), None);

        let stats = db.stats().await.unwrap();
        assert_eq!(stats.records.total, 1203);
        assert_eq!(stats.records.rejected, 401);
        assert_eq!(stats.records.pending, 802);
        assert_eq!(stats.by_reason, vec![("exact".to_string(), 401)]);
        assert_eq!(stats.by_lang, vec![("zh".to_string(), 1203)]);
        assert_eq!(stats.output_len.counts, vec![(1, 1203)]);
        assert_eq!(stats.instruction_len.percentile(1.0), Some(9));
        db.close().await;
    }
}

#[tokio::test]
async fn seeds_are_unique_by_normalised_content() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let seed = |ins: &str| {
            let record = Record::new(ins, "", "out");
            NewSeed {
                norm_hash: norm_hash(&record),
                seed: Seed {
                    name: "n".into(),
                    record,
                    is_classification: true,
                },
                lang: Lang::En,
                source: "s".into(),
                created_at: 0,
            }
        };
        let mut w = db.writer().await.unwrap();
        let added = w
            .insert_seeds(&[
                seed("Add two numbers."),
                seed("add two numbers"),
                seed("Other"),
            ])
            .await
            .unwrap();
        w.commit().await.unwrap();
        assert_eq!(added, 2, "{}", t.backend);
        let mut w = db.writer().await.unwrap();
        assert_eq!(w.insert_seeds(&[seed("Other")]).await.unwrap(), 0);
        w.commit().await.unwrap();
        let list = db.list_seeds(None).await.unwrap();
        assert_eq!(list.len(), 2);
        assert!(list[0].seed.is_classification);
        assert_eq!(list[0].seed.record.instruction, "Add two numbers.");
        assert_eq!(db.list_seeds(Some(Lang::Zh)).await.unwrap().len(), 0);
        db.close().await;
    }
}

#[tokio::test]
async fn reopening_runs_no_migration_twice() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        db.close().await;
        let db = Db::open(&t.url).await.unwrap();
        assert_eq!(db.stats().await.unwrap().records.total, 0, "{}", t.backend);
        db.close().await;
    }
}

#[tokio::test]
async fn verdicts_are_written_in_batches_and_read_back() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut w = db.writer().await.unwrap();
        let rows: Vec<NewRecord> = (0..1200)
            .map(|i| new_record(Record::new(format!("t{i}"), "", "o"), Status::Pending))
            .collect();
        w.insert_records(rows).await.unwrap();
        w.commit().await.unwrap();
        let mut w = db.writer().await.unwrap();
        let rejections: Vec<crate::Rejection> = (2..=1200)
            .step_by(2)
            .map(|id| crate::Rejection {
                id,
                reason: Reason::Minhash,
                dup_of: Some(id - 1),
                score: Some(0.875),
                cluster_id: Some(id - 1),
            })
            .collect();
        w.reject(&rejections).await.unwrap();
        w.set_clusters(&[(1, 1), (3, 3)]).await.unwrap();
        w.set_rouge_nearest(&[(5, Some(3), 0.5), (7, None, 0.25)])
            .await
            .unwrap();
        w.commit().await.unwrap();
        let v = db.verdicts().await.unwrap();
        assert_eq!(v.len(), 1200, "{}", t.backend);
        assert_eq!(
            v.iter().filter(|x| x.status == Status::Rejected).count(),
            600
        );
        assert_eq!(
            (
                v[1].reason.as_deref(),
                v[1].dup_of,
                v[1].score,
                v[1].cluster_id
            ),
            (Some("minhash"), Some(1), Some(0.875), Some(1))
        );
        assert_eq!(
            (v[0].status.as_str(), v[0].cluster_id),
            ("pending", Some(1))
        );
        assert_eq!(
            (v[4].rouge_nn_id, v[4].rouge_nn_score),
            (Some(3), Some(0.5))
        );
        assert_eq!((v[6].rouge_nn_id, v[6].rouge_nn_score), (None, Some(0.25)));
        db.close().await;
    }
}

#[tokio::test]
async fn reserved_ids_are_used_and_the_sequence_moves_on() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut w = db.writer().await.unwrap();
        w.insert_records(vec![new_record(Record::new("a", "", "b"), Status::Pending)])
            .await
            .unwrap();
        let ids = w.reserve_record_ids(3).await.unwrap();
        assert_eq!(ids.len(), 3);
        assert!(ids.windows(2).all(|p| p[0] < p[1]) && ids[0] > 1, "{ids:?}");
        let rows: Vec<NewRecord> = ids
            .iter()
            .map(|&id| {
                let mut r = new_record(Record::new(format!("r{id}"), "", "o"), Status::Accepted);
                r.id = Some(id);
                r
            })
            .collect();
        w.insert_records(rows).await.unwrap();
        w.insert_records(vec![new_record(
            Record::new("after", "", "b"),
            Status::Pending,
        )])
        .await
        .unwrap();
        w.commit().await.unwrap();
        let all = db.records_page(StatusFilter::All, 0, 10).await.unwrap();
        let got: Vec<(i64, String)> = all
            .into_iter()
            .map(|s| (s.id, s.record.instruction))
            .collect();
        assert_eq!(got.len(), 5, "{}", t.backend);
        assert_eq!(got[1], (ids[0], format!("r{}", ids[0])));
        assert!(got[4].0 > ids[2] && got[4].1 == "after");
        db.close().await;
    }
}

#[tokio::test]
async fn records_refuse_an_unknown_origin_or_status() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let cases = [
            ("imported", "pending", true),
            ("generated", "accepted", true),
            ("imported", "rejected", true),
            ("bogus", "pending", false),
            ("Imported", "pending", false),
            ("generated", "done", false),
        ];
        for (origin, status, allowed) in cases {
            let sql = format!(
                "INSERT INTO records (instruction, output, lang, origin, source, status, norm_hash, created_at)
                 VALUES ('i', 'o', 'en', '{origin}', 's', '{status}', 'h', 1)"
            );
            let result = crate::db::on_pool!(&db.pool, p => {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(p).await.map(|_| ())
            });
            assert_eq!(
                result.is_ok(),
                allowed,
                "{} {origin}/{status}: {result:?}",
                t.backend
            );
        }
        db.close().await;
    }
}

/// A database made before migration 4 keeps every record, with its curation columns, when the
/// table is rebuilt.
#[tokio::test]
async fn the_records_rebuild_keeps_what_an_older_database_holds() {
    use sqlx::Connection as _;
    use sqlx::migrate::Migrator;

    let t = TempDb::sqlite();
    let path = t.url.trim_start_matches("sqlite://").to_string();
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
    let older = crate::migrations::to_sqlx(&crate::migrations::SQLITE[..3]);
    Migrator::with_migrations(older)
        .run(&mut conn)
        .await
        .unwrap();
    sqlx::raw_sql(
        "INSERT INTO records (instruction, output, lang, origin, source, status, reason, norm_hash, created_at, cluster_id, rouge_nn_id, rouge_nn_score)
         VALUES ('写诗', '春天', 'zh', 'imported', 'old', 'rejected', 'rouge', 'h1', 7, 1, 1, 0.8),
                ('b', 'c', 'en', 'imported', 'old', 'pending', NULL, 'h2', 8, NULL, NULL, NULL)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();

    let db = Db::open(&t.url).await.unwrap();
    let page = db.records_page(StatusFilter::All, 0, 10).await.unwrap();
    let got: Vec<(i64, &str, &str, Option<&str>)> = page
        .iter()
        .map(|s| {
            (
                s.id,
                s.record.instruction.as_str(),
                s.status.as_str(),
                s.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (1, "写诗", "rejected", Some("rouge")),
            (2, "b", "pending", None)
        ]
    );
    let crate::db::Pool::Sqlite(p) = &db.pool else {
        unreachable!()
    };
    let kept: (Option<i64>, Option<f64>) =
        sqlx::query_as("SELECT cluster_id, rouge_nn_score FROM records WHERE id = 1")
            .fetch_one(p)
            .await
            .unwrap();
    assert_eq!(kept, (Some(1), Some(0.8)));
    let schema: String = sqlx::query_scalar(
        "SELECT group_concat(sql, ';') FROM sqlite_schema WHERE tbl_name = 'records'",
    )
    .fetch_one(p)
    .await
    .unwrap();
    assert!(
        schema.contains("origin = 'generated' OR origin = 'imported'"),
        "{schema}"
    );
    assert!(schema.contains("CREATE INDEX records_run"), "{schema}");
    db.close().await;
}

/// A run with requests 0..n stored as replies, for the claim and fencing tests.
async fn run_with_replies(db: &Db, idxs: &[i64]) -> (i64, Vec<i64>) {
    let run = db
        .create_run("r", instill_core::RunKind::Generate, "{}", 1)
        .await
        .unwrap()
        .unwrap();
    let rows: Vec<crate::NewRequest> = idxs
        .iter()
        .map(|&idx| crate::NewRequest {
            run_id: run,
            idx,
            status: RequestStatus::Done,
            response: Some("[\"x\"]".into()),
            ..crate::NewRequest::default()
        })
        .collect();
    let mut w = db.writer().await.unwrap();
    let ids = w.store_requests(&rows).await.unwrap();
    w.commit().await.unwrap();
    (run, ids)
}

/// An acceptor that lost the run (another took it over) writes nothing; the run's frontier is
/// the last holder's.
#[tokio::test]
async fn a_flush_by_an_acceptor_that_lost_the_run_is_refused() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let (run, _) = run_with_replies(&db, &[0]).await;
        let first = db.take_run(run).await.unwrap();
        let mut w = db.writer().await.unwrap();
        assert!(w.hold_run(run, first, 3).await.unwrap(), "{}", t.backend);
        w.commit().await.unwrap();
        let second = db.take_run(run).await.unwrap();
        assert!(second > first);
        let mut w = db.writer().await.unwrap();
        assert!(!w.hold_run(run, first, 9).await.unwrap(), "{}", t.backend);
        drop(w);
        let mut w = db.writer().await.unwrap();
        assert!(w.hold_run(run, second, 5).await.unwrap());
        w.commit().await.unwrap();
        assert_eq!(db.run_frontier(run).await.unwrap(), (RunStatus::Running, 5));
        db.close().await;
    }
}

/// A generated record is stored once per (request, item); imported records have no such key.
#[tokio::test]
async fn a_generated_record_cannot_be_stored_twice() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let (run, ids) = run_with_replies(&db, &[0]).await;
        let generated = |item: i64| {
            let mut r = new_record(Record::new(format!("t{item}"), "", "o"), Status::Accepted);
            r.origin = Origin::Generated;
            r.run_id = Some(run);
            r.request_id = Some(ids[0]);
            r.item_idx = Some(item);
            r
        };
        let mut w = db.writer().await.unwrap();
        w.insert_records(vec![generated(0), generated(1)])
            .await
            .unwrap();
        let imported = new_record(Record::new("same", "", "o"), Status::Pending);
        w.insert_records(vec![imported.clone(), imported])
            .await
            .unwrap();
        w.commit().await.unwrap();
        let mut w = db.writer().await.unwrap();
        let again = w.insert_records(vec![generated(1)]).await;
        assert!(again.is_err(), "{}: a second copy was stored", t.backend);
        drop(w);
        assert_eq!(
            db.count_records(StatusFilter::All).await.unwrap(),
            4,
            "{}",
            t.backend
        );
        db.close().await;
    }
}

/// A claim of `n` requests in `range` for `worker`, leased until `lease_until`.
fn claim(
    worker: &str,
    n: i64,
    lease_until: i64,
    range: std::ops::Range<i64>,
    chain: i64,
) -> crate::Claim<'_> {
    crate::Claim {
        worker,
        n,
        lease_until,
        range,
        chain,
    }
}

/// Any index in the claim window with no row is claimable, holes below the largest included
/// (a stopped worker's released claims).
#[tokio::test]
async fn claims_fill_every_hole_in_the_window_lowest_first() {
    let t = TempDb::postgres();
    let db = Db::open(&t.url).await.unwrap();
    let (run, _) = run_with_replies(&db, &[0, 1, 3, 6]).await;
    let got = db
        .claim_requests(run, &claim("a", 3, 100, 1..20, 1), 1)
        .await
        .unwrap();
    assert_eq!(got, vec![2, 4, 5]);
    db.release_claims(run, "a").await.unwrap();
    let got = db
        .claim_requests(run, &claim("b", 10, 100, 1..9, 1), 1)
        .await
        .unwrap();
    assert_eq!(got, vec![2, 4, 5, 7, 8]);
    // Live claims are nobody else's; expired ones are.
    assert!(
        db.claim_requests(run, &claim("c", 10, 100, 0..9, 1), 50)
            .await
            .unwrap()
            .is_empty()
    );
    let got = db
        .claim_requests(run, &claim("c", 2, 300, 0..9, 1), 150)
        .await
        .unwrap();
    assert_eq!(got, vec![2, 4]);
    db.close().await;
}

/// In a chained run (units of 3 requests in order) an index is first claimable when it opens
/// its unit or the request before it has its reply; expired and failed claims stay claimable.
#[tokio::test]
async fn chained_claims_follow_each_unit_in_order() {
    let t = TempDb::postgres();
    let db = Db::open(&t.url).await.unwrap();
    // Unit 0: steps 0, 1 answered; unit 1: step 3 answered; unit 2: nothing.
    let (run, _) = run_with_replies(&db, &[0, 1, 3]).await;
    let got = db
        .claim_requests(run, &claim("a", 10, 100, 0..9, 3), 1)
        .await
        .unwrap();
    assert_eq!(
        got,
        vec![2, 4, 6],
        "the next step of each unit, nothing beyond"
    );
    // Not answered yet: the steps after them wait.
    assert!(
        db.claim_requests(run, &claim("b", 10, 100, 0..9, 3), 1)
            .await
            .unwrap()
            .is_empty()
    );
    db.release_claims(run, "a").await.unwrap();
    let got = db
        .claim_requests(run, &claim("b", 2, 100, 0..9, 3), 1)
        .await
        .unwrap();
    assert_eq!(got, vec![2, 4]);
    // The same replies unchained: every hole.
    let got = db
        .claim_requests(run, &claim("c", 10, 100, 0..9, 1), 1)
        .await
        .unwrap();
    assert_eq!(got, vec![5, 6, 7, 8]);
    db.close().await;
}

/// Copies of one generated record written by two acceptors before the UNIQUE index existed:
/// the migration keeps the first, points duplicates of a removed copy at it, keeps the rest.
#[tokio::test]
async fn the_unique_migration_removes_copies_of_a_generated_record() {
    use sqlx::Connection as _;
    use sqlx::migrate::Migrator;

    let fill = "INSERT INTO runs (id, name, kind, started_at, status) VALUES (1, 'r', 'generate', 1, 'done');
INSERT INTO requests (id, run_id, idx, payload_hash, prompt, status, created_at) VALUES (1, 1, 0, '', '', 'done', 1);
INSERT INTO records (id, instruction, output, lang, origin, source, run_id, request_id, item_idx, status, reason, dup_of, norm_hash, created_at) VALUES
 (1, 'a', 'o', 'en', 'generated', 'r', 1, 1, 0, 'accepted', NULL, NULL, 'h', 1),
 (2, 'b', 'o', 'en', 'generated', 'r', 1, 1, 1, 'accepted', NULL, NULL, 'h2', 1),
 (3, 'a', 'o', 'en', 'generated', 'r', 1, 1, 0, 'accepted', NULL, NULL, 'h', 1),
 (4, 'a', 'o', 'en', 'generated', 'r', 1, 1, 2, 'rejected', 'exact', 3, 'h', 1),
 (5, 'i', 'o', 'en', 'imported', 'x', NULL, NULL, NULL, 'pending', NULL, NULL, 'h', 1),
 (6, 'i', 'o', 'en', 'imported', 'x', NULL, NULL, NULL, 'pending', NULL, NULL, 'h', 1)";
    for t in TempDb::both() {
        if t.backend == "sqlite" {
            let path = t.url.trim_start_matches("sqlite://").to_string();
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
            let older = crate::migrations::to_sqlx(&crate::migrations::SQLITE[..4]);
            Migrator::with_migrations(older)
                .run(&mut conn)
                .await
                .unwrap();
            sqlx::raw_sql(fill).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        } else {
            let mut conn = sqlx::PgConnection::connect(&t.url).await.unwrap();
            let older = crate::migrations::to_sqlx(&crate::migrations::POSTGRES[..4]);
            Migrator::with_migrations(older)
                .run(&mut conn)
                .await
                .unwrap();
            sqlx::raw_sql(fill).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        let db = Db::open(&t.url).await.unwrap();
        let got: Vec<(i64, Option<i64>)> = db
            .verdicts()
            .await
            .unwrap()
            .iter()
            .map(|v| (v.id, v.dup_of))
            .collect();
        assert_eq!(
            got,
            vec![(1, None), (2, None), (4, Some(1)), (5, None), (6, None)],
            "{}",
            t.backend
        );
        db.close().await;
    }
}

/// Scores: a reply without a score row is found by the anti-join until its score is stored; a
/// second write of the same (scorer, record) keeps the first; a second scorer lives beside it.
#[tokio::test]
async fn scores_are_read_once_per_reply_and_scorers_live_side_by_side() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let (run, ids) = run_with_replies(&db, &[3, 5, 9]).await;
        for name in ["a", "b"] {
            db.create_scorer(&crate::Scorer {
                name: name.into(),
                method: instill_core::ScoreMethod::Judge,
                model: "m".into(),
                rubric_hash: Some("h".into()),
                scale: Some((1.0, 10.0)),
                run_id: Some(run),
                settings_json: "{}".into(),
                created_at: 1,
            })
            .await
            .unwrap();
        }
        let todo = db.unscored_replies("a", run, i64::MIN, 10).await.unwrap();
        assert_eq!(
            todo.iter().map(|r| r.idx).collect::<Vec<_>>(),
            [3, 5, 9],
            "{}",
            t.backend
        );
        let score = |record_id: i64, score: Option<f64>| crate::NewScore {
            record_id,
            score,
            rationale: "r".into(),
            reason: score.is_none().then(|| "no score in the reply".into()),
            request_id: Some(ids[0]),
            prompt_tokens: Some(7),
            completion_tokens: None,
            created_at: 1,
        };
        let mut w = db.writer().await.unwrap();
        w.insert_scores("a", &[score(3, Some(7.5)), score(5, None)])
            .await
            .unwrap();
        w.insert_scores("a", &[score(3, Some(1.0))]).await.unwrap();
        w.insert_scores("b", &[score(3, Some(2.0))]).await.unwrap();
        w.commit().await.unwrap();
        let todo = db.unscored_replies("a", run, i64::MIN, 10).await.unwrap();
        assert_eq!(todo.iter().map(|r| r.idx).collect::<Vec<_>>(), [9]);
        let a: Vec<_> = db
            .scores("a")
            .await
            .unwrap()
            .iter()
            .map(|s| (s.record_id, s.score))
            .collect();
        assert_eq!(a, [(3, Some(7.5)), (5, None)], "{}", t.backend);
        assert_eq!(db.scores("b").await.unwrap().len(), 1);
        assert_eq!(
            db.unscored_reasons("a").await.unwrap(),
            [("no score in the reply".to_string(), 1)]
        );
        assert_eq!(
            db.scorer("a").await.unwrap().unwrap().scale,
            Some((1.0, 10.0))
        );
        assert_eq!(db.scorers().await.unwrap().len(), 2);
        db.close().await;
    }
}

/// Grades: a judge reply at `question × repeats + repeat` is graded once.
#[tokio::test]
async fn grades_are_keyed_by_question_and_repeat() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let (run, _) = run_with_replies(&db, &[0, 1, 2, 3]).await;
        db.create_evaluation(&crate::Evaluation {
            label: "base".into(),
            model: "m".into(),
            judge_model: "j".into(),
            eval_set: "eval_set.json".into(),
            eval_set_sha256: "s".into(),
            prompts_hash: "p".into(),
            questions: 2,
            answer_run_id: None,
            judge_run_id: Some(run),
            settings_json: "{}".into(),
            created_at: 1,
        })
        .await
        .unwrap();
        let grade = |idx: i64, rep: i64| crate::Grade {
            idx,
            rep,
            class: "math".into(),
            grade: Some(0.5),
            reason: None,
            request_id: None,
        };
        let mut w = db.writer().await.unwrap();
        w.insert_grades("base", &[grade(0, 1), grade(1, 0)], 1)
            .await
            .unwrap();
        w.commit().await.unwrap();
        // Two repeats: replies 0..3 are (0,0), (0,1), (1,0), (1,1).
        let todo = db
            .ungraded_replies("base", run, 2, i64::MIN, 10)
            .await
            .unwrap();
        assert_eq!(
            todo.iter().map(|r| r.idx).collect::<Vec<_>>(),
            [0, 3],
            "{}",
            t.backend
        );
        assert_eq!(db.grades("base").await.unwrap().len(), 2);
        assert_eq!(db.evaluations().await.unwrap()[0].judge_run_id, Some(run));
        db.close().await;
    }
}

/// Taking back a command's own rejections restores each record's status from its origin and
/// clears the verdict; other reasons stay.
#[tokio::test]
async fn unreject_takes_back_only_the_named_reasons() {
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut generated = new_record(Record::new("g", "", "o"), Status::Accepted);
        generated.origin = Origin::Generated;
        let rows = vec![
            new_record(Record::new("a", "", "o"), Status::Pending),
            generated,
            new_record(Record::new("c", "", "o"), Status::Pending),
        ];
        let mut w = db.writer().await.unwrap();
        w.insert_records(rows).await.unwrap();
        let reject = |id: i64, reason: Reason| crate::Rejection {
            id,
            reason,
            dup_of: None,
            score: Some(3.0),
            cluster_id: None,
        };
        w.reject(&[
            reject(1, Reason::LowScore),
            reject(2, Reason::LowScore),
            reject(3, Reason::Exact),
        ])
        .await
        .unwrap();
        w.commit().await.unwrap();
        let mut w = db.writer().await.unwrap();
        assert_eq!(
            w.unreject(&[Reason::LowScore, Reason::Unscored])
                .await
                .unwrap(),
            2
        );
        w.commit().await.unwrap();
        let v = db.verdicts().await.unwrap();
        let got: Vec<_> = v
            .iter()
            .map(|v| (v.status, v.reason.clone(), v.score))
            .collect();
        assert_eq!(
            got,
            [
                (Status::Pending, None, None),
                (Status::Accepted, None, None),
                (Status::Rejected, Some("exact".into()), Some(3.0)),
            ],
            "{}",
            t.backend
        );
        db.close().await;
    }
}

#[tokio::test]
async fn preference_pairs_keep_their_first_row_and_read_back_with_their_prompts() {
    use crate::NewPreference;
    use instill_core::{Answer, NoPair};
    for t in TempDb::both() {
        let db = Db::open(&t.url).await.unwrap();
        let mut w = db.writer().await.unwrap();
        let mut rows: Vec<NewRecord> = tricky_records()
            .into_iter()
            .map(|r| new_record(r, Status::Accepted))
            .collect();
        rows[3].status = Status::Rejected;
        rows[3].reason = Some(Reason::Exact);
        w.insert_records(rows).await.unwrap();
        w.commit().await.unwrap();
        let ids: Vec<i64> = db
            .records_page(StatusFilter::All, 0, 10)
            .await
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        let graded = |text: &str, score: f64| Answer {
            text: text.into(),
            reasoning: format!("why {text}"),
            score: Some(score),
        };
        let pair = |record_id: i64, hi: f64, lo: f64| NewPreference {
            record_id,
            run_id: None,
            import_id: None,
            no_pair: None,
            chosen: Some((graded("good", hi), Some(1))),
            rejected: Some((graded("bad", lo), Some(0))),
            samples: 4,
            graded: 4,
            created_at: 1,
        };
        let mut w = db.writer().await.unwrap();
        let small = NewPreference {
            no_pair: Some(NoPair::SmallMargin),
            ..pair(ids[1], 5.0, 5.0)
        };
        let none = NewPreference {
            no_pair: Some(NoPair::TooFewGraded),
            chosen: None,
            rejected: None,
            graded: 1,
            ..pair(ids[0], 0.0, 0.0)
        };
        w.insert_preferences("a", &[pair(ids[2], 9.0, 2.0), small, none])
            .await
            .unwrap();
        w.insert_preferences("b", &[pair(ids[2], 7.0, 6.0), pair(ids[3], 8.0, 1.0)])
            .await
            .unwrap();
        // A second row for the same set and instruction keeps the first.
        w.insert_preferences("a", &[pair(ids[2], 1.0, 0.0)])
            .await
            .unwrap();
        w.commit().await.unwrap();

        let a = db
            .pairs_page(Some("a"), StatusFilter::All, 0, 10)
            .await
            .unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].record_id, ids[2]);
        assert_eq!(a[0].pair.prompt.history, tricky_records()[2].history);
        assert_eq!(a[0].pair.prompt.system, "你是一个助手。");
        assert_eq!(a[0].pair.prompt.output, "");
        assert_eq!(a[0].pair.chosen, graded("good", 9.0));
        assert_eq!(a[0].pair.margin(), Some(7.0));
        // Every set; the rejected prompt record drops out of the kept ones.
        let all = db.pairs_page(None, StatusFilter::All, 0, 10).await.unwrap();
        assert_eq!(all.len(), 3);
        let kept = db
            .pairs_page(None, StatusFilter::Kept, 0, 10)
            .await
            .unwrap();
        assert_eq!(kept.len(), 2);
        let after = db
            .pairs_page(None, StatusFilter::All, all[0].id, 10)
            .await
            .unwrap();
        assert_eq!(after.len(), 2);

        let sets = db.pair_sets().await.unwrap();
        assert_eq!(sets.len(), 2);
        assert_eq!(sets[0].name, "a");
        assert_eq!(sets[0].pairs, 1);
        assert_eq!(
            sets[0].no_pair,
            vec![(NoPair::SmallMargin, 1), (NoPair::TooFewGraded, 1)]
        );
        assert_eq!(sets[0].mean_margin, Some(7.0));
        assert_eq!(sets[1].pairs, 2);
        assert_eq!(
            db.preference_records("a").await.unwrap(),
            vec![ids[0], ids[1], ids[2]]
        );
    }
}

/// A table large enough for several readers at once (each taking ranges of ids in turn): the
/// bulk read gives every kept record once, in id order, and reports each row read once.
#[tokio::test]
async fn a_bulk_read_by_several_readers_gives_the_kept_records_in_order() {
    let t = TempDb::sqlite();
    let db = Db::open(&t.url).await.unwrap();
    let mut w = db.writer().await.unwrap();
    let n = 70_001;
    let rows: Vec<NewRecord> = (0..n)
        .map(|i| {
            let status = if i % 7 == 3 {
                Status::Rejected
            } else {
                Status::Pending
            };
            new_record(Record::new(format!("task {i}"), "", "x"), status)
        })
        .collect();
    w.insert_records(rows).await.unwrap();
    w.commit().await.unwrap();
    let counted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = counted.clone();
    let on_rows = move |k| {
        count.fetch_add(k, std::sync::atomic::Ordering::Relaxed);
    };
    let bulk = db
        .records_bulk(StatusFilter::Kept, on_rows)
        .await
        .unwrap()
        .unwrap();
    let want: Vec<String> = (0..n)
        .filter(|i| i % 7 != 3)
        .map(|i| format!("task {i}"))
        .collect();
    let got: Vec<String> = bulk.iter().map(|s| s.record.instruction.clone()).collect();
    assert_eq!(got, want);
    assert!(bulk.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(
        counted.load(std::sync::atomic::Ordering::Relaxed),
        want.len()
    );
    let all = db
        .records_bulk(StatusFilter::All, |_| {})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(all.len(), n);
    db.close().await;
}
