//! Requests-per-minute and tokens-per-minute limits: token buckets shared by every request in
//! flight. A request takes one RPM token and its estimated tokens from the TPM bucket before it
//! is sent; the estimate is corrected when the server reports the real usage.

use std::sync::Mutex;

use tokio::time::{Duration, Instant};

/// One bucket: `capacity` tokens, refilled at `per_sec`. It may go into debt (after an
/// underestimate), which later requests wait out; the debt is at most one bucket, so no
/// estimate or server-reported usage, however absurd, holds requests back for more than a
/// minute's refill (or makes a wait too long to represent).
#[derive(Debug)]
struct Bucket {
    capacity: f64,
    per_sec: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn per_minute(limit: f64) -> Bucket {
        Bucket {
            capacity: limit,
            per_sec: limit / 60.0,
            state: Mutex::new((limit, Instant::now())),
        }
    }

    /// Takes `cost` tokens, or says how long to wait before trying again.
    fn try_take(&self, cost: f64) -> Result<(), Duration> {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = &mut *guard;
        let now = Instant::now();
        *tokens =
            (*tokens + now.duration_since(*last).as_secs_f64() * self.per_sec).min(self.capacity);
        *last = now;
        // A request costing more than the whole bucket goes through when the bucket is full.
        let need = cost.min(self.capacity);
        if *tokens >= need {
            *tokens = (*tokens - cost).max(-self.capacity);
            Ok(())
        } else {
            // At most two buckets' refill (a full debt, then `need`): two minutes.
            let secs = (need - *tokens) / self.per_sec;
            Err(Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(120)))
        }
    }

    /// Adds `amount` tokens (negative: takes them), within [-capacity, capacity].
    fn give_back(&self, amount: f64) {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.0 = (guard.0 + amount).clamp(-self.capacity, self.capacity);
    }
}

/// The limits of one run.
#[derive(Debug, Default)]
pub struct RateLimiter {
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
}

impl RateLimiter {
    /// Limits of `rpm` requests and `tpm` tokens per minute (`None`: unlimited).
    pub fn new(rpm: Option<u32>, tpm: Option<u64>) -> RateLimiter {
        RateLimiter {
            rpm: rpm
                .filter(|&r| r > 0)
                .map(|r| Bucket::per_minute(f64::from(r))),
            tpm: tpm.filter(|&t| t > 0).map(|t| Bucket::per_minute(t as f64)),
        }
    }

    /// Waits until a request estimated at `tokens` tokens may be sent, and takes its share.
    pub async fn acquire(&self, tokens: u64) {
        if let Some(b) = &self.rpm {
            while let Err(wait) = b.try_take(1.0) {
                tokio::time::sleep(wait).await;
            }
        }
        if let Some(b) = &self.tpm {
            while let Err(wait) = b.try_take(tokens as f64) {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// Corrects the TPM bucket once the real usage of a request is known (any `actual`, even
    /// `u64::MAX`, costs at most one bucket of debt).
    pub fn settle(&self, estimated: u64, actual: u64) {
        if let Some(b) = &self.tpm {
            b.give_back(estimated as f64 - actual as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_are_spread_out() {
        let limiter = RateLimiter::new(Some(60), None);
        let start = Instant::now();
        for _ in 0..70 {
            limiter.acquire(0).await;
        }
        // 60 at once (a full bucket), then one per second.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((9.9..10.1).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_count_estimates_and_corrections() {
        let limiter = RateLimiter::new(None, Some(6000));
        let start = Instant::now();
        limiter.acquire(6000).await;
        // The estimate was 6000 but only 1000 were used: 5000 come back at once.
        limiter.settle(6000, 1000);
        limiter.acquire(5000).await;
        assert!(start.elapsed() < Duration::from_millis(1));
        limiter.acquire(1000).await; // the bucket is empty: 1000 tokens take 10 s at 100/s
        let elapsed = start.elapsed().as_secs_f64();
        assert!((9.9..10.1).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_usage_costs_at_most_one_bucket() {
        // One token a minute: the smallest refill, where a huge debt would mean the longest wait.
        let limiter = RateLimiter::new(Some(1), Some(1));
        let start = Instant::now();
        limiter.acquire(u64::MAX).await;
        limiter.settle(0, u64::MAX);
        limiter.settle(u64::MAX, 0);
        limiter.settle(0, u64::MAX);
        limiter.acquire(u64::MAX).await;
        // The debt was capped at one token, so the next request waited two minutes of refill.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((119.9..120.1).contains(&elapsed), "{elapsed}");
        let limiter = RateLimiter::new(None, Some(u64::MAX));
        for _ in 0..3 {
            limiter.acquire(u64::MAX).await;
            limiter.settle(0, u64::MAX);
        }
        assert!(start.elapsed().as_secs_f64() < 360.1);
    }
}
