//! Exact duplicates: equal keys (normalised-content hashes); the first occurrence wins. The
//! batch pipeline ([`exact_dups`]) and generation's one-at-a-time acceptor ([`ExactIndex`]) use
//! the same rule.

use std::borrow::Borrow;
use std::hash::Hash;

use rustc_hash::FxHashMap;

/// The first id recorded for each key: a later copy is a duplicate of that one.
#[derive(Debug, Clone)]
pub struct ExactIndex<K, V> {
    first: FxHashMap<K, V>,
}

impl<K, V> Default for ExactIndex<K, V> {
    fn default() -> Self {
        ExactIndex {
            first: FxHashMap::default(),
        }
    }
}

impl<K: Eq + Hash, V: Copy> ExactIndex<K, V> {
    /// The id first recorded for `key`, if any.
    pub fn first<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.first.get(key).copied()
    }

    /// Records `id` for `key` unless an id is recorded already; returns that earlier id (then
    /// `id` is a duplicate of it), or `None` when `id` is the first.
    pub fn insert(&mut self, key: K, id: V) -> Option<V> {
        match self.first.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(id);
                None
            }
        }
    }

    /// How many distinct keys are recorded.
    pub fn len(&self) -> usize {
        self.first.len()
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.first.is_empty()
    }
}

/// For each key in order: `None` for the first occurrence of its value, `Some(i)` (the index of
/// that first occurrence) for every later one.
pub fn exact_dups<K: Eq + Hash>(keys: impl IntoIterator<Item = K>) -> Vec<Option<usize>> {
    let mut index = ExactIndex::default();
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| index.insert(k, i))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_copies_point_at_the_first() {
        assert_eq!(
            exact_dups(["a", "b", "a", "c", "b", "a"]),
            vec![None, None, Some(0), None, Some(1), Some(0)]
        );
    }

    #[test]
    fn the_index_keeps_the_first_id() {
        let mut index: ExactIndex<String, u64> = ExactIndex::default();
        assert_eq!(index.insert("a".into(), 7), None);
        assert_eq!(index.insert("a".into(), 9), Some(7));
        assert_eq!(
            (index.first("a"), index.first("b"), index.len()),
            (Some(7), None, 1)
        );
    }
}
