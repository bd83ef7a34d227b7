//! Deterministic choice of the examples shown in request `idx` of a run: a generator seeded
//! with (run seed, idx), so a resumed run re-derives exactly the same prompts.

/// SplitMix64: a tiny, well-mixed generator, enough for picking examples.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// The generator for request `idx` of a run seeded with `seed`.
    pub fn for_request(seed: u64, idx: u64) -> SplitMix {
        let mut s = SplitMix(seed ^ idx.wrapping_mul(0xD1B5_4A32_D192_ED03));
        s.next();
        s
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        // Multiply-shift: unbiased enough for n far below 2^64.
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

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
