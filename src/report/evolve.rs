//! The report's evolve section: per evolve run, a table of rewrites judged, kept, eliminated by
//! rule and rejected by the rules or dedup, for the run, each round and each operation in it.
//! The numbers are `instill stats --json`'s `evolve` object, each cell carrying its path in
//! `data-k`. Left out when no evolve run wrote records.

use std::fmt::Write;

use serde_json::{Map, Value};

use super::scores::count;
use super::svg::esc;

/// The section; nothing when the database holds no evolved records.
pub fn evolve(h: &mut String, stats: &Value) {
    let Some(runs) = stats["evolve"].as_object().filter(|m| !m.is_empty()) else {
        return;
    };
    h.push_str("<section id=\"evolve\"><h2>Evolution</h2><p class=\"sub\">What each <code>instill evolve</code> run's rewrites came to: kept, eliminated by the rule that eliminated them (Evol-Instruct's elimination), or rejected by the quality rules and dedup; per round and per operation.</p>");
    for (name, run) in runs {
        run_table(h, name, run);
    }
    h.push_str("</section>");
}

/// The reason columns of a run: `("eliminated", reason)`s, then `("rejected", reason)`s (the
/// run's totals hold every reason of its rounds).
fn reasons(run: &Value) -> Vec<(&'static str, String)> {
    let keys = |field: &'static str| {
        run[field]
            .as_object()
            .map(|m| m.keys().map(|k| (field, k.clone())).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    let mut out = keys("eliminated");
    out.extend(keys("rejected"));
    out
}

fn run_table(h: &mut String, name: &str, run: &Value) {
    let columns = reasons(run);
    let _ = write!(
        h,
        "<h3>{}</h3><table><tr><th></th><th class=\"n\">evolved</th><th class=\"n\">kept</th>",
        esc(name)
    );
    for (field, reason) in &columns {
        let _ = write!(h, "<th class=\"n\">{field}: {}</th>", esc(reason));
    }
    h.push_str("</tr>");
    let base = format!("evolve.{name}");
    row(h, "all rounds", &base, run, &columns);
    let empty = Map::new();
    for (round, r) in run["rounds"].as_object().unwrap_or(&empty) {
        let key = format!("{base}.rounds.{round}");
        row(h, &format!("round {round}"), &key, r, &columns);
        for (op, t) in r["ops"].as_object().unwrap_or(&empty) {
            let label = format!("&nbsp;&nbsp;{}", esc(op));
            row(h, &label, &format!("{key}.ops.{op}"), t, &columns);
        }
    }
    h.push_str("</table>");
}

/// One row: `label` (HTML), then the tally at `key` (`evolved`, `kept`, each reason column).
fn row(h: &mut String, label: &str, key: &str, t: &Value, columns: &[(&str, String)]) {
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let _ = write!(
        h,
        "<tr><td>{label}</td>{}{}",
        count(&format!("{key}.evolved"), n(&t["evolved"])),
        count(&format!("{key}.kept"), n(&t["kept"]))
    );
    for (field, reason) in columns {
        match t[*field].get(reason) {
            Some(v) => h.push_str(&count(&format!("{key}.{field}.{reason}"), n(v))),
            None => h.push_str("<td class=\"n\">—</td>"),
        }
    }
    h.push_str("</tr>");
}
