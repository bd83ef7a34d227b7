//! Longest common subsequence of token-id sequences: the bit-parallel algorithm (Allison–Dix,
//! Hyyrö) that ROUGE-L's verifier runs, and the textbook dynamic programme it is tested against.

/// A query sequence prepared for many LCS computations: for every token of the query, the bit
/// mask of the positions where it occurs. Each comparison then costs one pass over the other
/// sequence with `ceil(len / 64)` word operations per token.
#[derive(Debug, Default)]
pub struct LcsQuery {
    len: usize,
    words: usize,
    /// `slot[token]` = 1 + index of the token's mask in `masks`, 0 when absent. Dense over token
    /// ids, reused between queries (only the query's own tokens are set and then cleared).
    slot: Vec<u32>,
    set_tokens: Vec<u32>,
    /// `words` u64 per distinct query token.
    masks: Vec<u64>,
}

impl LcsQuery {
    /// An empty query (call [`LcsQuery::set`] before use).
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes `query` the sequence that [`LcsQuery::lcs`] compares against.
    pub fn set(&mut self, query: &[u32]) {
        for &t in &self.set_tokens {
            self.slot[t as usize] = 0;
        }
        self.set_tokens.clear();
        self.masks.clear();
        self.len = query.len();
        self.words = query.len().div_ceil(64).max(1);
        for (i, &t) in query.iter().enumerate() {
            let t = t as usize;
            if t >= self.slot.len() {
                self.slot.resize(t + 1, 0);
            }
            if self.slot[t] == 0 {
                self.masks.extend(std::iter::repeat_n(0, self.words));
                self.slot[t] = (self.masks.len() / self.words) as u32;
                self.set_tokens.push(t as u32);
            }
            let base = (self.slot[t] as usize - 1) * self.words;
            self.masks[base + i / 64] |= 1u64 << (i % 64);
        }
    }

    /// The query's length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the query is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// LCS length of the query and `other`.
    pub fn lcs(&self, other: &[u32]) -> usize {
        if self.len == 0 || other.is_empty() {
            return 0;
        }
        if self.words == 1 {
            return self.lcs_one_word(other);
        }
        self.lcs_many_words(other)
    }

    fn mask_of(&self, token: u32) -> Option<usize> {
        match self.slot.get(token as usize) {
            Some(&s) if s > 0 => Some((s as usize - 1) * self.words),
            _ => None,
        }
    }

    fn lcs_one_word(&self, other: &[u32]) -> usize {
        let live = if self.len == 64 {
            u64::MAX
        } else {
            (1u64 << self.len) - 1
        };
        let mut v = live;
        for &t in other {
            if let Some(base) = self.mask_of(t) {
                let u = v & self.masks[base];
                v = (v.wrapping_add(u) | v.wrapping_sub(u)) & live;
            }
        }
        self.len - v.count_ones() as usize
    }

    fn lcs_many_words(&self, other: &[u32]) -> usize {
        let w = self.words;
        let mut v = vec![u64::MAX; w];
        let tail_bits = self.len % 64;
        if tail_bits != 0 {
            v[w - 1] = (1u64 << tail_bits) - 1;
        }
        for &t in other {
            let Some(base) = self.mask_of(t) else {
                continue;
            };
            let mut carry = 0u64;
            let mut borrow = 0u64;
            let masks = &self.masks[base..base + w];
            for (vk, &mask) in v.iter_mut().zip(masks) {
                let u = *vk & mask;
                // (v + u) with carry across words.
                let (s1, c1) = vk.overflowing_add(u);
                let (sum, c2) = s1.overflowing_add(carry);
                carry = u64::from(c1 || c2);
                // (v - u) with borrow across words.
                let (d1, b1) = vk.overflowing_sub(u);
                let (diff, b2) = d1.overflowing_sub(borrow);
                borrow = u64::from(b1 || b2);
                *vk = sum | diff;
            }
            if tail_bits != 0 {
                v[w - 1] &= (1u64 << tail_bits) - 1;
            }
        }
        self.len - v.iter().map(|x| x.count_ones() as usize).sum::<usize>()
    }
}

/// LCS length by the O(|a|·|b|) dynamic programme: the reference.
pub fn lcs_naive(a: &[u32], b: &[u32]) -> usize {
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for &x in a {
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lcs(a: &[u32], b: &[u32]) -> usize {
        let mut q = LcsQuery::new();
        q.set(a);
        q.lcs(b)
    }

    #[test]
    fn known_cases() {
        assert_eq!(lcs(&[1, 2, 3, 4], &[1, 3, 4]), 3);
        assert_eq!(lcs(&[], &[1]), 0);
        assert_eq!(lcs(&[5, 5, 5], &[5, 5]), 2);
        let a: Vec<u32> = (0..200).map(|i| i % 7).collect();
        let b: Vec<u32> = (0..150).map(|i| (i * 3) % 7).collect();
        assert_eq!(lcs(&a, &b), lcs_naive(&a, &b));
        let long: Vec<u32> = (0..64).collect();
        assert_eq!(lcs(&long, &long), 64);
        let longer: Vec<u32> = (0..128).collect();
        assert_eq!(lcs(&longer, &longer), 128);
    }

    #[test]
    fn a_query_is_reusable() {
        let mut q = LcsQuery::new();
        q.set(&[1, 2, 3]);
        assert_eq!(q.lcs(&[3, 2, 1]), 1);
        q.set(&[9, 8]);
        assert_eq!(q.lcs(&[1, 2, 3]), 0);
        assert_eq!(q.lcs(&[9, 8]), 2);
    }

    proptest! {
        #[test]
        fn bit_parallel_equals_the_dynamic_programme(
            a in proptest::collection::vec(0u32..12, 0..200),
            b in proptest::collection::vec(0u32..12, 0..200),
        ) {
            prop_assert_eq!(lcs(&a, &b), lcs_naive(&a, &b));
        }

        #[test]
        fn bit_parallel_equals_the_dynamic_programme_on_large_alphabets(
            a in proptest::collection::vec(0u32..5000, 0..90),
            b in proptest::collection::vec(0u32..5000, 0..90),
        ) {
            prop_assert_eq!(lcs(&a, &b), lcs_naive(&a, &b));
        }
    }
}
