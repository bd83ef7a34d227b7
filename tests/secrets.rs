//! Secrets and limits: `--help` never shows an environment variable's value; passwords in
//! database and server URLs never reach stats, reports, errors, logs or the database; limit
//! flags refuse NaN, infinity and values <= 0; a reply body past the cap is an error, read no
//! further; absurd server-reported usage overflows no counter.

use std::process::Command;

use instill_generator::MAX_REPORTED_TOKENS;
use instill_storage::testing::TempDb;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::util::{Env, Run};

/// Runs `instill ARGS` in the Env's directory with extra environment variables.
fn run_env(env: &Env, vars: &[(&str, &str)], args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(args)
        .env("INSTILL_DB", &env.db.url)
        .env_remove("RUST_LOG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .envs(vars.iter().copied())
        .current_dir(env.dir.path())
        .output()
        .expect("run instill");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[track_caller]
fn assert_hidden(run: &Run, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !run.stdout.contains(s) && !run.stderr.contains(s),
            "`{s}` leaked:\n--- stdout\n{}\n--- stderr\n{}",
            run.stdout,
            run.stderr
        );
    }
}

#[test]
fn help_never_prints_environment_values() {
    let env = Env::new(TempDb::sqlite());
    let vars = [
        ("INSTILL_DB", "postgres://u:hunter2@db.example/x"),
        ("OPENAI_BASE_URL", "https://k:sk-base-secret@api.example/v1"),
        ("OPENAI_API_KEY", "sk-key-secret"),
    ];
    for args in [
        &["--help"][..],
        &["help", "generate"],
        &["generate", "--help"],
        &["stats", "--help"],
        &["export", "--help"],
        &["train", "--help"],
    ] {
        let run = run_env(&env, &vars, args).expect_code(0);
        assert_hidden(&run, &["hunter2", "sk-base-secret", "sk-key-secret"]);
        assert!(run.stdout.contains("INSTILL_DB"), "{}", run.stdout);
    }
}

/// Two URLs of the test Postgres that carry a password (one in the userinfo, with `@` in it
/// where the server accepts any password; one as `?password=`), with the password.
fn postgres_urls_with_passwords(url: &str) -> Vec<(String, String)> {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest
        .rsplit_once('@')
        .expect("a user in INSTILL_TEST_PG_URL");
    let sep = if host.contains('?') { '&' } else { '?' };
    match userinfo.split_once(':') {
        // A server that checks passwords: the real one, in both places.
        Some((user, password)) => vec![
            (url.to_string(), password.to_string()),
            (
                format!("{scheme}://{user}@{host}{sep}password={password}"),
                password.to_string(),
            ),
        ],
        // A server that trusts local logins: any password works.
        None => vec![
            (
                format!("{scheme}://{userinfo}:s3cr@t:x@{host}"),
                "s3cr".to_string(),
            ),
            (format!("{url}{sep}password=qs3cret"), "qs3cret".to_string()),
        ],
    }
}

