//! Magpie (`generate --mode magpie`): no seeds. The model is given only the text before a
//! user's turn of its own chat template ([`MagpieTemplate`]'s pre-query text) and continues it:
//! what it writes is a user's instruction. The instruction is then answered in the normal chat
//! rendering (the same system prompt). Both steps are raw continuations of text this module
//! renders, so the backend is a completion one (a local model, or a server's `/completions`).
//!
//! Item `k` is requests `2k` (instruction) and `2k + 1` (answer) of the run, a [`Script`] run
//! by `turns.rs`, so a run killed anywhere resumes from the stored replies, and on Postgres any
//! number of processes share it. Every request is
//! sent with its own sampling seed drawn by `(--seed, idx)`: the instruction prompts are all the
//! same text, and without it a seeded sampler would write the same instruction every time. An
//! instruction cut off at the token limit is rejected as `cut_off`, an empty one as
//! `empty_turn`, neither answered; the others are judged like generated tasks (rules, exact
//! dedup, ROUGE-L) and stored with the system prompt given.

use std::future::Future;
use std::time::Duration;

use instill_core::{Reason, Record, RunKind};
use instill_dedup::{RougeConfig, Rules};
use instill_storage::Db;

use crate::accept::{Acceptor, storable_text};
use crate::backend::Backend;
use crate::magpie_template::MagpieTemplate;
use crate::run::{GenerateError, Progress, RunReport, Sending};
use crate::stage::StageConfig;
use crate::turns::{Limits, Outcome, Reply, Script, run_script};

/// Everything a magpie run is told.
#[derive(Debug, Clone)]
pub struct MagpieConfig {
    /// The run's unique name (resuming = running the same name again).
    pub name: String,
    /// Stop when this many records are accepted.
    pub target: u64,
    /// The prompts, derived from the model's chat template.
    pub template: MagpieTemplate,
    /// The run's random seed: request i is always sampled with the same seed.
    pub seed: u64,
    /// How its requests are sent.
    pub send: Sending,
    /// Stop once this many requests are stored in all, before the target.
    pub max_requests: Option<u64>,
    /// The quality rules.
    pub rules: Rules,
    /// The ROUGE-L rule.
    pub rouge: RougeConfig,
    /// Postgres: how long this process's claim on a request lives without a heartbeat (a
    /// killed process's requests go to the others after this).
    pub lease: Duration,
}

/// Requests per item: the instruction, then its answer.
const PER_ITEM: i64 = 2;

impl MagpieConfig {
    /// The stage both steps run on: its settings (the derived pre-query text and stop markers,
    /// the system prompt, the seed, the judging rules) with the model and the request
    /// parameters are the run's fingerprint and its provenance.
    fn stage(&self) -> StageConfig {
        let t = &self.template;
        let mut request = self.send.request.clone();
        for stop in &t.stops {
            if !request.stop.contains(stop) {
                request.stop.push(stop.clone());
            }
        }
        StageConfig {
            name: self.name.clone(),
            kind: RunKind::Generate,
            settings: serde_json::json!({
                "mode": "magpie",
                "pre_query": t.pre_query,
                "system": t.system,
                "template_hash": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(t.template.source.as_bytes())),
                "seed": self.seed,
                "rouge_threshold": self.rouge.threshold,
                "tokenizer": self.rouge.tokenizer.name(),
                "rules": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(self.rules.to_toml().as_bytes())),
            }),
            send: Sending {
                request,
                ..self.send.clone()
            },
            seed: Some(self.seed),
        }
    }
}

/// Runs (or resumes) a magpie run until the target, `max_requests`, or `shutdown`.
pub async fn run_magpie(
    db: &Db,
    backend: &Backend,
    cfg: MagpieConfig,
    shutdown: impl Future<Output = ()>,
    on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    if cfg.send.request.n != 1 {
        return Err(GenerateError::Config(format!(
            "an instruction is answered from one reply: n must be 1, not {}",
            cfg.send.request.n
        )));
    }
    let limits = Limits {
        target: cfg.target,
        max_requests: cfg.max_requests,
        lease: cfg.lease,
    };
    run_script(
        db,
        backend,
        &cfg,
        cfg.stage(),
        limits,
        shutdown,
        on_progress,
    )
    .await
}

impl Script for MagpieConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn per_item(&self) -> i64 {
        PER_ITEM
    }

    /// The pre-query text; then, for an instruction worth answering, the answer's prompt.
    fn prompt(&self, _item: i64, said: &[Reply]) -> Result<Option<String>, GenerateError> {
        let Some(reply) = said.first() else {
            return Ok(Some(self.template.pre_query.clone()));
        };
        if said.len() > 1 {
            return Ok(None);
        }
        let Ok(instruction) = instruction(reply) else {
            return Ok(None);
        };
        // What no database stores (NUL) never reaches a stored prompt; the record keeps the
        // instruction as it came, and is rejected as unstorable.
        self.template
            .answer_prompt(&storable_text(&instruction))
            .map(Some)
            .map_err(|e| GenerateError::Config(e.to_string()))
    }

    /// An instruction cut off or empty is refused unanswered, an answer cut off refused; the
    /// others are judged, the answer's reasoning with them.
    fn outcome(&self, said: &[Reply]) -> Outcome {
        let mut record = self.record(said);
        match (said.first().map(instruction), said.get(1)) {
            (Some(Err(reason)), _) => Outcome::Refused(record, reason),
            (_, Some(answer)) if answer.cut_off() => Outcome::Refused(record, Reason::CutOff),
            (_, answer) => {
                record.reasoning = answer.map(|a| a.reasoning.clone()).unwrap_or_default();
                Outcome::Judge(record)
            }
        }
    }

    fn acceptor(&self) -> Acceptor {
        Acceptor::new(self.rules.clone(), self.rouge, &[])
    }
}

impl MagpieConfig {
    /// The record of an item: its instruction and answer (as far as they go) and the system
    /// prompt given.
    fn record(&self, said: &[Reply]) -> Record {
        Record {
            instruction: said.first().map_or("", |r| r.text.trim()).to_string(),
            output: said.get(1).map_or("", |r| r.text.trim()).to_string(),
            system: self.template.system.clone().unwrap_or_default(),
            ..Record::default()
        }
    }
}

/// The instruction a step-1 reply holds (trimmed), or why it is rejected unanswered.
fn instruction(reply: &Reply) -> Result<String, Reason> {
    let text = reply.text.trim();
    if reply.cut_off() {
        Err(Reason::CutOff)
    } else if text.is_empty() {
        Err(Reason::EmptyTurn)
    } else {
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str, finish: &str) -> Reply {
        Reply {
            text: text.into(),
            reasoning: String::new(),
            finish_reason: finish.into(),
        }
    }

    #[test]
    fn an_instruction_cut_off_or_empty_is_rejected_with_its_reason() {
        assert_eq!(
            instruction(&reply("  Name three rivers.\n", "stop")),
            Ok("Name three rivers.".into())
        );
        assert_eq!(
            instruction(&reply("Name three", "length")),
            Err(Reason::CutOff)
        );
        assert_eq!(instruction(&reply(" \n ", "stop")), Err(Reason::EmptyTurn));
    }
}
