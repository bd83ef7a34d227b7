//! `instill eval --compare A B`: pairwise judging of two stored evaluations (in progress).

use crate::Outcome;
use crate::cli::{EvalArgs, GlobalArgs};

pub async fn run(_g: &GlobalArgs, _a: &EvalArgs, labels: &[String]) -> anyhow::Result<Outcome> {
    anyhow::bail!("--compare {}: being built", labels.join(" "))
}