#[test]
fn passwords_never_reach_stats_reports_errors_logs_or_the_database() {
    let server = FakeServer::start(FakeConfig::default());
    let (scheme, hostpath) = server.base_url.split_once("://").unwrap();
    let base_url = format!("{scheme}://bob:sk-base-secret@{hostpath}");
    for env in Env::both() {
        let mut urls = vec![(env.db.url.clone(), "sk-base-secret".to_string())];
        if env.backend() == "postgres" {
            urls.extend(postgres_urls_with_passwords(&env.db.url));
        }
        for (url, password) in urls {
            let secrets = [password.as_str(), "sk-base-secret", "sk-key-secret"];
            let db = ("INSTILL_DB", url.as_str());
            run_env(&env, &[db], &["seeds", "import", "--builtin", "en"]).expect_code(0);
            let generate = [
                "-vv",
                "generate",
                "--base-url",
                &base_url,
                "--model",
                "fake",
                "--target",
                "30",
                "--run",
                "secrets",
            ];
            // The URL's password is the credential: no key beside it (see
            // a_password_in_the_url_and_an_api_key_together_are_refused).
            let run = run_env(&env, &[db], &generate).expect_code(0);
            assert_hidden(&run, &secrets);
            let stats = run_env(&env, &[db], &["-vvv", "stats"]).expect_code(0);
            assert_hidden(&stats, &secrets);
            if url.contains(&format!(":{password}@")) {
                assert!(stats.stdout.contains(":***@"), "{}", stats.stdout);
            }
            let json = run_env(&env, &[db], &["stats", "--json"]).expect_code(0);
            assert_hidden(&json, &secrets);
            let html = env.path("report.html");
            let report = run_env(&env, &[db], &["report", "--out", html.to_str().unwrap()]);
            assert_hidden(&report.expect_code(0), &secrets);
            let page = std::fs::read_to_string(&html).unwrap();
            for s in secrets {
                assert!(!page.contains(s), "`{s}` in the report");
            }
        }
        if let Some(dir) = env.db.dir() {
            // Nothing the run stored (settings, requests, errors) holds a secret.
            for entry in std::fs::read_dir(dir).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                assert!(!text.contains("sk-base-secret") && !text.contains("sk-key-secret"));
            }
        }
    }
    // Errors: a database that cannot be reached, a server that refuses the key, a server that
    // cannot be reached (with its retries logged).
    let env = Env::new(TempDb::sqlite());
    for (url, shown) in [
        // The `:` after the URL stays (it was taken for the end of the password).
        (
            "postgres://u:pa@ss@127.0.0.1:1/db",
            "postgres://u:***@127.0.0.1:1/db: ",
        ),
        (
            "postgres://u@127.0.0.1:1/db?password=pa@ss",
            "postgres://u@127.0.0.1:1/db?password=***: ",
        ),
    ] {
        let run = run_env(&env, &[("INSTILL_DB", url)], &["stats"]).expect_code(2);
        assert_hidden(&run, &["pa@ss", "ss@"]);
        assert!(run.stderr.contains(shown), "{}", run.stderr);
    }
    let env = Env::new(TempDb::sqlite());
    run_env(&env, &[], &["seeds", "import", "--builtin", "en"]).expect_code(0);
    let refusing = FakeServer::start(FakeConfig {
        always_status: Some(401),
        ..FakeConfig::default()
    });
    let (scheme, hostpath) = refusing.base_url.split_once("://").unwrap();
    let refusing_url = format!("{scheme}://bob:sk-b@se@{hostpath}");
    for base in [refusing_url.as_str(), "http://bob:sk-b@se@127.0.0.1:1/v1"] {
        let args = [
            "-vv",
            "generate",
            "--base-url",
            base,
            "--model",
            "fake",
            "--target",
            "5",
            "--max-requests",
            "2",
            "--max-retries",
            "2",
        ];
        let run = run_env(&env, &[], &args);
        assert_ne!(run.code, 0, "{}", run.stderr);
        assert_hidden(&run, &["sk-b", "se@", "sk-key-secret"]);
        assert!(run.stderr.contains("bob:***@"), "{}", run.stderr);
    }
}

/// `base_url` with `user:password@` after its scheme.
fn with_userinfo(base_url: &str, userinfo: &str) -> String {
    let (scheme, hostpath) = base_url.split_once("://").unwrap();
    format!("{scheme}://{userinfo}@{hostpath}")
}

/// The bytes of every file of a SQLite database (main file, WAL, journal) as text.
fn stored_text(env: &Env) -> String {
    let dir = env.db.dir().expect("a SQLite database");
    let mut text = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry.unwrap().path()).unwrap(),
        ));
    }
    text
}

#[test]
fn credentials_a_server_repeats_are_shown_and_stored_nowhere() {
    // The trial: `rejected the API key (401): Incorrect API key provided: Bearer sk-TOPSECRETKEY`,
    // and with a password in the URL `Basic dTpLM3lQdw==` (base64 of u:K3yPw). A 401 stops the
    // run at once; a 500 is retried (each attempt logged at -vv) and then stored as a failed
    // request with its error text.
    let env = Env::new(TempDb::sqlite());
    run_env(&env, &[], &["seeds", "import", "--builtin", "en"]).expect_code(0);
    for (status, code) in [(401, 2), (500, 1)] {
        let server = FakeServer::start(FakeConfig {
            always_status: Some(status),
            echo_auth: true,
            ..FakeConfig::default()
        });
        let with_password = with_userinfo(&server.base_url, "u:K3yPw");
        // (base URL, environment, secrets, what is shown instead)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str], &'a str);
        let cases: [Case; 2] = [
            (
                &server.base_url,
                &[("OPENAI_API_KEY", "sk-TOPSECRETKEY")],
                &["TOPSECRET"],
                "Bearer ***",
            ),
            (&with_password, &[], &["K3yPw", "dTpLM3lQdw"], "Basic ***"),
        ];
        for (i, (base, vars, secrets, shown)) in cases.into_iter().enumerate() {
            let run_name = format!("echo-{status}-{i}");
            let args = [
                "-vv",
                "generate",
                "--base-url",
                base,
                "--model",
                "fake",
                "--target",
                "5",
                "--max-requests",
                "2",
                "--max-retries",
                "2",
                "--run",
                &run_name,
            ];
            let run = run_env(&env, vars, &args);
            assert_eq!(run.code, code, "{}", run.stderr);
            assert_hidden(&run, secrets);
            assert!(run.stderr.contains(shown), "{}", run.stderr);
            assert!(!server.requests().is_empty());
            let stats = run_env(&env, &[], &["stats", "--json"]).expect_code(0);
            assert_hidden(&stats, secrets);
            let stored = stored_text(&env);
            for s in secrets {
                assert!(!stored.contains(s), "`{s}` stored in the database");
            }
            if status == 500 {
                assert!(
                    stored.contains(shown),
                    "the failed requests' errors are stored"
                );
            }
        }
    }
}

