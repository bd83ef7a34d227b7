//! `instill report`: a database built through the real commands (import, dedup, filter,
//! generate against the fake server), the page's sections and numbers checked against
//! `instill stats --json`; a database with two scorers and two evaluations, their sections'
//! numbers checked against the planted scores and grades; and headless Chromium rendering a page
//! with every kind of chart with no network request.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::fake_openai::{FakeConfig, FakeServer};
use crate::scores_shown::{self, N, expected_means, grade, moments, scored_database};
use crate::util::{Env, repo, shared};

/// `data-k="KEY" data-v="VALUE"` pairs of the page.
pub fn data_values(html: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for part in html.split("data-k=\"").skip(1) {
        let Some((key, rest)) = part.split_once('"') else {
            continue;
        };
        let Some(v) = rest
            .strip_prefix(" data-v=\"")
            .and_then(|r| r.split_once('"'))
        else {
            continue;
        };
        out.insert(key.replace("&amp;", "&"), v.0.parse().unwrap());
    }
    out
}

/// Every number of `instill stats --json` as `path → value` (lengths left out: they are
/// percentiles, the page draws histograms instead; so are lists, such as score bins, which the
/// page draws).
pub fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, f64)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                if prefix.is_empty() && k == "lengths" {
                    continue;
                }
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Number(n) => out.push((prefix.to_string(), n.as_f64().unwrap())),
        _ => {}
    }
}

fn build(env: &Env) {
    env.run(["seeds", "import", "--builtin", "all"])
        .expect_code(0);
    env.run(["import", repo("examples/quickstart.json").to_str().unwrap()])
        .expect_code(0);
    env.run([
        "import",
        shared("data/alpaca_data.json").to_str().unwrap(),
        "--source",
        "alpaca",
    ])
    .expect_code(0);
    env.run(["filter"]).expect_code(0);
    env.run(["dedup"]).expect_code(0);
    let server = FakeServer::start(FakeConfig {
        lang: "zh",
        ..FakeConfig::default()
    });
    env.run([
        "generate",
        "--base-url",
        &server.base_url,
        "--model",
        "fake",
        "--lang",
        "zh",
        "--target",
        "300",
        "--run",
        "zh-demo",
    ])
    .expect_code(0);
}

#[test]
fn the_report_shows_every_section_with_the_numbers_of_stats() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    build(&env);
    // A training run to draw: the tiny fixture, a few steps.
    let lines: Vec<Value> =
        serde_json::from_slice(&std::fs::read(shared("data/alpaca_data.json")).unwrap()).unwrap();
    let data = env.write(
        "train.jsonl",
        lines[..40]
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>(),
    );
    let trained = env.path("trained");
    env.run([
        "train",
        "--model",
        repo("tests/fixtures/local/tiny-llama").to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        trained.to_str().unwrap(),
        "--max-steps",
        "4",
        "--checkpoint-every",
        "2",
        "--max-len",
        "96",
    ])
    .expect_code(0);
    let out = env.path("report.html");
    env.run([
        "report",
        "--training",
        trained.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--price-in",
        "0.27",
        "--price-out",
        "1.1",
    ])
    .expect_code(0);
    let html = std::fs::read_to_string(&out).unwrap();
    for section in [
        "counts",
        "runs",
        "lengths",
        "diversity",
        "similarity",
        "rouge",
        "clusters",
        "timeline",
        "training",
    ] {
        assert!(
            html.contains(&format!("id=\"{section}\"")),
            "no section {section}"
        );
    }
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    let mut want = Vec::new();
    flatten("", &stats, &mut want);
    let shown = data_values(&html);
    assert!(want.len() > 15, "{want:?}");
    for (k, v) in &want {
        assert_eq!(shown.get(k), Some(v), "{k} in the page");
    }
    // Per run: accepted + rejected = the run's records in stats.
    let acc = shown["runs.zh-demo.accepted"];
    assert_eq!(acc, 300.0);
    assert_eq!(
        acc + shown["runs.zh-demo.rejected"],
        stats["by_run"]["zh-demo"].as_f64().unwrap()
    );
    // Nothing scored or evaluated: no empty sections for them.
    for absent in ["id=\"scores\"", "id=\"evaluations\"", "id=\"stage-runs\""] {
        assert!(!html.contains(absent), "{absent} with nothing to show");
    }
    // Charts were drawn from data, not left empty.
    for chart in [
        "Leading verbs (English)",
        "Leading words (Chinese)",
        "Nearest-neighbour ROUGE-L",
        "MinHash clusters by size",
    ] {
        let at = html.find(chart).unwrap_or_else(|| panic!("no {chart}"));
        let next: String = html[at..].chars().take(400).collect();
        assert!(next.contains("<svg"), "{chart} has no chart: {next}");
    }
    let training = &html[html.find("id=\"training\"").unwrap()..];
    assert!(
        training.contains("step 4, loss") && training.contains("<polyline"),
        "no loss curve"
    );
    // Self-contained: nothing to fetch.
    for outside in [
        "<script", "<link", "src=", "href=", "url(", "@import", "http://", "https://",
    ] {
        assert!(
            !html.contains(outside),
            "the page refers outside: {outside}"
        );
    }
    // --run limits the text charts; an unknown run is named.
    env.run(["report", "--out", out.to_str().unwrap(), "--run", "zh-demo"])
        .expect_code(0);
    let run = env
        .run(["report", "--out", out.to_str().unwrap(), "--run", "nope"])
        .expect_code(2);
    assert!(
        run.stderr.contains("nope") && run.stderr.contains("zh-demo"),
        "{}",
        run.stderr
    );
}

