//! Exact duplicates: equal keys (normalised-content hashes); the first occurrence wins.

use std::hash::Hash;

use rustc_hash::FxHashMap;

/// For each key in order: `None` for the first occurrence of its value, `Some(i)` (the index of
/// that first occurrence) for every later one.
pub fn exact_dups<K: Eq + Hash>(keys: impl IntoIterator<Item = K>) -> Vec<Option<usize>> {
    let mut first: FxHashMap<K, usize> = FxHashMap::default();
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| match first.entry(k) {
            std::collections::hash_map::Entry::Occupied(e) => Some(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
                None
            }
        })
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
}