#[test]
fn a_password_in_the_url_and_an_api_key_together_are_refused() {
    // Both would go out as two Authorization headers (Basic from the URL, Bearer from the key).
    let server = FakeServer::start(FakeConfig::default());
    let env = Env::new(TempDb::sqlite());
    run_env(&env, &[], &["seeds", "import", "--builtin", "en"]).expect_code(0);
    let with_password = with_userinfo(&server.base_url, "u:K3yPw");
    let generate = |base: &str, vars: &[(&str, &str)], extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--base-url",
            base,
            "--model",
            "fake",
            "--target",
            "5",
            "--json",
        ];
        args.extend_from_slice(extra);
        run_env(&env, vars, &args)
    };
    for (var, extra) in [
        ("OPENAI_API_KEY", &[][..]),
        ("MY_KEY", &["--api-key-env", "MY_KEY"]),
    ] {
        let run = generate(&with_password, &[(var, "sk-both")], extra).expect_code(2);
        assert_hidden(&run, &["K3yPw", "sk-both"]);
        let lines: Vec<&str> = run.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", run.stderr);
        for want in [var, "--base-url", "u:***@", "Authorization"] {
            assert!(lines[0].contains(want), "`{want}` missing: {}", lines[0]);
        }
    }
    assert!(server.requests().is_empty(), "a refused run sent requests");
    // One or the other: each request carries exactly one Authorization header.
    let run = generate(&with_password, &[], &["--run", "basic"]).expect_code(0);
    assert_eq!(run.json()["accepted"], 5);
    let key = [("OPENAI_API_KEY", "sk-one")];
    generate(&server.base_url, &key, &["--run", "bearer"]).expect_code(0);
    let auth = server.auth_headers();
    let basic = auth
        .iter()
        .filter(|a| a[..] == ["Basic dTpLM3lQdw=="])
        .count();
    let bearer = auth.iter().filter(|a| a[..] == ["Bearer sk-one"]).count();
    assert!(basic > 0 && bearer > 0, "{auth:?}");
    assert_eq!(basic + bearer, auth.len(), "{auth:?}");
}

#[test]
fn limit_flags_refuse_nan_infinity_and_values_not_above_zero() {
    let env = Env::new(TempDb::sqlite());
    // With seeds, a value that got through would start a run (which then fails to connect).
    run_env(&env, &[], &["seeds", "import", "--builtin", "en"]).expect_code(0);
    let generate = |flag: &str, value: &str| {
        let arg = format!("--{flag}={value}");
        let args = [
            "generate",
            "--base-url",
            "http://127.0.0.1:1/v1",
            "--model",
            "m",
            "--target",
            "1",
            "--max-requests",
            "1",
            "--max-retries",
            "1",
            &arg,
        ];
        (arg.clone(), run_env(&env, &[], &args))
    };
    let cases: &[(&str, &[&str])] = &[
        ("timeout", &["NaN", "inf", "-inf", "0", "-1", "1e300"]),
        ("lease-seconds", &["nan", "infinity", "0", "-30"]),
        ("rpm", &["0", "-1", "NaN", "inf"]),
        ("tpm", &["0", "-1", "NaN", "inf"]),
        ("temperature", &["NaN", "inf", "-0.5"]),
        ("top-p", &["NaN", "0", "1.5"]),
        ("max-tokens", &["0"]),
        ("price-in", &["NaN", "-1"]),
        ("max-reply-bytes", &["0"]),
    ];
    for (flag, values) in cases {
        for value in *values {
            let (arg, run) = generate(flag, value);
            let run = run.expect_code(2);
            assert!(
                run.stderr.contains(&format!("--{flag}")),
                "{arg}: {}",
                run.stderr
            );
        }
    }
    // Reasonable values still parse (the run then fails to connect: not exit 2 from parsing).
    for (flag, value) in [("timeout", "0.5"), ("temperature", "0"), ("rpm", "60")] {
        let (arg, run) = generate(flag, value);
        assert!(
            !run.stderr.contains("invalid value"),
            "{arg}: {}",
            run.stderr
        );
    }
    for args in [
        &["report", "--out", "r.html", "--price-out=NaN"][..],
        &["train", "--model", "m", "--out", "o", "--lr=inf"],
        &["train", "--model", "m", "--out", "o", "--lr=0"],
        &["train", "--model", "m", "--out", "o", "--lora-alpha=NaN"],
        &["train", "--model", "m", "--out", "o", "--lora-dropout=1"],
    ] {
        let run = run_env(&env, &[], args).expect_code(2);
        assert!(
            run.stderr.contains("invalid value"),
            "{args:?}: {}",
            run.stderr
        );
    }
    assert!(!env.path("r.html").exists() && !env.path("o").exists());
}

