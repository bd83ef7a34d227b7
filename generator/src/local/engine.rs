//! Batched generation: sequences join whenever a slot is free (prefill alone, then one shared
//! decode step per token for all of them), sample with their own seeded RNG, and leave on EOS,
//! a stop string, max new tokens or the context limit.

use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::LocalError;
use super::model::{KvCache, Model};
use instill_models::Codec;

/// How one sequence is generated.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqParams {
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    /// Nucleus mass (1 = off).
    pub top_p: f64,
    /// RNG seed of this sequence's sampler.
    pub seed: u64,
    /// Strings that end the reply (not included in it).
    pub stop: Vec<String>,
    /// Special tokens that end the reply: the stop strings that are one special token, which
    /// decoded text never shows (`<end_of_turn>`, `[/INST]` in a v3 Mistral tokenizer).
    pub stop_ids: Vec<u32>,
}

/// A finished sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The caller's tag.
    pub tag: u64,
    /// Generated token ids (EOS excluded).
    pub ids: Vec<u32>,
    /// Their text, cut at the first stop string.
    pub text: String,
    /// `stop` (EOS or a stop string) or `length`.
    pub finish_reason: &'static str,
}

struct Active {
    tag: u64,
    params: SeqParams,
    cache: KvCache,
    sampler: LogitsProcessor,
    ids: Vec<u32>,
    next: u32,
}

/// The sequences being generated together.
#[derive(Default)]
pub struct Batch {
    active: Vec<Active>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("active", &self.active.len())
            .finish()
    }
}

fn sampler(params: &SeqParams) -> LogitsProcessor {
    let sampling = if params.temperature <= 0.0 {
        Sampling::ArgMax
    } else if params.top_p > 0.0 && params.top_p < 1.0 {
        Sampling::TopP {
            p: params.top_p,
            temperature: params.temperature,
        }
    } else {
        Sampling::All {
            temperature: params.temperature,
        }
    };
    LogitsProcessor::from_sampling(params.seed, sampling)
}

impl Batch {
    /// Sequences in flight.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }

    /// Prefills `prompt` and adds the sequence; returns it at once when it is already finished
    /// (its first token ends it, or `max_new_tokens` is 0).
    pub fn admit(
        &mut self,
        model: &Model,
        codec: &Codec,
        tag: u64,
        prompt: &[u32],
        params: SeqParams,
    ) -> Result<Option<Finished>, LocalError> {
        let limit = model.config().context();
        if prompt.is_empty() || prompt.len() >= limit {
            return Err(LocalError::ContextLength {
                needed: prompt.len() + 1,
                limit,
            });
        }
        let mut cache = model.new_cache();
        let logits = model.forward(&[prompt], &mut [&mut cache])?;
        let mut sampler = sampler(&params);
        let next = sampler.sample(&logits.squeeze(0)?)?;
        let mut seq = Active {
            tag,
            params,
            cache,
            sampler,
            ids: Vec::new(),
            next,
        };
        match accept_token(&mut seq, codec, limit)? {
            Some(done) => Ok(Some(done)),
            None => {
                self.active.push(seq);
                Ok(None)
            }
        }
    }

    /// One decode step for every active sequence; returns those that finished.
    pub fn step(&mut self, model: &Model, codec: &Codec) -> Result<Vec<Finished>, LocalError> {
        if self.active.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<[u32; 1]> = self.active.iter().map(|s| [s.next]).collect();
        let token_refs: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
        let logits = {
            let mut caches: Vec<&mut KvCache> =
                self.active.iter_mut().map(|s| &mut s.cache).collect();
            model.forward(&token_refs, &mut caches)?
        };
        let limit = model.config().context();
        let mut finished = Vec::new();
        let mut kept = Vec::with_capacity(self.active.len());
        for (i, mut seq) in std::mem::take(&mut self.active).into_iter().enumerate() {
            seq.next = seq.sampler.sample(&logits.get(i)?)?;
            match accept_token(&mut seq, codec, limit)? {
                Some(done) => finished.push(done),
                None => kept.push(seq),
            }
        }
        self.active = kept;
        Ok(finished)
    }
}

/// Takes the sampled `seq.next` into the sequence; `Some` when the sequence ends here.
fn accept_token(
    seq: &mut Active,
    codec: &Codec,
    limit: usize,
) -> Result<Option<Finished>, LocalError> {
    let finish = |seq: &mut Active, text: String, reason: &'static str| Finished {
        tag: seq.tag,
        ids: std::mem::take(&mut seq.ids),
        text,
        finish_reason: reason,
    };
    if codec.eos_ids.contains(&seq.next) || seq.params.stop_ids.contains(&seq.next) {
        let text = codec.decode(&seq.ids)?;
        return Ok(Some(finish(seq, text, "stop")));
    }
    seq.ids.push(seq.next);
    if !seq.params.stop.is_empty() {
        let text = codec.decode(&seq.ids)?;
        if let Some(cut) = seq
            .params
            .stop
            .iter()
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            let text = text[..cut].to_string();
            return Ok(Some(finish(seq, text, "stop")));
        }
    }
    // The next step would feed `next` at position cache.len(): it must fit in the context.
    if seq.ids.len() >= seq.params.max_new_tokens || seq.cache.len() + 1 >= limit {
        let text = codec.decode(&seq.ids)?;
        return Ok(Some(finish(seq, text, "length")));
    }
    Ok(None)
}

/// Generates every prompt to the end, `batch_size` at a time; results in input order.
pub fn generate_all(
    model: &Model,
    codec: &Codec,
    prompts: &[(Vec<u32>, SeqParams)],
    batch_size: usize,
) -> Result<Vec<Finished>, LocalError> {
    let mut batch = Batch::default();
    let mut done: Vec<Option<Finished>> = vec![None; prompts.len()];
    let mut queue = prompts.iter().enumerate();
    loop {
        while batch.len() < batch_size.max(1) {
            let Some((i, (prompt, params))) = queue.next() else {
                break;
            };
            if let Some(f) = batch.admit(model, codec, i as u64, prompt, params.clone())? {
                done[i] = Some(f);
            }
        }
        if batch.is_empty() {
            break;
        }
        for f in batch.step(model, codec)? {
            let i = f.tag as usize;
            done[i] = Some(f);
        }
    }
    done.into_iter()
        .map(|f| f.ok_or_else(|| LocalError::Internal("a sequence never finished".into())))
        .collect()
}
