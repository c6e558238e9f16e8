//! `weft tap`: the control plane opens a tap in this proxy (`TapStart`), and every request
//! it carries that matches the tap's filter is sent back as a `TapEvent`, at most the tap's
//! rate a second, until `TapStop` (or the stream ends).
//!
//! With no tap open a request pays one relaxed atomic load. With taps open, a request is
//! checked against each filter on borrowed data, and an event is built only for a match
//! within the rate; at most [`MAX_BUFFERED`] events wait for the next batch, the rest are
//! dropped and counted, so a tap can't grow the proxy or slow its requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use weft_api::v1::{TapEvent, TapEvents, TapStart};

/// Taps open at once in one proxy.
pub const MAX_TAPS: usize = 16;
/// Events waiting for a batch, per tap.
const MAX_BUFFERED: usize = 1000;
/// The highest rate a tap may ask for.
pub const MAX_RATE: u32 = 1000;

#[derive(Default)]
pub struct Taps {
    open: AtomicBool,
    taps: Mutex<Vec<OpenTap>>,
}

struct OpenTap {
    start: TapStart,
    /// The second (since the epoch) the rate is counted in, and the events in it.
    second: u64,
    in_second: u32,
    events: Vec<TapEvent>,
    dropped: u64,
}

/// A latency as a tap event carries it.
pub fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// What a request must keep for the taps until its answer: only taken when a tap is open.
pub struct Tapped {
    /// A standard method is a constant: no allocation.
    pub method: http::Method,
    pub path: String,
}

impl Tapped {
    pub fn of<B>(taps: &Taps, request: &http::Request<B>) -> Option<Tapped> {
        taps.is_open().then(|| Tapped {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        })
    }
}

/// A request as a tap sees it, borrowed until it matches.
pub struct Exchange<'a> {
    pub inbound: bool,
    pub source: &'a str,
    pub destination: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency_micros: u64,
    pub route: &'a str,
    pub authz: Option<(&'a str, &'a str)>,
    pub upstream: Option<std::net::SocketAddr>,
}

impl Taps {
    /// Whether any tap is open: the only cost a request pays otherwise.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// How many taps are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OpenTap>> {
        self.taps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a tap (again: a start for an open id replaces its filter).
    pub fn start(&self, mut start: TapStart) {
        start.max_rps = start.max_rps.clamp(1, MAX_RATE);
        let mut taps = self.lock();
        taps.retain(|tap| tap.start.id != start.id);
        if taps.len() >= MAX_TAPS {
            tracing::warn!(id = start.id, "too many taps open; this one is refused");
            return;
        }
        taps.push(OpenTap {
            start,
            second: 0,
            in_second: 0,
            events: Vec::new(),
            dropped: 0,
        });
        self.open.store(true, Ordering::Relaxed);
    }

    pub fn stop(&self, id: u64) {
        let mut taps = self.lock();
        taps.retain(|tap| tap.start.id != id);
        self.open.store(!taps.is_empty(), Ordering::Relaxed);
    }

    /// Every tap closed: the control plane's stream ended.
    pub fn stop_all(&self) {
        self.lock().clear();
        self.open.store(false, Ordering::Relaxed);
    }

    /// Offers one finished request to the open taps.
    pub fn offer(&self, exchange: &Exchange) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut taps = self.lock();
        for tap in taps.iter_mut() {
            let filter = &tap.start;
            let matches = exchange.path.starts_with(&filter.path_prefix)
                && (filter.method.is_empty() || filter.method == exchange.method)
                && (filter.status == 0 || filter.status == u32::from(exchange.status));
            if !matches {
                continue;
            }
            if tap.second != now.as_secs() {
                tap.second = now.as_secs();
                tap.in_second = 0;
            }
            if tap.in_second >= filter.max_rps || tap.events.len() >= MAX_BUFFERED {
                tap.dropped += 1;
                continue;
            }
            tap.in_second += 1;
            let (decision, policy) = exchange.authz.unwrap_or(("", ""));
            tap.events.push(TapEvent {
                unix_millis: i64::try_from(now.as_millis()).unwrap_or(i64::MAX),
                inbound: exchange.inbound,
                source: exchange.source.to_owned(),
                destination: exchange.destination.to_owned(),
                method: exchange.method.to_owned(),
                path: exchange.path.to_owned(),
                status: u32::from(exchange.status),
                latency_micros: exchange.latency_micros,
                route: exchange.route.to_owned(),
                authz_decision: decision.to_owned(),
                authz_policy: policy.to_owned(),
                upstream: exchange.upstream.map(|a| a.to_string()).unwrap_or_default(),
            });
        }
    }

    /// The events of each tap since the last call (taps with none or no drops left out).
    pub fn take(&self) -> Vec<TapEvents> {
        if !self.is_open() {
            return Vec::new();
        }
        let mut taps = self.lock();
        taps.iter_mut()
            .filter(|tap| !tap.events.is_empty() || tap.dropped > 0)
            .map(|tap| TapEvents {
                id: tap.start.id,
                // Room for as many as this batch had: a busy tap fills its buffer again
                // without growing it step by step (and copying it) every batch.
                events: {
                    let room = tap.events.len();
                    std::mem::replace(&mut tap.events, Vec::with_capacity(room))
                },
                dropped: std::mem::take(&mut tap.dropped),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange<'a>(method: &'a str, path: &'a str, status: u16) -> Exchange<'a> {
        Exchange {
            inbound: true,
            source: "spiffe://weft.local/ns/default/svc/web",
            destination: "api.default",
            method,
            path,
            status,
            latency_micros: 1200,
            route: "",
            authz: Some(("allow", "mesh")),
            upstream: None,
        }
    }

    #[test]
    fn a_tap_keeps_what_matches_up_to_its_rate_and_stops() {
        let taps = Taps::default();
        assert!(!taps.is_open());
        taps.start(TapStart {
            id: 7,
            path_prefix: "/books".into(),
            method: "GET".into(),
            status: 0,
            max_rps: 3,
        });
        assert!(taps.is_open());
        taps.offer(&exchange("GET", "/other", 200));
        taps.offer(&exchange("POST", "/books/1", 200));
        for _ in 0..10 {
            taps.offer(&exchange("GET", "/books/1", 200));
        }
        let [batch] = &taps.take()[..] else {
            panic!("one tap")
        };
        assert_eq!(batch.id, 7);
        // Within one second, three; a test that straddles a second boundary sees up to six.
        assert!(
            (3..=6).contains(&batch.events.len()),
            "{}",
            batch.events.len()
        );
        assert_eq!(batch.events.len() as u64 + batch.dropped, 10);
        assert_eq!(batch.events[0].authz_decision, "allow");
        taps.stop(7);
        assert!(!taps.is_open());
        assert!(taps.take().is_empty());
    }
}
