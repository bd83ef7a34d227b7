//! Hand-written inline SVG charts for the report: horizontal bars, histograms, grouped bars and
//! lines. No fonts, scripts or external references: the page renders offline and prints.

use std::fmt::Write;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number with thousands separators.
pub fn num(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Horizontal bars, one per (label, value), largest scale = longest bar.
pub fn hbars(rows: &[(String, i64)]) -> String {
    if rows.is_empty() {
        return empty();
    }
    let (label_w, bar_w, row_h) = (230.0, 380.0, 22.0);
    let max = rows.iter().map(|r| r.1).max().unwrap_or(1).max(1) as f64;
    let height = rows.len() as f64 * row_h + 6.0;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {height}" width="{w}" height="{height}" role="img">"#,
        w = label_w + bar_w + 90.0
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = i as f64 * row_h + 3.0;
        let len = (*value as f64 / max * bar_w).max(1.0);
        let shown: String = label.chars().take(34).collect();
        let _ = write!(
            s,
            r#"<text x="{tx}" y="{ty}" text-anchor="end">{l}</text><rect x="{label_w}" y="{y}" width="{len:.1}" height="{h}" class="bar"><title>{full}: {v}</title></rect><text x="{vx:.1}" y="{ty}">{v}</text>"#,
            tx = label_w - 6.0,
            ty = y + 14.0,
            l = esc(&shown),
            h = row_h - 6.0,
            full = esc(label),
            v = num(*value),
            vx = label_w + len + 5.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// Vertical bars over ordered bins (label under every few bars), with axis titles.
pub fn histogram(bins: &[(String, i64)], x_title: &str, y_title: &str) -> String {
    if bins.iter().all(|b| b.1 == 0) {
        return empty();
    }
    let (left, bottom, plot_w, plot_h) = (56.0, 44.0, 600.0, 180.0);
    let max = bins.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let bw = plot_w / bins.len() as f64;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#,
        w = left + plot_w + 10.0,
        h = plot_h + bottom + 10.0
    );
    axes(&mut s, left, plot_w, plot_h, max, x_title, y_title);
    let every = (bins.len() / 10).max(1);
    for (i, (label, n)) in bins.iter().enumerate() {
        let bh = *n as f64 / max * plot_h;
        let x = left + i as f64 * bw;
        let _ = write!(
            s,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}" class="bar"><title>{l}: {n}</title></rect>"#,
            y = 10.0 + plot_h - bh,
            w = (bw - 1.0).max(0.5),
            l = esc(label),
            n = num(*n),
        );
        if i % every == 0 {
            let _ = write!(
                s,
                r#"<text x="{x:.1}" y="{y}" text-anchor="middle" class="tick">{l}</text>"#,
                x = x + bw / 2.0,
                y = 10.0 + plot_h + 14.0,
                l = esc(label)
            );
        }
    }
    s.push_str("</svg>");
    s
}

/// A line (or two) over x; `series` are (name, points) with y in the same unit.
pub fn lines(series: &[(&str, Vec<(f64, f64)>)], x_title: &str, y_title: &str) -> String {
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.1.iter().copied()).collect();
    if all.is_empty() {
        return empty();
    }
    let (left, bottom, plot_w, plot_h) = (56.0, 44.0, 600.0, 180.0);
    let xmax = all.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let ymax = all.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#,
        w = left + plot_w + 130.0,
        h = plot_h + bottom + 10.0
    );
    axes(&mut s, left, plot_w, plot_h, ymax, x_title, y_title);
    let _ = write!(
        s,
        r#"<text x="{x}" y="{y}" text-anchor="end" class="tick">{xm}</text>"#,
        x = left + plot_w,
        y = 10.0 + plot_h + 14.0,
        xm = short(xmax)
    );
    for (k, (name, points)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| {
                format!(
                    "{:.1},{:.1}",
                    left + x / xmax * plot_w,
                    10.0 + plot_h - y / ymax * plot_h
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{p}" class="line s{k}" fill="none"/><text x="{lx}" y="{ly}" class="legend s{k}">{n}</text>"#,
            p = path.join(" "),
            lx = left + plot_w + 8.0,
            ly = 24.0 + 16.0 * k as f64,
            n = esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Colours a series can take (CSS classes `s0`…), in order; later series reuse them.
const SERIES_COLOURS: usize = 6;

/// Vertical bars in groups, one group per (label, values) and one bar per series in each
/// (None: no bar), a legend naming the series. The axis runs from 0 to 1, or to the largest
/// value when one is above 1.
pub fn grouped_bars(
    groups: &[(String, Vec<Option<f64>>)],
    series: &[String],
    y_title: &str,
) -> String {
    let values = || groups.iter().flat_map(|g| g.1.iter().flatten().copied());
    if values().next().is_none() || series.is_empty() {
        return empty();
    }
    let max = values().fold(1.0f64, f64::max);
    let (left, bottom, plot_h) = (56.0, 96.0, 180.0);
    let slot = (640.0 / groups.len() as f64).clamp(36.0, 120.0);
    let bar = ((slot - 12.0) / series.len() as f64).clamp(3.0, 24.0);
    let plot_w = slot * groups.len() as f64;
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#,
        w = left + plot_w + 150.0,
        h = plot_h + bottom + 10.0
    );
    axes(&mut s, left, plot_w, plot_h, max, "", y_title);
    for (g, (label, vals)) in groups.iter().enumerate() {
        let x0 = left + g as f64 * slot + (slot - bar * series.len() as f64) / 2.0;
        for (k, v) in vals.iter().enumerate().take(series.len()) {
            let Some(v) = v else { continue };
            let bh = (v.max(0.0) / max * plot_h).max(0.5);
            let x = x0 + k as f64 * bar;
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{bh:.1}" class="s{c}"><title>{l}, {n}: {v}</title></rect>"#,
                y = 10.0 + plot_h - bh,
                w = (bar - 1.0).max(1.0),
                c = k % SERIES_COLOURS,
                l = esc(label),
                n = esc(&series[k]),
                v = crate::scoreboard::short(*v),
            );
            if bar >= 20.0 {
                let _ = write!(
                    s,
                    r#"<text x="{cx:.1}" y="{ty:.1}" text-anchor="middle" class="tick" font-size="9">{v}</text>"#,
                    cx = x + bar / 2.0,
                    ty = 10.0 + plot_h - bh - 3.0,
                    v = short(*v),
                );
            }
        }
        let shown: String = label.chars().take(20).collect();
        let _ = write!(
            s,
            r#"<text x="{cx:.1}" y="{ty}" text-anchor="end" class="tick" transform="rotate(-35 {cx:.1} {ty})">{l}</text>"#,
            cx = left + (g as f64 + 0.5) * slot,
            ty = 10.0 + plot_h + 14.0,
            l = esc(&shown),
        );
    }
    for (k, name) in series.iter().enumerate() {
        let y = 14.0 + 18.0 * k as f64;
        let shown: String = name.chars().take(18).collect();
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{y}" width="12" height="12" class="s{c}"/><text x="{tx}" y="{ty}">{n}</text>"#,
            x = left + plot_w + 12.0,
            c = k % SERIES_COLOURS,
            tx = left + plot_w + 30.0,
            ty = y + 10.0,
            n = esc(&shown),
        );
    }
    s.push_str("</svg>");
    s
}

