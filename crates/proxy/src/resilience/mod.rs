//! Resilience building blocks: circuit-breaking limits, the local rate limiter and the
//! retry budget. Each is a small piece of shared state checked on the request path.

mod limits;
mod rate_limit;
mod retry_budget;

pub use limits::{LimitExceeded, Limits, RequestPermit};
pub use rate_limit::RateLimiter;
pub use retry_budget::RetryBudget;
