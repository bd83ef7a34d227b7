//! Deterministic choice of the examples shown in request `idx` of a run: a generator seeded
//! with (run seed, idx), so a resumed run re-derives exactly the same prompts.

use instill_core::SplitMix;

/// `k` distinct indices below `n`, in the order drawn (a partial Fisher–Yates shuffle).
pub fn choose(rng: &mut SplitMix, n: usize, k: usize) -> Vec<usize> {
    let k = k.min(n);
    let mut pool: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below(n - i);
        pool.swap(i, j);
    }
    pool.truncate(k);
    pool
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_are_distinct_deterministic_and_spread() {
        let a = choose(&mut SplitMix::for_request(1, 5), 175, 3);
        let b = choose(&mut SplitMix::for_request(1, 5), 175, 3);
        let c = choose(&mut SplitMix::for_request(1, 6), 175, 3);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 3);
        assert!(a[0] != a[1] && a[1] != a[2] && a[0] != a[2]);
        assert_eq!(choose(&mut SplitMix::for_request(0, 0), 2, 5).len(), 2);
        let mut counts = [0usize; 10];
        for idx in 0..10_000 {
            counts[choose(&mut SplitMix::for_request(9, idx), 10, 1)[0]] += 1;
        }
        assert!(
            counts.iter().all(|&c| (850..1150).contains(&c)),
            "{counts:?}"
        );
    }
}
