//! Training examples (token ids plus which next-token predictions count), preference pairs (a
//! prompt with a chosen and a rejected response), and length-bucketed, right-padded batches in a
//! seeded order.

use candle_core::{Device, Tensor};

use crate::TrainError;
use instill_core::SplitMix;

/// One tokenized example: prompt then response (ending with EOS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Tokens before this index are the prompt; the rest are learned.
    pub response_start: usize,
}

impl Example {
    /// Prompt and response ids, truncated to `max_len` (the response loses its tail); `None`
    /// when the prompt alone leaves no room for a response token.
    pub fn new(prompt: Vec<u32>, response: &[u32], max_len: usize) -> Option<Example> {
        if prompt.is_empty() || prompt.len() >= max_len || response.is_empty() {
            return None;
        }
        let start = prompt.len();
        let mut ids = prompt;
        ids.extend_from_slice(&response[..response.len().min(max_len - start)]);
        Some(Example {
            ids,
            response_start: start,
        })
    }

    /// Tokens whose prediction is learned.
    pub fn learned(&self) -> usize {
        self.ids.len() - self.response_start
    }
}

/// One tokenized preference pair: a prompt with the response preferred (chosen) and the one
/// not (rejected), each ending with EOS. Both sides are kept as [`Example`]s sharing the prompt,
/// so a pair's rows are batched, masked and truncated exactly as supervised examples are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairExample {
    /// Prompt then the chosen response.
    pub chosen: Example,
    /// Prompt then the rejected response.
    pub rejected: Example,
}

impl PairExample {
    /// Prompt and both responses' ids, each side truncated to `max_len` as [`Example::new`]
    /// does (the prompt kept whole, a response losing its tail); `None` when the prompt alone
    /// leaves no room for a response token, or a response is empty.
    pub fn new(
        prompt: Vec<u32>,
        chosen: &[u32],
        rejected: &[u32],
        max_len: usize,
    ) -> Option<PairExample> {
        let chosen = Example::new(prompt.clone(), chosen, max_len)?;
        let rejected = Example::new(prompt, rejected, max_len)?;
        Some(PairExample { chosen, rejected })
    }

    /// The longer side's tokens: what the pair pads to.
    pub fn len(&self) -> usize {
        self.chosen.ids.len().max(self.rejected.ids.len())
    }

    /// Never true: both sides hold a prompt and a response token (see [`PairExample::new`]).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A padded batch: ids `[B, T]` and weights `[B, T]` (1 at t when token t+1 is learned).
#[derive(Debug)]
pub struct Batch {
    /// Token ids, right-padded.
    pub ids: Tensor,
    /// Loss weights.
    pub weights: Tensor,
    /// Real (unpadded) tokens.
    pub tokens: usize,
}

/// Groups example indices into batches of similar length: sorted by length, cut into runs of
/// `batch_size`, so padding stays small. The batch order is shuffled per epoch by the caller.
pub fn buckets(examples: &[Example], batch_size: usize) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = examples.iter().map(|e| e.ids.len()).collect();
    length_buckets(&lengths, batch_size)
}

/// [`buckets`] for preference pairs, by their longer side.
pub fn pair_buckets(pairs: &[PairExample], batch_size: usize) -> Vec<Vec<usize>> {
    let lengths: Vec<usize> = pairs.iter().map(PairExample::len).collect();
    length_buckets(&lengths, batch_size)
}

/// Indices sorted by `lengths` (ties by index), cut into runs of `batch_size`.
fn length_buckets(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| (lengths[i], i));
    order
        .chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Groups example indices into batches of similar length whose padded size (members × the
/// longest) stays within `max_tokens`: sorted by length, cut greedily, at least one example per
/// batch. Inference batches by tokens, since memory (the logits above all) grows with them.
pub fn token_buckets(examples: &[Example], max_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&i| (examples[i].ids.len(), i));
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted: the newcomer is the batch's longest.
        if !current.is_empty() && (current.len() + 1) * examples[i].ids.len() > max_tokens {
            out.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The batches of `epoch` in their seeded order.
pub fn epoch_order(batches: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..batches).collect();
    SplitMix::new(seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9)).shuffle(&mut order);
    order
}

/// Pads `members` of `examples` into a batch (pad id 0: padding is never attended to by real
/// tokens, causal attention looks only backwards, and is never learned).
pub fn make_batch(
    examples: &[Example],
    members: &[usize],
    device: &Device,
) -> Result<Batch, TrainError> {
    let rows: Vec<&Example> = members.iter().map(|&i| &examples[i]).collect();
    pad(&rows, device)
}

/// Pads the `members` of `pairs` into one batch of twice their number of rows: every chosen
/// side, then every rejected side (row `i` and row `members.len() + i` are pair `i`'s), each
/// learning only its response, as [`make_batch`] masks.
pub fn make_pair_batch(
    pairs: &[PairExample],
    members: &[usize],
    device: &Device,
) -> Result<Batch, TrainError> {
    let rows: Vec<&Example> = members
        .iter()
        .map(|&i| &pairs[i].chosen)
        .chain(members.iter().map(|&i| &pairs[i].rejected))
        .collect();
    pad(&rows, device)
}

