//! Curation benchmark: ROUGE-L and MinHash-LSH on the shared data sets, next to the Python peers
//! of ../shared/bench on the same data, same machine.
//!
//! ```text
//! cargo bench --bench curate -- rouge            # Alpaca 2,000 and 5,000 after the 175 seeds
//! cargo bench --bench curate -- rouge-synthetic  # 1,000,000 synthetic candidates
//! cargo bench --bench curate -- minhash          # Alpaca 52k, word 3-grams, 128 perm, J >= 0.8
//! cargo bench --bench curate -- minhash-command  # the same as users run it: `instill dedup`
//!                                                # on a copy of an imported SQLite database
//! cargo bench --bench curate -- minhash-synthetic
//! cargo bench --bench curate -- peers            # the Python peers (slow: minutes)
//! ```
//! Options: `--runs N` (default 3, medians reported), `--n N` (synthetic size, default 1000000).
//! The synthetic set is made by ../shared/bench/make_synthetic.py into bench-out/curate/ when
//! missing; peers run with `.peer-venv/bin/python` (see ../shared/bench/README.md).
//! Each measurement runs in a child process, which reports its own peak RSS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use instill_dedup::{
    LshConfig, MinHasher, RougeConfig, Shingling, Tokenizer, Verify, lsh_clusters, rouge_filter,
    rouge_filter_exhaustive,
};

fn shared() -> PathBuf {
    std::env::var_os("INSTILL_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn work_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench-out/curate");
    let _ = std::fs::create_dir_all(&d);
    d
}

