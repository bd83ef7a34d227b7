//! One run on several `instill generate` processes sharing Postgres: exactly the target, the
//! export of a single process byte for byte, and the same after SIGKILLing the acceptor and
//! another worker mid-run (no stored reply asked for again). SQLite refuses a second writer.

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_openai::{FakeConfig, FakeServer, prompt_hash};
use crate::util::{Env, block_on};

const RUN: &str = "shared";

fn worker(env: &Env, server: &FakeServer, target: &str, concurrency: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_instill"))
        .args([
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
            concurrency,
            "--run",
            RUN,
            "--lease-seconds",
            "2",
            "--no-progress",
        ])
        .env("INSTILL_DB", &env.db.url)
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
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
    std::fs::read(env.path("out/part-00000.jsonl")).unwrap()
}

fn export(env: &Env) -> Vec<u8> {
    env.run(["export", "--out", "out", "--status", "all"])
        .expect_code(0);
    std::fs::read(env.path("out/part-00000.jsonl")).unwrap()
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
            break a["worker"]
                .as_str()
                .unwrap()
                .rsplit('-')
                .next()
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
