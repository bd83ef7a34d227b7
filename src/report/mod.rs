//! `instill report`'s page: one self-contained HTML file (inline CSS and SVG, no scripts, no
//! fetches) built from what the database holds. Every count shown carries a `data-k` attribute
//! with its `instill stats --json` path, so tests (and scripts) can check the page against it.

pub mod evolve;
pub mod scores;
pub mod svg;
pub mod text;

use std::fmt::Write;

use instill_storage::{RunSummary, TimeBucket};
use serde_json::Value;

use svg::{esc, hbars, histogram, lines, num};
use text::{TextStats, bins, top};

use crate::scoreboard::Scoreboard;

/// Everything the page shows.
#[derive(Debug)]
pub struct ReportData {
    /// The database, as shown (password redacted).
    pub db: String,
    /// `instill stats --json`, verbatim.
    pub stats: Value,
    /// Runs of every kind: generation, and the score and eval stages.
    pub runs: Vec<RunSummary>,
    /// Per run (by id): its acceptance timeline and the bucket width in ms.
    pub timelines: Vec<(i64, i64, Vec<TimeBucket>)>,
    /// Nearest-neighbour ROUGE-L scores.
    pub rouge: Vec<f64>,
    /// (cluster size, clusters).
    pub clusters: Vec<(i64, i64)>,
    /// Lengths and diversity.
    pub text: TextStats,
    /// The run the text charts are limited to.
    pub run_filter: Option<String>,
    /// Prices per 1M prompt and completion tokens, when given.
    pub prices: Option<(f64, f64)>,
    /// When the page was made (RFC 3339).
    pub generated_at: String,
    /// Training runs: (name, (step, loss) points, (step, validation loss) points).
    pub training: Vec<TrainingCurve>,
    /// Every scorer's distribution and every evaluation's class means.
    pub board: Scoreboard,
}

/// One training run's loss log.
#[derive(Debug, Default)]
pub struct TrainingCurve {
    /// The run's output directory, as given.
    pub name: String,
    /// (step, training loss).
    pub loss: Vec<(f64, f64)>,
    /// (step, validation loss), where measured.
    pub val_loss: Vec<(f64, f64)>,
}

/// Reads `instill train`'s `loss.csv` (step,loss,lr,grad_norm,tokens,seconds,val_loss).
pub fn read_loss_csv(name: &str, text: &str) -> Result<TrainingCurve, String> {
    let mut curve = TrainingCurve {
        name: name.to_string(),
        ..TrainingCurve::default()
    };
    for (i, line) in text.lines().enumerate().skip(1) {
        let cols: Vec<&str> = line.split(',').collect();
        let num = |c: usize, field: &str| -> Result<Option<f64>, String> {
            match cols.get(c).map(|s| s.trim()) {
                None | Some("") => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("line {}: field {field}: not a number: {v:?}", i + 1)),
            }
        };
        let step =
            num(0, "step")?.ok_or_else(|| format!("line {}: field step is missing", i + 1))?;
        if let Some(loss) = num(1, "loss")? {
            curve.loss.push((step, loss));
        }
        if let Some(v) = num(6, "val_loss")? {
            curve.val_loss.push((step, v));
        }
    }
    Ok(curve)
}

