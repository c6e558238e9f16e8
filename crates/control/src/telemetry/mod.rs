//! The golden metrics of the whole mesh, from the summaries every proxy sends on its stream
//! (`weft_api::v1::Traffic`): kept per series (the reporting Service, direction, peer and
//! route; all of a Service's proxies add to the same series) in rolling windows of 1 min,
//! 10 min and 1 h, and viewed per Service, per edge (caller -> Service, as the called side
//! saw it) and per route (as callers saw it). What `weft stat`, `top`, `diagnose` and the
//! dashboard read (`GET /api/v1/stats`, and `GET /api/v1/stats/live` as it changes): nothing
//! else needs installing to see the mesh.
//!
//! Memory is bounded: at most [`MAX_SERIES`] series of 22 slots each (about 8 KB a series,
//! measured with `bench/control-plane.sh`),
//! a report for a new series beyond that is counted in `droppedSeries`, and a series with
//! nothing in the last hour is forgotten.

mod api;
pub mod diagnose;
mod live;
mod windows;

pub use api::router;

pub use windows::{Counts, Recent, Window};

use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_api::v1::Traffic;
use windows::Rings;

/// Series kept, mesh-wide.
pub const MAX_SERIES: usize = 20_000;
/// Series one Service's proxies may fill: a proxy reports at most 4,097 keys, and a Service
/// with a runaway (or hostile) proxy must not take the room of every other.
pub const MAX_SERIES_PER_SERVICE: usize = 5_000;

/// A proxy's open-connection count is believed this long after its last report.
const OPEN_FRESH_SECS: u64 = 30;

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SeriesKey {
    /// The reporting Service, `name.namespace`.
    service: Arc<str>,
    inbound: bool,
    peer: Arc<str>,
    route: Arc<str>,
}

struct Series {
    rings: Rings,
    /// Open TCP connections by proxy: (count, when reported).
    open: HashMap<Arc<str>, (u64, u64)>,
}

#[derive(Default)]
struct State {
    series: HashMap<SeriesKey, Series>,
    /// Series per reporting Service.
    per_service: HashMap<Arc<str>, usize>,
    dropped: u64,
    last_sweep: u64,
    /// When the first report came (seconds since the epoch).
    started: u64,
}

pub struct Telemetry {
    state: Mutex<State>,
    /// How many reports have come: what live views (`GET /api/v1/stats/live`) wait on.
    reports: watch::Sender<u64>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            state: Mutex::default(),
            reports: watch::Sender::new(0),
        }
    }
}

/// One row of a view: a Service, an edge or a route, over a window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Golden {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub requests: u64,
    /// Requests a second over the window (or the part of it there is data for).
    pub rps: f64,
    /// The share of requests not answered 5xx; none without requests.
    pub success_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub client_errors: u64,
    pub server_errors: u64,
    pub denied: u64,
    pub retries: u64,
    /// Inbound: the share of requests over mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtls_share: Option<f64>,
    pub tcp_opened: u64,
    pub tcp_open: u64,
    pub bytes_received: u64,
    pub bytes_sent: u64,
}

impl Golden {
    fn of(counts: &Counts, covered: f64, tcp_open: u64, inbound: bool) -> Golden {
        let requests = counts.requests;
        let share = |part: u64| (requests > 0).then(|| part as f64 / requests as f64);
        Golden {
            requests,
            rps: requests as f64 / covered,
            success_rate: share(requests - counts.server_errors.min(requests)),
            p50_ms: counts.latency_ms(0.50),
            p95_ms: counts.latency_ms(0.95),
            p99_ms: counts.latency_ms(0.99),
            client_errors: counts.client_errors,
            server_errors: counts.server_errors,
            denied: counts.denied,
            retries: counts.retries,
            mtls_share: if inbound { share(counts.mtls) } else { None },
            tcp_opened: counts.tcp_opened,
            tcp_open,
            bytes_received: counts.bytes_received,
            bytes_sent: counts.bytes_sent,
            ..Golden::default()
        }
    }
}

/// The mesh over one window.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub window: &'static str,
    /// Each Service that reported, with what it received.
    pub services: Vec<Golden>,
    /// Caller -> Service, as the called Service's proxies saw it.
    pub edges: Vec<Golden>,
    /// Service and route, as the callers' proxies saw it.
    pub routes: Vec<Golden>,
    /// Reports for series beyond the cap, not kept.
    pub dropped_series: u64,
}

/// Two names and their numbers: (caller, Service) for an edge, (Service, route) for a
/// route.
pub type Named = ((Arc<str>, Arc<str>), Recent);

