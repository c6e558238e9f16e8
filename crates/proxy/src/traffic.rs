//! Golden metrics for the control plane: what this proxy carried per edge and route (its app
//! as the called end, per caller; its app as the caller, per service and route), counted
//! between reports and sent as deltas on the proxy's stream every few seconds. `weft stat`,
//! `top`, `diagnose` and the dashboard read the control plane's rolling windows of them, so
//! seeing the mesh needs nothing else installed.
//!
//! Each request costs a few atomic adds on a stat its metric handles already hold (no
//! lookup). Stats are made with those handles, at most [`MAX_STATS`] of them: beyond that
//! every new key shares one `other` stat, so a proxy with many routes or callers cannot grow
//! itself or its reports without bound; a stat nothing holds any more and that counted
//! nothing since the last report is forgotten.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_api::v1::{Traffic, TrafficStat};
use weft_api::{latency_bucket, LATENCY_BUCKETS};

/// Distinct (direction, peer, route) kept.
pub const MAX_STATS: usize = 4096;

/// The inbound peer names that are not a mutual-TLS identity.
const NOT_MTLS: [&str; 2] = ["plaintext", "unknown"];

#[derive(Clone, Hash, PartialEq, Eq)]
struct Key {
    inbound: bool,
    peer: Arc<str>,
    route: Arc<str>,
}

/// The counters of one edge or route, since the last report.
#[derive(Debug)]
pub struct EdgeStat {
    /// Inbound from a caller that proved an identity.
    over_mtls: bool,
    requests: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    denied: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
    retries: AtomicU64,
    tcp_opened: AtomicU64,
    tcp_open: AtomicI64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

#[cfg(test)]
impl Default for EdgeStat {
    fn default() -> Self {
        EdgeStat::new(false)
    }
}

impl EdgeStat {
    fn new(over_mtls: bool) -> Self {
        EdgeStat {
            over_mtls,
            requests: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
            retries: AtomicU64::new(0),
            tcp_opened: AtomicU64::new(0),
            tcp_open: AtomicI64::new(0),
            bytes_received: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
        }
    }