const CSS: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI","Noto Sans","Noto Sans CJK SC","PingFang SC",sans-serif;margin:0;color:#1d2430;background:#fff}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #dde3ea;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.sub{color:#5b6675;margin:0 0 16px}
table{border-collapse:collapse;margin:6px 0 12px}td,th{padding:3px 10px;border-bottom:1px solid #eef1f5;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:8px 32px}.grid>div{min-width:300px}
svg.chart{max-width:100%;height:auto;font-size:11px;fill:#1d2430}
.bar{fill:#3d7bd9}.axis{stroke:#8a94a3}.tick{fill:#5b6675}.title{fill:#1d2430;font-size:12px}
.line{stroke-width:2}.s0{stroke:#3d7bd9;fill:#3d7bd9}.s1{stroke:#d9773d;fill:#d9773d}
polyline.s0,polyline.s1{fill:none}.s2{fill:#2e9e6a}.s3{fill:#8e5bb5}.s4{fill:#c0392b}.s5{fill:#7f8c8d}
code{font-size:12px;background:#f3f5f8;padding:0 3px;border-radius:3px}.none{color:#8a94a3;font-style:italic}
@media print{main{max-width:none}h2{break-after:avoid}svg{break-inside:avoid}}
"#;

/// The page's title: what tells an earlier report, the only file `report` replaces.
pub const TITLE: &str = "<title>instill report</title>";

/// Whether `head`, the first bytes of a file, begins a page [`render`] wrote.
pub fn is_report(head: &[u8]) -> bool {
    head.starts_with(b"<!DOCTYPE html>") && head.windows(TITLE.len()).any(|w| w == TITLE.as_bytes())
}

/// The HTML page.
pub fn render(d: &ReportData) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let total = d.stats["records"]["total"].as_i64().unwrap_or(0);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">{TITLE}<style>{CSS}</style></head><body><main><h1>instill report</h1><p class=\"sub\">{db} · {records} records · generated {at}{scope}</p>",
        db = esc(&d.db),
        records = num(total),
        at = esc(&d.generated_at),
        scope = d
            .run_filter
            .as_ref()
            .map(|r| format!(" · text charts for run <b>{}</b>", esc(r)))
            .unwrap_or_default(),
    );
    counts(&mut h, &d.stats);
    runs(&mut h, d);
    evolve::evolve(&mut h, &d.stats);
    lengths(&mut h, &d.text);
    diversity(&mut h, &d.text);
    similarity(&mut h, d);
    scores::scores(&mut h, &d.board);
    timeline(&mut h, d);
    training(&mut h, &d.training);
    scores::evaluations(&mut h, &d.board);
    h.push_str("</main></body></html>\n");
    h
}

fn stat(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

fn counts(h: &mut String, s: &Value) {
    h.push_str("<section id=\"counts\"><h2>Counts</h2><table>");
    let rows = [
        ("records.total", "records", &s["records"]["total"]),
        ("records.pending", "pending", &s["records"]["pending"]),
        ("records.accepted", "accepted", &s["records"]["accepted"]),
        ("records.rejected", "rejected", &s["records"]["rejected"]),
        (
            "with_reasoning",
            "records with reasoning",
            &s["with_reasoning"],
        ),
        ("seeds", "seed tasks", &s["seeds"]),
        ("imports", "imported files", &s["imports"]),
        ("requests", "model requests", &s["requests"]),
        ("tokens.prompt", "prompt tokens", &s["tokens"]["prompt"]),
        (
            "tokens.completion",
            "completion tokens",
            &s["tokens"]["completion"],
        ),
    ];
    for (key, label, v) in rows {
        let _ = write!(
            h,
            "<tr><th>{label}</th><td class=\"n\" data-k=\"{key}\" data-v=\"{raw}\">{shown}</td></tr>",
            raw = stat(v),
            shown = num(stat(v))
        );
    }
    h.push_str("</table><div class=\"grid\">");
    for (key, title) in [
        ("by_reason", "Rejected by reason"),
        ("by_source", "By source"),
        ("by_run", "By run"),
        ("by_lang", "By language"),
        ("by_origin", "By origin"),
    ] {
        let mut list: Vec<(String, i64)> = s[key]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), stat(v))).collect())
            .unwrap_or_default();
        list.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let _ = write!(h, "<div id=\"{key}\"><h3>{title}</h3><table>");
        for (name, n) in &list {
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"n\" data-k=\"{key}.{}\" data-v=\"{n}\">{}</td></tr>",
                esc(name),
                esc(name),
                num(*n)
            );
        }
        let _ = write!(h, "</table>{}</div>", hbars(&list[..list.len().min(20)]));
    }
    h.push_str("</div></section>");
}

fn runs(h: &mut String, d: &ReportData) {
    h.push_str("<section id=\"runs\"><h2>Generation runs</h2>");
    let generated: Vec<&RunSummary> = d.runs.iter().filter(|r| r.kind.makes_records()).collect();
    if generated.is_empty() {
        h.push_str("<p class=\"none\">No generation runs.</p>");
    } else {
        h.push_str("<table><tr><th>run</th><th>status</th><th class=\"n\">minutes</th><th class=\"n\">requests</th><th class=\"n\">prompt tokens</th><th class=\"n\">completion tokens</th><th class=\"n\">accepted</th><th class=\"n\">rejected</th><th class=\"n\">accept rate</th><th class=\"n\">accepted / 1k tokens</th><th class=\"n\">cost</th></tr>");
        for r in generated {
            generation_row(h, d, r);
        }
        h.push_str("</table>");
    }
    stage_runs(h, d);
    h.push_str("</section>");
}

/// Minutes from start to finish, or `—` while running.
fn minutes(r: &RunSummary) -> String {
    r.finished_at
        .map(|f| format!("{:.1}", (f - r.started_at) as f64 / 60_000.0))
        .unwrap_or_else(|| "—".into())
}

/// The run's tokens at `--price-in`/`--price-out`, or `—` without prices.
fn cost(d: &ReportData, r: &RunSummary) -> String {
    d.prices
        .map(|(pin, pout)| {
            format!(
                "{:.4}",
                (r.prompt_tokens as f64 * pin + r.completion_tokens as f64 * pout) / 1e6
            )
        })
        .unwrap_or_else(|| "—".into())
}