/// The row of the page's table whose header cell (`<th>`) or first cell is `label`, in the part
/// of `html` from `from`.
fn row<'a>(html: &'a str, from: &str, label: &str) -> &'a str {
    let part = &html[html.find(from).unwrap_or_else(|| panic!("no {from}"))..];
    let at = part
        .find(&format!("<th>{label}</th>"))
        .or_else(|| part.find(&format!("<td>{label}</td>")))
        .unwrap_or_else(|| panic!("no row {label} after {from}"));
    &part[at..at + part[at..].find("</tr>").unwrap()]
}

/// The part of `html` from `start` to the next heading or the end of its section.
fn block<'a>(html: &'a str, start: &str) -> &'a str {
    let from = &html[html.find(start).unwrap_or_else(|| panic!("no {start}"))..];
    let rest = &from[start.len()..];
    let end = [rest.find("<h3"), rest.find("</section>")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(rest.len());
    &from[..start.len() + end]
}

#[test]
fn the_report_draws_every_scorer_and_the_evaluations_side_by_side() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    scored_database(&env);
    let out = env.path("report.html");
    env.run(["report", "--out", out.to_str().unwrap()])
        .expect_code(0);
    let html = std::fs::read_to_string(&out).unwrap();

    // Every number of stats --json, scorers and evaluations included, is in the page.
    let stats = env.run(["stats", "--json"]).expect_code(0).json();
    let mut want = Vec::new();
    flatten("", &stats, &mut want);
    let shown = data_values(&html);
    for key in [
        "scorers.j1.mean",
        "scorers.ppl-smol.unscored_by_reason.empty answer",
        "evaluations.tuned.classes.math.mean",
        "evaluations.base.ungraded",
    ] {
        assert!(want.iter().any(|(k, _)| k == key), "stats has no {key}");
    }
    for (k, v) in &want {
        assert_eq!(shown.get(k), Some(v), "{k} in the page");
    }

    // The judge's section: its numbers as text, and a histogram with a bar per whole score.
    let (n, mean, median) = moments((0..N).filter_map(grade).collect());
    let j1 = block(&html, "<h3>j1</h3>");
    assert!(j1.contains("An LLM judge, <code>fake-judge</code>"), "{j1}");
    assert!(row(j1, "<table>", "scored").contains(&format!(">{n}</td>")));
    assert!(row(j1, "<table>", "without a score").contains(&format!(">{}</td>", N as u64 - n)));
    assert!(row(j1, "<table>", "mean").contains(&format!(">{}</td>", scores_shown::short(mean))));
    assert!(
        row(j1, "<table>", "median").contains(&format!(">{}</td>", scores_shown::short(median)))
    );
    let sevens = (0..N).filter(|&i| grade(i) == Some(7.0)).count();
    assert!(
        j1.contains("<svg") && j1.contains(&format!("<title>7: {sevens}</title>")),
        "{j1}"
    );
    assert!(j1.contains("score (scale 1–10)"), "{j1}");
    let ppl = block(&html, "<h3>ppl-smol</h3>");
    assert!(row(ppl, "<table>", "no score: empty answer").contains(">1</td>"));
    assert!(ppl.contains("ppl score") && ppl.contains("<svg"));

    // The evaluations: a bar per class per model and overall, a legend, and the class table.
    let evals = &html[html
        .find("id=\"evaluations\"")
        .expect("no evaluations section")..];
    let chart = &evals[evals.find("id=\"eval-chart\"").unwrap()..];
    let chart = &chart[..chart.find("</svg>").unwrap()];
    assert!(
        chart.contains(">base</text>") && chart.contains(">tuned</text>"),
        "{chart}"
    );
    let (base, (base_n, base_overall)) = expected_means("base");
    let (tuned, (_, tuned_overall)) = expected_means("tuned");
    for (label, means, overall) in [
        ("base", &base, base_overall),
        ("tuned", &tuned, tuned_overall),
    ] {
        for (class, (_, m)) in means {
            let bar = format!(
                "<title>{class}, {label}: {}</title>",
                scores_shown::short(*m)
            );
            assert!(chart.contains(&bar), "no bar {bar}");
        }
        let bar = format!(
            "<title>overall, {label}: {}</title>",
            scores_shown::short(overall)
        );
        assert!(chart.contains(&bar), "no bar {bar}");
    }
    assert_eq!(
        chart.matches("<rect").count(),
        2 * 4 + 2,
        "a bar per class and overall per model, two swatches"
    );
    let math = row(evals, "id=\"eval-classes\"", "math");
    assert!(
        math.contains(&format!(">{}</td>", base["math"].0))
            && math.contains(&format!(">{}</td>", scores_shown::short(base["math"].1)))
            && math.contains(&format!(">{}</td>", scores_shown::short(tuned["math"].1))),
        "{math}"
    );
    let base_row = row(evals, "<table>", "base");
    assert!(
        base_row.contains("<code>base-model</code>")
            && base_row.contains(&format!(">{base_n}</td>"))
            && base_row.contains(&format!(">{}</td>", scores_shown::short(base_overall))),
        "{base_row}"
    );

    // The judge's stage is a run of its own, apart from the generation runs.
    let runs = &html[html.find("id=\"runs\"").unwrap()..html.find("id=\"lengths\"").unwrap()];
    assert!(runs.contains("No generation runs."), "{runs}");
    let stage = row(runs, "id=\"stage-runs\"", "score/j1");
    assert!(
        stage.contains("<td>score</td>")
            && stage.contains(&format!("data-k=\"runs.score/j1.requests\">{N}</td>")),
        "{stage}"
    );
}

