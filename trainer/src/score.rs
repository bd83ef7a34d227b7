//! Answer losses per sample, for perplexity and IFD (instruction-following difficulty, Li et al.
//! 2024, "From Quantity to Quality", and their Cherry_LLM code): the mean NLL of an answer's
//! tokens after its prompt, and after only a short context ("the answer alone": BOS and/or the
//! template's response marker, as Cherry_LLM scores `'### Response:' + output` behind BOS).
//!
//! Perplexity is `exp(given)`; IFD is `given / alone`. Both sequences of a sample are cut to the
//! same answer tokens: the prompt keeps all of its tokens and the answer its first
//! `max_len − prompt` (the cut training makes, [`crate::Example::new`]); the answer alone is
//! scored on exactly those tokens, as Cherry_LLM cuts its answer-alone text to
//! `max_length − instruction + marker`. Sequences are grouped by length into padded batches under
//! a token budget and run without gradients (build the model with [`Model::frozen`]); the loss
//! is the trainer's ([`crate::masked_nll_rows`], the rows of [`crate::masked_nll`]), by
//! [`Model::answer_nll_rows`]'s fast pass.

use candle_core::Device;

use crate::TrainError;
use crate::data::{Example, make_batch, token_buckets};
use crate::model::Model;

/// One sample to score, as token ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Everything before the answer, as it is trained: the rendered prompt.
    pub prompt: Vec<u32>,
    /// What precedes the answer when it is scored alone: BOS and/or the response marker.
    pub alone: Vec<u32>,
    /// The answer (as trained: its text's tokens, then EOS).
    pub answer: Vec<u32>,
}

/// How to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreConfig {
    /// Tokens of prompt plus answer at most; the answer's tail is cut to fit.
    pub max_len: usize,
    /// Padded tokens per forward pass at most (sequences × the longest): bounds memory, which
    /// the logits (tokens × vocabulary) dominate.
    pub batch_tokens: usize,
    /// Also score the answer alone (IFD needs it; perplexity does not).
    pub alone: bool,
}

/// A sample's answer losses (mean NLL per answer token, in nats).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Losses {
    /// Given the prompt.
    pub given: f64,
    /// Alone, when asked for.
    pub alone: Option<f64>,
    /// Answer tokens scored.
    pub tokens: usize,
    /// Whether the answer was cut to fit `max_len`.
    pub truncated: bool,
}

impl Losses {
    /// Perplexity of the answer given the prompt: `exp(given)`.
    pub fn ppl(&self) -> f64 {
        self.given.exp()
    }

    /// Instruction-following difficulty: `given / alone` (below 1 when the prompt helps).
    pub fn ifd(&self) -> Option<f64> {
        self.alone.map(|alone| self.given / alone)
    }
}

/// Why one sample has no losses (the others are scored).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// No answer token to score.
    #[error("the answer has no tokens")]
    EmptyAnswer,
    /// No prompt token to predict the answer's first token from.
    #[error("the prompt has no tokens")]
    EmptyPrompt,
    /// No context token for the answer alone (no BOS and no response marker).
    #[error("the answer alone has no context token (the model has no BOS and no response marker)")]
    EmptyAloneContext,
    /// The prompt leaves no room for an answer token.
    #[error("the prompt has {prompt} tokens, leaving no room for an answer token within {max_len}")]
    PromptTooLong {
        /// The prompt's tokens.
        prompt: usize,
        /// The limit.
        max_len: usize,
    },
}

impl SampleError {
    /// A short fixed key for counting samples by why they have no losses (the message itself
    /// may carry numbers).
    pub fn kind(&self) -> &'static str {
        match self {
            SampleError::EmptyAnswer => "empty answer",
            SampleError::EmptyPrompt => "empty prompt",
            SampleError::EmptyAloneContext => "no context for the answer alone",
            SampleError::PromptTooLong { .. } => "prompt too long for --max-len",
        }
    }
}

/// Which loss a scored sequence gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Given,
    Alone,
}

/// Scores `samples` with `model`: per sample, its losses or why it has none, in order.
/// `on_batch(done, total)` sees the sequences scored so far after every forward pass.
pub fn score(
    model: &Model,
    samples: &[Sample],
    cfg: &ScoreConfig,
    device: &Device,
    mut on_batch: impl FnMut(usize, usize),
) -> Result<Vec<Result<Losses, SampleError>>, TrainError> {
    let mut out: Vec<Result<Losses, SampleError>> = Vec::with_capacity(samples.len());
    let mut sequences = Vec::new();
    let mut owners = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        match answer_tokens(s, cfg) {
            Ok(n) => {
                out.push(Ok(Losses {
                    given: f64::NAN,
                    alone: None,
                    tokens: n,
                    truncated: n < s.answer.len(),
                }));
                sequences.push(sequence(&s.prompt, &s.answer[..n]));
                owners.push((i, Side::Given));
                if cfg.alone {
                    sequences.push(sequence(&s.alone, &s.answer[..n]));
                    owners.push((i, Side::Alone));
                }
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let mut done = 0;
    for members in token_buckets(&sequences, cfg.batch_tokens.max(1)) {
        let batch = make_batch(&sequences, &members, device)?;
        let rows = model.answer_nll_rows(&batch.ids, &batch.weights)?;
        for (&m, loss) in members.iter().zip(rows) {
            let (i, side) = owners[m];
            if let Some(Ok(l)) = out.get_mut(i) {
                match side {
                    Side::Given => l.given = f64::from(loss),
                    Side::Alone => l.alone = Some(f64::from(loss)),
                }
            }
        }
        done += members.len();
        on_batch(done, sequences.len());
    }
    Ok(out)
}

/// The answer tokens a sample is scored on, or why it cannot be.
fn answer_tokens(s: &Sample, cfg: &ScoreConfig) -> Result<usize, SampleError> {
    if s.answer.is_empty() {
        return Err(SampleError::EmptyAnswer);
    }
    if s.prompt.is_empty() {
        return Err(SampleError::EmptyPrompt);
    }
    if cfg.alone && s.alone.is_empty() {
        return Err(SampleError::EmptyAloneContext);
    }
    if s.prompt.len() >= cfg.max_len {
        return Err(SampleError::PromptTooLong {
            prompt: s.prompt.len(),
            max_len: cfg.max_len,
        });
    }
    Ok(s.answer.len().min(cfg.max_len - s.prompt.len()))
}

/// A context then answer tokens, the answer's predictions counted.
fn sequence(context: &[u32], answer: &[u32]) -> Example {
    let mut ids = Vec::with_capacity(context.len() + answer.len());
    ids.extend_from_slice(context);
    ids.extend_from_slice(answer);
    Example {
        ids,
        response_start: context.len(),
    }
}
