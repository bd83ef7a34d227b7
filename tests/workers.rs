//! One run on several `instill generate` processes sharing Postgres: exactly the target, the
//! export of a single process byte for byte, and the same after SIGKILLing the acceptor and
//! another worker mid-run (no stored reply asked for again). A worker stopped by SIGINT or
//! SIGTERM, a resume with a larger target, a stretch of replies with no tasks, a dead acceptor
//! lock connection and a NUL in a reply wedge nothing. SQLite refuses a second writer.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_openai::{FakeConfig, FakeServer, prompt_hash};
use crate::util::{Env, block_on};

const RUN: &str = "shared";

fn worker(env: &Env, server: &FakeServer, target: &str, concurrency: &str) -> Child {
    spawn(
        env,
        server,
        &["--target", target, "--concurrency", concurrency],
    )
}

/// `instill generate` of the shared run as a child process (signals reach it directly).
fn spawn(env: &Env, server: &FakeServer, args: &[&str]) -> Child {
    command(env, server, args).spawn().unwrap()
}

fn command(env: &Env, server: &FakeServer, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_instill"));
    c.args([
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--run",
        RUN,
        "--lease-seconds",
        "2",
        "--no-progress",
    ])
    .args(args)
    .env("INSTILL_DB", &env.db.url)
    .current_dir(env.dir.path())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// The export of a single process on SQLite, the reference.
fn single_process_export(server: &FakeServer, target: &str) -> Vec<u8> {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    env.run([
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--target",
        target,
        "--concurrency",
        "8",
        "--run",
        RUN,
    ])
    .expect_code(0);
    env.run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    std::fs::read(env.path("out/data/train/train-00000-of-00001.jsonl")).unwrap()
}

fn export(env: &Env) -> Vec<u8> {
    env.run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    std::fs::read(env.path("out/data/train/train-00000-of-00001.jsonl")).unwrap()
}

fn accepted(env: &Env) -> i64 {
    env.run(["stats", "--json"]).expect_code(0).json()["records"]["accepted"]
        .as_i64()
        .unwrap()
}

#[test]
fn four_workers_reach_the_target_with_the_single_process_export() {
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(20),
        ..FakeConfig::default()
    });
    let want = single_process_export(&server, "2500");
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let children: Vec<Child> = (0..4).map(|_| worker(&env, &server, "2500", "8")).collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(accepted(&env), 2500);
    assert!(
        export(&env) == want,
        "the 4-worker export differs from the single process's"
    );
    // Every worker did some of the work.
    let workers = block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let w = db.live_workers(0, 0).await.unwrap();
        db.close().await;
        w
    });
    assert_eq!(workers.len(), 4, "{workers:?}");
    assert!(workers.iter().all(|w| w.stored > 0), "{workers:?}");
}

