//! `src/allocator.rs`: the process a caller starts runs itself once more (the same pid) with
//! mimalloc's purge delay off, `MIMALLOC_PURGE_DELAY=-1` in its environment; a caller who set
//! the variable keeps their value.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::Env;

const VAR: &str = "MIMALLOC_PURGE_DELAY";

/// `VAR`'s value in the environment of the running process `pid`, as Linux shows it.
fn purge_delay_of(pid: u32) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ
        .split(|b| *b == 0)
        .find_map(|kv| kv.strip_prefix(format!("{VAR}=").as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn the_binary_keeps_freed_pages_unless_its_caller_chose_otherwise() {
    // Replies never come in time: the command is still running when its environment is read.
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_secs(120),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    for (set, want) in [(None, "-1"), (Some("250"), "250")] {
        let before = server.requests().len();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_instill"));
        cmd.args([
            "generate",
            "--base-url",
            &server.base_url,
            "--model",
            "fake",
        ])
        .args(["--target", "10", "--no-progress"])
        .env("INSTILL_DB", &env.db.url)
        .current_dir(env.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        match set {
            Some(v) => cmd.env(VAR, v),
            None => cmd.env_remove(VAR),
        };
        let mut child = cmd.spawn().unwrap();
        // Read once the command has sent a request: any running again is over by then.
        let deadline = Instant::now() + Duration::from_secs(60);
        while server.requests().len() == before && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let running = child.try_wait().unwrap().is_none();
        let seen = purge_delay_of(child.id());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(running, "the command ended before its environment was read");
        assert!(server.requests().len() > before, "no request within 60 s");
        assert_eq!(
            seen.as_deref(),
            Some(want),
            "{VAR} set by the caller: {set:?}"
        );
    }
}
