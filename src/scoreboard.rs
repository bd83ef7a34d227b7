//! What the scorers and evaluations stored, summarised once for `stats` and `report`: every
//! scorer's distribution (core's [`summarize`]) with why replies held no score, every
//! evaluation's per-class means (core's [`class_means`]); and the words and numbers all views
//! share: a scorer described, a score shown short, a histogram bin's label, the text histogram.

use instill_core::{Bin, ClassMeans, ScoreMethod, ScoreSummary, class_means, summarize};
use instill_storage::{Db, Evaluation, Scorer};

/// A scorer with its scores summarised.
#[derive(Debug)]
pub struct ScorerBoard {
    /// The scorer as stored.
    pub scorer: Scorer,
    /// Its scores of every record it scored.
    pub summary: ScoreSummary,
    /// Why replies held no score, with how many each, most frequent first.
    pub no_score: Vec<(String, i64)>,
}

/// An evaluation with its grades per class.
#[derive(Debug)]
pub struct EvalBoard {
    /// The evaluation as stored.
    pub eval: Evaluation,
    /// Per-class and overall means, a question's repeats averaged first.
    pub means: ClassMeans,
}

/// Every scorer and every evaluation, oldest first.
#[derive(Debug, Default)]
pub struct Scoreboard {
    /// The scorers.
    pub scorers: Vec<ScorerBoard>,
    /// The evaluations.
    pub evaluations: Vec<EvalBoard>,
}

impl Scoreboard {
    /// Reads and summarises every scorer's scores and every evaluation's grades.
    pub async fn load(db: &Db) -> anyhow::Result<Scoreboard> {
        let mut board = Scoreboard::default();
        for scorer in db.scorers().await? {
            let scores = db.scores(&scorer.name).await?;
            board.scorers.push(ScorerBoard {
                summary: summarize(scores.iter().map(|s| s.score), scorer.scale),
                no_score: db.unscored_reasons(&scorer.name).await?,
                scorer,
            });
        }
        for eval in db.evaluations().await? {
            let grades = db.grades(&eval.label).await?;
            board.evaluations.push(EvalBoard {
                means: class_means(grades.iter().map(|g| (g.idx, g.class.as_str(), g.grade))),
                eval,
            });
        }
        Ok(board)
    }

    /// Every class any evaluation graded, sorted.
    pub fn classes(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self
            .evaluations
            .iter()
            .flat_map(|e| e.means.classes.keys().map(String::as_str))
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// The rubric a judge scorer was made with (`builtin` or a file's name), from its settings.
pub fn rubric(s: &Scorer) -> Option<String> {
    let settings: serde_json::Value = serde_json::from_str(&s.settings_json).ok()?;
    let spec = settings["rubric"].as_str()?;
    Some(
        std::path::Path::new(spec)
            .file_name()
            .map_or_else(|| spec.to_string(), |n| n.to_string_lossy().into_owned()),
    )
}

/// A scorer in words, Markdown code spans around names: what scored, with what, on what scale.
pub fn describe(s: &Scorer) -> String {
    match s.method {
        ScoreMethod::Judge => {
            let rubric = rubric(s).map_or_else(String::new, |r| format!(" `{r}`"));
            let hash = s
                .rubric_hash
                .as_deref()
                .map_or_else(String::new, |h| format!(" (content hash `{h}`)"));
            let scale = s.scale.map_or_else(String::new, |(lo, hi)| {
                format!(", on a {}–{} scale", short(lo), short(hi))
            });
            format!(
                "an LLM judge, `{}`, with the rubric{rubric}{hash}{scale}; higher is better",
                s.model
            )
        }
        ScoreMethod::Ppl => format!(
            "the answer's perplexity given the instruction under `{}`; lower is better",
            s.model
        ),
        ScoreMethod::Ifd => format!(
            "instruction-following difficulty (IFD) under `{}`: the answer's loss given the \
             instruction over its loss alone",
            s.model
        ),
    }
}

/// A score as shown: at most three decimals, no trailing zeros (`7`, `7.25`, `0.613`).
pub fn short(x: f64) -> String {
    let s = format!("{x:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// `text` with its first letter upper case, to begin a sentence.
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// [`short`] of a value that may be missing (`—`).
pub fn short_or_dash(x: Option<f64>) -> String {
    x.map_or_else(|| "—".into(), short)
}

/// A histogram bin's label: on a scale of whole scores (a judge's 1–10) the whole score of a
/// one-wide bin (`7`, which also holds 7.5), else the bin's range (`0.1–0.2`, a metric's `2–3`).
pub fn bin_label(b: &Bin, scale: Option<(f64, f64)>) -> String {
    let whole_scale = scale.is_some_and(|(lo, hi)| lo.fract() == 0.0 && hi.fract() == 0.0);
    if whole_scale && b.lo.fract() == 0.0 && b.hi - b.lo == 1.0 {
        short(b.lo)
    } else {
        format!("{}–{}", short(b.lo), short(b.hi))
    }
}

/// The distribution as text: a line of numbers, then one line per bin with a bar of `#`.
pub fn distribution_lines(d: &ScoreSummary, scale: Option<(f64, f64)>) -> Vec<String> {
    let fmt = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let mut lines = vec![format!(
        "scores: {} scored, {} without a score; mean {}, median {}, min {}, max {}",
        d.n,
        d.unscored,
        fmt(d.mean),
        fmt(d.median),
        fmt(d.min),
        fmt(d.max)
    )];
    let most = d.bins.iter().map(|b| b.n).max().unwrap_or(0).max(1);
    for b in &d.bins {
        let width = (b.n * 40).div_ceil(most) as usize;
        lines.push(format!(
            "  {:>9}  {:>8}  {}",
            bin_label(b, scale),
            b.n,
            "#".repeat(width)
        ));
    }
    lines
}

/// Prints [`distribution_lines`].
pub fn print_distribution(d: &ScoreSummary, scale: Option<(f64, f64)>) {
    for line in distribution_lines(d, scale) {
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_bins_read_short() {
        assert_eq!(short(7.0), "7");
        assert_eq!(short(7.25), "7.25");
        assert_eq!(short(0.61234), "0.612");
        assert_eq!(short(-0.0001), "0");
        assert_eq!(short_or_dash(None), "—");
        let whole = Bin {
            lo: 7.0,
            hi: 8.0,
            n: 3,
        };
        assert_eq!(bin_label(&whole, Some((1.0, 10.0))), "7");
        assert_eq!(bin_label(&whole, None), "7–8", "a metric's bin is a range");
        let tenth = Bin {
            lo: 0.1,
            hi: 0.2,
            n: 3,
        };
        assert_eq!(bin_label(&tenth, Some((0.0, 1.0))), "0.1–0.2");
    }

    #[test]
    fn the_text_histogram_scales_to_the_fullest_bin() {
        let s = summarize([Some(1.0), Some(2.0), Some(2.0)], Some((1.0, 3.0)));
        let lines = distribution_lines(&s, Some((1.0, 3.0)));
        assert!(lines[1].trim_start().starts_with("1 "), "{lines:?}");
        assert!(
            lines[0].contains("3 scored, 0 without a score"),
            "{lines:?}"
        );
        assert!(lines[2].ends_with(&"#".repeat(40)), "{lines:?}");
        assert!(
            lines[1].ends_with(&format!(" {}", "#".repeat(20))),
            "{lines:?}"
        );
    }
}
