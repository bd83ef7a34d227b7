//! `instill score --metric ppl|ifd`: answer perplexity and IFD with a local candle model.

use instill_core::ScoreMethod;

use crate::Outcome;
use crate::cli::{GlobalArgs, ScoreArgs};

pub async fn run(
    _global: &GlobalArgs,
    _args: &ScoreArgs,
    method: ScoreMethod,
) -> anyhow::Result<Outcome> {
    anyhow::bail!("--metric {method}: being wired in")
}
