//! Multi-turn self-chat (`generate --mode chat`): a user simulator and an assistant alternate
//! for K exchanges per conversation, each conversation stored as one record (the earlier
//! exchanges its history, the last one its instruction and output).
//!
//! Turn `t` (0-based; even: the user simulator, odd: the assistant) of conversation `c` is
//! request `c·2K + t` of the run, a [`Script`] run by `turns.rs`: the requests of a conversation
//! are sequential, conversations concurrent; every reply is stored as it arrives, each prompt
//! rendered from the stored replies before it, so a conversation cut off anywhere resumes from
//! its stored turns. Complete conversations are judged in conversation order (rules on the
//! opening exchange, ROUGE-L on the first user turn). On Postgres any number of processes
//! share a chat run.

use std::future::Future;
use std::time::Duration;

use instill_core::{Exchange, Reason, Record, RunKind, SplitMix};
use instill_dedup::{RougeConfig, Rules};
use instill_prompts::{ChatPrompts, Example, clean_turn};
use instill_storage::Db;

use crate::accept::{Acceptor, storable_text};
use crate::backend::Backend;
use crate::run::{GenerateError, Progress, RunReport, Sending, seeds_hash, to_example};
use crate::sampling::choose;
use crate::stage::StageConfig;
use crate::turns::{Limits, Outcome, Reply, Script, run_script};

/// Everything a chat run is told.
#[derive(Debug, Clone)]
pub struct ChatConfig {
    /// The run's unique name (resuming = running the same name again).
    pub name: String,
    /// Stop when this many conversations are accepted.
    pub target: u64,
    /// Exchanges per conversation (at least 1).
    pub turns: u32,
    /// The user simulator's and the assistant's prompts.
    pub prompts: ChatPrompts,
    /// The seed tasks a conversation's opening is inspired by.
    pub seeds: Vec<Record>,
    /// Seed tasks shown in each opening prompt.
    pub seeds_per_prompt: usize,
    /// The run's random seed: conversation c always draws the same seeds.
    pub seed: u64,
    /// How its requests are sent.
    pub send: Sending,
    /// Stop once this many requests are stored in all, before the target; a conversation is
    /// begun only when all its requests fit.
    pub max_requests: Option<u64>,
    /// The quality rules (on each conversation's opening exchange).
    pub rules: Rules,
    /// The ROUGE-L rule (on each conversation's first user turn).
    pub rouge: RougeConfig,
    /// Postgres: how long this process's claim on a turn lives without a heartbeat (a killed
    /// process's turns go to the others after this).
    pub lease: Duration,
}

impl ChatConfig {
    /// Requests per conversation: a user turn and an answer per exchange.
    fn per_conversation(&self) -> i64 {
        2 * i64::from(self.turns)
    }

    /// The stage every turn runs on: its settings are the run's fingerprint (with the model and
    /// the request parameters), which a resumed run must match.
    fn stage(&self) -> StageConfig {
        StageConfig {
            name: self.name.clone(),
            kind: RunKind::Generate,
            settings: serde_json::json!({
                "mode": "chat",
                "turns": self.turns,
                "prompts": self.prompts.name(),
                "prompts_hash": self.prompts.hash(),
                "seeds_hash": seeds_hash(&self.seeds),
                "seeds": self.seeds.len(),
                "seeds_per_prompt": self.seeds_per_prompt,
                "seed": self.seed,
                "rouge_threshold": self.rouge.threshold,
                "tokenizer": self.rouge.tokenizer.name(),
                "rules": format!("{:032x}", xxhash_rust::xxh3::xxh3_128(self.rules.to_toml().as_bytes())),
            }),
            send: self.send.clone(),
            seed: None,
        }
    }

    /// The seed tasks conversation `c`'s opening shows.
    fn examples(&self, c: i64) -> Vec<Example> {
        let mut rng = SplitMix::for_request(self.seed, c as u64);
        choose(&mut rng, self.seeds.len(), self.seeds_per_prompt)
            .into_iter()
            .map(|i| to_example(&self.seeds[i]))
            .collect()
    }
}

