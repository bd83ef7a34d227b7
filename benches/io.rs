//! Import/export benchmark: the release `instill` binary imports and exports N synthetic records
//! (made here, deterministic; half Chinese, half English, sized like Alpaca/BELLE records:
//! about 470 bytes of JSON each) on SQLite and Postgres, next to the Python peer
//! `../shared/bench/bench_sqlite.py` on the same file, same machine, same hour. Reports medians of
//! records/s and peak RSS (of each child process), and the ratios.
//!
//! ```text
//! cargo bench --bench io -- [--records 1000000] [--runs 3] [--small 100000]
//! ```
//! Postgres is measured when `INSTILL_BENCH_PG_URL` (or `INSTILL_TEST_PG_URL`) is set; the peer
//! when `python3` and the shared bench directory are found (`INSTILL_SHARED`, else ../shared).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "io_floor.rs"]
mod floor;

/// A small deterministic generator (xorshift64*), so every run benches the same file.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const EN_WORDS: &[&str] = &[
    "explain",
    "the",
    "data",
    "model",
    "write",
    "a",
    "short",
    "story",
    "about",
    "river",
    "city",
    "list",
    "three",
    "reasons",
    "why",
    "people",
    "learn",
    "music",
    "compare",
    "two",
    "methods",
    "for",
    "sorting",
    "numbers",
    "describe",
    "how",
    "weather",
    "changes",
    "in",
    "spring",
    "give",
    "examples",
    "of",
    "healthy",
    "food",
    "and",
    "summarize",
    "this",
    "article",
    "quickly",
    "train",
    "language",
    "question",
    "answer",
    "between",
    "energy",
    "system",
    "design",
    "simple",
    "plan",
];

/// English-like text of `min` to `min + span` words.
fn en_text(rng: &mut Rng, min: u64, span: u64) -> String {
    let words = min + rng.below(span);
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(EN_WORDS[rng.below(EN_WORDS.len() as u64) as usize]);
    }
    s.push('.');
    s
}

/// Chinese-like text of `min` to `min + span` characters.
fn zh_text(rng: &mut Rng, min: u64, span: u64) -> String {
    let chars = min + rng.below(span);
    let mut s = String::new();
    for i in 0..chars {
        if i > 0 && i % 17 == 0 {
            s.push('，');
        }
        // The 3000 most common-ish block of CJK unified ideographs.
        let c = char::from_u32(0x4E00 + rng.below(3000) as u32).unwrap_or('中');
        s.push(c);
    }
    s.push('。');
    s
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// Writes `n` Alpaca-layout records as one JSON array (the peer reads JSON arrays).
fn make_data(path: &Path, n: u64) -> std::io::Result<()> {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    out.write_all(b"[\n")?;
    for i in 0..n {
        let zh = rng.below(2) == 0;
        let (ins, inp, outp) = if zh {
            let inp = if rng.below(2) == 0 {
                String::new()
            } else {
                zh_text(&mut rng, 10, 50)
            };
            (zh_text(&mut rng, 8, 32), inp, zh_text(&mut rng, 20, 200))
        } else {
            let inp = if rng.below(2) == 0 {
                String::new()
            } else {
                en_text(&mut rng, 3, 30)
            };
            (en_text(&mut rng, 5, 16), inp, en_text(&mut rng, 10, 90))
        };
        let sep = if i + 1 == n { "" } else { "," };
        writeln!(
            out,
            "  {{\"instruction\": {}, \"input\": {}, \"output\": {}}}{sep}",
            json_str(&ins),
            json_str(&inp),
            json_str(&outp)
        )?;
    }
    out.write_all(b"]\n")?;
    out.flush()
}

/// One measured child process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall_s: f64,
    maxrss_mb: f64,
}

