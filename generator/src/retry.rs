//! Retries: exponential backoff with full jitter, at least as long as a server's `Retry-After`.

use std::time::Duration;

/// How failed requests are retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; it doubles with each retry.
    pub base: Duration,
    /// The largest backoff ceiling.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(500),
            cap: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before attempt `attempt + 1` (attempt counts from 1): a uniform draw in
    /// `[0, min(cap, base·2^(attempt−1))]` ("full jitter"), but never less than `retry_after`.
    /// `unit` is a uniform number in [0, 1).
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        let ceiling = self.base.as_secs_f64() * 2f64.powi(attempt.saturating_sub(1).min(30) as i32);
        let jittered =
            Duration::from_secs_f64(ceiling.min(self.cap.as_secs_f64()) * unit.clamp(0.0, 1.0));
        retry_after.map_or(jittered, |r| jittered.max(r))
    }
}

/// A small, fast source of jitter (xorshift), seeded per task; not for anything deterministic.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from `seed` (zero is replaced).
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed.max(1).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// A uniform number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_honours_retry_after() {
        let p = RetryPolicy {
            max_attempts: 10,
            base: Duration::from_secs(1),
            cap: Duration::from_secs(8),
        };
        assert_eq!(
            p.delay(1, None, 0.999_999),
            Duration::from_secs_f64(0.999_999)
        );
        assert_eq!(p.delay(3, None, 0.5), Duration::from_secs(2));
        assert_eq!(p.delay(9, None, 0.5), Duration::from_secs(4));
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(5)), 0.1),
            Duration::from_secs(5)
        );
        assert_eq!(p.delay(1, None, 0.0), Duration::ZERO);
        let mut j = Jitter::new(7);
        let draws: Vec<f64> = (0..1000).map(|_| j.unit()).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().sum::<f64>() / 1000.0;
        assert!((0.45..0.55).contains(&mean), "{mean}");
    }
}
