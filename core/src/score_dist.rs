//! The distribution of a scorer's scores, as `score`, `select`, `stats`, `report` and the
//! dataset card show it: count, records without a score, mean, median, extremes and a
//! histogram. One bin per whole number on a small integer scale (1–10: ten bins), else ten
//! equal bins over the scale (0–1: tenths) or, for an unbounded metric, over the range seen.

use serde::Serialize;

/// One histogram bin: `[lo, hi)`, the last one closed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bin {
    /// Lower edge.
    pub lo: f64,
    /// Upper edge.
    pub hi: f64,
    /// Scores in it.
    pub n: u64,
}

/// A scorer's scores summarised.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreSummary {
    /// Records with a score.
    pub n: u64,
    /// Records whose reply held no score.
    pub unscored: u64,
    /// Mean score.
    pub mean: Option<f64>,
    /// Median score.
    pub median: Option<f64>,
    /// Lowest score.
    pub min: Option<f64>,
    /// Highest score.
    pub max: Option<f64>,
    /// The histogram, low to high.
    pub bins: Vec<Bin>,
}

/// Summarises `scores` (None: no score) on `scale` (None: a metric with no fixed range).
pub fn summarize(
    scores: impl IntoIterator<Item = Option<f64>>,
    scale: Option<(f64, f64)>,
) -> ScoreSummary {
    let mut unscored = 0u64;
    let mut xs: Vec<f64> = Vec::new();
    for s in scores {
        match s {
            Some(x) if x.is_finite() => xs.push(x),
            _ => unscored += 1,
        }
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len() as u64;
    let mean = (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64);
    let median = (!xs.is_empty()).then(|| {
        let m = xs.len() / 2;
        if xs.len() % 2 == 1 {
            xs[m]
        } else {
            (xs[m - 1] + xs[m]) / 2.0
        }
    });
    let (min, max) = (xs.first().copied(), xs.last().copied());
    let edges = match (scale, min, max) {
        (Some((lo, hi)), _, _) => edges(lo, hi),
        (None, Some(lo), Some(hi)) => edges(lo, hi),
        _ => Vec::new(),
    };
    ScoreSummary {
        n,
        unscored,
        mean,
        median,
        min,
        max,
        bins: histogram(&xs, &edges),
    }
}

/// Bin edges over `[lo, hi]`: whole numbers on an integer scale of at most 20 steps, else ten
/// equal bins.
fn edges(lo: f64, hi: f64) -> Vec<f64> {
    if !(lo.is_finite() && hi.is_finite()) || hi < lo {
        return Vec::new();
    }
    if hi == lo {
        return vec![lo, hi];
    }
    let whole = lo.fract() == 0.0 && hi.fract() == 0.0 && hi - lo <= 20.0 && hi - lo >= 2.0;
    if whole {
        // 1–10: bins [1,2) … [9,10) and 10 alone, so that each whole score has its own bin.
        let mut e: Vec<f64> = (0..=(hi - lo) as i64).map(|k| lo + k as f64).collect();
        e.push(hi + 1.0);
        return e;
    }
    (0..=10).map(|k| lo + (hi - lo) * k as f64 / 10.0).collect()
}

/// Counts sorted `xs` into the bins `edges` bound; values outside go to the end bins.
fn histogram(xs: &[f64], edges: &[f64]) -> Vec<Bin> {
    if edges.len() < 2 {
        return Vec::new();
    }
    let mut bins: Vec<Bin> = edges
        .windows(2)
        .map(|w| Bin {
            lo: w[0],
            hi: w[1],
            n: 0,
        })
        .collect();
    let last = bins.len() - 1;
    for &x in xs {
        let i = bins.iter().position(|b| x < b.hi).unwrap_or(last);
        bins[i].n += 1;
    }
    bins
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_one_to_ten_scale_has_a_bin_per_whole_score() {
        let s = summarize(
            [Some(1.0), Some(7.0), Some(7.5), Some(10.0), None],
            Some((1.0, 10.0)),
        );
        assert_eq!(s.n, 4);
        assert_eq!(s.unscored, 1);
        assert_eq!(s.bins.len(), 10);
        assert_eq!(s.bins[0].n, 1);
        assert_eq!(s.bins[6].n, 2, "7 and 7.5 share [7, 8)");
        assert_eq!(s.bins[9].n, 1, "10 has its own bin");
        assert_eq!(s.mean, Some(6.375));
        assert_eq!(s.median, Some(7.25));
    }

    #[test]
    fn a_unit_scale_has_tenths_and_a_metric_its_range() {
        let s = summarize([Some(0.0), Some(0.55), Some(1.0)], Some((0.0, 1.0)));
        assert_eq!(s.bins.len(), 10);
        assert_eq!(s.bins[5].n, 1);
        assert_eq!(s.bins[9].n, 1, "1.0 falls in the last, closed bin");
        let m = summarize([Some(2.0), Some(4.0), Some(12.0)], None);
        assert_eq!((m.bins[0].lo, m.bins[9].hi), (2.0, 12.0));
        assert_eq!(m.bins.iter().map(|b| b.n).sum::<u64>(), 3);
        assert!(summarize([None], None).bins.is_empty());
    }
}

/// One class's grades in an evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMean {
    /// Questions with a grade.
    pub n: u64,
    /// Their mean grade.
    pub mean: f64,
}

