//! The report's scores and evaluations: a section per scorer (its numbers and histogram) and
//! the evaluations side by side (a grouped bar per class and overall, and a table of n and mean
//! per class). Each number carries its `instill stats --json` path in `data-k` and its exact
//! value in `data-v`. A section with nothing to show is left out.

use std::fmt::Write;

use super::svg::{esc, grouped_bars, histogram, num};
use crate::scoreboard::{
    EvalBoard, Scoreboard, ScorerBoard, bin_label, describe, sentence, short, short_or_dash,
};

/// A table cell holding the number at `key` (`data-v`: its exact value, when there is one).
fn cell(key: &str, value: Option<f64>, shown: String) -> String {
    match value {
        Some(v) => format!(
            "<td class=\"n\" data-k=\"{k}\" data-v=\"{v}\">{shown}</td>",
            k = esc(key)
        ),
        None => format!("<td class=\"n\" data-k=\"{}\">—</td>", esc(key)),
    }
}

/// A cell of a count.
pub fn count(key: &str, n: i64) -> String {
    cell(key, Some(n as f64), num(n))
}

/// A section per scorer; nothing when no scorer is stored.
pub fn scores(h: &mut String, board: &Scoreboard) {
    if board.scorers.is_empty() {
        return;
    }
    h.push_str("<section id=\"scores\"><h2>Scores</h2><p class=\"sub\">What each scorer (<code>instill score</code>) gave the records it scored, in its own scale.</p>");
    for b in &board.scorers {
        scorer(h, b);
    }
    h.push_str("</section>");
}

fn scorer(h: &mut String, b: &ScorerBoard) {
    let (s, d) = (&b.scorer, &b.summary);
    let k = |field: &str| format!("scorers.{}.{field}", s.name);
    let about = sentence(&describe(s));
    let _ = write!(
        h,
        "<h3>{}</h3><p class=\"sub\">{}.</p><div class=\"grid\"><div><table>",
        esc(&s.name),
        code_spans(&about)
    );
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let _ = write!(
        h,
        "<tr><th>scored</th>{}</tr><tr><th>without a score</th>{}</tr>",
        count(&k("n"), to_i64(d.n)),
        count(&k("unscored"), to_i64(d.unscored))
    );
    for (field, v) in [
        ("mean", d.mean),
        ("median", d.median),
        ("min", d.min),
        ("max", d.max),
    ] {
        let _ = write!(
            h,
            "<tr><th>{field}</th>{}</tr>",
            cell(&k(field), v, short_or_dash(v))
        );
    }
    for (reason, n) in &b.no_score {
        let _ = write!(
            h,
            "<tr><th>no score: {}</th>{}</tr>",
            esc(reason),
            count(&k(&format!("unscored_by_reason.{reason}")), *n)
        );
    }
    let bins: Vec<(String, i64)> = d
        .bins
        .iter()
        .map(|bin| (bin_label(bin, s.scale), to_i64(bin.n)))
        .collect();
    let x_title = match s.scale {
        Some((lo, hi)) => format!("score (scale {}–{})", short(lo), short(hi)),
        None => format!("{} score", s.method),
    };
    let _ = write!(
        h,
        "</table></div><div>{}</div></div>",
        histogram(&bins, &x_title, "records")
    );
}

/// `describe`'s Markdown code spans as HTML.
fn code_spans(text: &str) -> String {
    let mut out = String::new();
    for (i, part) in text.split('`').enumerate() {
        if i % 2 == 1 {
            let _ = write!(out, "<code>{}</code>", esc(part));
        } else {
            out.push_str(&esc(part));
        }
    }
    out
}

/// The evaluations side by side; nothing when none is stored.
pub fn evaluations(h: &mut String, board: &Scoreboard) {
    let evals = &board.evaluations;
    if evals.is_empty() {
        return;
    }
    h.push_str("<section id=\"evaluations\"><h2>Evaluations</h2><p class=\"sub\">Each model's answers to the eval set graded by the judge against the reference answers, with each class's prompt (<code>instill eval</code>); a question's repeated gradings are averaged first.</p>");
    h.push_str("<table><tr><th>evaluation</th><th>model</th><th>judge</th><th>eval set</th><th class=\"n\">questions</th><th class=\"n\">graded</th><th class=\"n\">ungraded</th><th class=\"n\">overall mean</th></tr>");
    for b in evals {
        let (e, m) = (&b.eval, &b.means);
        let k = |field: &str| format!("evaluations.{}.{field}", e.label);
        let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let _ = write!(
            h,
            "<tr><td>{}</td><td><code>{}</code></td><td><code>{}</code></td><td>{}</td>{}{}{}{}</tr>",
            esc(&e.label),
            esc(&e.model),
            esc(&e.judge_model),
            esc(&e.eval_set),
            count(&k("questions"), e.questions),
            count(&k("n"), to_i64(m.n)),
            count(&k("ungraded"), to_i64(m.ungraded)),
            cell(&k("overall"), m.overall, short_or_dash(m.overall)),
        );
    }
    h.push_str("</table>");
    let classes = board.classes();
    let mut groups: Vec<(String, Vec<Option<f64>>)> = classes
        .iter()
        .map(|c| {
            let means = evals
                .iter()
                .map(|b| b.means.classes.get(*c).map(|m| m.mean))
                .collect();
            ((*c).to_string(), means)
        })
        .collect();
    groups.push((
        "overall".into(),
        evals.iter().map(|b| b.means.overall).collect(),
    ));
    let series: Vec<String> = evals.iter().map(|b| b.eval.label.clone()).collect();
    let _ = write!(
        h,
        "<div id=\"eval-chart\">{}</div>",
        grouped_bars(&groups, &series, "mean grade")
    );
    class_table(h, evals, &classes);
    h.push_str("</section>");
}

/// Classes down, evaluations across: graded questions and mean grade.
fn class_table(h: &mut String, evals: &[EvalBoard], classes: &[&str]) {
    h.push_str("<table id=\"eval-classes\"><tr><th rowspan=\"2\">class</th>");
    for b in evals {
        let _ = write!(h, "<th colspan=\"2\">{}</th>", esc(&b.eval.label));
    }
    h.push_str("</tr><tr>");
    for _ in evals {
        h.push_str("<th class=\"n\">n</th><th class=\"n\">mean</th>");
    }
    h.push_str("</tr>");
    for class in classes {
        let _ = write!(h, "<tr><td>{}</td>", esc(class));
        for b in evals {
            let k = |field: &str| format!("evaluations.{}.classes.{class}.{field}", b.eval.label);
            match b.means.classes.get(*class) {
                Some(m) => {
                    let _ = write!(
                        h,
                        "{}{}",
                        count(&k("n"), i64::try_from(m.n).unwrap_or(i64::MAX)),
                        cell(&k("mean"), Some(m.mean), short(m.mean))
                    );
                }
                None => h.push_str("<td class=\"n\">—</td><td class=\"n\">—</td>"),
            }
        }
        h.push_str("</tr>");
    }
    h.push_str("<tr><th>overall</th>");
    for b in evals {
        let _ = write!(
            h,
            "<td class=\"n\">{}</td><td class=\"n\">{}</td>",
            num(i64::try_from(b.means.n).unwrap_or(i64::MAX)),
            short_or_dash(b.means.overall)
        );
    }
    h.push_str("</tr></table>");
}
