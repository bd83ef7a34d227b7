//! What evolve runs did, from storage's counts ([`instill_storage::EvolveCount`]), for the views
//! that show it: `instill evolve`'s summary, `stats` (text and JSON) and the report. Per run,
//! per round and per operation: rewrites judged, kept, eliminated by rule (the paper's
//! elimination), rejected by the quality rules or dedup; and the lines the text views print.

use std::collections::BTreeMap;

use instill_core::{Reason, Status};
use instill_storage::EvolveCount;
use serde::Serialize;

/// Evolved records of a run, a round or an operation, by verdict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Rewrites judged.
    pub evolved: i64,
    /// Accepted (survived the elimination, the rules and dedup).
    pub kept: i64,
    /// Eliminated, by rule (`evol_*`).
    pub eliminated: BTreeMap<String, i64>,
    /// Survivors the quality rules or dedup rejected, by reason.
    pub rejected: BTreeMap<String, i64>,
}

impl Tally {
    fn add(&mut self, c: &EvolveCount) {
        self.evolved += c.n;
        let reason = c.reason.clone().unwrap_or_default();
        match (c.status, reason.parse::<Reason>()) {
            (Status::Accepted, _) => self.kept += c.n,
            (_, Ok(why)) if why.is_elimination() => {
                *self.eliminated.entry(reason).or_default() += c.n
            }
            _ => *self.rejected.entry(reason).or_default() += c.n,
        }
    }

    /// Eliminated, every rule together.
    pub fn eliminated_total(&self) -> i64 {
        self.eliminated.values().sum()
    }

    /// Rejected by the rules or dedup, every reason together.
    pub fn rejected_total(&self) -> i64 {
        self.rejected.values().sum()
    }

    /// `N evolved, N kept, N eliminated, N rejected`.
    pub fn line(&self) -> String {
        format!(
            "{} evolved, {} kept, {} eliminated, {} rejected",
            self.evolved,
            self.kept,
            self.eliminated_total(),
            self.rejected_total()
        )
    }
}

/// One round of a run: its tally, and the same per operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Round {
    /// Every operation together.
    #[serde(flatten)]
    pub tally: Tally,
    /// Per operation, by its code.
    pub ops: BTreeMap<String, Tally>,
}

/// One evolve run: its tally and its rounds in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunBreakdown {
    /// Every round together.
    #[serde(flatten)]
    pub tally: Tally,
    /// Round by round (1 = the first rewrite).
    pub rounds: BTreeMap<i64, Round>,
}

/// The counts of one run, round by round (1 = the first rewrite).
pub fn rounds(counts: &[EvolveCount]) -> BTreeMap<i64, Round> {
    let mut rounds: BTreeMap<i64, Round> = BTreeMap::new();
    for c in counts {
        let r = rounds.entry(c.round).or_default();
        r.tally.add(c);
        r.ops.entry(c.op.as_str().to_string()).or_default().add(c);
    }
    rounds
}

/// The counts of every run, by run name.
pub fn by_run(counts: &[EvolveCount]) -> BTreeMap<String, RunBreakdown> {
    let mut per_run: BTreeMap<&str, Vec<EvolveCount>> = BTreeMap::new();
    for c in counts {
        per_run.entry(&c.run).or_default().push(c.clone());
    }
    per_run
        .into_iter()
        .map(|(run, counts)| {
            let mut tally = Tally::default();
            counts.iter().for_each(|c| tally.add(c));
            let breakdown = RunBreakdown {
                tally,
                rounds: rounds(&counts),
            };
            (run.to_string(), breakdown)
        })
        .collect()
}

/// The text lines of a run's rounds, indented by `indent`: a line per round, then its
/// operations and its eliminations and rejections by reason.
pub fn round_lines(rounds: &BTreeMap<i64, Round>, indent: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (round, r) in rounds {
        lines.push(format!("{indent}round {round}: {}", r.tally.line()));
        for (op, t) in &r.ops {
            lines.push(format!("{indent}  {op:<20} {}", t.line()));
        }
        for (why, n) in r.tally.eliminated.iter().chain(&r.tally.rejected) {
            lines.push(format!("{indent}  {why:<20} {n:>8}"));
        }
    }
    lines
}

/// The text lines of every run: its name and tally, then its rounds.
pub fn run_lines(runs: &BTreeMap<String, RunBreakdown>) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, run) in runs {
        lines.push(format!("  {name}: {}", run.tally.line()));
        lines.extend(round_lines(&run.rounds, "    "));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use instill_core::EvolveOp;

    fn count(run: &str, round: i64, op: EvolveOp, reason: Option<&str>, n: i64) -> EvolveCount {
        EvolveCount {
            run: run.into(),
            round,
            op,
            status: if reason.is_some() {
                Status::Rejected
            } else {
                Status::Accepted
            },
            reason: reason.map(str::to_string),
            n,
        }
    }

    #[test]
    fn counts_split_into_kept_eliminated_and_rejected_per_round_and_operation() {
        let counts = [
            count("a", 1, EvolveOp::Deepen, None, 3),
            count("a", 1, EvolveOp::Deepen, Some("evol_no_gain"), 2),
            count("a", 1, EvolveOp::Breadth, Some("rouge_l"), 1),
            count("a", 2, EvolveOp::Breadth, Some("evol_apology"), 4),
            count("b", 1, EvolveOp::Concretize, None, 5),
        ];
        let runs = by_run(&counts);
        let a = &runs["a"];
        assert_eq!(
            (a.tally.evolved, a.tally.kept, a.tally.eliminated_total()),
            (10, 3, 6)
        );
        assert_eq!(a.tally.rejected, BTreeMap::from([("rouge_l".into(), 1)]));
        assert_eq!(a.rounds.len(), 2);
        let deepen = &a.rounds[&1].ops["deepen"];
        assert_eq!((deepen.evolved, deepen.kept), (5, 3));
        assert_eq!(deepen.eliminated["evol_no_gain"], 2);
        assert_eq!(a.rounds[&2].tally.eliminated["evol_apology"], 4);
        assert_eq!(runs["b"].tally.kept, 5);
        let lines = run_lines(&runs);
        assert_eq!(
            lines[0],
            "  a: 10 evolved, 3 kept, 6 eliminated, 1 rejected"
        );
        assert!(lines.iter().any(|l| l.contains("round 2: 4 evolved")));
    }
}
