//! Progress when stderr is not a terminal (a log, a pipe): a line every
//! `INSTILL_PROGRESS_INTERVAL` seconds from every long command, none with `--no-progress`.

use std::time::Duration;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, Run, run_bounded, shared};

/// The progress lines of a run's stderr.
fn progress_lines(run: &Run) -> Vec<&str> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect()
}

const FAST: &[(&str, &str)] = &[("INSTILL_PROGRESS_INTERVAL", "0.05")];

#[test]
fn generate_logs_accepted_of_target_rates_and_failures() {
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(50),
        ..FakeConfig::default()
    });
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let base_url = server.base_url.clone();
    let args = [
        "generate",
        "--base-url",
        &base_url,
        "--model",
        "fake",
        "--lang",
        "en",
        "--target",
        "400",
        "--concurrency",
        "4",
        "--json",
    ];
    let run = run_bounded(&env, &args, FAST, &[], Duration::from_secs(300)).expect_code(0);
    assert_eq!(run.json()["accepted"], 400);
    let lines = progress_lines(&run);
    assert!(!lines.is_empty(), "no progress line:\n{}", run.stderr);
    for l in &lines {
        assert!(
            l.contains("/400 accepted, ") && l.contains(" req/s") && l.contains("failed attempts"),
            "{l}"
        );
    }
    assert!(lines.iter().any(|l| l.contains(", eta ")), "{lines:?}");
    // --no-progress: none.
    let mut quiet = args.to_vec();
    quiet.extend(["--run", "again", "--no-progress"]);
    let run = run_bounded(&env, &quiet, FAST, &[], Duration::from_secs(300)).expect_code(0);
    assert!(progress_lines(&run).is_empty(), "{}", run.stderr);
}

#[test]
fn import_logs_bytes_of_the_file() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let file = shared("data/alpaca_zh_part00.json");
    let run = run_bounded(
        &env,
        &["import", file.to_str().unwrap()],
        FAST,
        &[],
        Duration::from_secs(300),
    )
    .expect_code(0);
    let lines = progress_lines(&run);
    assert!(!lines.is_empty(), "no progress line:\n{}", run.stderr);
    assert!(
        lines
            .iter()
            .all(|l| l.contains("/3.39 MiB, ") && l.contains("| importing")),
        "{lines:?}"
    );
}

#[test]
fn log_lines_carry_no_colour_codes_when_stderr_is_not_a_terminal() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let args = [
        "-vv",
        "generate",
        "--base-url",
        "http://127.0.0.1:1/v1",
        "--model",
        "m",
        "--target",
        "1",
    ];
    let vars = [("INSTILL_CONNECT_GRACE", "0")];
    let run = run_bounded(&env, &args, &vars, &["NO_COLOR"], Duration::from_secs(120));
    let run = run.expect_code(2);
    assert!(run.stderr.contains("DEBUG"), "no log line:\n{}", run.stderr);
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}

#[test]
fn bad_interval_variables_are_refused_naming_the_variable() {
    // An invalid INSTILL_PROGRESS_INTERVAL only warned while INSTILL_CONNECT_GRACE exited 2.
    let server = FakeServer::start(FakeConfig::default());
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "en"])
        .expect_code(0);
    let base_url = server.base_url.clone();
    let args = [
        "generate",
        "--base-url",
        &base_url,
        "--model",
        "fake",
        "--target",
        "5",
    ];
    for (var, values) in [
        ("INSTILL_PROGRESS_INTERVAL", &["abc", "0", "-1", "inf"][..]),
        ("INSTILL_CONNECT_GRACE", &["abc", "-1", "NaN"]),
    ] {
        for value in values {
            let run = run_bounded(&env, &args, &[(var, value)], &[], Duration::from_secs(120));
            let run = run.expect_code(2);
            let lines: Vec<&str> = run.stderr.lines().collect();
            assert_eq!(lines.len(), 1, "{var}={value}: {}", run.stderr);
            for want in [var, value, "seconds"] {
                assert!(lines[0].contains(want), "`{want}` missing: {}", lines[0]);
            }
        }
    }
    assert!(server.requests().is_empty());
    // Good values still run.
    let vars = [
        ("INSTILL_PROGRESS_INTERVAL", "0.5"),
        ("INSTILL_CONNECT_GRACE", "0"),
    ];
    run_bounded(&env, &args, &vars, &[], Duration::from_secs(120)).expect_code(0);
}