/// `generate` against `server` until `target`, with `extra` flags; the summary as JSON.
fn generate(env: &Env, server: &FakeServer, target: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--target",
        target,
        "--json",
    ];
    args.extend_from_slice(extra);
    run_env(env, &[], &args)
}

#[test]
fn a_reply_body_past_the_cap_is_an_error_and_read_no_further() {
    let env = Env::new(TempDb::sqlite());
    run_env(&env, &[], &["seeds", "import", "--builtin", "en"]).expect_code(0);
    // A declared length past a small cap; then an endless body past the default cap.
    let padded = FakeServer::start(FakeConfig {
        padding: 256 << 10,
        ..FakeConfig::default()
    });
    let endless = FakeServer::start(FakeConfig {
        endless: true,
        ..FakeConfig::default()
    });
    for (server, cap) in [
        (
            &padded,
            &["--run", "padded", "--max-reply-bytes", "64K"][..],
        ),
        (&endless, &["--run", "endless"]),
    ] {
        let mut extra = vec![
            "--max-requests",
            "2",
            "--max-retries",
            "2",
            "--timeout",
            "60",
        ];
        extra.extend_from_slice(cap);
        let run = generate(&env, server, "10", &extra).expect_code(1);
        let j = run.json();
        assert_eq!(j["ending"], "max_requests", "{}", run.stdout);
        assert_eq!(j["accepted"], 0);
        assert_eq!(j["requests_failed"], 2);
        assert_eq!(j["errors_by_kind"]["too_large"], 4, "{}", run.stdout);
        assert_eq!(j["errors_by_kind"].as_object().unwrap().len(), 1);
    }
    // The same server's replies pass under a cap they fit.
    let run = generate(
        &env,
        &padded,
        "10",
        &["--run", "fits", "--max-reply-bytes", "1M"],
    );
    assert_eq!(run.expect_code(0).json()["accepted"], 10);
}

#[test]
fn absurd_reported_usage_overflows_no_counter() {
    for env in Env::both() {
        let server = FakeServer::start(FakeConfig {
            usage: Some(serde_json::json!({
                "prompt_tokens": u64::MAX,
                "completion_tokens": -5,
                "total_tokens": 1e300,
            })),
            ..FakeConfig::default()
        });
        env.run(["seeds", "import", "--builtin", "en"])
            .expect_code(0);
        let run = generate(
            &env,
            &server,
            "20",
            &["--max-requests", "40", "--max-retries", "1"],
        );
        let run = run.expect_code(0);
        let j = run.json();
        // Each stored reply counts MAX_REPORTED_TOKENS prompt tokens and no completion tokens.
        let ok = j["requests_ok"].as_u64().unwrap();
        let prompt = j["prompt_tokens"].as_u64().unwrap();
        assert!(
            ok > 0 && prompt.is_multiple_of(MAX_REPORTED_TOKENS),
            "{}",
            run.stdout
        );
        assert!(prompt / MAX_REPORTED_TOKENS >= ok, "{}", run.stdout);
        assert_eq!(j["completion_tokens"], 0);
        assert_eq!(j["errors_by_kind"], serde_json::json!({}));
        // The stored counts sum without overflow, and a resumed run restores them.
        let stats = env.run(["stats", "--json"]).expect_code(0).json();
        assert_eq!(stats["tokens"]["prompt"].as_u64(), Some(prompt));
        assert_eq!(stats["tokens"]["completion"], 0);
        let run = generate(&env, &server, "20", &["--max-requests", "40"]);
        let again = run.expect_code(0).json();
        assert_eq!(again["prompt_tokens"].as_u64(), Some(prompt));
        let html = env.path("r.html");
        env.run(["report", "--out", html.to_str().unwrap(), "--price-in", "1"])
            .expect_code(0);
    }
}
