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
/// How fast a single slow answer is forgotten. The peak makes a slowing endpoint lose
/// comparisons at once; it fades fast because one slow answer is more often a pause of
/// this proxy or of the host (blamed on whichever endpoint had a request in flight) than
/// a slower endpoint. With the peak on the 10-s decay, one 50-ms pause kept an identical
/// instance below a quarter of the load for seconds. A slower endpoint stays costly
/// through the mean, which follows its answers.
const PEAK_DECAY: Duration = Duration::from_millis(250);
/// The most one answer counts for in the mean, as a multiple of the mean. The mean weighs
/// an answer by the time since the last one, and a slow answer brings its own wait: in a
/// sequential load one 50-ms answer moved a 0.8-ms mean by a third. Capped, a slower
/// endpoint's mean still climbs (by up to this factor a sample) while the peak holds it off.
const MEAN_SAMPLE_CAP: f64 = 4.0;
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
    latency: Mutex<Latency>,
    outlier: Mutex<OutlierState>,
    /// Milliseconds since `epoch` until which this endpoint is ejected (0 = not ejected).
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

/// The latency estimate: a moving mean and a peak, both decaying toward zero between
/// answers; the estimate is the larger of the two.
struct Latency {
    mean_ns: f64,
    peak_ns: f64,
    updated: Instant,
}

impl Latency {
    fn new(rtt: Duration, now: Instant) -> Self {
        let rtt_ns = rtt.as_nanos() as f64;
        Self {
            mean_ns: rtt_ns,
            peak_ns: rtt_ns,
            updated: now,
        }
    }

    /// The estimate at `now`.
    fn at(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.updated);
        let mean = self.mean_ns * keep(elapsed, EWMA_DECAY);
        let peak = self.peak_ns * keep(elapsed, PEAK_DECAY);
        mean.max(peak)
    }

    fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt_ns = rtt.as_nanos() as f64;
        let elapsed = now.saturating_duration_since(self.updated);
        let kept = keep(elapsed, EWMA_DECAY);
        let sample = rtt_ns.min(self.mean_ns * MEAN_SAMPLE_CAP);
        self.mean_ns = self.mean_ns * kept + sample * (1.0 - kept);
        self.peak_ns = (self.peak_ns * keep(elapsed, PEAK_DECAY)).max(rtt_ns);
        self.updated = now;
    }

    /// A failed try is not noise: it weighs in the mean as much as in the peak.
    fn penalize(&mut self, penalty: Duration, now: Instant) {
        self.observe(penalty, now);
        self.mean_ns = self.mean_ns.max(penalty.as_nanos() as f64);
    }
}

/// The share of an estimate left after `elapsed` with decay constant `decay`.
fn keep(elapsed: Duration, decay: Duration) -> f64 {
    (-elapsed.as_secs_f64() / decay.as_secs_f64()).exp()
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
            latency: Mutex::new(Latency::new(DEFAULT_RTT, now)),
            outlier: Mutex::new(OutlierState::default()),
            ejected_until_ms: AtomicU64::new(0),
            epoch: now,
        }
    }

    /// Peak-EWMA cost: expected latency times the queue this request would join.
    pub fn cost_at(&self, now: Instant) -> f64 {
        let in_flight = self.in_flight.load(Ordering::Relaxed) as f64;
        let latency = self.latency().at(now);
        latency * (in_flight + 1.0)
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
        self.latency().observe(rtt, now);
    }

    fn latency(&self) -> std::sync::MutexGuard<'_, Latency> {
        self.latency.lock().unwrap_or_else(|e| e.into_inner())
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
        self.endpoint
            .latency()
            .penalize(penalty.max(FAILURE_PENALTY), now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
