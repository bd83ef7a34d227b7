//! SplitMix64: the one small seeded generator of the project. Generation draws each request's
//! examples from it (seeded by the run's seed and the request's index, so a resumed run re-derives
//! the same prompts); training draws adapter initialisation, dropout masks and the example order
//! from it (so a resumed run equals an uninterrupted one bit for bit).

/// The golden-ratio increment of the state per draw.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The generator's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The generator for request `idx` of a run seeded with `seed`.
    pub fn for_request(seed: u64, idx: u64) -> SplitMix {
        let mut s = SplitMix(seed ^ idx.wrapping_mul(0xD1B5_4A32_D192_ED03));
        s.next_u64();
        s
    }

    /// The generator seeded with `seed` after `draws` draws, without drawing them (the state
    /// only ever adds a constant), so that chunks of one sequence can be drawn in parallel.
    pub fn skip(seed: u64, draws: u64) -> SplitMix {
        SplitMix(seed.wrapping_add(draws.wrapping_mul(GAMMA)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix(self.0)
    }

    /// Draw `i` (from 0) of the generator seeded with `seed`: `skip(seed, i).next_u64()`,
    /// without a state carried from draw to draw, so that a loop over many draws vectorises.
    #[inline(always)]
    pub fn draw_at(seed: u64, i: u64) -> u64 {
        mix(seed.wrapping_add(i.wrapping_add(1).wrapping_mul(GAMMA)))
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A uniform index below `n` (n > 0), by multiply-shift: unbiased enough for n far below
    /// 2^64.
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next_u64() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

/// SplitMix64's output function of a state.
#[inline(always)]
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_splitmix64_sequence() {
        // The first outputs of Vigna's splitmix64.c seeded with 1234567.
        let mut rng = SplitMix::new(1_234_567);
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            first,
            [
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    #[test]
    fn skip_lands_where_drawing_does() {
        let mut rng = SplitMix::new(u64::MAX - 3);
        for draws in 0..300u64 {
            let mut skipped = SplitMix::skip(u64::MAX - 3, draws);
            assert_eq!(skipped.next_u64(), rng.next_u64(), "after {draws} draws");
        }
    }

    #[test]
    fn draw_at_is_the_draw_a_skip_gives() {
        for seed in [0, 7, u64::MAX - 3] {
            let mut rng = SplitMix::new(seed);
            for i in 0..100 {
                assert_eq!(SplitMix::draw_at(seed, i), rng.next_u64());
                assert_eq!(
                    SplitMix::draw_at(seed, i),
                    SplitMix::skip(seed, i).next_u64()
                );
            }
        }
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = SplitMix::for_request(7, 3);
        for n in [1, 2, 175, 1 << 20] {
            assert!((0..1000).all(|_| rng.below(n) < n));
        }
        assert!((0..1000).all(|_| (0.0..1.0).contains(&rng.unit())));
        let mut v: Vec<u32> = (0..50).collect();
        rng.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<u32>>());
        assert_ne!(v, sorted);
    }
}