/// Peak resident memory of this process, in MB (Linux).
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn alpaca_instructions() -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("data/alpaca_data.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| r["instruction"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn alpaca_records() -> Vec<String> {
    let text = std::fs::read_to_string(shared().join("data/alpaca_data.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    format!(
                        "{} {} {}",
                        r["instruction"].as_str().unwrap_or(""),
                        r["input"].as_str().unwrap_or(""),
                        r["output"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn seed_instructions() -> Vec<String> {
    std::fs::read_to_string(shared().join("data/seed_tasks.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["instruction"].as_str().unwrap_or("").to_string())
        .collect()
}

fn synthetic_path(n: usize) -> PathBuf {
    let path = work_dir().join("synthetic_1m.jsonl");
    let lines = std::fs::read(&path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0);
    if lines < n {
        eprintln!("making {} with make_synthetic.py ...", path.display());
        let ok = Command::new("python3")
            .arg(shared().join("bench/make_synthetic.py"))
            .args(["--n", &n.max(1_000_000).to_string(), "--out"])
            .arg(&path)
            .arg("--data")
            .arg(shared().join("data/alpaca_data.json"))
            .env("BENCH_OUT", work_dir())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "make_synthetic.py failed");
    }
    path
}

fn synthetic(n: usize, field: &str) -> Vec<String> {
    let text = std::fs::read_to_string(synthetic_path(n)).unwrap_or_default();
    text.lines()
        .take(n)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| match field {
            "instruction" => v["instruction"].as_str().unwrap_or("").to_string(),
            _ => format!(
                "{} {} {}",
                v["instruction"].as_str().unwrap_or(""),
                v["input"].as_str().unwrap_or(""),
                v["output"].as_str().unwrap_or("")
            ),
        })
        .collect()
}

/// One measurement, run in this (child) process; prints one JSON line.
fn task(name: &str, n: usize) {
    let out = match name {
        "rouge-alpaca" | "rouge-alpaca-exhaustive" => {
            let mut items = seed_instructions();
            let seeds = items.len();
            items.extend(alpaca_instructions().into_iter().take(n));
            let refs: Vec<&str> = items.iter().map(String::as_str).collect();
            let config = RougeConfig {
                tokenizer: Tokenizer::Alpaca,
                ..RougeConfig::default()
            };
            let t = Instant::now();
            let v = if name.ends_with("exhaustive") {
                rouge_filter_exhaustive(&refs, seeds, &config)
            } else {
                rouge_filter(&refs, seeds, &config)
            };
            let secs = t.elapsed().as_secs_f64();
            let kept = v.iter().filter(|x| x.kept).count();
            serde_json::json!({"task": name, "n": n, "kept": kept, "seconds": secs, "per_s": n as f64 / secs, "peak_rss_mb": peak_rss_mb()})
        }
        "rouge-synthetic" | "rouge-synthetic-floor06" => {
            let mut items = seed_instructions();
            let seeds = items.len();
            items.extend(synthetic(n, "instruction"));
            let refs: Vec<&str> = items.iter().map(String::as_str).collect();
            // The Alpaca filter alone (floor = threshold), or also recording every record's
            // nearest earlier instruction down to 0.6 (instill dedup's default).
            let floor = if name.ends_with("floor06") { 0.6 } else { 0.7 };
            let config = RougeConfig {
                tokenizer: Tokenizer::Alpaca,
                floor,
                ..RougeConfig::default()
            };
            let t = Instant::now();
            let v = rouge_filter(&refs, seeds, &config);
            let secs = t.elapsed().as_secs_f64();
            let kept = v.iter().filter(|x| x.kept).count();
            serde_json::json!({"task": name, "n": n, "kept": kept, "seconds": secs, "per_s": n as f64 / secs, "peak_rss_mb": peak_rss_mb()})
        }
        "minhash-alpaca" | "minhash-synthetic" | "minhash-synthetic-unverified" => {
            let texts = if name == "minhash-alpaca" {
                alpaca_records()
            } else {
                synthetic(n, "record")
            };
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            let t = Instant::now();
            let hasher = MinHasher::new(128, Shingling::Word(3), 1);
            // datasketch's duplicate list counts every LSH candidate; instill's default confirms
            // each pair by the signature estimate.
            let verify = if name.ends_with("unverified") {
                Verify::None
            } else {
                Verify::Estimate
            };
            let config = LshConfig::for_threshold(0.8, 128, verify);
            let v = lsh_clusters(&hasher, &refs[..], &config, None, &|_| {});
            let secs = t.elapsed().as_secs_f64();
            let pairs: Vec<[usize; 2]> = v
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.dup_of.map(|(j, _)| [i, j]))
                .collect();
            let dup_file = work_dir().join(format!("{name}-dups.json"));
            let _ = std::fs::write(&dup_file, serde_json::to_string(&pairs).unwrap_or_default());
            serde_json::json!({"task": name, "n": texts.len(), "dups": pairs.len(), "bands": config.bands, "rows": config.rows,
                "seconds": secs, "per_s": texts.len() as f64 / secs, "peak_rss_mb": peak_rss_mb(),
                "dup_file": dup_file})
        }
        "minhash-command" => command_run(name),
        other => serde_json::json!({"task": other, "error": "unknown task"}),
    };
    println!("{out}");
}

/// The Alpaca 52k imported into a SQLite database once (`instill import`), for the command
/// runs to copy.
fn alpaca_db() -> PathBuf {
    let db = work_dir().join("alpaca52k.db");
    if !db.exists() {
        let tmp = work_dir().join("alpaca52k.tmp.db");
        let _ = std::fs::remove_file(&tmp);
        let ok = Command::new(env!("CARGO_BIN_EXE_instill"))
            .arg("import")
            .arg(shared().join("data/alpaca_data.json"))
            .arg("--no-progress")
            .env("INSTILL_DB", format!("sqlite://{}", tmp.display()))
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "instill import failed");
        std::fs::rename(&tmp, &db).expect("rename the imported database");
    }
    db
}

/// `instill dedup` as a user runs it (open, read, judge, write back) on a fresh copy of the
/// imported Alpaca database; the copy is made, and written to disk, before the clock starts.
fn command_run(name: &str) -> serde_json::Value {
    let db = work_dir().join("alpaca52k-run.db");
    let _ = std::fs::remove_file(&db);
    std::fs::copy(alpaca_db(), &db).expect("copy the database");
    // On disk before the clock starts, as a user's database is: the copy's 24 MB of dirty pages
    // were otherwise written out by the command's checkpoint (7 ms of 0.11 s here).
    std::fs::File::open(&db)
        .and_then(|f| f.sync_all())
        .expect("sync the copy");
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_instill"))
        .args(["dedup", "--minhash-threshold", "0.8", "--shingle", "word"])
        .args([
            "--ngram",
            "3",
            "--num-perm",
            "128",
            "--no-progress",
            "--json",
        ])
        .env("INSTILL_DB", format!("sqlite://{}", db.display()))
        .output()
        .expect("run instill dedup");
    let secs = t.elapsed().as_secs_f64();
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    serde_json::json!({"task": name, "seconds": secs, "ok": out.status.success(),
        "dups": summary["minhash"]["rejected"], "minhash_stage_s": summary["minhash"]["seconds"],
        "summary": summary})
}

/// Runs `task` in a child process `runs` times; returns the parsed JSON lines.
fn measure(task_name: &str, n: usize, runs: usize) -> Vec<serde_json::Value> {
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("curate"));
    (0..runs)
        .filter_map(|_| {
            let out = Command::new(&exe)
                .args(["--task", task_name, "--n", &n.to_string()])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let v: serde_json::Value = serde_json::from_str(text.trim()).ok()?;
            eprintln!("  {v}");
            Some(v)
        })
        .collect()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    if xs.is_empty() {
        f64::NAN
    } else {
        xs[xs.len() / 2]
    }
}

fn report(label: &str, results: &[serde_json::Value]) -> f64 {
    let secs = median(
        results
            .iter()
            .filter_map(|r| r["seconds"].as_f64())
            .collect(),
    );
    let rss = median(
        results
            .iter()
            .filter_map(|r| r["peak_rss_mb"].as_f64())
            .collect(),
    );
    let first = results.first().cloned().unwrap_or_default();
    println!(
        "{label:<44} median {secs:>9.3} s  peak {rss:>7.0} MB  kept/dups {}",
        first
            .get("kept")
            .or(first.get("dups"))
            .cloned()
            .unwrap_or_default()
    );
    secs
}

/// Runs a Python peer with the bench venv; prints and returns its JSON line.
fn peer(args: &[&str], cwd: &Path) -> Option<serde_json::Value> {
    let py = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".peer-venv/bin/python");
    if !py.exists() {
        eprintln!(
            "no .peer-venv: python3 -m venv .peer-venv && .peer-venv/bin/pip install rouge_score==0.1.2 datasketch==2.0.0 numpy"
        );
        return None;
    }
    let t = Instant::now();
    let out = Command::new(py)
        .args(args)
        .current_dir(cwd)
        .env("BENCH_OUT", work_dir())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last()?.to_string();
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    println!(
        "peer {:?} ({:.0} s): {v}",
        args.first(),
        t.elapsed().as_secs_f64()
    );
    Some(v)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let n: usize = opt("--n").and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    if let Some(t) = opt("--task") {
        task(&t, n);
        return;
    }
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(3);
    let what: Vec<&str> = args
        .iter()
        .skip(1)
        .map(String::as_str)
        .filter(|a| !a.starts_with("--") && a.parse::<f64>().is_err())
        .collect();
    let all = what.is_empty() || what.contains(&"all");
    let bench = shared().join("bench");
    if all || what.contains(&"rouge") {
        for size in [2000, 5000] {
            report(
                &format!("ROUGE-L alpaca {size} (instill)"),
                &measure("rouge-alpaca", size, runs),
            );
        }
        report(
            "ROUGE-L alpaca 2000 (instill, exhaustive)",
            &measure("rouge-alpaca-exhaustive", 2000, 1),
        );
    }
    if all || what.contains(&"rouge-synthetic") {
        report(
            &format!("ROUGE-L synthetic {n} (instill)"),
            &measure("rouge-synthetic", n, 1),
        );
        report(
            &format!("ROUGE-L synthetic {n} (instill, floor 0.6)"),
            &measure("rouge-synthetic-floor06", n, 1),
        );
    }
    let mut ours: Vec<(&str, f64)> = Vec::new();
    if all || what.contains(&"minhash") {
        let secs = report(
            "MinHash-LSH alpaca 52k word3 (instill)",
            &measure("minhash-alpaca", 0, runs),
        );
        ours.push(("the MinHash stage alone (library)", secs));
    }
    if all || what.contains(&"minhash-command") {
        let secs = report(
            "instill dedup alpaca 52k word3 (whole command)",
            &measure("minhash-command", 0, runs),
        );
        ours.push(("the whole `instill dedup` command", secs));
    }
    if all || what.contains(&"minhash-synthetic") {
        report(
            &format!("MinHash-LSH synthetic {n} word3 (instill)"),
            &measure("minhash-synthetic", n, 1),
        );
        report(
            &format!("MinHash-LSH synthetic {n} word3 (unverified)"),
            &measure("minhash-synthetic-unverified", n, 1),
        );
    }
    if what.contains(&"peers") || what.contains(&"recall") {
        // Recall and precision of the synthetic MinHash run, from the generator's labels.
        for task in ["minhash-synthetic", "minhash-synthetic-unverified"] {
            let dups = work_dir().join(format!("{task}-dups.json"));
            if dups.exists() {
                let b = bench.display().to_string();
                let data = synthetic_path(n);
                let labels = data.with_extension("labels.tsv");
                peer(
                    &[
                        &format!("{b}/synth_truth.py"),
                        "--data",
                        data.to_str().unwrap_or(""),
                        "--labels",
                        labels.to_str().unwrap_or(""),
                        "--n",
                        &n.to_string(),
                        "--lsh-dups",
                        dups.to_str().unwrap_or(""),
                    ],
                    &bench,
                );
            }
        }
    }
    if what.contains(&"peers") {
        let b = bench.display().to_string();
        peer(
            &[
                &format!("{b}/bench_rouge.py"),
                "--n",
                "2000",
                "--mode",
                "serial",
            ],
            &bench,
        );
        let dups = work_dir().join("datasketch-alpaca-dups.json");
        let datasketch = peer(
            &[
                &format!("{b}/bench_minhash.py"),
                "--shingle",
                "word3",
                "--dup-out",
                dups.to_str().unwrap_or(""),
            ],
            &bench,
        );
        // datasketch's shingling, signatures and LSH, without its JSON load.
        if let Some(peer_s) = datasketch.and_then(|d| d["total_wall_s"].as_f64()) {
            for (what, secs) in ours {
                println!(
                    "datasketch {peer_s:.2} s / {what} {secs:.3} s = {:.1}x",
                    peer_s / secs
                );
            }
        }
    }
}
