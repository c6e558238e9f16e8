//! Resilience building blocks: circuit-breaking limits, the local rate limiter and the
//! retry budget. Each is a small piece of shared state checked on the request path.

mod limits;
mod rate_limit;
mod retry_budget;

pub use limits::{LimitExceeded, Limits, RequestPermit};
pub use rate_limit::RateLimiter;
pub use retry_budget::RetryBudget;

use std::sync::Arc;
use weft_model::config::TrafficPolicyConfig;

/// One service's resilience state. A configuration push keeps each piece whose settings did
/// not change, with its counts (requests in flight, tokens left, retries spent): otherwise
/// every push, even one that only moved an endpoint, would reopen a tripped circuit
/// breaker, refill a drained rate limit and forget the retries already spent.
#[derive(Clone, Default)]
pub struct Resilience {
    pub limits: Arc<Limits>,
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub retry_budget: Option<Arc<RetryBudget>>,
}

impl Resilience {
    /// The state for `policy`, reusing what `previous` has for the same settings.
    pub fn carry(previous: Option<&Resilience>, policy: &TrafficPolicyConfig) -> Self {
        let limits = match previous {
            Some(old) if old.limits.settings() == policy.connection_limits.as_ref() => {
                old.limits.clone()
            }
            _ => Arc::new(Limits::new(policy.connection_limits.as_ref())),
        };
        Self {
            limits,
            rate_limit: keep(
                previous.and_then(|old| old.rate_limit.as_ref()),
                policy.rate_limit.as_ref(),
                RateLimiter::settings,
                RateLimiter::new,
            ),
            retry_budget: keep(
                previous.and_then(|old| old.retry_budget.as_ref()),
                policy.retry_budget.as_ref(),
                RetryBudget::settings,
                RetryBudget::new,
            ),
        }
    }
}

/// `old` when it was built from `settings`, else a new one (or none when unset).
fn keep<T, S: PartialEq>(
    old: Option<&Arc<T>>,
    settings: Option<&S>,
    settings_of: fn(&T) -> &S,
    build: fn(&S) -> T,
) -> Option<Arc<T>> {
    let settings = settings?;
    match old {
        Some(old) if settings_of(old) == settings => Some(old.clone()),
        _ => Some(Arc::new(build(settings))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_model::config::{ConnectionLimits, RateLimit};

    fn policy(rate: f64, max_requests: u32) -> TrafficPolicyConfig {
        TrafficPolicyConfig {
            rate_limit: Some(RateLimit {
                requests_per_second: rate,
                burst: 1,
            }),
            connection_limits: Some(ConnectionLimits {
                max_connections: None,
                max_pending_requests: None,
                max_requests: Some(max_requests),
            }),
            ..TrafficPolicyConfig::default()
        }
    }

    #[test]
    fn unchanged_settings_keep_their_counts_and_changed_ones_start_afresh() {
        let first = Resilience::carry(None, &policy(0.001, 1));
        assert!(first.rate_limit.as_ref().unwrap().try_acquire());
        let _in_flight = first.limits.start_request().unwrap();

        let same = Resilience::carry(Some(&first), &policy(0.001, 1));
        assert!(
            !same.rate_limit.as_ref().unwrap().try_acquire(),
            "bucket kept"
        );
        assert!(same.limits.start_request().is_err(), "in-flight count kept");

        let changed = Resilience::carry(Some(&same), &policy(0.002, 2));
        assert!(changed.rate_limit.as_ref().unwrap().try_acquire());
        assert!(changed.limits.start_request().is_ok());

        let removed = Resilience::carry(Some(&changed), &TrafficPolicyConfig::default());
        assert!(removed.rate_limit.is_none());
    }
}
