//! Local rate limiting with a token bucket: `burst` tokens, refilled at `rate` per second.

use std::sync::Mutex;
use std::time::Instant;
use weft_model::config::RateLimit;

pub struct RateLimiter {
    settings: RateLimit,
    rate: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(config: &RateLimit) -> Self {
        let burst = f64::from(config.burst.max(1));
        Self {
            settings: config.clone(),
            rate: config.requests_per_second,
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    pub fn settings(&self) -> &RateLimit {
        &self.settings
    }

    pub fn try_acquire(&self) -> bool {
        self.try_acquire_at(Instant::now())
    }

    fn try_acquire_at(&self, now: Instant) -> bool {
        let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn allows_burst_then_the_rate() {
        let limiter = RateLimiter::new(&RateLimit {
            requests_per_second: 10.0,
            burst: 5,
        });
        let start = Instant::now();
        let allowed = (0..20).filter(|_| limiter.try_acquire_at(start)).count();
        assert_eq!(allowed, 5);
        // One second later ten more tokens arrived, capped at the burst of five.
        let later = start + Duration::from_secs(1);
        assert_eq!((0..20).filter(|_| limiter.try_acquire_at(later)).count(), 5);
        // 100 ms later: one token.
        let a_bit_later = later + Duration::from_millis(100);
        assert_eq!(
            (0..20)
                .filter(|_| limiter.try_acquire_at(a_bit_later))
                .count(),
            1
        );
    }
}
