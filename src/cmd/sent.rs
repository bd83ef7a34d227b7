//! What a run's requests came to, as `generate` and `evolve` summarise it: requests stored,
//! failed, retried, sent now or replayed, failed attempts by kind, tokens and cost; the JSON
//! fields (flattened into each command's summary) and the lines both print.

use std::collections::BTreeMap;

use instill_generator::Progress;
use serde::Serialize;

use crate::cli::SendArgs;
use crate::cmd::backend;

/// The request and token counters of a run's summary.
#[derive(Debug, Serialize)]
pub struct Sent<'a> {
    pub requests_ok: u64,
    pub requests_failed: u64,
    pub requests_retried_attempts: u64,
    pub requests_sent_now: u64,
    pub requests_replayed: u64,
    pub errors_by_kind: &'a BTreeMap<String, u64>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// At the `--price-in`/`--price-out` given, if any.
    pub cost: Option<f64>,
}

impl<'a> Sent<'a> {
    /// The counters of `p`, priced with `send`'s prices.
    pub fn new(p: &'a Progress, send: &SendArgs) -> Sent<'a> {
        Sent {
            requests_ok: p.requests_ok,
            requests_failed: p.requests_failed,
            requests_retried_attempts: p.retries,
            requests_sent_now: p.sent_now,
            requests_replayed: p.replayed,
            errors_by_kind: &p.errors,
            prompt_tokens: p.prompt_tokens,
            completion_tokens: p.completion_tokens,
            cost: backend::cost(send, p.prompt_tokens, p.completion_tokens),
        }
    }

    /// Prompt and completion tokens together.
    pub fn tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }

    /// Prints the requests line and a line per kind of failed attempt.
    pub fn print_requests(&self) {
        println!(
            "requests: {} ok, {} failed, {} extra attempts ({} sent now, {} from the stored replies)",
            self.requests_ok,
            self.requests_failed,
            self.requests_retried_attempts,
            self.requests_sent_now,
            self.requests_replayed
        );
        for (k, n) in self.errors_by_kind {
            println!("  failed attempts {k:<16} {n:>8}");
        }
    }

    /// Prints the tokens line, `middle` (e.g. `; 1.20 accepted per 1k tokens`) before the cost.
    pub fn print_tokens(&self, middle: &str) {
        println!(
            "tokens: {} in, {} out{middle}{}",
            self.prompt_tokens,
            self.completion_tokens,
            self.cost
                .map(|c| format!("; cost {c:.4}"))
                .unwrap_or_default()
        );
    }
}