/// Runs `cmd` under a tiny Python wrapper that reports the child's own peak RSS
/// (getrusage(RUSAGE_CHILDREN) of a process with exactly one child).
fn measure(cmd: &[String], env: &[(&str, &str)]) -> Result<(Sample, String), String> {
    const WRAPPER: &str = r#"
import json, resource, subprocess, sys, time
t = time.perf_counter()
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - t
sys.stderr.buffer.write(p.stderr)
print(json.dumps({"rc": p.returncode, "wall_s": wall,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
                  "stdout": p.stdout.decode("utf-8", "replace")}))
"#;
    let mut c = Command::new("python3");
    c.arg("-c").arg(WRAPPER).args(cmd);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().map_err(|e| format!("python3: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value =
        serde_json::from_str(text.trim()).map_err(|e| format!("{e}: {text}"))?;
    if v["rc"] != 0 {
        return Err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((
        Sample {
            wall_s: v["wall_s"].as_f64().unwrap_or(0.0),
            maxrss_mb: v["maxrss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
        },
        v["stdout"].as_str().unwrap_or("").to_string(),
    ))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

struct Row {
    what: String,
    n: u64,
    rate: f64,
    rss_mb: f64,
    wall_s: f64,
}

fn instill_runs(
    bin: &str,
    db_url: &dyn Fn(usize) -> String,
    data: &Path,
    out_dir: &Path,
    n: u64,
    runs: usize,
    label: &str,
) -> Result<(Row, Row), String> {
    let (mut imp, mut exp) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let url = db_url(r);
        let cmd = |args: &[&str]| -> Vec<String> {
            let mut v = vec![
                bin.to_string(),
                "--db".into(),
                url.clone(),
                "--no-progress".into(),
            ];
            v.extend(args.iter().map(|s| s.to_string()));
            v
        };
        let (s, _) = measure(&cmd(&["import", data.to_str().unwrap_or("")]), &[])?;
        imp.push(s);
        let out = out_dir.join(format!("export-{label}-{r}"));
        let _ = std::fs::remove_dir_all(&out);
        let (s, _) = measure(
            &cmd(&[
                "export",
                "--out",
                out.to_str().unwrap_or(""),
                "--shard-rows",
                "10000",
            ]),
            &[],
        )?;
        exp.push(s);
        let _ = std::fs::remove_dir_all(&out);
        eprintln!(
            "  run {r}: import {:.2} s, export {:.2} s",
            imp[r].wall_s, exp[r].wall_s
        );
    }
    let row = |what: &str, xs: &[Sample]| Row {
        what: format!("instill {what} ({label})"),
        n,
        wall_s: median(xs.iter().map(|s| s.wall_s).collect()),
        rate: n as f64 / median(xs.iter().map(|s| s.wall_s).collect()),
        rss_mb: median(xs.iter().map(|s| s.maxrss_mb).collect()),
    };
    Ok((row("import", &imp), row("export", &exp)))
}

/// The floor jobs (see `io_floor.rs`) and their report lines.
const FLOORS: [(&str, &str); 2] = [
    ("peer", "rust insert, peer's job (floor)"),
    ("records", "instill storage only (floor)"),
];

/// Runs floor job `job` `runs` times in child processes: medians of its insert time and RSS.
fn floor_runs(job: &str, data: &Path, work: &Path, runs: usize) -> Result<(f64, f64), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let db = work.join(format!("floor-{job}.db"));
    let (mut wall, mut rss) = (Vec::new(), Vec::new());
    for r in 0..runs {
        let cmd = [
            exe.display().to_string(),
            "--floor".into(),
            job.into(),
            data.display().to_string(),
            db.display().to_string(),
        ];
        let (s, stdout) = measure(&cmd, &[])?;
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_default();
        let t = v["insert_s"]
            .as_f64()
            .ok_or(format!("no insert_s in {stdout}"))?;
        eprintln!("  run {r}: {t:.2} s");
        wall.push(t);
        rss.push(s.maxrss_mb);
    }
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    Ok((median(wall), median(rss)))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, flag, job, data, db] = args.as_slice()
        && flag == "--floor"
    {
        if let Err(e) = floor::child(job, data, db) {
            eprintln!("floor {job}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n = arg("--records", 1_000_000);
    let small = arg("--small", 100_000);
    let runs = arg("--runs", 3) as usize;
    let bin = env!("CARGO_BIN_EXE_instill");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = root.join("bench-out/io");
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("cannot create {}: {e}", work.display());
        std::process::exit(1);
    }
    let mut rows = Vec::new();
    let pg = std::env::var("INSTILL_BENCH_PG_URL")
        .or_else(|_| std::env::var("INSTILL_TEST_PG_URL"))
        .ok();

    for size in [small, n] {
        let data = work.join(format!("synthetic-v2-{size}.json"));
        if !data.exists() {
            eprintln!("making {} ...", data.display());
            if let Err(e) = make_data(&data, size) {
                eprintln!("cannot write data: {e}");
                std::process::exit(1);
            }
        }
        let mb = std::fs::metadata(&data)
            .map(|m| m.len() as f64 / 1e6)
            .unwrap_or(0.0);
        eprintln!("{size} records, {mb:.0} MB: sqlite ...");
        let sqlite_url = |r: usize| {
            let p = work.join(format!("bench-{size}-{r}.db"));
            for suffix in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
            }
            format!("sqlite://{}", p.display())
        };
        match instill_runs(bin, &sqlite_url, &data, &work, size, runs, "sqlite") {
            Ok((i, e)) => rows.extend([i, e]),
            Err(e) => eprintln!("sqlite: {e}"),
        }
        let shared = std::env::var_os("INSTILL_SHARED")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../shared"));
        let peer = shared.join("bench/bench_sqlite.py");
        if peer.exists() {
            eprintln!("{size} records: python peer ...");
            let (mut w, mut e, mut rss) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..runs {
                let cmd = vec![
                    "python3".to_string(),
                    peer.display().to_string(),
                    "--data".into(),
                    data.display().to_string(),
                ];
                let bench_out = work.join("peer");
                match measure(&cmd, &[("BENCH_OUT", bench_out.to_str().unwrap_or("."))]) {
                    Ok((s, stdout)) => {
                        let v: serde_json::Value =
                            serde_json::from_str(stdout.trim()).unwrap_or_default();
                        w.push(v["write_wall_s"].as_f64().unwrap_or(f64::NAN));
                        e.push(v["export_wall_s"].as_f64().unwrap_or(f64::NAN));
                        rss.push(s.maxrss_mb);
                    }
                    Err(err) => eprintln!("peer: {err}"),
                }
            }
            if !w.is_empty() {
                let rss = median(rss);
                let (w, e) = (median(w), median(e));
                rows.push(Row {
                    what: "python insert (peer)".into(),
                    n: size,
                    rate: size as f64 / w,
                    rss_mb: rss,
                    wall_s: w,
                });
                rows.push(Row {
                    what: "python export (peer)".into(),
                    n: size,
                    rate: size as f64 / e,
                    rss_mb: rss,
                    wall_s: e,
                });
            }
        }
        for (job, what) in FLOORS {
            eprintln!("{size} records: floor `{job}` ...");
            match floor_runs(job, &data, &work, runs) {
                Ok((wall, rss)) => rows.push(Row {
                    what: what.to_string(),
                    n: size,
                    rate: size as f64 / wall,
                    rss_mb: rss,
                    wall_s: wall,
                }),
                Err(e) => eprintln!("floor {job}: {e}"),
            }
        }
    }

    // Postgres last, once SQLite and the peer are done: its background work after a million-row
    // COPY (autovacuum setting hint bits, the checkpointer) took minutes of disk and CPU and
    // slowed whatever ran next by up to 70% on this 2-core machine. The databases are dropped
    // at the end for the same reason.
    if let Some(pg) = &pg {
        for size in [small, n] {
            let data = work.join(format!("synthetic-v2-{size}.json"));
            eprintln!("{size} records: postgres ...");
            let pg_url = |r: usize| {
                let name = format!("instill_bench_{r}");
                let _ = Command::new("psql")
                    .args([
                        pg.as_str(),
                        "-qc",
                        &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    ])
                    .output();
                let _ = Command::new("psql")
                    .args([pg.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
                    .output();
                let base = pg.rsplit_once('/').map_or(pg.as_str(), |(b, _)| b);
                format!("{base}/{name}")
            };
            match instill_runs(bin, &pg_url, &data, &work, size, runs, "postgres") {
                Ok((i, e)) => rows.extend([i, e]),
                Err(e) => eprintln!("postgres: {e}"),
            }
        }
        for r in 0..runs {
            let _ = Command::new("psql")
                .args([
                    pg.as_str(),
                    "-qc",
                    &format!("DROP DATABASE IF EXISTS instill_bench_{r} WITH (FORCE)"),
                ])
                .output();
        }
    }

    let mut report = String::new();
    let _ = writeln!(
        report,
        "{:<34} {:>9} {:>9} {:>12} {:>10}",
        "what", "records", "median s", "records/s", "peak MB"
    );
    for r in &rows {
        let _ = writeln!(
            report,
            "{:<34} {:>9} {:>9.2} {:>12.0} {:>10.0}",
            r.what, r.n, r.wall_s, r.rate, r.rss_mb
        );
    }
    let find = |what: &str, size: u64| {
        rows.iter()
            .find(|r| r.what == what && r.n == size)
            .map(|r| r.rate)
    };
    for size in [small, n] {
        if let (Some(a), Some(b)) = (
            find("instill import (sqlite)", size),
            find("python insert (peer)", size),
        ) {
            let _ = writeln!(report, "{size}: import / peer insert = {:.2}x", a / b);
        }
        for (_, what) in FLOORS {
            if let (Some(a), Some(b)) = (find(what, size), find("python insert (peer)", size)) {
                let _ = writeln!(report, "{size}: {what} / peer insert = {:.2}x", a / b);
            }
        }
        if let (Some(a), Some(b)) = (
            find("instill export (sqlite)", size),
            find("python export (peer)", size),
        ) {
            let _ = writeln!(report, "{size}: export / peer export = {:.2}x", a / b);
        }
    }
    print!("{report}");
    let _ = std::fs::write(work.join("report.txt"), report);
}
