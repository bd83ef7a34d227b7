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

    /// No sequences yet (for a pool that grows one text at a time).
    pub fn empty() -> Sequences {
        Sequences {
            ids: Vec::new(),
            offsets: vec![0],
            vocab: FxHashMap::default(),
        }
    }

    /// The id of `token`, interning it if new.
    pub fn intern(&mut self, token: &str) -> u32 {
        if let Some(&id) = self.vocab.get(token) {
            return id;
        }
        let id = self.vocab.len() as u32;
        self.vocab.insert(token.into(), id);
        id
    }

    /// The id of `token` if it was seen.
    pub fn id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Appends a sequence of token ids.
    pub fn push(&mut self, ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.offsets.push(self.ids.len());
    }

    /// Removes the last sequence.
    pub fn pop(&mut self) {
        if self.offsets.len() > 1 {
            self.offsets.pop();
            let end = self.offsets.last().copied().unwrap_or(0);
            self.ids.truncate(end);
        }
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