/// Chromium, found the way `.ci/run` finds it: `INSTILL_CHROMIUM`, else `chromium`, else
/// `chromium-browser` on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("INSTILL_CHROMIUM").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium not found (INSTILL_CHROMIUM, or chromium / chromium-browser on PATH): .ci/run installs Debian's `chromium` package"
    );
}

#[test]
fn headless_chromium_renders_the_page_without_network() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    env.run(["seeds", "import", "--builtin", "all"])
        .expect_code(0);
    env.run(["import", repo("examples/quickstart.json").to_str().unwrap()])
        .expect_code(0);
    env.run(["dedup"]).expect_code(0);
    scored_database(&env);
    let page = env.path("report.html");
    env.run(["report", "--out", page.to_str().unwrap()])
        .expect_code(0);
    let shot = env.path("shot.png");
    let netlog = env.path("netlog.json");
    let profile = env.path("profile");
    // Served over loopback HTTP so that the browser's net log tells page-initiated requests
    // (their initiator is the page's origin) from its own background traffic.
    let origin = serve_once(std::fs::read(&page).unwrap());
    let url = format!("{origin}/report.html");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
    ];
    let run = Command::new(chromium())
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--log-net-log={}", netlog.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1100,1600")
        .arg(&url)
        .output()
        .unwrap();
    assert!(
        shot.exists(),
        "no screenshot: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let dom = Command::new(chromium())
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(&url)
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for section in ["id=\"counts\"", "id=\"scores\"", "id=\"evaluations\""] {
        assert!(
            dom.contains("<title>instill report</title>") && dom.contains(section),
            "{section}: {dom}"
        );
    }

    // Non-blank: a good share of the screenshot's pixels are not the white background.
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let pixels = &buf[..info.buffer_size()];
    let inked = pixels
        .chunks(channels)
        .filter(|p| p.iter().take(3).any(|&c| c < 200))
        .count();
    let total = pixels.len() / channels;
    assert!(
        inked * 100 > total,
        "blank page: {inked} of {total} pixels inked"
    );
    assert_eq!((info.width, info.height), (1100, 1600));

    // No network: the page itself made no request (the browser asks for /favicon.ico on its
    // own; its background traffic has no page initiator).
    let log: Value = serde_json::from_str(&std::fs::read_to_string(&netlog).unwrap()).unwrap();
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].clone();
    let jobs: Vec<(&str, &str)> = log["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == start_job)
        .map(|e| {
            (
                e["params"]["url"].as_str().unwrap_or(""),
                e["params"]["initiator"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        jobs.iter().any(|(u, _)| *u == url),
        "the net log saw no page load: {jobs:?}"
    );
    let favicon = format!("{origin}/favicon.ico");
    let from_page: Vec<&str> = jobs
        .iter()
        .filter(|(u, i)| *i == origin && *u != favicon)
        .map(|(u, _)| *u)
        .collect();
    assert!(
        from_page.is_empty(),
        "the page made network requests: {from_page:?}"
    );
}

/// Serves `body` at /report.html (404 elsewhere) on a loopback port; returns the origin.
fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut request = [0u8; 4096];
            let n = stream.read(&mut request).unwrap_or(0);
            let head = String::from_utf8_lossy(&request[..n]);
            let (status, payload): (&str, &[u8]) = if head.starts_with("GET /report.html ") {
                ("200 OK", &body)
            } else {
                ("404 Not Found", b"")
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                payload.len()
            );
            let _ = stream.write_all(payload);
        }
    });
    origin
}

