//! Drawing the next token of a sequence. candle's `LogitsProcessor` draws it (its seeded RNG,
//! its softmax, its weighted draw), but the nucleus of top-p sampling is cut here: candle sorts
//! the whole vocabulary for every token (49,152 ids for SmolLM2, milliseconds a token, as long
//! as a decode step of the model), where the nucleus needs only its own few hundred ids in
//! order. The cut is candle's to the bit, so the same seed draws the same tokens.

use candle_core::Tensor;
use candle_transformers::generation::{LogitsProcessor, Sampling};

use super::engine::SeqParams;

/// One sequence's sampler.
pub(crate) struct Sampler {
    draw: LogitsProcessor,
    /// The nucleus mass, when top-p is on (strictly between 0 and 1, temperature above 0).
    top_p: Option<f32>,
    /// Token ids, reordered by each cut.
    ids: Vec<u32>,
}

impl Sampler {
    /// The sampler `params` ask for: greedy at temperature 0, else from the softmax at the
    /// temperature, cut to the nucleus when top-p is below 1.
    pub(crate) fn new(params: &SeqParams) -> Sampler {
        let greedy = params.temperature <= 0.0;
        let nucleus = !greedy && params.top_p > 0.0 && params.top_p < 1.0;
        let sampling = if greedy {
            Sampling::ArgMax
        } else {
            Sampling::All {
                temperature: params.temperature,
            }
        };
        Sampler {
            draw: LogitsProcessor::from_sampling(params.seed, sampling),
            top_p: nucleus.then_some(params.top_p as f32),
            ids: Vec::new(),
        }
    }

    /// The next token from one row of logits.
    pub(crate) fn sample(&mut self, logits: &Tensor) -> candle_core::Result<u32> {
        match self.top_p {
            Some(top_p) => {
                let ids = &mut self.ids;
                self.draw
                    .sample_f(logits, |probs| cut_to_nucleus(probs, top_p, ids))
            }
            None => self.draw.sample(logits),
        }
    }
}

/// Zeroes every probability outside the nucleus, as candle's top-p does: in order of falling
/// probability (equal ones by id, as its stable sort leaves them), a token stays while the mass
/// of the tokens before it is below `top_p` (summed in that order, in f32). Only the largest
/// `k` are put in order, `k` growing fourfold until their mass reaches `top_p`.
fn cut_to_nucleus(probs: &mut [f32], top_p: f32, ids: &mut Vec<u32>) {
    let n = probs.len();
    ids.clear();
    ids.extend(0..n as u32);
    let before = |a: &u32, b: &u32| {
        let (pa, pb) = (probs[*a as usize], probs[*b as usize]);
        pb.total_cmp(&pa).then(a.cmp(b))
    };
    let mut k = n.min(256);
    let kept = loop {
        if k < n {
            ids.select_nth_unstable_by(k - 1, before);
        }
        let top = &mut ids[..k];
        top.sort_unstable_by(before);
        let mut mass = 0f32;
        let reached = top.iter().position(|&id| {
            let full = mass >= top_p;
            mass += probs[id as usize];
            full
        });
        match reached {
            Some(kept) => break kept,
            None if mass >= top_p || k == n => break k,
            None => k = n.min(k * 4),
        }
    };
    let nucleus: Vec<(u32, f32)> = ids[..kept]
        .iter()
        .map(|&id| (id, probs[id as usize]))
        .collect();
    probs.fill(0.0);
    for (id, p) in nucleus {
        probs[id as usize] = p;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Logits of a vocabulary the size of SmolLM2's: flat, peaked, with ties and with a
    /// handful of tokens holding nearly all the mass.
    fn logits(kind: usize, round: u64) -> Vec<f32> {
        let n = 49_152;
        let mut state = round.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ kind as u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        (0..n)
            .map(|i| match kind {
                0 => next() * 2.0,
                1 => next() * 12.0,
                // Ties: a few distinct values only.
                2 => (next() * 4.0).floor(),
                _ => {
                    if i % 9_973 == 0 {
                        20.0 + next()
                    } else {
                        next()
                    }
                }
            })
            .collect()
    }

    /// The same seeds draw the same tokens as candle's own top-p, over distributions of every
    /// shape, several nucleus sizes and temperatures, one sampler drawing many tokens in turn.
    #[test]
    fn draws_the_tokens_candles_top_p_draws() {
        for top_p in [0.05, 0.5, 0.9, 0.95, 0.999] {
            for temperature in [0.3, 0.7, 1.0, 1.5] {
                let params = SeqParams {
                    max_new_tokens: 1,
                    temperature,
                    top_p,
                    seed: 42,
                    stop: Vec::new(),
                    stop_ids: Vec::new(),
                };
                let mut ours = Sampler::new(&params);
                let mut candle = LogitsProcessor::from_sampling(
                    42,
                    Sampling::TopP {
                        p: top_p,
                        temperature,
                    },
                );
                for round in 0..12 {
                    let row = Tensor::new(logits(round as usize % 4, round), &Device::Cpu)
                        .expect("tensor");
                    assert_eq!(
                        ours.sample(&row).expect("ours"),
                        candle.sample(&row).expect("candle"),
                        "top-p {top_p}, temperature {temperature}, round {round}"
                    );
                }
            }
        }
    }

    /// The nucleus itself: the largest probabilities in order until the mass before the next
    /// one reaches top-p, ties by id, and only the kept values left non-zero.
    #[test]
    fn the_nucleus_is_the_largest_tokens_up_to_the_mass() {
        let mut ids = Vec::new();
        let mut probs = vec![0.1, 0.3, 0.1, 0.4, 0.1];
        cut_to_nucleus(&mut probs, 0.75, &mut ids);
        // 0.4 (mass before 0), 0.3 (0.4), then the first 0.1 by id (0.7 < 0.75): id 0.
        assert_eq!(probs, vec![0.1, 0.3, 0.0, 0.4, 0.0]);
        let mut probs = vec![0.25; 4];
        cut_to_nucleus(&mut probs, 1.0, &mut ids);
        assert_eq!(probs, vec![0.25; 4]);
    }
}
