//! A preference pair: one prompt, the answer preferred and the answer rejected, each with its
//! reasoning and, when a judge graded it, its grade. What `instill pairs` stores, the DPO
//! layouts read and write, and `instill train --dpo` learns from.

use crate::{NoPair, Record};

/// One side of a preference pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The answer's text.
    pub text: String,
    /// The reasoning behind it (a `<think>` block or a server's `reasoning_content`); empty when
    /// there is none.
    pub reasoning: String,
    /// The judge's grade, on its rubric's scale; None when it was never graded (an imported
    /// pair without scores).
    pub score: Option<f64>,
}

impl Answer {
    /// An ungraded answer without reasoning.
    pub fn new(text: impl Into<String>) -> Answer {
        Answer {
            text: text.into(),
            ..Answer::default()
        }
    }
}

/// A prompt with a chosen and a rejected answer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pair {
    /// The prompt: the record's instruction, input, system prompt and earlier exchanges. Its
    /// `output` and `reasoning` are not part of the pair (an imported pair's record holds the
    /// chosen answer there, so that it is also an instruction pair).
    pub prompt: Record,
    /// The preferred answer.
    pub chosen: Answer,
    /// The answer it is preferred to.
    pub rejected: Answer,
}

impl Pair {
    /// The chosen grade minus the rejected one, when both are graded.
    pub fn margin(&self) -> Option<f64> {
        Some(self.chosen.score? - self.rejected.score?)
    }

    /// The instruction record the pair also is: its prompt answered by the chosen answer (what
    /// an import of a pair file stores as the pair's record).
    pub fn into_record(self) -> Record {
        Record {
            output: self.chosen.text,
            reasoning: self.chosen.reasoning,
            ..self.prompt
        }
    }

    /// Whether the pair goes to the validation split of `fraction` under `seed`: core's
    /// [`crate::held_out`] of its prompt alone (output and reasoning left out), so every pair of
    /// one prompt lands on the same side, whatever its answers, and a pair read back from a file
    /// lands where it did in the database.
    pub fn held_out(&self, seed: u64, fraction: f64) -> bool {
        let prompt = Record {
            output: String::new(),
            reasoning: String::new(),
            ..self.prompt.clone()
        };
        crate::held_out(&prompt, seed, fraction)
    }
}

/// Which of K graded answers make the pair: the best and the worst grade, the earliest sample
/// among equal grades on either side, so the same grades always give the same pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pick {
    /// The best answer's sample.
    pub chosen: usize,
    /// The worst answer's sample.
    pub rejected: usize,
    /// Best grade minus worst.
    pub margin: f64,
}

/// The pair among `grades` (one per sample, None: not graded), or why there is none: fewer
/// than two grades, or a gap below `min_margin` (then the best and worst are still returned,
/// for the record). A tie is never a pair, whatever the margin asked for: a pair says one answer
/// is better.
pub fn pick_pair(grades: &[Option<f64>], min_margin: f64) -> (Option<Pick>, Option<NoPair>) {
    let graded: Vec<(usize, f64)> = grades
        .iter()
        .enumerate()
        .filter_map(|(i, g)| g.filter(|g| g.is_finite()).map(|g| (i, g)))
        .collect();
    if graded.len() < 2 {
        return (None, Some(NoPair::TooFewGraded));
    }
    let mut best = graded[0];
    let mut worst = graded[0];
    for &(i, g) in &graded[1..] {
        if g > best.1 {
            best = (i, g);
        }
        if g < worst.1 {
            worst = (i, g);
        }
    }
    let pick = Pick {
        chosen: best.0,
        rejected: worst.0,
        margin: best.1 - worst.1,
    };
    let enough = pick.margin > 0.0 && pick.margin >= min_margin;
    (Some(pick), (!enough).then_some(NoPair::SmallMargin))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_and_worst_grades_make_the_pair_earliest_first_on_ties() {
        let (p, why) = pick_pair(
            &[Some(5.0), Some(9.0), None, Some(2.0), Some(9.0), Some(2.0)],
            1.0,
        );
        assert_eq!(why, None);
        assert_eq!(
            p,
            Some(Pick {
                chosen: 1,
                rejected: 3,
                margin: 7.0
            })
        );
    }

    #[test]
    fn a_small_gap_or_too_few_grades_is_no_pair_and_says_why() {
        let (p, why) = pick_pair(&[Some(7.0), Some(6.5)], 1.0);
        assert_eq!(why, Some(NoPair::SmallMargin));
        assert_eq!(p.map(|p| (p.chosen, p.rejected)), Some((0, 1)));
        assert_eq!(pick_pair(&[Some(7.0), Some(6.0)], 1.0).1, None);
        // Equal grades are never a pair, even with no margin asked for.
        assert_eq!(
            pick_pair(&[Some(3.0), Some(3.0)], 0.0).1,
            Some(NoPair::SmallMargin)
        );
        assert_eq!(
            pick_pair(&[Some(3.0), None, Some(f64::NAN)], 0.0),
            (None, Some(NoPair::TooFewGraded))
        );
        assert_eq!(pick_pair(&[], 0.0), (None, Some(NoPair::TooFewGraded)));
    }
}