#[test]
fn report_replaces_only_an_earlier_report() {
    let env = Env::new(instill_storage::testing::TempDb::sqlite());
    let notes = env.write("notes.html", "<p>mine</p>");
    let run = env
        .run(["report", "--out", notes.to_str().unwrap()])
        .expect_code(2);
    assert!(run.stderr.contains("notes.html"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "<p>mine</p>");
    let db = env.db.url.trim_start_matches("sqlite://").to_string();
    env.run(["stats"]).expect_code(0);
    let before = std::fs::read(&db).unwrap();
    let run = env.run(["report", "--out", &db]).expect_code(2);
    assert!(run.stderr.contains("--db"), "{}", run.stderr);
    for suffix in ["-wal", "-shm", "-journal"] {
        let out = format!("{db}{suffix}");
        let run = env.run(["report", "--out", &out]).expect_code(2);
        assert!(run.stderr.contains("--db"), "{suffix}: {}", run.stderr);
        assert!(!std::path::Path::new(&out).is_dir(), "{suffix}");
    }
    assert!(
        std::fs::read(&db).unwrap() == before,
        "the database changed"
    );
    let out = env.path("r.html");
    for _ in 0..2 {
        env.run(["report", "--out", out.to_str().unwrap()])
            .expect_code(0);
    }
    let names: Vec<String> = std::fs::read_dir(env.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("tmp"))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}
