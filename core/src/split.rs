//! The validation split `export --val-fraction` and `train --val-fraction` share: a record is
//! held out when a hash of its normalised content ([`norm_hash`]) and the seed falls under the
//! fraction. It depends on nothing else (not order, not id, not the layout), so the same
//! fraction and seed hold out the same records in both commands, and exact duplicates always
//! land on the same side.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::Record;
use crate::normalize::norm_hash;

/// Whether the record whose normalised hash is `norm_hash` goes to the validation split of
/// `fraction` (0–1) under `seed`.
pub fn in_val(norm_hash: &str, seed: u64, fraction: f64) -> bool {
    if fraction <= 0.0 {
        return false;
    }
    let h = xxh3_64_with_seed(norm_hash.as_bytes(), seed);
    // The top 53 bits as a uniform number in [0, 1).
    ((h >> 11) as f64 / (1u64 << 53) as f64) < fraction
}

/// Whether `record` goes to the validation split ([`in_val`] of its [`norm_hash`]).
pub fn held_out(record: &Record, seed: u64, fraction: f64) -> bool {
    in_val(&norm_hash(record), seed, fraction)
}

/// A short digest of a set of held-out records, given their [`norm_hash`]es in any order
/// (duplicates count): 16 hex digits that two commands' splits share exactly when they hold out
/// the same records.
pub fn held_out_digest<'a>(norm_hashes: impl IntoIterator<Item = &'a str>) -> String {
    let mut hashes: Vec<&str> = norm_hashes.into_iter().collect();
    hashes.sort_unstable();
    format!("{:016x}", xxh3_64(hashes.join("\n").as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validation_split_has_about_the_asked_size_and_depends_on_the_seed() {
        let hashes: Vec<String> = (0..20_000).map(|i| format!("{:032x}", i * 7919)).collect();
        let val = hashes.iter().filter(|h| in_val(h, 1, 0.1)).count();
        assert!((1_700..2_300).contains(&val), "{val}");
        let other_seed: Vec<bool> = hashes.iter().map(|h| in_val(h, 2, 0.1)).collect();
        let this_seed: Vec<bool> = hashes.iter().map(|h| in_val(h, 1, 0.1)).collect();
        assert_ne!(other_seed, this_seed);
        assert!(!in_val(&hashes[0], 1, 0.0));
    }

    #[test]
    fn a_record_is_held_out_by_its_normalised_content() {
        // Case, punctuation and spacing do not move a record across the split.
        let a = Record::new("Name three colours.", "", "Red, green, blue.");
        let b = Record::new("name three  colours", "", "red green blue");
        for seed in 0..64 {
            assert_eq!(held_out(&a, seed, 0.5), held_out(&b, seed, 0.5));
        }
        assert!((0..64).any(|seed| held_out(&a, seed, 0.5)));
        assert!((0..64).any(|seed| !held_out(&a, seed, 0.5)));
    }

    #[test]
    fn the_digest_ignores_order_and_counts_duplicates() {
        assert_eq!(held_out_digest(["a", "b"]), held_out_digest(["b", "a"]));
        assert_ne!(
            held_out_digest(["a", "b"]),
            held_out_digest(["a", "b", "b"])
        );
        assert_eq!(held_out_digest([]).len(), 16);
    }
}