/// Runs (or resumes) a chat run until the target, `max_requests`, or `shutdown`: on Postgres as
/// one of any number of processes sharing it.
pub async fn run_chat(
    db: &Db,
    backend: &Backend,
    cfg: ChatConfig,
    shutdown: impl Future<Output = ()>,
    on_progress: impl FnMut(&Progress),
) -> Result<RunReport, GenerateError> {
    check(&cfg)?;
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

/// Refuses settings a chat run cannot work with.
fn check(cfg: &ChatConfig) -> Result<(), GenerateError> {
    if cfg.seeds.is_empty() {
        return Err(GenerateError::NoSeeds);
    }
    if cfg.turns == 0 {
        return Err(GenerateError::Config(
            "a conversation needs at least one exchange (turns ≥ 1)".into(),
        ));
    }
    if cfg.send.request.n != 1 {
        return Err(GenerateError::Config(format!(
            "a conversation goes on from one reply per turn: n must be 1, not {}",
            cfg.send.request.n
        )));
    }
    Ok(())
}

impl Script for ChatConfig {
    fn name(&self) -> &str {
        &self.name
    }

    fn per_item(&self) -> i64 {
        self.per_conversation()
    }

    /// The user simulator's prompt (even turns) or the assistant's (odd ones), rendered from
    /// the turns so far; none after the last.
    fn prompt(&self, c: i64, said: &[Reply]) -> Result<Option<String>, GenerateError> {
        // Done after the last turn, or after a turn cut off at the token limit (what would
        // follow it answers half a message).
        if said.len() as i64 >= self.per_conversation() || said.iter().any(Reply::cut_off) {
            return Ok(None);
        }
        // What no database stores (NUL) never reaches a stored prompt; the record keeps the
        // reply as it came, and is rejected as unstorable.
        let said: Vec<String> = said
            .iter()
            .map(|s| clean_turn(&storable_text(&s.text)))
            .collect();
        let exchanges = pairs(&said);
        let rendered = if said.len().is_multiple_of(2) {
            self.prompts.user(&self.examples(c), &exchanges)
        } else {
            let question = said.last().map_or("", String::as_str);
            self.prompts.assistant(&exchanges, question)
        };
        rendered
            .map(Some)
            .map_err(|e| GenerateError::Config(e.to_string()))
    }

    /// The conversation as a record, the last answer's reasoning with it; refused as `cut_off`
    /// when a turn was cut off at the token limit (the turns so far, a pending question as the
    /// instruction).
    fn outcome(&self, replies: &[Reply]) -> Outcome {
        let mut said: Vec<String> = replies.iter().map(|s| clean_turn(&s.text)).collect();
        if said.len() % 2 == 1 {
            said.push(String::new());
        }
        let mut record = conversation(&said);
        if replies.iter().any(Reply::cut_off) {
            return Outcome::Refused(record, Reason::CutOff);
        }
        record.reasoning = replies
            .last()
            .map(|r| r.reasoning.clone())
            .unwrap_or_default();
        Outcome::Judge(record)
    }

    fn acceptor(&self) -> Acceptor {
        Acceptor::new(self.rules.clone(), self.rouge, &self.seeds)
    }
}

/// Alternating turns (user, assistant, user, …) as exchanges; a trailing user turn is left out.
fn pairs(said: &[String]) -> Vec<Exchange> {
    said.chunks_exact(2)
        .map(|p| Exchange(p[0].clone(), p[1].clone()))
        .collect()
}

/// A whole conversation (an even number of turns) as a record: the last exchange its
/// instruction and output, the earlier ones its history.
fn conversation(said: &[String]) -> Record {
    let mut history = pairs(said);
    let last = history
        .pop()
        .unwrap_or_else(|| Exchange(String::new(), String::new()));
    Record {
        instruction: last.0,
        output: last.1,
        history,
        ..Record::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_become_one_record_with_the_earlier_exchanges_as_history() {
        let said: Vec<String> = ["u1", "a1", "u2", "a2", "u3", "a3"]
            .map(String::from)
            .to_vec();
        let r = conversation(&said);
        assert_eq!((r.instruction.as_str(), r.output.as_str()), ("u3", "a3"));
        assert_eq!(
            r.history,
            vec![
                Exchange("u1".into(), "a1".into()),
                Exchange("u2".into(), "a2".into())
            ]
        );
        let one = conversation(&said[..2]);
        assert_eq!((one.instruction.as_str(), one.history.len()), ("u1", 0));
        // Before an answer: the exchanges so far, the pending question left out.
        assert_eq!(pairs(&said[..3]).len(), 1);
    }
}
