//! One endpoint's live state: load (in flight, peak-EWMA latency) and outlier status.
//!
//! State is kept across config reloads (the registry in `state.rs` hands the same
//! `Endpoint` to the new snapshot), so a reload neither forgets an ejection nor resets
//! latency estimates.

use crate::upstream::EndpointPool;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_model::config::{EndpointConfig, OutlierDetection};

/// How fast the EWMA forgets: a latency spike decays to ~37 % after this long. Between
/// answers the estimate decays toward zero, as in Finagle's and Linkerd's peak-EWMA: an
/// endpoint that is not being picked looks cheaper as time passes and is soon tried again.
/// Without that, the endpoint with the lower last estimate won every comparison until a
/// slow answer pushed it up, and identical instances took turns at ~90 % of the traffic.
const EWMA_DECAY: Duration = Duration::from_secs(10);
/// What a failed try weighs in the latency estimate, at the least.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);
/// Until the first answer arrives, assume this latency so new endpoints are tried soon.
const DEFAULT_RTT: Duration = Duration::from_millis(1);

pub struct Endpoint {
    pub address: weft_model::Address,
    /// The SPIFFE id the peer proxy must present, or `None` for a plain endpoint.
    pub identity: Option<Arc<str>>,
    pub pool: Arc<EndpointPool>,
    in_flight: AtomicU32,
    ewma: Mutex<Ewma>,
    outlier: Mutex<OutlierState>,
    /// Milliseconds since `epoch` until which this endpoint is ejected (0 = not ejected).
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

struct Ewma {
    value_ns: f64,
    updated: Instant,
}

impl Ewma {
    /// The share of the estimate left after decaying from its last update to `now`.
    fn keep(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        (-elapsed / EWMA_DECAY.as_secs_f64()).exp()
    }

    /// The estimate at `now`, decayed toward zero since the last answer.
    fn at(&self, now: Instant) -> f64 {
        self.value_ns * self.keep(now)
    }
}

#[derive(Default)]
struct OutlierState {
    consecutive_5xx: u32,
    consecutive_connect_failures: u32,
    times_ejected: u32,
}

/// What a finished request tells outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    ServerError,
    ConnectFailure,
}

impl Endpoint {
    pub fn new(config: &EndpointConfig, pool: Arc<EndpointPool>) -> Self {
        let now = Instant::now();
        Self {
            address: config.address.clone(),
            identity: config.identity.as_deref().map(Arc::from),
            pool,
            in_flight: AtomicU32::new(0),
            ewma: Mutex::new(Ewma {
                value_ns: DEFAULT_RTT.as_nanos() as f64,
                updated: now,
            }),
            outlier: Mutex::new(OutlierState::default()),
            ejected_until_ms: AtomicU64::new(0),
            epoch: now,
        }
    }

    /// Peak-EWMA cost: expected latency times the queue this request would join.
    pub fn cost_at(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed) as f64;
        let ewma = self.ewma.lock().unwrap_or_else(|e| e.into_inner()).at(now);
        ewma * (in_flight + 1.0)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: self.clone(),
            started: Instant::now(),
        }
    }

    pub(super) fn observe_rtt(&self, rtt: Duration, now: Instant) {
        let rtt_ns = rtt.as_nanos() as f64;
        let mut ewma = self.ewma.lock().unwrap_or_else(|e| e.into_inner());
        let decayed = ewma.at(now);
        ewma.value_ns = if rtt_ns > decayed {
            // Peak sensitivity: a slow answer counts at once, recovery is gradual.
            rtt_ns
        } else {
            decayed + rtt_ns * (1.0 - ewma.keep(now))
        };
        ewma.updated = now;
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && (self.epoch.elapsed().as_millis() as u64) < until
    }

    /// Takes this endpoint out of rotation for `period` (it said it is stopping). Like an
    /// ejection: chosen again only if every endpoint is out.
    pub fn leave_rotation(&self, period: Duration) {
        let until = self.epoch.elapsed().as_millis() as u64 + period.as_millis() as u64;
        self.ejected_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// Feeds outlier detection. Returns true when this outcome ejected the endpoint.
    /// `may_eject` is false when the service already has its maximum share ejected.
    pub fn record_outcome(
        &self,
        outcome: Outcome,
        policy: &OutlierDetection,
        may_eject: impl FnOnce() -> bool,
    ) -> bool {
        let mut state = self.outlier.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Success => {
                state.consecutive_5xx = 0;
                state.consecutive_connect_failures = 0;
                return false;
            }
            Outcome::ServerError => state.consecutive_5xx += 1,
            Outcome::ConnectFailure => state.consecutive_connect_failures += 1,
        }
        let tripped = (policy.consecutive_5xx > 0
            && state.consecutive_5xx >= policy.consecutive_5xx)
            || (policy.consecutive_connect_failures > 0
                && state.consecutive_connect_failures >= policy.consecutive_connect_failures);
        if !tripped || self.is_ejected() || !may_eject() {
            return false;
        }
        state.times_ejected += 1;
        state.consecutive_5xx = 0;
        state.consecutive_connect_failures = 0;
        let ejection = policy
            .base_ejection_ms
            .saturating_mul(u64::from(state.times_ejected))
            .min(policy.max_ejection_ms.max(policy.base_ejection_ms));
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.ejected_until_ms
            .store(now_ms + ejection.max(1), Ordering::Relaxed);
        true
    }
}

/// Held while a request is outstanding on an endpoint; its drop ends the in-flight count.
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    started: Instant,
}

impl InFlight {
    /// Records the time to response headers as a latency sample.
    pub fn answered(&self) {
        let now = Instant::now();
        self.endpoint.observe_rtt(now - self.started, now);
    }
}

impl InFlight {
    /// Records a failure as a latency sample of `penalty` (at least a second).
    pub fn failed(&self, penalty: Duration) {
        let now = Instant::now();
        self.endpoint.observe_rtt(penalty.max(FAILURE_PENALTY), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
