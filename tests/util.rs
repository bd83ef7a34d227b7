//! Test helpers: run the real `instill` binary against a throw-away database, read what it
//! stored, find the shared data sets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use instill_storage::testing::TempDb;
use instill_storage::{Db, StatusFilter, StoredRecord};

/// Held by each test that runs SmolLM2 (training, generating, scoring) for as long as it runs
/// (`crate::local::smollm2` takes it):
/// candle spreads one model's work over every core, and two such tests at once on a small
/// machine spend their time contending for the cores (thread pools spinning, pages zeroed)
/// rather than computing. One at a time, each finishes sooner and the whole run does too.
pub fn one_model_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    // A test that failed while holding it does not stop the others.
    TURN.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the whole output unless the exit code is `code`.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Run {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// The stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

/// A database plus a scratch directory for input and output files.
pub struct Env {
    pub db: TempDb,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(db: TempDb) -> Env {
        Env {
            db,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// One Env per backend, SQLite first.
    pub fn both() -> [Env; 2] {
        TempDb::both().map(Env::new)
    }

    pub fn backend(&self) -> &'static str {
        self.db.backend
    }

    /// Another empty database of the same backend.
    pub fn fresh_db(&self) -> TempDb {
        if self.backend() == "sqlite" {
            TempDb::sqlite()
        } else {
            TempDb::postgres()
        }
    }

    /// A path in the scratch directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `bytes` to a file in the scratch directory and returns its path.
    pub fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, bytes).expect("write test file");
        p
    }

    /// Runs `instill ARGS` on this database, in the scratch directory.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        run_in(self.dir.path(), &self.db.url, args)
    }

    /// Starts `instill ARGS --no-progress` on this database, in the scratch directory, without
    /// waiting: stdout discarded, stderr piped (read it with `wait_with_output`). Killed if the
    /// test ends, or fails, before it has been waited for.
    pub fn spawn(&self, args: &[&str]) -> Spawned {
        let child = Command::new(env!("CARGO_BIN_EXE_instill"))
            .args(args)
            .arg("--no-progress")
            .env("INSTILL_DB", &self.db.url)
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run instill");
        Spawned(Some(child))
    }

    /// Runs the binary through `sh -c`, with `$INSTILL` and `$INSTILL_DB` set: for tests that
    /// need shell features (resource limits, ignored signals).
    pub fn sh(&self, script: &str) -> Run {
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("INSTILL", env!("CARGO_BIN_EXE_instill"))
            .env("INSTILL_DB", &self.db.url)
            .output()
            .expect("run sh");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Every record in the database, in id order.
    pub fn records(&self) -> Vec<StoredRecord> {
        block_on(async {
            let db = Db::open(&self.db.url).await.expect("open db");
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let page = db
                    .records_page(StatusFilter::All, after, 10_000)
                    .await
                    .expect("page");
                let Some(last) = page.last() else { break };
                after = last.id;
                all.extend(page);
            }
            db.close().await;
            all
        })
    }

    /// The number of records, seeds and imports.
    pub fn counts(&self) -> (i64, i64, i64) {
        block_on(async {
            let db = Db::open(&self.db.url).await.expect("open db");
            let s = db.stats().await.expect("stats");
            db.close().await;
            (s.records.total, s.seeds, s.imports)
        })
    }
}

/// Runs `instill ARGS` in `dir` with `--db url` and no progress bars.
pub fn run_in<I, S>(dir: &Path, url: &str, args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(args)
        .arg("--no-progress")
        .env("INSTILL_DB", url)
        .env_remove("RUST_LOG")
        .current_dir(dir)
        .output()
        .expect("run instill");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `instill ARGS` in `env`'s directory with `vars` set (and `unset` removed), stdout and
/// stderr piped (not a terminal), progress shown; kills it after `limit`, so that a hang fails
/// the test (code -1) instead of wedging the suite.
pub fn run_bounded(
    env: &Env,
    args: &[&str],
    vars: &[(&str, &str)],
    unset: &[&str],
    limit: std::time::Duration,
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_instill"));
    cmd.args(args)
        .env("INSTILL_DB", &env.db.url)
        .env_remove("RUST_LOG")
        .current_dir(env.dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().expect("run instill");
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    use std::io::Read;
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let started = std::time::Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code().unwrap_or(-1);
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break -1;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    Run {
        code,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

pub fn block_on<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// A file of the shared data sets (`INSTILL_SHARED`, else `../shared` beside the repository).
/// Panics when they cannot be found: these tests are part of the contract.
pub fn shared(rel: &str) -> PathBuf {
    let root = std::env::var_os("INSTILL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    let p = root.join(rel);
    assert!(
        p.exists(),
        "{} not found: set INSTILL_SHARED to the shared/ directory (bash .ci/run does)",
        p.display()
    );
    p
}

/// A file shipped in the repository.
pub fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `instill ARGS` on `env` until it exits, killing it with SIGKILL `kills` times first at
/// moments drawn from `seed` (100-500 ms after each start; an attempt that finishes before its
/// kill counts as done): the crash-and-resume pattern of the generation tests. Returns the exit
/// code of the run that finished and how many kills landed.
pub fn run_killed(env: &Env, args: &[&str], kills: u32, seed: u64) -> (i32, u32) {
    let mut state = seed | 1;
    let mut landed = 0;
    loop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_instill"))
            .args(args)
            .arg("--no-progress")
            .env("INSTILL_DB", &env.db.url)
            .env_remove("RUST_LOG")
            .current_dir(env.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("run instill");
        if landed < kills {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            std::thread::sleep(std::time::Duration::from_millis(100 + state % 400));
            if let Some(status) = child.try_wait().expect("wait") {
                return (status.code().unwrap_or(-1), landed);
            }
            child.kill().expect("SIGKILL");
            child.wait().expect("wait");
            landed += 1;
        } else {
            let status = child.wait().expect("wait");
            return (status.code().unwrap_or(-1), landed);
        }
    }
}

/// The train split of the export in `dir` (one shard), as written.
pub fn train_shard(env: &Env, dir: &str) -> Vec<u8> {
    std::fs::read(env.path(&format!("{dir}/data/train/train-00000-of-00001.jsonl"))).unwrap()
}

/// The lines of the train split of the export in `dir` (one shard), parsed.
pub fn exported(env: &Env, dir: &str) -> Vec<serde_json::Value> {
    String::from_utf8(train_shard(env, dir))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// `n` made-up words drawn from `seed`.
pub fn words(seed: u64, n: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ten", "ru", "sa", "vel", "do", "pri", "nu", "gar", "be", "tos", "fi",
        "wen", "cal",
    ];
    (0..n)
        .map(|i| {
            let x = xxhash_rust::xxh3::xxh3_64(&(seed ^ (i as u64) << 48).to_le_bytes());
            (0..3)
                .map(|j| SYLLABLES[(x >> (4 * j)) as usize & 15])
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A started `instill` ([`Env::spawn`]): a failed assertion before it is waited for kills it
/// instead of leaving it running (a training with a million steps would run on for hours).
pub struct Spawned(Option<std::process::Child>);

impl Spawned {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, std::process::Child::id)
    }

    pub fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.as_mut().expect("not waited for yet").wait()
    }

    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0
            .take()
            .expect("not waited for yet")
            .wait_with_output()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