/// Right-pads `rows` into a batch.
fn pad(rows: &[&Example], device: &Device) -> Result<Batch, TrainError> {
    let t = rows.iter().map(|e| e.ids.len()).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(rows.len() * t);
    let mut weights = Vec::with_capacity(rows.len() * t);
    let mut tokens = 0;
    for e in rows {
        tokens += e.ids.len();
        for p in 0..t {
            ids.push(e.ids.get(p).copied().unwrap_or(0));
            let learned = p + 1 >= e.response_start && p + 1 < e.ids.len();
            weights.push(if learned { 1f32 } else { 0.0 });
        }
    }
    Ok(Batch {
        ids: Tensor::from_vec(ids, (rows.len(), t), device)?,
        weights: Tensor::from_vec(weights, (rows.len(), t), device)?,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_response_predictions_are_learned_and_padding_is_not() {
        let a = Example::new(vec![1, 2, 3], &[4, 5], 16).expect("fits");
        let b = Example::new(vec![1, 2], &[6], 16).expect("fits");
        let batch = make_batch(&[a, b], &[0, 1], &Device::Cpu).expect("batch");
        let w: Vec<Vec<f32>> = batch.weights.to_vec2().expect("weights");
        // a: predicting 4 (at t=2) and 5 (at t=3); b: predicting 6 (at t=1).
        assert_eq!(w, vec![vec![0., 0., 1., 1., 0.], vec![0., 1., 0., 0., 0.]]);
        assert_eq!(batch.tokens, 8);
    }

    #[test]
    fn truncation_keeps_the_prompt_and_cuts_the_response() {
        let e = Example::new(vec![1, 2, 3], &[4, 5, 6, 7], 5).expect("fits");
        assert_eq!(e.ids, vec![1, 2, 3, 4, 5]);
        assert!(Example::new(vec![1, 2, 3], &[4], 3).is_none());
    }

    #[test]
    fn a_pair_batch_is_its_chosen_rows_then_its_rejected_rows_each_masked_to_its_response() {
        let pairs = [
            PairExample::new(vec![1, 2], &[3, 4, 5], &[6], 16).expect("fits"),
            PairExample::new(vec![7, 8, 9], &[10], &[11, 12], 16).expect("fits"),
        ];
        let batch = make_pair_batch(&pairs, &[1, 0], &Device::Cpu).expect("batch");
        let ids: Vec<Vec<u32>> = batch.ids.to_vec2().expect("ids");
        assert_eq!(
            ids,
            vec![
                vec![7, 8, 9, 10, 0],
                vec![1, 2, 3, 4, 5],
                vec![7, 8, 9, 11, 12],
                vec![1, 2, 6, 0, 0],
            ]
        );
        let w: Vec<Vec<f32>> = batch.weights.to_vec2().expect("weights");
        assert_eq!(
            w,
            vec![
                vec![0., 0., 1., 0., 0.],
                vec![0., 1., 1., 1., 0.],
                vec![0., 0., 1., 1., 0.],
                vec![0., 1., 0., 0., 0.],
            ]
        );
        assert_eq!(batch.tokens, 4 + 5 + 5 + 3);
        // Buckets by the longer side: both pad to 5 tokens, so by index.
        assert_eq!(pair_buckets(&pairs, 1), vec![vec![0], vec![1]]);
    }

    #[test]
    fn a_pair_keeps_its_prompt_cuts_each_response_and_needs_room_for_both() {
        let p = PairExample::new(vec![1, 2, 3], &[4, 5, 6], &[7], 5).expect("fits");
        assert_eq!(p.chosen.ids, vec![1, 2, 3, 4, 5]);
        assert_eq!(p.rejected.ids, vec![1, 2, 3, 7]);
        assert_eq!((p.chosen.response_start, p.rejected.response_start), (3, 3));
        assert!(PairExample::new(vec![1, 2, 3], &[4], &[5], 3).is_none());
        assert!(PairExample::new(vec![1, 2, 3], &[4], &[], 8).is_none());
        assert!(PairExample::new(vec![], &[4], &[5], 8).is_none());
    }

    #[test]
    fn buckets_group_similar_lengths_and_orders_are_seeded() {
        let ex: Vec<Example> = (1..=6)
            .map(|n| Example::new(vec![1; n], &[2], 64).expect("fits"))
            .collect();
        assert_eq!(buckets(&ex, 2), vec![vec![0, 1], vec![2, 3], vec![4, 5]]);
        assert_eq!(epoch_order(10, 7, 0), epoch_order(10, 7, 0));
        // Lengths 2..=7: padded size within 8 tokens, a longer example alone.
        assert_eq!(
            token_buckets(&ex, 8),
            vec![vec![0, 1], vec![2], vec![3], vec![4], vec![5]]
        );
        assert_eq!(token_buckets(&ex, 100), vec![vec![0, 1, 2, 3, 4, 5]]);
        assert_ne!(epoch_order(10, 7, 0), epoch_order(10, 7, 1));
    }
}