fn axes(
    s: &mut String,
    left: f64,
    plot_w: f64,
    plot_h: f64,
    max: f64,
    x_title: &str,
    y_title: &str,
) {
    let _ = write!(
        s,
        r#"<line x1="{left}" y1="10" x2="{left}" y2="{b}" class="axis"/><line x1="{left}" y1="{b}" x2="{r}" y2="{b}" class="axis"/><text x="{tl}" y="14" text-anchor="end" class="tick">{m}</text><text x="{tl}" y="{b}" text-anchor="end" class="tick">0</text><text x="{cx}" y="{xt}" text-anchor="middle" class="title">{xtitle}</text><text x="12" y="{cy}" text-anchor="middle" class="title" transform="rotate(-90 12 {cy})">{ytitle}</text>"#,
        b = 10.0 + plot_h,
        r = left + plot_w,
        tl = left - 4.0,
        m = short(max),
        cx = left + plot_w / 2.0,
        xt = 10.0 + plot_h + 34.0,
        cy = 10.0 + plot_h / 2.0,
        xtitle = esc(x_title),
        ytitle = esc(y_title),
    );
}

fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn empty() -> String {
    r#"<p class="none">No data.</p>"#.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_escaping() {
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(num(12), "12");
        assert_eq!(num(-1000), "-1,000");
        assert_eq!(esc("<a href=\"x\">&"), "&lt;a href=&quot;x&quot;&gt;&amp;");
    }

    #[test]
    fn charts_scale_to_the_largest_value() {
        let svg = hbars(&[("a".into(), 10), ("b".into(), 5)]);
        assert!(
            svg.contains(r#"width="380.0""#) && svg.contains(r#"width="190.0""#),
            "{svg}"
        );
        assert!(hbars(&[]).contains("No data"));
        let h = histogram(&[("0".into(), 2), ("1".into(), 4)], "x", "y");
        assert!(
            h.contains(r#"height="180.0""#) && h.contains(r#"height="90.0""#),
            "{h}"
        );
    }

    #[test]
    fn grouped_bars_scale_to_one_and_name_every_series() {
        let g = grouped_bars(
            &[
                ("math".into(), vec![Some(1.0), Some(0.5)]),
                ("code".into(), vec![None, Some(0.25)]),
            ],
            &["base".into(), "tuned".into()],
            "mean grade",
        );
        let bars = g.matches("<rect").count();
        assert_eq!(bars, 3 + 2, "three bars and two legend swatches: {g}");
        assert!(
            g.contains(r#"height="180.0""#) && g.contains(r#"height="90.0""#),
            "{g}"
        );
        assert!(
            g.contains(">base</text>") && g.contains(">tuned</text>"),
            "{g}"
        );
        assert!(g.contains("code, tuned: 0.25"), "{g}");
        let above_one = grouped_bars(
            &[("x".into(), vec![Some(8.0), Some(4.0)])],
            &["a".into(), "b".into()],
            "",
        );
        assert!(above_one.contains(r#"height="90.0""#), "{above_one}");
        assert!(grouped_bars(&[("x".into(), vec![None])], &["a".into()], "").contains("No data"));
    }
}
