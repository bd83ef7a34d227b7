//! The forward pass the batch loop drives: what an inference engine (candle's [`Model`], or
//! llama.cpp's context with the `llama-cpp` feature) gives the sampler. Tokenizing, sampling,
//! stop rules and the backend contract stay in one place ([`super::engine`]); only this differs.

use candle_core::Tensor;

use super::LocalError;
use super::model::{KvCache, Model};

/// An engine that runs sequences forward and returns next-token logits.
pub trait Forward {
    /// One sequence's state in the engine (its KV cache, or its slot in a shared one).
    type Seq;

    /// Positions a sequence may hold (prompt and reply).
    fn context(&self) -> usize;

    /// Starts one sequence per prompt (each non-empty and shorter than [`Forward::context`]) and
    /// returns them with each prompt's next-token logits, `[prompts, vocab]` in f32.
    fn prefill(&mut self, prompts: &[&[u32]]) -> Result<(Vec<Self::Seq>, Tensor), LocalError>;

    /// Appends `tokens[i]` to `seqs[i]` and returns each one's next-token logits,
    /// `[seqs, vocab]` in f32.
    fn decode(&mut self, tokens: &[u32], seqs: &mut [&mut Self::Seq])
    -> Result<Tensor, LocalError>;

    /// Positions `seq` holds.
    fn len(&self, seq: &Self::Seq) -> usize;

    /// Frees a finished sequence's state.
    fn release(&mut self, seq: Self::Seq);

    /// Frees every sequence's state (after a failed step, when the batch starts afresh).
    fn reset(&mut self);
}

/// candle: each sequence owns its cache; a prompt is prefilled alone (greedy outputs stay as
/// the reference tests pin them), decode steps run all sequences together.
impl Forward for &Model {
    type Seq = KvCache;

    fn context(&self) -> usize {
        self.config().context()
    }

    fn prefill(&mut self, prompts: &[&[u32]]) -> Result<(Vec<KvCache>, Tensor), LocalError> {
        let mut caches = Vec::with_capacity(prompts.len());
        let mut logits = Vec::with_capacity(prompts.len());
        for prompt in prompts {
            let mut cache = self.new_cache();
            logits.push(self.forward(&[*prompt], &mut [&mut cache])?);
            caches.push(cache);
        }
        Ok((caches, Tensor::cat(&logits, 0)?))
    }

    fn decode(&mut self, tokens: &[u32], seqs: &mut [&mut KvCache]) -> Result<Tensor, LocalError> {
        let tokens: Vec<[u32; 1]> = tokens.iter().map(|&t| [t]).collect();
        let refs: Vec<&[u32]> = tokens.iter().map(|t| t.as_slice()).collect();
        self.forward(&refs, seqs)
    }

    fn len(&self, seq: &KvCache) -> usize {
        seq.len()
    }

    fn release(&mut self, _seq: KvCache) {}

    fn reset(&mut self) {}
}

/// An engine borrowed mutably is driven as itself.
impl<F: Forward> Forward for &mut F {
    type Seq = F::Seq;

    fn context(&self) -> usize {
        (**self).context()
    }

    fn prefill(&mut self, prompts: &[&[u32]]) -> Result<(Vec<F::Seq>, Tensor), LocalError> {
        (**self).prefill(prompts)
    }

    fn decode(&mut self, tokens: &[u32], seqs: &mut [&mut F::Seq]) -> Result<Tensor, LocalError> {
        (**self).decode(tokens, seqs)
    }

    fn len(&self, seq: &F::Seq) -> usize {
        (**self).len(seq)
    }

    fn release(&mut self, seq: F::Seq) {
        (**self).release(seq)
    }

    fn reset(&mut self) {
        (**self).reset()
    }
}