    /// One request answered `status` after `seconds`.
    pub fn request(&self, status: u16, seconds: f64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            400..=499 => self.client_errors.fetch_add(1, Ordering::Relaxed),
            500.. => self.server_errors.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let micros = (seconds * 1e6) as u64;
        self.latency[latency_bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// A gRPC call that ended with a status other than OK (see `grpc_outcome.rs`), already
    /// counted as a request by its HTTP status: a failure like a 5xx.
    pub fn grpc_failed(&self) {
        self.server_errors.fetch_add(1, Ordering::Relaxed);
    }

    #[cfg(test)]
    pub fn server_errors(&self) -> u64 {
        self.server_errors.load(Ordering::Relaxed)
    }

    /// One request authorization denied (counted as a request too, by its 403).
    pub fn denied(&self) {
        self.denied.fetch_add(1, Ordering::Relaxed);
    }

    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    pub fn tcp_opened(&self) {
        self.tcp_opened.fetch_add(1, Ordering::Relaxed);
        self.tcp_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A TCP connection closed after `received` bytes from the side that opened it and
    /// `sent` to it.
    pub fn tcp_closed(&self, received: u64, sent: u64) {
        self.tcp_open.fetch_sub(1, Ordering::Relaxed);
        self.bytes_received.fetch_add(received, Ordering::Relaxed);
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
    }

    /// The counts since the last call, zeroed; `None` if nothing happened and no
    /// connection is open.
    fn take(&self, key: &Key) -> Option<TrafficStat> {
        let take = |counter: &AtomicU64| counter.swap(0, Ordering::Relaxed);
        let requests = take(&self.requests);
        let stat = TrafficStat {
            inbound: key.inbound,
            peer: key.peer.to_string(),
            route: key.route.to_string(),
            requests,
            client_errors: take(&self.client_errors),
            server_errors: take(&self.server_errors),
            denied: take(&self.denied),
            mtls: if self.over_mtls { requests } else { 0 },
            latency: self.latency.iter().map(take).collect(),
            retries: take(&self.retries),
            tcp_opened: take(&self.tcp_opened),
            tcp_open: self.tcp_open.load(Ordering::Relaxed).max(0) as u64,
            bytes_received: take(&self.bytes_received),
            bytes_sent: take(&self.bytes_sent),
        };
        let idle = stat.requests == 0 && stat.tcp_opened == 0 && stat.tcp_open == 0;
        let moved = stat.bytes_received + stat.bytes_sent + stat.retries + stat.denied;
        (!idle || moved > 0).then_some(stat)
    }
}

/// Every stat of this proxy, and when they were last reported.
pub struct TrafficStats {
    stats: Mutex<HashMap<Key, Arc<EdgeStat>>>,
    last_taken: Mutex<Instant>,
}

impl Default for TrafficStats {
    fn default() -> Self {
        TrafficStats {
            stats: Mutex::new(HashMap::new()),
            last_taken: Mutex::new(Instant::now()),
        }
    }
}

impl TrafficStats {
    /// The stat of requests this proxy's app received from `peer` (`inbound`), or sent to
    /// `peer` by `route`; the same one each time it is asked for.
    pub fn stat(&self, inbound: bool, peer: &Arc<str>, route: &Arc<str>) -> Arc<EdgeStat> {
        let key = Key {
            inbound,
            peer: peer.clone(),
            route: if inbound {
                Arc::from("")
            } else {
                route.clone()
            },
        };
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(stat) = stats.get(&key) {
            return stat.clone();
        }
        let key = if stats.len() >= MAX_STATS {
            Key {
                inbound,
                peer: Arc::from("other"),
                route: Arc::from(""),
            }
        } else {
            key
        };
        let over_mtls = inbound && !NOT_MTLS.contains(&&*key.peer);
        stats
            .entry(key)
            .or_insert_with(|| Arc::new(EdgeStat::new(over_mtls)))
            .clone()
    }

    /// What was carried since the last report; `None` when nothing was.
    pub fn take(&self) -> Option<Traffic> {
        let covered = {
            let mut last = self.last_taken.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            std::mem::replace(&mut *last, now).elapsed()
        };
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Vec::new();
        stats.retain(|key, stat| match stat.take(key) {
            Some(counted) => {
                taken.push(counted);
                true
            }
            // Nothing holds it but this map, and it counted nothing: forget it.
            None => Arc::strong_count(stat) > 1,
        });
        if taken.is_empty() {
            return None;
        }
        Some(Traffic {
            window_millis: duration_millis(covered),
            stats: taken,
            left_out: 0,
        })
    }
}

fn duration_millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_class_and_bucket_and_reported_once() {
        let stats = TrafficStats::default();
        let web: Arc<str> = Arc::from("web.default");
        let route: Arc<str> = Arc::from("");
        let stat = stats.stat(true, &web, &route);
        stat.request(200, 0.0002);
        stat.request(404, 0.004);
        stat.request(503, 2.5);
        stat.denied();
        let again = stats.stat(true, &web, &route);
        assert!(Arc::ptr_eq(&stat, &again), "one stat per key");
        let report = stats.take().unwrap();
        let [counted] = &report.stats[..] else {
            panic!("{:?}", report.stats)
        };
        assert_eq!(
            (
                counted.requests,
                counted.client_errors,
                counted.server_errors
            ),
            (3, 1, 1)
        );
        assert_eq!((counted.denied, counted.mtls), (1, 3));
        assert_eq!(counted.latency[0], 1, "0.2 ms is in the first bucket");
        assert_eq!(counted.latency[latency_bucket(4_000)], 1);
        assert_eq!(counted.latency[latency_bucket(2_500_000)], 1);
        assert!(stats.take().is_none(), "a report empties it");
    }

    #[test]
    fn keys_beyond_the_cap_share_one_stat_and_idle_ones_are_forgotten() {
        let stats = TrafficStats::default();
        let route: Arc<str> = Arc::from("default");
        for i in 0..MAX_STATS + 10 {
            let peer: Arc<str> = Arc::from(format!("svc-{i}.default"));
            stats.stat(false, &peer, &route).request(200, 0.001);
        }
        let report = stats.take().unwrap();
        assert_eq!(report.stats.len(), MAX_STATS + 1);
        let other = report.stats.iter().find(|s| &*s.peer == "other").unwrap();
        assert_eq!(other.requests, 10);
        // Nobody holds those stats and they counted nothing since: gone.
        assert!(stats.take().is_none());
        assert!(stats.stats.lock().unwrap().is_empty());
    }
}
