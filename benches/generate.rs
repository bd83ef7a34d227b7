//! Generation benchmarks, with the release `instill` binary as a child process:
//!
//! ```text
//! cargo bench --bench generate -- scale [--target 1000000] [--concurrency 64]
//!     a run to TARGET accepted pairs against the in-process fake server (varied replies):
//!     wall time, peak RSS, database size, accept rate over time
//! cargo bench --bench generate -- throughput [--url http://127.0.0.1:18080/v1] [--n 50000]
//!     requests/s end to end into SQLite against ../shared/bench/gen's nginx (fixed reply) at
//!     concurrency 16, 64, 256 (start nginx first: see ../shared/bench/README.md)
//! cargo bench --bench generate -- workers [--target 40000] [--runs 3]
//!     1, 2 and 4 worker processes on one Postgres run (INSTILL_TEST_PG_URL) against the
//!     in-process fake server with 200 ms latency, concurrency 64 each: requests/s and the ratio
//!     to one worker (medians of --runs)
//! cargo bench --bench generate -- judge [--url URL] [--n 20000] [--runs 3]
//!     `instill score` requests/s against a zero-cost server (the in-process fake answering
//!     "Score: 7" at once, or --url), next to `generate` requests/s against the same server in
//!     the same run, at concurrency 16, 64, 256 (medians of --runs)
//! cargo bench --bench generate -- local [--requests 32] [--max-tokens 128] [--batch 8] [--runs 3]
//!     [--temperature T] [--llama-server PATH] [--candle]
//!     the same `generate` job on SmolLM2 Q4_1 (INSTILL_SMOLLM2_GGUF) with --backend llama-cpp,
//!     and with the OpenAI backend against llama.cpp's server on the same file (PATH, else
//!     INSTILL_LLAMA_SERVER, else `.peer-venv/bin/python -m llama_cpp.server`; README says how
//!     to build llama-server), optionally --backend candle: completion tokens/s and prompt plus
//!     completion tokens/s (medians of --runs, model load included for the in-process engines)
//!     and ratios. Sampled replies differ in length between engines (their RNGs differ), so the
//!     two jobs differ; `--temperature 0` makes both greedy, the same job on both sides.
//! cargo bench --bench generate -- latency [--url http://127.0.0.1:18081/v1] [--waves 20]
//!     achieved requests/s against concurrency/latency at 256 and 512 (slow_server.py --delay 1),
//!     sending whole waves (waves × concurrency requests) so the ideal time is waves × 1 s
//! ```

#[path = "../tests/fake_openai.rs"]
#[allow(dead_code)]
mod fake_openai;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_openai::{FakeConfig, FakeServer};

fn work() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-out/generate");
    let _ = std::fs::create_dir_all(&d);
    d
}

fn fresh_db(name: &str) -> (String, PathBuf) {
    let path = work().join(format!("{name}.db"));
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    (format!("sqlite://{}", path.display()), path)
}

fn instill(db: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_instill"));
    c.args(args)
        .arg("--no-progress")
        .env("INSTILL_DB", db)
        .env_remove("OPENAI_API_KEY");
    c
}