/// See [`Telemetry::recent`].
pub struct Changes {
    pub edges: Vec<Named>,
    pub routes: Vec<Named>,
    /// When the first report came; 0 before any.
    pub started: u64,
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// A sum of series and of their open connections.
#[derive(Default)]
struct Sum {
    counts: Counts,
    covered: f64,
    open: u64,
}

impl Sum {
    fn add(&mut self, counts: &Counts, covered: f64, open: u64) {
        self.counts.add(counts);
        self.covered = self.covered.max(covered);
        self.open += open;
    }

    fn golden(&self, inbound: bool) -> Golden {
        Golden::of(&self.counts, self.covered.max(1.0), self.open, inbound)
    }
}

impl Telemetry {
    /// Adds one report of `proxy`, a proxy of `service` (`name.namespace`).
    pub fn record(&self, proxy: &str, service: &str, traffic: &Traffic) {
        self.record_at(proxy, service, traffic, now_secs());
        self.reports
            .send_modify(|reports| *reports = reports.wrapping_add(1));
    }

    /// Changes whenever a report has been added.
    pub fn reports(&self) -> watch::Receiver<u64> {
        self.reports.subscribe()
    }

    fn record_at(&self, proxy: &str, service: &str, traffic: &Traffic, now: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.started == 0 {
            state.started = now;
        }
        if now >= state.last_sweep + 60 {
            let State {
                series,
                per_service,
                ..
            } = &mut *state;
            series.retain(|key, series| {
                let stale = series.rings.is_stale(now);
                if stale {
                    if let Some(count) = per_service.get_mut(&key.service) {
                        *count -= 1;
                    }
                }
                !stale
            });
            per_service.retain(|_, count| *count > 0);
            state.last_sweep = now;
        }
        let service: Arc<str> = Arc::from(service);
        let proxy: Arc<str> = Arc::from(proxy);
        for stat in &traffic.stats {
            let key = SeriesKey {
                service: service.clone(),
                inbound: stat.inbound,
                peer: Arc::from(stat.peer.as_str()),
                route: Arc::from(stat.route.as_str()),
            };
            let full = state.series.len() >= MAX_SERIES
                || state.per_service.get(&service).copied().unwrap_or(0) >= MAX_SERIES_PER_SERVICE;
            let State {
                series,
                per_service,
                dropped,
                ..
            } = &mut *state;
            let series = match series.get_mut(&key) {
                Some(series) => series,
                None if full => {
                    *dropped += 1;
                    continue;
                }
                None => {
                    *per_service.entry(service.clone()).or_default() += 1;
                    series.entry(key).or_insert_with(|| Series {
                        rings: Rings::new(now),
                        open: HashMap::new(),
                    })
                }
            };
            series.rings.add(&Counts::of(stat), now);
            series.open.retain(|_, (_, at)| *at + OPEN_FRESH_SECS > now);
            if stat.tcp_open > 0 {
                series.open.insert(proxy.clone(), (stat.tcp_open, now));
            } else {
                series.open.remove(&proxy);
            }
        }
    }

    /// Each edge (caller, Service) and route (Service, route) with its last seconds against
    /// the minutes before, and when the first report came: what `weft diagnose` compares.
    pub fn recent(&self, now: u64) -> Changes {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut edges: BTreeMap<(Arc<str>, Arc<str>), Recent> = BTreeMap::new();
        let mut routes: BTreeMap<(Arc<str>, Arc<str>), Recent> = BTreeMap::new();
        for (key, series) in &state.series {
            let recent = series.rings.recent(now);
            let (list, at) = if key.inbound {
                (&mut edges, (key.peer.clone(), key.service.clone()))
            } else if !key.route.is_empty() {
                (&mut routes, (key.peer.clone(), key.route.clone()))
            } else {
                continue;
            };
            list.entry(at).or_default().add(&recent);
        }
        Changes {
            edges: edges.into_iter().collect(),
            routes: routes.into_iter().collect(),
            started: state.started,
        }
    }

    /// Series kept now.
    pub fn series(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series
            .len()
    }

    /// The mesh over `window`, each list sorted by name.
    pub fn view(&self, window: Window) -> View {
        self.view_at(window, now_secs())
    }