fn generation_row(h: &mut String, d: &ReportData, r: &RunSummary) {
    let judged = r.accepted + r.rejected;
    let tokens = r.prompt_tokens.saturating_add(r.completion_tokens);
    let n = esc(&r.name);
    let _ = write!(
        h,
        "<tr><td>{n}</td><td>{st}</td><td class=\"n\">{minutes}</td><td class=\"n\" data-k=\"runs.{n}.requests\">{rq}</td><td class=\"n\" data-k=\"runs.{n}.prompt_tokens\">{pt}</td><td class=\"n\" data-k=\"runs.{n}.completion_tokens\">{ct}</td><td class=\"n\" data-k=\"runs.{n}.accepted\" data-v=\"{a}\">{av}</td><td class=\"n\" data-k=\"runs.{n}.rejected\" data-v=\"{rj}\">{rv}</td><td class=\"n\">{rate}</td><td class=\"n\">{per1k}</td><td class=\"n\">{cost}</td></tr>",
        st = esc(r.status.as_str()),
        minutes = minutes(r),
        rq = num(r.requests),
        pt = num(r.prompt_tokens),
        ct = num(r.completion_tokens),
        a = r.accepted,
        av = num(r.accepted),
        rj = r.rejected,
        rv = num(r.rejected),
        rate = if judged > 0 {
            format!("{:.1}%", 100.0 * r.accepted as f64 / judged as f64)
        } else {
            "—".into()
        },
        per1k = if tokens > 0 {
            format!("{:.2}", r.accepted as f64 * 1000.0 / tokens as f64)
        } else {
            "—".into()
        },
        cost = cost(d, r),
    );
}

/// The score, eval and evolve-judge stages' runs: requests, tokens and cost (they make no
/// records).
fn stage_runs(h: &mut String, d: &ReportData) {
    let stages: Vec<&RunSummary> = d.runs.iter().filter(|r| !r.kind.makes_records()).collect();
    if stages.is_empty() {
        return;
    }
    h.push_str("<h3 id=\"stage-runs\">Scoring and evaluation runs</h3><table><tr><th>run</th><th>kind</th><th>status</th><th class=\"n\">minutes</th><th class=\"n\">requests</th><th class=\"n\">prompt tokens</th><th class=\"n\">completion tokens</th><th class=\"n\">cost</th></tr>");
    for r in stages {
        let n = esc(&r.name);
        let _ = write!(
            h,
            "<tr><td>{n}</td><td>{kind}</td><td>{st}</td><td class=\"n\">{minutes}</td><td class=\"n\" data-k=\"runs.{n}.requests\">{rq}</td><td class=\"n\" data-k=\"runs.{n}.prompt_tokens\">{pt}</td><td class=\"n\" data-k=\"runs.{n}.completion_tokens\">{ct}</td><td class=\"n\">{cost}</td></tr>",
            kind = esc(r.kind.as_str()),
            st = esc(r.status.as_str()),
            minutes = minutes(r),
            rq = num(r.requests),
            pt = num(r.prompt_tokens),
            ct = num(r.completion_tokens),
            cost = cost(d, r),
        );
    }
    h.push_str("</table>");
}

fn lengths(h: &mut String, t: &TextStats) {
    h.push_str("<section id=\"lengths\"><h2>Lengths</h2><p class=\"sub\">Chinese records in characters, the others in words; the last bar gathers everything above the 99th percentile.</p><div class=\"grid\">");
    let mut any = false;
    for (unit, unit_name, label) in [
        ("zh", "characters", "Chinese"),
        ("en", "words", "English and other"),
    ] {
        for field in ["instruction", "input", "output"] {
            if let Some(values) = t.lengths.get(&(field, unit)).filter(|v| !v.is_empty()) {
                any = true;
                let _ = write!(
                    h,
                    "<div><h3>{label}: {field} ({n} records)</h3>{}</div>",
                    histogram(&bins(values), unit_name, "records"),
                    n = num(values.len() as i64)
                );
            }
        }
    }
    if !any {
        h.push_str("<p class=\"none\">No records.</p>");
    }
    h.push_str("</div></section>");
}

