//! Element-wise math of the fused kernels, vectorised for the CPU they run on: each kernel is a
//! [`WithSimd`] whose body is inlined into pulp's per-instruction-set copies (AVX-512, AVX2+FMA,
//! plain), chosen at run time, so LLVM vectorises the same loop for each without `unsafe` here.
//! [`exp`] is a polynomial (Cephes' `expf`, relative error ~1e-7) instead of libm's scalar call,
//! and sums run in [`LANES`] fixed lanes, so every instruction set adds in the same order and
//! gives the same bits.

use pulp::{Arch, WithSimd};

/// Lanes of the reductions (and of the narrow blocks of the attention's products): one AVX-512
/// register of f32, two AVX2 ones.
pub(super) const LANES: usize = 16;

/// `k` in pulp's copy for the best instruction set this CPU has.
pub(super) fn run<K: WithSimd>(k: K) -> K::Output {
    Arch::new().dispatch(k)
}

/// `eˣ` for f32: `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`, `eʳ` by Cephes' degree-6 polynomial,
/// `2ⁿ` written into the exponent bits. Inputs are clamped to `[−87.3, 88.0]` (the smallest
/// result is 2⁻¹²⁶ instead of a subnormal or 0, the largest ~1.7e38 instead of ∞); NaN stays NaN.
#[inline(always)]
pub(super) fn exp(x: f32) -> f32 {
    const HI: f32 = 88.029_69;
    const LO: f32 = -87.336_55;
    // NaN stays NaN through the clamp.
    let x = x.clamp(LO, HI);
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = (((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
        * r
        + 1.666_666_5e-1)
        * r
        + 0.5)
        * r
        * r
        + r
        + 1.0;
    // n ∈ [−126, 127] after the clamp (NaN casts to 0 and p carries the NaN).
    let bits = ((n as i32 + 127) as u32) << 23;
    p * f32::from_bits(bits)
}

/// The largest of `z` (NaNs skipped, as `f32::max` does; −∞ when empty).
#[inline(always)]
pub(super) fn max(z: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = z.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] = acc[l].max(c[l]);
        }
    }
    rest.iter()
        .chain(&acc)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// `Σ e^(z − shift)`.
#[inline(always)]
pub(super) fn sum_exp(z: &[f32], shift: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = z.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += exp(c[l] - shift);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|v| exp(v - shift)).sum::<f32>()
}

/// `Σ z`.
#[inline(always)]
pub(super) fn sum(z: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = z.chunks_exact(LANES);
    let rest: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for l in 0..LANES {
            acc[l] += c[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

/// `Σ a ⊙ b`.
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in ca.zip(cb) {
        for l in 0..LANES {
            acc[l] += a[l] * b[l];
        }
    }
    acc.iter().sum::<f32>() + rest
}

#[cfg(test)]
mod tests {
    use pulp::{Arch, Simd, WithSimd};

    use super::*;

    /// [`exp`] of every value, in place.
    struct ExpEach<'a>(&'a mut [f32]);

    impl WithSimd for ExpEach<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, _: S) {
            for v in self.0.iter_mut() {
                *v = exp(*v);
            }
        }
    }

    /// The scalar fallback and each x86 level the CPU offers.
    fn archs() -> Vec<Arch> {
        let mut v = vec![Arch::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            v.extend(pulp::x86::V3::try_new().map(Arch::V3));
            v.extend(pulp::x86::V4::try_new().map(Arch::V4));
        }
        v
    }

    /// Every instruction set gives the same bits, within 2e-7 of libm's `expf` over the range
    /// the kernels feed it, the clamped ends finite and positive, NaN kept.
    #[test]
    fn exp_matches_libm_on_every_instruction_set() {
        let xs: Vec<f32> = (-8_800..=8_800).map(|i| i as f32 / 100.0).collect();
        let mut first: Option<Vec<f32>> = None;
        for arch in archs() {
            let mut ys = xs.clone();
            ys.extend([-1e4, 1e4, f32::NAN, f32::NEG_INFINITY]);
            arch.dispatch(ExpEach(&mut ys));
            for (x, y) in xs.iter().zip(&ys) {
                let want = x.exp();
                if want > f32::MIN_POSITIVE {
                    assert!(
                        (y - want).abs() <= 2e-7 * want,
                        "exp({x}) = {y}, libm {want}"
                    );
                }
            }
            let n = xs.len();
            assert!(ys[n] > 0.0 && ys[n] < 1e-37, "exp(-1e4) = {}", ys[n]);
            assert!(ys[n + 1].is_finite() && ys[n + 1] > 1e38);
            assert!(ys[n + 2].is_nan());
            assert!(ys[n + 3] > 0.0 && ys[n + 3] < 1e-37);
            match &first {
                None => first = Some(ys),
                Some(f) => assert!(f.iter().zip(&ys).all(|(a, b)| a.to_bits() == b.to_bits())),
            }
        }
    }

    #[test]
    fn reductions_match_plain_sums() {
        let z: Vec<f32> = (0..1_000)
            .map(|i| ((i * 37) % 101) as f32 / 10.0 - 5.0)
            .collect();
        for n in [0, 1, 15, 16, 17, 100, 1_000] {
            let z = &z[..n];
            let want_max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(z), want_max);
            let want: f64 = z.iter().map(|v| f64::from(v - 1.0).exp()).sum();
            assert!((f64::from(sum_exp(z, 1.0)) - want).abs() <= 1e-5 * want.max(1.0));
            let want: f64 = z.iter().map(|v| f64::from(*v)).sum();
            assert!((f64::from(sum(z)) - want).abs() <= 1e-4 * want.abs().max(1.0));
            let want: f64 = z.iter().map(|v| f64::from(*v) * f64::from(*v)).sum();
            assert!((f64::from(dot(z, z)) - want).abs() <= 1e-5 * want.max(1.0));
        }
    }
}