    fn view_at(&self, window: Window, now: u64) -> View {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut services: BTreeMap<Arc<str>, Sum> = BTreeMap::new();
        let mut edges: BTreeMap<(Arc<str>, Arc<str>), Sum> = BTreeMap::new();
        let mut routes: BTreeMap<(Arc<str>, Arc<str>), Sum> = BTreeMap::new();
        for (key, series) in &state.series {
            let (counts, covered) = series.rings.sum(window, now);
            let open: u64 = series
                .open
                .values()
                .filter(|(_, at)| *at + OPEN_FRESH_SECS > now)
                .map(|(count, _)| count)
                .sum();
            let service = services.entry(key.service.clone()).or_default();
            if key.inbound {
                service.add(&counts, covered, open);
                edges
                    .entry((key.peer.clone(), key.service.clone()))
                    .or_default()
                    .add(&counts, covered, open);
            } else if !key.route.is_empty() {
                routes
                    .entry((key.peer.clone(), key.route.clone()))
                    .or_default()
                    .add(&counts, covered, open);
            }
        }
        View {
            window: window.as_str(),
            services: services
                .into_iter()
                .map(|(name, sum)| Golden {
                    name: Some(name.to_string()),
                    ..sum.golden(true)
                })
                .collect(),
            edges: edges
                .into_iter()
                .map(|((source, destination), sum)| Golden {
                    source: Some(source.to_string()),
                    destination: Some(destination.to_string()),
                    ..sum.golden(true)
                })
                .collect(),
            routes: routes
                .into_iter()
                .map(|((destination, route), sum)| Golden {
                    destination: Some(destination.to_string()),
                    route: Some(route.to_string()),
                    ..sum.golden(false)
                })
                .collect(),
            dropped_series: state.dropped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_api::v1::TrafficStat;

    fn stat(inbound: bool, peer: &str, route: &str, requests: u64, failed: u64) -> TrafficStat {
        let mut latency = vec![0; weft_api::LATENCY_BUCKETS];
        latency[weft_api::latency_bucket(800)] = requests;
        TrafficStat {
            inbound,
            peer: peer.to_owned(),
            route: route.to_owned(),
            requests,
            server_errors: failed,
            mtls: if inbound { requests } else { 0 },
            latency,
            ..TrafficStat::default()
        }
    }

    fn report(stats: Vec<TrafficStat>) -> Traffic {
        Traffic {
            window_millis: 5000,
            stats,
            left_out: 0,
        }
    }

    #[test]
    fn replicas_add_up_per_service_edge_and_route() {
        let telemetry = Telemetry::default();
        let now = 2_000_000;
        for proxy in ["v1-a", "v1-b"] {
            let traffic = report(vec![stat(true, "web.default", "", 30, 3)]);
            telemetry.record_at(proxy, "reviews-v1.default", &traffic, now - 45);
        }
        let web = report(vec![stat(false, "reviews.default", "reviews", 60, 6)]);
        telemetry.record_at("web-a", "web.default", &web, now - 45);
        let view = telemetry.view_at(Window::OneMinute, now);
        let v1 = view
            .services
            .iter()
            .find(|s| s.name.as_deref() == Some("reviews-v1.default"))
            .unwrap();
        assert_eq!(v1.requests, 60);
        assert_eq!(v1.success_rate, Some(0.9));
        assert_eq!(v1.mtls_share, Some(1.0));
        assert!((0.5..=1.0).contains(&v1.p50_ms.unwrap()), "{v1:?}");
        // 60 requests over the 45 s there is data for.
        assert!((v1.rps - 60.0 / 45.0).abs() < 1e-9, "{}", v1.rps);
        let [edge] = &view.edges[..] else {
            panic!("{:?}", view.edges)
        };
        assert_eq!(edge.source.as_deref(), Some("web.default"));
        assert_eq!(edge.requests, 60);
        let [route] = &view.routes[..] else {
            panic!("{:?}", view.routes)
        };
        assert_eq!(
            (route.destination.as_deref(), route.route.as_deref()),
            (Some("reviews.default"), Some("reviews"))
        );
        assert_eq!(route.mtls_share, None);
        // The web Service is listed, with nothing received.
        assert!(view
            .services
            .iter()
            .any(|s| s.name.as_deref() == Some("web.default") && s.requests == 0));
    }

    #[test]
    fn series_beyond_the_caps_are_counted_not_kept() {
        let telemetry = Telemetry::default();
        let callers = |service: usize| -> Traffic {
            report(
                (0..MAX_SERIES_PER_SERVICE + 3)
                    .map(|i| stat(true, &format!("caller-{service}-{i}.default"), "", 1, 0))
                    .collect(),
            )
        };
        // One Service fills its own share only.
        telemetry.record_at("p", "api.default", &callers(0), 1_000_000);
        let view = telemetry.view_at(Window::OneHour, 1_000_010);
        assert_eq!(view.edges.len(), MAX_SERIES_PER_SERVICE);
        assert_eq!(view.dropped_series, 3);
        // And the mesh-wide cap holds across Services.
        for service in 1..=4 {
            let name = format!("api-{service}.default");
            telemetry.record_at("p", &name, &callers(service), 1_000_000);
        }
        let view = telemetry.view_at(Window::OneHour, 1_000_010);
        assert_eq!(view.edges.len(), MAX_SERIES);
        // Forgotten an hour later, and room again.
        telemetry.record_at("p", "api.default", &callers(9), 1_000_000 + 3700);
        let view = telemetry.view_at(Window::OneHour, 1_000_000 + 3710);
        assert_eq!(view.edges.len(), MAX_SERIES_PER_SERVICE);
    }
}