fn diversity(h: &mut String, t: &TextStats) {
    h.push_str("<section id=\"diversity\"><h2>Diversity</h2><p class=\"sub\">English: the instruction's first word and the first content word after it (a heuristic for Alpaca's verb–noun chart). Chinese: the first two Han characters after a polite opening (请, 帮我 …).</p><div class=\"grid\">");
    let verbs: Vec<(String, i64)> = top(&t.verbs, 20);
    let _ = write!(
        h,
        "<div><h3>Leading verbs (English)</h3>{}</div>",
        hbars(&verbs)
    );
    if !verbs.is_empty() {
        h.push_str("<div><h3>Their objects</h3><table><tr><th>verb</th><th>top objects</th></tr>");
        for (verb, _) in verbs.iter().take(10) {
            let mut objects: Vec<(&String, i64)> = t
                .verb_objects
                .iter()
                .filter(|((v, _), _)| v == verb)
                .map(|((_, o), n)| (o, *n))
                .collect();
            objects.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let shown: Vec<String> = objects
                .iter()
                .take(5)
                .map(|(o, n)| format!("{} ({})", esc(o), num(*n)))
                .collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td></tr>",
                esc(verb),
                shown.join(", ")
            );
        }
        h.push_str("</table></div>");
    }
    let leads = top(&t.zh_leads, 20);
    let _ = write!(
        h,
        "<div><h3>Leading words (Chinese)</h3>{}</div>",
        hbars(&leads)
    );
    h.push_str("</div></section>");
}

fn similarity(h: &mut String, d: &ReportData) {
    h.push_str("<section id=\"similarity\"><h2>Near duplicates</h2><div class=\"grid\">");
    let mut rouge = [0i64; 20];
    for s in &d.rouge {
        let b = ((s.clamp(0.0, 1.0) * 20.0) as usize).min(19);
        rouge[b] += 1;
    }
    let rouge_bins: Vec<(String, i64)> = rouge
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{:.2}", i as f64 / 20.0), *n))
        .collect();
    let _ = write!(
        h,
        "<div id=\"rouge\"><h3>Nearest-neighbour ROUGE-L F1 ({} records)</h3>{}</div>",
        num(d.rouge.len() as i64),
        histogram(
            &rouge_bins,
            "ROUGE-L F1 with the most similar earlier record",
            "records"
        )
    );
    let clusters: Vec<(String, i64)> = d
        .clusters
        .iter()
        .map(|(size, n)| (size.to_string(), *n))
        .collect();
    let _ = write!(
        h,
        "<div id=\"clusters\"><h3>MinHash clusters by size ({} clusters)</h3>{}</div>",
        num(d.clusters.iter().map(|c| c.1).sum()),
        histogram(&clusters, "records in the cluster", "clusters")
    );
    h.push_str("</div></section>");
}

fn timeline(h: &mut String, d: &ReportData) {
    h.push_str("<section id=\"timeline\"><h2>Generation over time</h2>");
    if d.timelines.iter().all(|t| t.2.is_empty()) {
        h.push_str("<p class=\"none\">No generated records.</p>");
    }
    for (run_id, bucket_ms, buckets) in &d.timelines {
        if buckets.is_empty() {
            continue;
        }
        let name = d
            .runs
            .iter()
            .find(|r| r.id == *run_id)
            .map_or("?", |r| r.name.as_str());
        let secs = *bucket_ms as f64 / 1000.0;
        let rate: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| (b.offset_ms as f64 / 1000.0, b.accepted as f64 / secs))
            .collect();
        let share: Vec<(f64, f64)> = buckets
            .iter()
            .map(|b| {
                (
                    b.offset_ms as f64 / 1000.0,
                    100.0 * b.accepted as f64 / b.judged.max(1) as f64,
                )
            })
            .collect();
        let _ = write!(
            h,
            "<h3>{}</h3><div class=\"grid\"><div>{}</div><div>{}</div></div>",
            esc(name),
            lines(&[("accepted/s", rate)], "seconds", "accepted per second"),
            lines(&[("accept %", share)], "seconds", "accepted, % of judged"),
        );
    }
    h.push_str("</section>");
}

fn training(h: &mut String, runs: &[TrainingCurve]) {
    h.push_str("<section id=\"training\"><h2>Training</h2>");
    if runs.is_empty() {
        h.push_str("<p class=\"none\">No training runs given (pass instill train's output directories with --training DIR).</p>");
    }
    for run in runs {
        let last = run.loss.last().map_or(String::new(), |(s, l)| {
            format!(" — step {s:.0}, loss {l:.4}")
        });
        let _ = write!(
            h,
            "<h3>{}{}</h3>{}",
            esc(&run.name),
            esc(&last),
            lines(
                &[
                    ("loss", run.loss.clone()),
                    ("validation", run.val_loss.clone())
                ],
                "step",
                "loss"
            )
        );
    }
    h.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loss_logs_are_read_and_bad_fields_named() {
        let c = read_loss_csv("run", "step,loss,lr,grad_norm,tokens,seconds,val_loss\n1,2.5,1e-4,0.5,100,1.0,\n2,2.0,1e-4,0.5,100,2.0,2.2\n").unwrap();
        assert_eq!(c.loss, vec![(1.0, 2.5), (2.0, 2.0)]);
        assert_eq!(c.val_loss, vec![(2.0, 2.2)]);
        let e = read_loss_csv("run", "step,loss\n1,abc\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("loss"), "{e}");
    }
}
