//! Token interning: texts become sequences of dense `u32` token ids, stored back to back.

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use crate::tokenize::Tokenizer;

/// Token-id sequences for a list of texts, in one flat buffer.
#[derive(Debug, Default)]
pub struct Sequences {
    ids: Vec<u32>,
    offsets: Vec<usize>,
    vocab: FxHashMap<Box<str>, u32>,
}

impl Sequences {
    /// Tokenizes every text (in parallel) and interns the tokens (in order, so ids are
    /// deterministic: the first token seen gets 0).
    pub fn tokenize(texts: &[&str], tokenizer: Tokenizer) -> Sequences {
        let tokenized: Vec<Vec<String>> = texts.par_iter().map(|t| tokenizer.tokens(t)).collect();
        let mut seq = Sequences {
            ids: Vec::with_capacity(tokenized.iter().map(Vec::len).sum()),
            offsets: Vec::with_capacity(texts.len() + 1),
            vocab: FxHashMap::default(),
        };
        seq.offsets.push(0);
        for tokens in tokenized {
            for t in tokens {
                let next = seq.vocab.len() as u32;
                let id = *seq.vocab.entry(t.into_boxed_str()).or_insert(next);
                seq.ids.push(id);
            }
            seq.offsets.push(seq.ids.len());
        }
        seq
    }

    /// How many sequences.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `i`-th sequence.
    pub fn get(&self, i: usize) -> &[u32] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    /// How many distinct tokens.
    pub fn vocab_len(&self) -> usize {
        self.vocab.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tokens_share_ids_in_first_seen_order() {
        let s = Sequences::tokenize(&["a b a", "", "b c"], Tokenizer::Alpaca);
        assert_eq!(s.len(), 3);
        assert_eq!(s.get(0), &[0, 1, 0]);
        assert_eq!(s.get(1), &[] as &[u32]);
        assert_eq!(s.get(2), &[1, 2]);
        assert_eq!(s.vocab_len(), 3);
    }
}