#[test]
fn killing_the_acceptor_and_a_worker_changes_nothing() {
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(60),
        ..FakeConfig::default()
    });
    let want = single_process_export(&server, "3000");
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let mut children: Vec<Child> = (0..4).map(|_| worker(&env, &server, "3000", "2")).collect();
    // Wait until an acceptor is registered and some records exist, then SIGKILL it and one other.
    let started = Instant::now();
    let acceptor_pid = loop {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no acceptor registered"
        );
        // `instill stats --json` lists the live workers, their leases and the acceptor.
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        let workers = stats["workers"].as_array().unwrap().clone();
        if let Some(a) = workers.iter().find(|w| w["acceptor"] == true)
            && stats["records"]["accepted"].as_i64().unwrap() > 200
        {
            assert!(
                workers.iter().all(|w| w["run"] == RUN && w["live"] == true),
                "{workers:?}"
            );
            // `host-pid-suffix`
            break a["worker"]
                .as_str()
                .unwrap()
                .rsplit('-')
                .nth(1)
                .unwrap()
                .parse::<u32>()
                .unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let acceptor = children
        .iter()
        .position(|c| c.id() == acceptor_pid)
        .expect("the acceptor is one of the four");
    let other = (acceptor + 1) % children.len();
    let stored_before: BTreeSet<u64> = stored_prompts(&env);
    let seen_before = server.requests().len();
    for i in [acceptor, other] {
        children[i].kill().unwrap(); // SIGKILL
        children[i].wait().unwrap();
    }
    assert!(
        accepted(&env) < 3000,
        "the kills came after the end: nothing tested"
    );
    for (i, child) in children.into_iter().enumerate() {
        if i == acceptor || i == other {
            continue;
        }
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(accepted(&env), 3000);
    assert!(
        export(&env) == want,
        "the export after the kills differs from the single process's"
    );
    let shared: BTreeSet<u64> = {
        let mut seen = BTreeSet::new();
        stored_prompt_list(&env)
            .into_iter()
            .filter(|h| !seen.insert(*h))
            .collect()
    };
    for (h, _) in &server.requests()[seen_before..] {
        assert!(
            !stored_before.contains(h) || shared.contains(h),
            "a prompt whose reply was stored was sent again"
        );
    }
}

fn stored_prompt_list(env: &Env) -> Vec<u64> {
    block_on(async {
        let db = instill_storage::Db::open(&env.db.url).await.unwrap();
        let run = db.find_run(RUN).await.unwrap().unwrap();
        let p = db.stored_prompts(run.id).await.unwrap();
        db.close().await;
        p.iter().map(|p| prompt_hash(p)).collect()
    })
}

fn stored_prompts(env: &Env) -> BTreeSet<u64> {
    stored_prompt_list(env).into_iter().collect()
}

#[test]
fn a_second_sqlite_writer_is_refused() {
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(50),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let mut first = worker(&env, &server, "3000", "2");
    std::thread::sleep(Duration::from_millis(700));
    let second = env.run([
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--target",
        "3000",
        "--run",
        RUN,
    ]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.code, 2, "{}", second.stderr);
    assert!(
        second
            .stderr
            .contains("another `instill generate` is writing"),
        "{}",
        second.stderr
    );
}

/// Waits for every child, at most `limit` in all; on time out kills them all and fails, with
/// their stderr: a wedged run is the bug these tests look for.
fn wait_all(children: Vec<Child>, limit: Duration) -> Vec<std::process::Output> {
    let started = Instant::now();
    let mut children: Vec<Option<Child>> = children.into_iter().map(Some).collect();
    let mut outs: Vec<Option<std::process::Output>> = children.iter().map(|_| None).collect();
    while outs.iter().any(Option::is_none) {
        for (c, out) in children.iter_mut().zip(outs.iter_mut()) {
            if out.is_none() && c.as_mut().unwrap().try_wait().unwrap().is_some() {
                *out = Some(c.take().unwrap().wait_with_output().unwrap());
            }
        }
        if started.elapsed() > limit {
            let mut stuck = String::new();
            for c in children.iter_mut().flatten() {
                let _ = c.kill();
            }
            for c in children.into_iter().flatten() {
                let out = c.wait_with_output().unwrap();
                stuck.push_str(&String::from_utf8_lossy(&out.stderr));
            }
            panic!("workers still running after {limit:?} (a wedged run): {stuck}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    outs.into_iter().map(Option::unwrap).collect()
}

#[track_caller]
fn expect_exit(out: &std::process::Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until the run has more than `n` accepted records.
fn wait_accepted(env: &Env, n: i64) {
    let started = Instant::now();
    while accepted(env) <= n {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fake server with `latency`, and one that answers the same at once (the reference's).
fn servers(config: FakeConfig, latency: Duration) -> (FakeServer, FakeServer) {
    let slow = FakeServer::start(FakeConfig {
        latency,
        ..config.clone()
    });
    (slow, FakeServer::start(config))
}

/// Ctrl-C (or a SIGTERM) to one of two workers: it releases what it claimed, and the other
/// finishes the run with the single process's records.
#[test]
fn a_signalled_worker_leaves_nothing_the_other_waits_for() {
    let (server, quick) = servers(FakeConfig::default(), Duration::from_millis(300));
    let want = single_process_export(&quick, "2000");
    for (signal, code) in [("INT", 130), ("TERM", 143)] {
        let env = Env::new(instill_storage::testing::TempDb::postgres());
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        let children: Vec<Child> = (0..2)
            .map(|_| worker(&env, &server, "2000", "16"))
            .collect();
        wait_accepted(&env, 150);
        let status = Command::new("kill")
            .args(["-s", signal, &children[0].id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let outs = wait_all(children, Duration::from_secs(90));
        expect_exit(&outs[0], code);
        expect_exit(&outs[1], 0);
        assert_eq!(accepted(&env), 2000, "SIG{signal}");
        assert!(
            export(&env) == want,
            "SIG{signal}: the export differs from the single process's"
        );
    }
}

/// Workers stop at the target with claims released (replies come back out of order, so some
/// lie below stored ones); the run resumed with a larger target claims those indices again and
/// ends with the single process's records.
#[test]
fn a_run_resumed_with_a_larger_target_claims_what_was_released() {
    let config = FakeConfig {
        jitter: Duration::from_millis(300),
        ..FakeConfig::default()
    };
    let (server, quick) = servers(config, Duration::from_millis(20));
    let want = single_process_export(&quick, "1500");
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    for target in ["700", "1500"] {
        let children: Vec<Child> = (0..2)
            .map(|_| worker(&env, &server, target, "16"))
            .collect();
        for out in wait_all(children, Duration::from_secs(90)) {
            expect_exit(&out, 0);
        }
    }
    assert_eq!(accepted(&env), 1500);
    assert!(
        export(&env) == want,
        "the resumed run's export differs from the single process's"
    );
}

/// 200 replies in a row with no tasks (a refusing model) do not stop the claims: the run goes
/// on to the target, and with nothing but refusals --max-requests ends it.
#[test]
fn replies_without_tasks_do_not_stall_claims() {
    let server = FakeServer::start(FakeConfig {
        refuse_first: 200,
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let out = wait_all(
        vec![spawn(
            &env,
            &server,
            &["--target", "100", "--concurrency", "4"],
        )],
        Duration::from_secs(90),
    );
    expect_exit(&out[0], 0);
    assert_eq!(accepted(&env), 100);
    assert!(server.requests()[..200].iter().all(|r| r.1 == "refused"));

    let refusing = FakeServer::start(FakeConfig {
        refuse_first: usize::MAX,
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let args = [
        "--target",
        "100",
        "--concurrency",
        "4",
        "--max-requests",
        "300",
        "--json",
    ];
    let child = command(&env, &refusing, &args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_all(vec![child], Duration::from_secs(90));
    expect_exit(&out[0], 1);
    let summary: serde_json::Value = serde_json::from_slice(&out[0].stdout).unwrap();
    assert_eq!(summary["ending"], "max_requests", "{summary}");
    assert_eq!(refusing.requests().len(), 300);
    assert_eq!(accepted(&env), 0);
}

/// The acceptor's lock connection dies (pg_terminate_backend; in real life a failover, a pooler
/// or an idle timeout) while it goes on: another worker takes the run over, and the first one's
/// flushes are refused from then on, so no record is written twice.
#[test]
fn an_acceptor_whose_lock_connection_died_writes_nothing_more() {
    let (server, quick) = servers(FakeConfig::default(), Duration::from_millis(100));
    let want = single_process_export(&quick, "2500");
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let children: Vec<Child> = (0..3).map(|_| worker(&env, &server, "2500", "4")).collect();
    wait_accepted(&env, 300);
    let terminated: Vec<bool> = block_on(async {
        use sqlx::Connection as _;
        let mut c = sqlx::PgConnection::connect(&env.db.url).await.unwrap();
        let t = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_locks
             WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_all(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        t
    });
    assert_eq!(terminated, vec![true], "the acceptor's lock connection");
    assert!(
        accepted(&env) < 2500,
        "terminated after the end: nothing tested"
    );
    let outs = wait_all(children, Duration::from_secs(120));
    for out in &outs {
        expect_exit(out, 0);
    }
    assert_eq!(accepted(&env), 2500);
    assert!(
        export(&env) == want,
        "the export after the takeover differs from the single process's"
    );
    // The first acceptor went on after its lock was gone, and was refused.
    assert!(
        outs.iter()
            .any(|o| String::from_utf8_lossy(&o.stderr)
                .contains("another worker took over acceptance")),
        "no acceptor was fenced"
    );
}

/// A NUL in a reply: the task is rejected as `unstorable` (its text stored with U+FFFD), on
/// Postgres as on SQLite, and the run goes on to the same records.
#[test]
fn a_nul_in_a_reply_is_rejected_as_unstorable_on_both_engines() {
    let server = FakeServer::start(FakeConfig {
        nul_every: 5,
        ..FakeConfig::default()
    });
    let want = single_process_export(&server, "400");
    let env = Env::new(instill_storage::testing::TempDb::postgres());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let children: Vec<Child> = (0..2).map(|_| worker(&env, &server, "400", "4")).collect();
    for out in wait_all(children, Duration::from_secs(90)) {
        expect_exit(&out, 0);
    }
    let records = env.records();
    let unstorable: Vec<_> = records
        .iter()
        .filter(|r| r.reason.as_deref() == Some("unstorable"))
        .collect();
    assert!(!unstorable.is_empty(), "no NUL reply was judged");
    assert!(
        unstorable
            .iter()
            .all(|r| r.status.as_str() == "rejected" && r.record.instruction.contains('\u{fffd}'))
    );
    assert!(records.iter().all(|r| !r.record.instruction.contains('\0')));
    assert!(
        export(&env) == want,
        "the Postgres export differs from SQLite's"
    );
}