/// VmRSS and VmHWM of a running process, in MB.
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Accepted records with id above `after` and the largest id, read-only through python3's
/// sqlite3 (an incremental count: `instill stats` would scan the whole growing database).
fn accepted_since(path: &std::path::Path, after: i64) -> Option<(u64, i64)> {
    let script = format!(
        "import sqlite3; c = sqlite3.connect('file:{}?mode=ro', uri=True); \
         print(c.execute(\"SELECT COUNT(*), COALESCE(MAX(id), {after}) FROM records WHERE id > {after} AND status = 'accepted'\").fetchone()[0], \
               c.execute('SELECT COALESCE(MAX(id), 0) FROM records').fetchone()[0])",
        path.display()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn scale(target: u64, concurrency: u64) {
    let server = FakeServer::start(FakeConfig {
        items: 10,
        topics: u64::MAX,
        ..FakeConfig::default()
    });
    let (db, path) = fresh_db("scale");
    let _ = instill(&db, &["seeds", "import", "--builtin", "en"]).status();
    let started = Instant::now();
    // Six seeds per prompt: 45^6 example lists, so (nearly) every prompt and hence every fake
    // reply is new; with three, prompts repeat after ~85,000 requests and so do their replies.
    let mut child = instill(
        &db,
        &[
            "generate",
            "--base-url",
            &server.base_url,
            "--model",
            "fake",
            "--lang",
            "en",
            "--target",
            &target.to_string(),
            "--concurrency",
            &concurrency.to_string(),
            "--seeds-per-prompt",
            "6",
            "--json",
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("instill");
    let pid = child.id();
    let mut peak = 0.0f64;
    let mut timeline = Vec::new();
    let mut last = Instant::now();
    let (mut accepted, mut max_id) = (0u64, 0i64);
    loop {
        if let Some((_, hwm)) = rss_mb(pid) {
            peak = peak.max(hwm);
        }
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if last.elapsed() >= Duration::from_secs(20) {
            last = Instant::now();
            if let Some((new, max)) = accepted_since(&path, max_id) {
                accepted += new;
                max_id = max;
            }
            let t = started.elapsed().as_secs_f64();
            eprintln!("  {t:>7.0} s  {accepted:>9} accepted of {max_id} records");
            timeline.push((t, accepted));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("wait");
    let wall = started.elapsed().as_secs_f64();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let db_mb: f64 = ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len() as f64 / 1e6)
        .sum();
    println!("scale: {target} accepted target, concurrency {concurrency}");
    println!("  wall {wall:.1} s, peak RSS {peak:.0} MB, database {db_mb:.0} MB");
    println!(
        "  accepted {} rejected {} requests {} ({:.0} req/s, {:.0} accepted/s)",
        summary["accepted"],
        summary["rejected"],
        summary["requests_ok"],
        summary["requests_ok"].as_f64().unwrap_or(0.0) / wall,
        summary["accepted"].as_f64().unwrap_or(0.0) / wall
    );
    let mut prev = (0.0, 0u64);
    for (t, a) in timeline {
        println!(
            "  {t:>7.0} s {a:>9} accepted ({:.0}/s over the last interval)",
            (a - prev.1) as f64 / (t - prev.0)
        );
        prev = (t, a);
    }
}

/// Sends `n` requests (or `waves` × concurrency when given: whole waves, so that against a
/// fixed-latency server the ideal time is exactly waves × latency) at each concurrency.
fn throughput(url: &str, n: u64, concurrencies: &[u64], waves: Option<u64>) {
    for &c in concurrencies {
        let n = waves.map_or(n, |w| w * c);
        let (db, _) = fresh_db(&format!("throughput-{c}"));
        let _ = instill(&db, &["seeds", "import", "--builtin", "en"]).status();
        let started = Instant::now();
        let out = instill(
            &db,
            &[
                "generate",
                "--base-url",
                url,
                "--model",
                "fake",
                "--lang",
                "en",
                "--target",
                "100000000",
                "--max-requests",
                &n.to_string(),
                "--concurrency",
                &c.to_string(),
                "--json",
                "--max-retries",
                "3",
            ],
        )
        .output()
        .expect("instill");
        let wall = started.elapsed().as_secs_f64();
        let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ok = s["requests_ok"].as_f64().unwrap_or(0.0);
        println!(
            "concurrency {c:>4}: {ok} requests in {wall:.2} s = {:.0} req/s into SQLite ({} accepted, {} rejected) {}",
            ok / wall,
            s["accepted"],
            s["rejected"],
            if out.status.success() || out.status.code() == Some(1) {
                String::new()
            } else {
                String::from_utf8_lossy(&out.stderr).into_owned()
            }
        );
    }
}

/// `score` requests/s on N imported records, next to `generate` requests/s, same server.
fn judge(url: Option<String>, n: u64, runs: usize) {
    let server = FakeServer::start(FakeConfig {
        items: 10,
        topics: 1,
        answer: Some(|_| "Clear and correct.\nScore: 7".to_string()),
        ..FakeConfig::default()
    });
    let gen_server = FakeServer::start(FakeConfig {
        items: 10,
        topics: 1,
        ..FakeConfig::default()
    });
    let (judge_url, gen_url) = match &url {
        Some(u) => (u.clone(), u.clone()),
        None => (server.base_url.clone(), gen_server.base_url.clone()),
    };
    let data = work().join("judge-records.jsonl");
    let mut lines = String::new();
    for i in 0..n {
        lines.push_str(&format!(
            "{{\"instruction\": \"Explain item {i} to a beginner\", \"input\": \"\", \"output\": \"Item {i} is explained here in two sentences.\"}}\n"
        ));
    }
    let _ = std::fs::write(&data, lines);
    for c in [16u64, 64, 256] {
        let (mut score_rates, mut gen_rates) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let (db, _) = fresh_db(&format!("judge-{c}"));
            let _ = instill(&db, &["import", data.to_str().unwrap_or_default()]).output();
            let started = Instant::now();
            let out = instill(
                &db,
                &[
                    "score",
                    "--judge-model",
                    "fake",
                    "--base-url",
                    &judge_url,
                    "--concurrency",
                    &c.to_string(),
                    "--json",
                ],
            )
            .output()
            .expect("instill");
            let wall = started.elapsed().as_secs_f64();
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            score_rates.push(s["requests_sent_now"].as_f64().unwrap_or(0.0) / wall);
            let (db, _) = fresh_db(&format!("judge-gen-{c}"));
            let _ = instill(&db, &["seeds", "import", "--builtin", "en"]).output();
            let started = Instant::now();
            let out = instill(
                &db,
                &[
                    "generate",
                    "--base-url",
                    &gen_url,
                    "--model",
                    "fake",
                    "--lang",
                    "en",
                    "--target",
                    "100000000",
                    "--max-requests",
                    &n.to_string(),
                    "--concurrency",
                    &c.to_string(),
                    "--json",
                ],
            )
            .output()
            .expect("instill");
            let wall = started.elapsed().as_secs_f64();
            let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            gen_rates.push(s["requests_ok"].as_f64().unwrap_or(0.0) / wall);
        }
        let (sc, ge) = (median(&mut score_rates), median(&mut gen_rates));
        println!(
            "concurrency {c:>4}: score {sc:.0} req/s, generate {ge:.0} req/s (score/generate {:.2}), {n} requests, median of {runs}",
            sc / ge.max(1e-9)
        );
    }
}

/// Requests/s of 1, 2 and 4 workers sharing one Postgres run.
fn workers(target: u64, runs: usize) {
    let server = FakeServer::start(FakeConfig {
        latency: Duration::from_millis(200),
        ..FakeConfig::default()
    });
    let mut base = 0.0;
    println!("workers: target {target} accepted, 200 ms latency, concurrency 64 per worker");
    for n in [1usize, 2, 4] {
        let mut rates = Vec::new();
        for _ in 0..runs {
            let db = instill_storage::testing::TempDb::postgres();
            let _ = instill(&db.url, &["seeds", "import", "--builtin", "en"]).status();
            let started = Instant::now();
            let children: Vec<_> = (0..n)
                .map(|_| {
                    instill(
                        &db.url,
                        &[
                            "generate",
                            "--base-url",
                            &server.base_url,
                            "--model",
                            "fake",
                            "--lang",
                            "en",
                            "--target",
                            &target.to_string(),
                            "--concurrency",
                            "64",
                            "--run",
                            "bench",
                        ],
                    )
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("instill")
                })
                .collect();
            for mut c in children {
                let _ = c.wait();
            }
            let wall = started.elapsed().as_secs_f64();
            let out = instill(&db.url, &["stats", "--json"])
                .output()
                .expect("stats");
            let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let requests = stats["requests"].as_f64().unwrap_or(0.0);
            assert_eq!(
                stats["records"]["accepted"].as_u64(),
                Some(target),
                "{stats}"
            );
            rates.push(requests / wall);
        }
        let mid = median(&mut rates);
        if n == 1 {
            base = mid;
        }
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        println!(
            "  {n} worker(s): {mid:>7.0} requests/s (runs {}), {:.2}x one worker",
            shown.join(" "),
            mid / base
        );
    }
}

/// The job `local` times: `--max-requests` requests of the builtin English seeds' prompt.
/// The middle value (the upper one of an even count); sorts `v`.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The `generate` job `local` runs on each engine.
struct LocalJob {
    requests: u64,
    max_tokens: u64,
    batch: u64,
    /// `--temperature` for both sides (generate's default when `None`).
    temperature: Option<String>,
}

/// Runs `job` once; seconds, completion tokens and prompt tokens.
fn local_job(db: &str, backend: &[&str], job: &LocalJob) -> (f64, u64, u64) {
    let (requests, max_tokens, batch) = (
        job.requests.to_string(),
        job.max_tokens.to_string(),
        job.batch.to_string(),
    );
    let mut args = vec!["generate"];
    if let Some(t) = &job.temperature {
        args.extend_from_slice(&["--temperature", t]);
    }
    args.extend_from_slice(backend);
    args.extend_from_slice(&[
        "--lang",
        "en",
        "--target",
        "1000000",
        "--max-requests",
        &requests,
        "--max-tokens",
        &max_tokens,
        "--concurrency",
        &batch,
        "--seed",
        "1",
        "--json",
    ]);
    let started = Instant::now();
    let out = instill(db, &args).output().expect("instill");
    let secs = started.elapsed().as_secs_f64();
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let tokens = j["completion_tokens"].as_u64().unwrap_or(0);
    let prompt = j["prompt_tokens"].as_u64().unwrap_or(0);
    if tokens == 0 {
        eprintln!(
            "no tokens: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (secs, tokens, prompt)
}

/// llama.cpp's server on `gguf` with `batch` slots, ready to answer; killed when dropped.
struct LlamaServer(std::process::Child);

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn llama_server(bin: Option<String>, gguf: &str, batch: u64, port: u16) -> (LlamaServer, String) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = bin.or_else(|| std::env::var("INSTILL_LLAMA_SERVER").ok());
    let port_s = port.to_string();
    let (mut cmd, what) = match bin {
        Some(bin) => {
            let mut c = Command::new(&bin);
            let ctx = (batch * 4096).to_string();
            c.args([
                "-m",
                gguf,
                "--host",
                "127.0.0.1",
                "--port",
                &port_s,
                "-np",
                &batch.to_string(),
            ])
            .args(["-c", &ctx, "-t", &threads, "-tb", &threads])
            // instill asks for temperature and top-p only; the server would add its own top-k 40
            // and min-p 0.05, a different distribution (shorter, more regular replies) and so a
            // different job. Off, it samples what our engine samples.
            .args(["--top-k", "0", "--min-p", "0"]);
            (c, format!("llama-server ({bin})"))
        }
        None => {
            let mut c = Command::new(root.join(".peer-venv/bin/python"));
            c.args([
                "-m",
                "llama_cpp.server",
                "--model",
                gguf,
                "--host",
                "127.0.0.1",
            ])
            .args([
                "--port",
                &port_s,
                "--n_threads",
                &threads,
                "--n_ctx",
                "4096",
            ]);
            (
                c,
                "llama_cpp.server (llama-cpp-python, one sequence at a time)".to_string(),
            )
        }
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let server = LlamaServer(child);
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        if http_ok(port, "/v1/models") {
            return (server, what);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{what} did not come up on port {port}");
}

/// Whether GET `path` on 127.0.0.1:`port` answers 200.
fn http_ok(port: u16, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
}

fn local(job: &LocalJob, runs: usize, bin: Option<String>, candle: bool) {
    let (requests, max_tokens, batch) = (job.requests, job.max_tokens, job.batch);
    let gguf = std::env::var("INSTILL_SMOLLM2_GGUF").unwrap_or_else(|_| {
        format!(
            "{}/.cache/instill-ci/models/SmolLM2-135M-Instruct.Q4_1.gguf",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let batch_s = batch.to_string();
    // Each run starts afresh: our engine in a new process, the server started anew (it would
    // otherwise answer the next run's identical prompts from its prompt cache).
    let time = |name: &str, backend: &[&str], server: bool| -> (f64, f64) {
        let mut rates = Vec::new();
        let mut totals = Vec::new();
        let mut shown_name = name.to_string();
        for run in 0..runs {
            let started = server.then(|| llama_server(bin.clone(), &gguf, batch, 18090));
            if let Some((_, what)) = &started {
                shown_name = format!("{name} -> {what}");
            }
            let (db, _) = fresh_db(&format!("local-{run}"));
            let _ = instill(&db, &["seeds", "import", "--builtin", "en"]).output();
            let (secs, tokens, prompt) = local_job(&db, backend, job);
            rates.push(tokens as f64 / secs);
            totals.push((tokens + prompt) as f64 / secs);
            eprintln!(
                "  {shown_name} run {run}: {tokens} completion and {prompt} prompt tokens in {secs:.1} s"
            );
        }
        let shown: Vec<String> = rates.iter().map(|r| format!("{r:.1}")).collect();
        let shown_totals: Vec<String> = totals.iter().map(|r| format!("{r:.1}")).collect();
        let m = median(&mut rates);
        let t = median(&mut totals);
        println!(
            "{shown_name:<44} {m:>8.1} completion tokens/s (runs {}); {t:.1} prompt + completion tokens/s (runs {})",
            shown.join(" "),
            shown_totals.join(" ")
        );
        (m, t)
    };
    let temperature = job.temperature.as_deref().unwrap_or("generate's default");
    println!(
        "generate, {requests} requests, --max-tokens {max_tokens}, {batch} at a time, temperature {temperature}, SmolLM2-135M:"
    );
    let ours = time(
        "--backend llama-cpp",
        &[
            "--backend",
            "llama-cpp",
            "--model",
            &gguf,
            "--batch-size",
            &batch_s,
        ],
        false,
    );
    let theirs = time(
        "--backend openai",
        &[
            "--base-url",
            "http://127.0.0.1:18090/v1",
            "--model",
            "smollm2",
        ],
        true,
    );
    println!(
        "llama-cpp / server: {:.2}x completion tokens/s, {:.2}x prompt + completion",
        ours.0 / theirs.0,
        ours.1 / theirs.1
    );
    if candle {
        let c = time(
            "--backend candle",
            &[
                "--backend",
                "candle",
                "--model",
                &gguf,
                "--batch-size",
                &batch_s,
            ],
            false,
        );
        println!(
            "candle / server: {:.2}x completion tokens/s, {:.2}x prompt + completion",
            c.0 / theirs.0,
            c.1 / theirs.1
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let what = args
        .iter()
        .skip(1)
        .find(|a| {
            [
                "scale",
                "throughput",
                "latency",
                "fake",
                "workers",
                "judge",
                "local",
            ]
            .contains(&a.as_str())
        })
        .cloned();
    match what.as_deref() {
        Some("scale") => scale(
            opt("--target")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1_000_000),
            opt("--concurrency")
                .and_then(|v| v.parse().ok())
                .unwrap_or(64),
        ),
        Some("throughput") => throughput(
            &opt("--url").unwrap_or_else(|| "http://127.0.0.1:18080/v1".into()),
            opt("--n").and_then(|v| v.parse().ok()).unwrap_or(50_000),
            &[16, 64, 256],
            None,
        ),
        Some("latency") => throughput(
            &opt("--url").unwrap_or_else(|| "http://127.0.0.1:18081/v1".into()),
            0,
            &[256, 512],
            Some(opt("--waves").and_then(|v| v.parse().ok()).unwrap_or(20)),
        ),
        Some("fake") => {
            // The in-process fake server with a fixed reply (for a quick look without nginx).
            let server = FakeServer::start(FakeConfig {
                items: 10,
                topics: 1,
                ..FakeConfig::default()
            });
            throughput(
                &server.base_url,
                opt("--n").and_then(|v| v.parse().ok()).unwrap_or(20_000),
                &[16, 64, 256],
                None,
            );
        }
        Some("judge") => judge(
            opt("--url"),
            opt("--n").and_then(|v| v.parse().ok()).unwrap_or(20_000),
            opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3),
        ),
        Some("workers") => workers(
            opt("--target")
                .and_then(|v| v.parse().ok())
                .unwrap_or(40_000),
            opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3),
        ),
        Some("local") => local(
            &LocalJob {
                requests: opt("--requests").and_then(|v| v.parse().ok()).unwrap_or(32),
                max_tokens: opt("--max-tokens")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(128),
                batch: opt("--batch").and_then(|v| v.parse().ok()).unwrap_or(8),
                temperature: opt("--temperature"),
            },
            opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3),
            opt("--llama-server"),
            args.iter().any(|a| a == "--candle"),
        ),
        _ => eprintln!(
            "usage: cargo bench --bench generate -- scale|throughput|latency|fake|workers|judge|local [options]"
        ),
    }
}