/// An evaluation's grades per class, and overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMeans {
    /// By normalised class name.
    pub classes: std::collections::BTreeMap<String, ClassMean>,
    /// The mean over every graded question (each question once, whatever its class).
    pub overall: Option<f64>,
    /// Graded questions.
    pub n: u64,
    /// Questions whose every judge reply held no grade.
    pub ungraded: u64,
}

/// Per-class and overall means of `grades`: (question, class, grade) triples, a question's
/// repeats averaged into one grade first.
pub fn class_means<'a>(
    grades: impl IntoIterator<Item = (i64, &'a str, Option<f64>)>,
) -> ClassMeans {
    let mut per_question: std::collections::BTreeMap<i64, (&'a str, f64, u64)> =
        std::collections::BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (q, class, grade) in grades {
        seen.insert(q);
        if let Some(g) = grade.filter(|g| g.is_finite()) {
            let e = per_question.entry(q).or_insert((class, 0.0, 0));
            e.1 += g;
            e.2 += 1;
        }
    }
    let mut sums: std::collections::BTreeMap<String, (f64, u64)> =
        std::collections::BTreeMap::new();
    let mut total = (0.0, 0u64);
    for (class, sum, k) in per_question.values() {
        let g = sum / *k as f64;
        let e = sums.entry((*class).to_string()).or_default();
        e.0 += g;
        e.1 += 1;
        total.0 += g;
        total.1 += 1;
    }
    ClassMeans {
        classes: sums
            .into_iter()
            .map(|(c, (s, n))| {
                (
                    c,
                    ClassMean {
                        n,
                        mean: s / n as f64,
                    },
                )
            })
            .collect(),
        overall: (total.1 > 0).then(|| total.0 / total.1 as f64),
        n: total.1,
        ungraded: (seen.len() - per_question.len()) as u64,
    }
}

#[cfg(test)]
mod class_tests {
    use super::*;

    #[test]
    fn repeats_average_per_question_then_classes_and_overall() {
        let m = class_means([
            (0, "math", Some(1.0)),
            (0, "math", Some(0.0)),
            (1, "math", Some(1.0)),
            (2, "code", Some(0.25)),
            (3, "code", None),
        ]);
        assert_eq!(m.classes["math"], ClassMean { n: 2, mean: 0.75 });
        assert_eq!(m.classes["code"], ClassMean { n: 1, mean: 0.25 });
        assert_eq!(m.overall, Some((0.5 + 1.0 + 0.25) / 3.0));
        assert_eq!((m.n, m.ungraded), (3, 1));
    }
}
