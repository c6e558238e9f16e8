//! Circuit breaking on a backend service: at most N requests in flight, N requests waiting
//! for a connection, N connections. When a limit is reached the request is refused at once
//! (503 with `x-weft-overloaded`) instead of queueing into an outage.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use weft_model::config::ConnectionLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitExceeded {
    Requests,
    PendingRequests,
    Connections,
}

impl LimitExceeded {
    /// The value of the `x-weft-overloaded` header.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitExceeded::Requests => "max-requests",
            LimitExceeded::PendingRequests => "max-pending-requests",
            LimitExceeded::Connections => "max-connections",
        }
    }
    /// The `reason` label in `weft_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            LimitExceeded::Requests => "circuit_max_requests",
            LimitExceeded::PendingRequests => "circuit_max_pending_requests",
            LimitExceeded::Connections => "circuit_max_connections",
        }
    }
}

#[derive(Default)]
pub struct Limits {
    settings: Option<ConnectionLimits>,
    max_requests: Option<u32>,
    max_pending: Option<u32>,
    max_connections: Option<u32>,
    in_flight: Arc<AtomicU32>,
    pending: Arc<AtomicU32>,
    connections: Arc<AtomicU32>,
}

/// Releases its slot when dropped.
pub struct RequestPermit(Option<Arc<AtomicU32>>);

impl Drop for RequestPermit {
    fn drop(&mut self) {
        if let Some(counter) = &self.0 {
            counter.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn acquire(counter: &Arc<AtomicU32>, max: Option<u32>) -> Option<RequestPermit> {
    let Some(max) = max else {
        return Some(RequestPermit(None));
    };
    let previous = counter.fetch_add(1, Ordering::AcqRel);
    let permit = RequestPermit(Some(counter.clone()));
    (previous < max).then_some(permit)
}

impl Limits {
    pub fn new(config: Option<&ConnectionLimits>) -> Self {
        let Some(config) = config else {
            return Self::default();
        };
        Self {
            settings: Some(config.clone()),
            max_requests: config.max_requests,
            max_pending: config.max_pending_requests,
            max_connections: config.max_connections,
            ..Self::default()
        }
    }

    /// The settings these limits were built from (`None`: unlimited).
    pub fn settings(&self) -> Option<&ConnectionLimits> {
        self.settings.as_ref()
    }

    pub fn start_request(&self) -> Result<RequestPermit, LimitExceeded> {
        acquire(&self.in_flight, self.max_requests).ok_or(LimitExceeded::Requests)
    }

    /// Held while a request waits for an upstream connection to be set up.
    pub fn start_pending(&self) -> Result<RequestPermit, LimitExceeded> {
        acquire(&self.pending, self.max_pending).ok_or(LimitExceeded::PendingRequests)
    }

    /// Held for the life of one upstream connection.
    pub fn open_connection(&self) -> Result<RequestPermit, LimitExceeded> {
        acquire(&self.connections, self.max_connections).ok_or(LimitExceeded::Connections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_frees_on_drop() {
        let limits = Limits::new(Some(&ConnectionLimits {
            max_connections: None,
            max_pending_requests: None,
            max_requests: Some(2),
        }));
        let a = limits.start_request().unwrap();
        let _b = limits.start_request().unwrap();
        assert_eq!(limits.start_request().err(), Some(LimitExceeded::Requests));
        drop(a);
        assert!(limits.start_request().is_ok());
    }

    #[test]
    fn no_limits_never_refuse() {
        let limits = Limits::new(None);
        let permits: Vec<_> = (0..10_000)
            .map(|_| limits.start_request().unwrap())
            .collect();
        assert_eq!(permits.len(), 10_000);
    }
}
