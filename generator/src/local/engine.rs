//! Batched generation over any [`Forward`] engine: sequences join whenever a slot is free (those
//! joining together are prefilled in one forward call, then one shared decode step per token for
//! all of them), sample with their own seeded RNG, and leave on EOS, a stop string, max new
//! tokens or the context limit.

use super::LocalError;
use super::forward::Forward;
use super::sampler::Sampler;
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

struct Active<S> {
    tag: u64,
    params: SeqParams,
    state: S,
    sampler: Sampler,
    ids: Vec<u32>,
    next: u32,
}

/// The sequences being generated together; `S` is the engine's per-sequence state
/// ([`Forward::Seq`]).
pub struct Batch<S> {
    active: Vec<Active<S>>,
}

impl<S> Default for Batch<S> {
    fn default() -> Self {
        Batch { active: Vec::new() }
    }
}

impl<S> std::fmt::Debug for Batch<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("active", &self.active.len())
            .finish()
    }
}

/// A sequence waiting to join: the caller's tag, its prompt and how to generate it.
pub type Admission<'a> = (u64, &'a [u32], SeqParams);

impl<S> Batch<S> {
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
    pub fn admit<F: Forward<Seq = S>>(
        &mut self,
        model: &mut F,
        codec: &Codec,
        tag: u64,
        prompt: &[u32],
        params: SeqParams,
    ) -> Result<Option<Finished>, LocalError> {
        let mut out = self.admit_all(model, codec, vec![(tag, prompt, params)])?;
        out.pop()
            .unwrap_or_else(|| Err(LocalError::Internal("no admission result".into())))
    }

    /// Prefills every admission together (one forward call) and adds them; per admission (in
    /// order) `Some` when it finished at once, or why it was refused (a prompt that is empty or
    /// does not fit the context). The outer error is the forward pass failing.
    #[allow(clippy::type_complexity)]
    pub fn admit_all<F: Forward<Seq = S>>(
        &mut self,
        model: &mut F,
        codec: &Codec,
        admissions: Vec<Admission<'_>>,
    ) -> Result<Vec<Result<Option<Finished>, LocalError>>, LocalError> {
        let limit = model.context();
        let mut out: Vec<Result<Option<Finished>, LocalError>> = Vec::new();
        let mut fitting = Vec::new();
        for (i, (tag, prompt, params)) in admissions.into_iter().enumerate() {
            if prompt.is_empty() || prompt.len() >= limit {
                out.push(Err(LocalError::ContextLength {
                    needed: prompt.len() + 1,
                    limit,
                }));
            } else {
                out.push(Ok(None));
                fitting.push((i, tag, prompt, params));
            }
        }
        if fitting.is_empty() {
            return Ok(out);
        }
        let prompts: Vec<&[u32]> = fitting.iter().map(|f| f.2).collect();
        let (states, logits) = model.prefill(&prompts)?;
        for ((row, (i, tag, _, params)), state) in fitting.into_iter().enumerate().zip(states) {
            let mut sampler = Sampler::new(&params);
            let next = sampler.sample(&logits.get(row)?)?;
            let mut seq = Active {
                tag,
                params,
                state,
                sampler,
                ids: Vec::new(),
                next,
            };
            let len = model.len(&seq.state);
            match accept_token(&mut seq, codec, len, limit)? {
                Some(done) => {
                    model.release(seq.state);
                    out[i] = Ok(Some(done));
                }
                None => self.active.push(seq),
            }
        }
        Ok(out)
    }

    /// One decode step for every active sequence; returns those that finished.
    pub fn step<F: Forward<Seq = S>>(
        &mut self,
        model: &mut F,
        codec: &Codec,
    ) -> Result<Vec<Finished>, LocalError> {
        if self.active.is_empty() {
            return Ok(Vec::new());
        }
        let tokens: Vec<u32> = self.active.iter().map(|s| s.next).collect();
        let logits = {
            let mut states: Vec<&mut S> = self.active.iter_mut().map(|s| &mut s.state).collect();
            model.decode(&tokens, &mut states)?
        };
        let limit = model.context();
        let mut finished = Vec::new();
        let mut kept = Vec::with_capacity(self.active.len());
        for (i, mut seq) in std::mem::take(&mut self.active).into_iter().enumerate() {
            seq.next = seq.sampler.sample(&logits.get(i)?)?;
            let len = model.len(&seq.state);
            match accept_token(&mut seq, codec, len, limit)? {
                Some(done) => {
                    model.release(seq.state);
                    finished.push(done);
                }
                None => kept.push(seq),
            }
        }
        self.active = kept;
        Ok(finished)
    }

    /// Drops every sequence and frees their state in the engine (after a failed step).
    pub fn clear<F: Forward<Seq = S>>(&mut self, model: &mut F) {
        self.active.clear();
        model.reset();
    }
}

/// Takes the sampled `seq.next` into the sequence; `Some` when the sequence ends here.
fn accept_token<S>(
    seq: &mut Active<S>,
    codec: &Codec,
    cached: usize,
    limit: usize,
) -> Result<Option<Finished>, LocalError> {
    let finish = |seq: &mut Active<S>, text: String, reason: &'static str| Finished {
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
    // The next step would feed `next` at position `cached`: it must fit in the context.
    if seq.ids.len() >= seq.params.max_new_tokens || cached + 1 >= limit {
        let text = codec.decode(&seq.ids)?;
        return Ok(Some(finish(seq, text, "length")));
    }
    Ok(None)
}

/// Generates every prompt to the end, `batch_size` at a time; results in input order.
pub fn generate_all<F: Forward>(
    mut model: F,
    codec: &Codec,
    prompts: &[(Vec<u32>, SeqParams)],
    batch_size: usize,
) -> Result<Vec<Finished>, LocalError> {
    let mut batch = Batch::default();
    let mut done: Vec<Option<Finished>> = vec![None; prompts.len()];
    let mut queue = prompts.iter().enumerate();
    loop {
        // Fill the free slots (again when some joined and finished at once).
        loop {
            let room = batch_size.max(1) - batch.len();
            let joining: Vec<Admission> = queue
                .by_ref()
                .take(room)
                .map(|(i, (prompt, params))| (i as u64, prompt.as_slice(), params.clone()))
                .collect();
            if joining.is_empty() {
                break;
            }
            let tags: Vec<u64> = joining.iter().map(|a| a.0).collect();
            let results = batch.admit_all(&mut model, codec, joining)?;
            for (tag, result) in tags.into_iter().zip(results) {
                if let Some(f) = result? {
                    done[tag as usize] = Some(f);
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        for f in batch.step(&mut model, codec)? {
            let i = f.tag as usize;
            done[i] = Some(f);
        }
    }
    done.into_iter()
        .map(|f| f.ok_or_else(|| LocalError::Internal("a sequence never finished".into())))
        .collect()
}
