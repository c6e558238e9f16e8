//! The proxy's Prometheus metrics.
//!
//! Label sets are resolved into metric handles when a route or connection is set up; the
//! per-request path only increments. Names are part of Weft's contract (DESIGN.md).

use crate::traffic::{EdgeStat, TrafficStats};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, OnceLock, RwLock};
use weft_model::authz::RuleRef;

/// Seconds; dense below 10 ms where a sidecar's own latency lives.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    source: Arc<str>,
    destination: Arc<str>,
    route: Arc<str>,
    status_code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpLabels {
    direction: &'static str,
    source: Arc<str>,
    destination: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TcpByteLabels {
    direction: &'static str,
    source: Arc<str>,
    destination: Arc<str>,
    /// `read` from the connection's client, `write` to it.
    flow: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    destination: Arc<str>,
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectLabels {
    direction: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthzLabels {
    decision: &'static str,
    policy: Arc<str>,
    rule: RuleLabel,
}

/// A rule's index in its policy, `none` (no ALLOW matched) or `default` (the mesh's).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct RuleLabel(RuleRef);

impl EncodeLabelValue for RuleLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        use std::fmt::Write;
        write!(encoder, "{}", self.0)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    destination: Arc<str>,
    endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<RequestLabels>,
    tcp_open: Family<TcpLabels, Gauge>,
    tcp_bytes: Family<TcpByteLabels, Counter>,
    retries: Family<RouteLabels, Counter>,
    rejected: Family<RejectLabels, Counter>,
    authz: Family<AuthzLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    config_version: Family<VersionLabels, Gauge>,
    config_reloads: Family<ResultLabels, Counter>,
    certificate_expiry: Gauge,
    /// `weft tap` streams open in this proxy.
    pub taps_open: Gauge,
    /// Spans not exported: the queue was full or the collector refused them.
    pub trace_spans_dropped: Counter,
    certificate_renewals: Family<ResultLabels, Counter>,
    /// Access-log lines dropped because the writer fell behind (stdout blocked or slow).
    pub access_log_dropped: Counter,
    saturated: Family<DestinationLabels, Counter>,
    dns_queries: Family<ResultLabels, Counter>,
    /// DNS queries relayed upstream and not yet answered.
    pub dns_relays_in_flight: Gauge,
    /// What the eBPF capture's programs did (read from their map when scraped).
    pub ebpf: EbpfMetrics,
    /// The golden metrics reported to the control plane; every request and TCP handle
    /// below holds its stat there.
    pub traffic: TrafficStats,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabels {
    destination: Arc<str>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        let durations = HistogramFamily::new_with_constructor(latency_histogram as fn() -> _);
        let tcp_open = Family::default();
        let tcp_bytes = Family::default();
        let retries = Family::default();
        let rejected = Family::default();
        let authz = Family::default();
        let ejections = Family::default();
        let config_version = Family::default();
        let config_reloads = Family::default();
        let certificate_expiry = Gauge::default();
        let taps_open = Gauge::default();
        let trace_spans_dropped = Counter::default();
        let certificate_renewals = Family::default();
        let access_log_dropped = Counter::default();
        let saturated = Family::default();
        let dns_queries = Family::default();
        let dns_relays_in_flight = Gauge::default();
        let ebpf = EbpfMetrics::default();
        // prometheus-client appends `_total` to counters itself.
        registry.register(
            "weft_http_requests",
            "HTTP requests proxied, by outcome",
            requests.clone(),
        );
        registry.register(
            "weft_http_request_duration_seconds",
            "Time from request received to response headers sent",
            durations.clone(),
        );
        registry.register(
            "weft_tcp_connections_open",
            "Proxied TCP connections open",
            tcp_open.clone(),
        );
        registry.register(
            "weft_tcp_bytes",
            "Bytes proxied over TCP connections",
            tcp_bytes.clone(),
        );
        registry.register("weft_retries", "Requests retried", retries.clone());
        registry.register(
            "weft_rejected",
            "Connections and requests refused by the proxy, by reason",
            rejected.clone(),
        );
        registry.register(
            "weft_authz_decisions",
            "Authorization decisions on inbound connections and requests, by policy and rule",
            authz.clone(),
        );
        registry.register(
            "weft_outlier_ejections",
            "Endpoints taken out of rotation by outlier detection",
            ejections.clone(),
        );
        registry.register(
            "weft_config_version",
            "Configuration generation in force (1 for the first), labelled with its version",
            config_version.clone(),
        );
        registry.register(
            "weft_config_reloads",
            "Configuration loads, by result",
            config_reloads.clone(),
        );
        registry.register(
            "weft_trace_spans_dropped",
            "Spans not exported to the trace collector: its queue was full, or it refused or could not be reached",
            trace_spans_dropped.clone(),
        );
        registry.register(
            "weft_taps_open",
            "weft tap streams open in this proxy (zero cost to requests when 0)",
            taps_open.clone(),
        );
        registry.register(
            "weft_certificate_expiry_timestamp_seconds",
            "When this proxy's workload certificate expires, in seconds since the Unix epoch",
            certificate_expiry.clone(),
        );
        registry.register(
            "weft_certificate_renewals",
            "Workload certificate renewals, by result",
            certificate_renewals.clone(),
        );
        registry.register(
            "weft_upstream_connections_saturated",
            "Requests that found every HTTP/2 connection to an endpoint at its stream limit, with the most connections open, and queued",
            saturated.clone(),
        );
        registry.register(
            "weft_dns_queries",
            "DNS queries to the proxy (--dns), by result: mesh, mesh_no_data, relayed, upstream_failed, overloaded, malformed, ignored",
            dns_queries.clone(),
        );
        registry.register(
            "weft_dns_relays_in_flight",
            "DNS queries relayed to the upstream resolvers and not answered yet (at most 256; more get SERVFAIL, counted as overloaded)",
            dns_relays_in_flight.clone(),
        );
        registry.register(
            "weft_capture_ebpf_redirects",
            "Connects of the app sent to the outbound listener by eBPF capture (--capture ebpf|auto)",
            ebpf.redirects.clone(),
        );
        registry.register(
            "weft_capture_ebpf_local_sockets",
            "Sockets of local connections (both ends on loopback, in the capture cgroup) put in the eBPF sockhash",
            ebpf.local_sockets.clone(),
        );
        registry.register(
            "weft_capture_ebpf_local_messages",
            "Messages eBPF passed from a local socket straight to its peer's, skipping the TCP/IP stack",
            ebpf.local_messages.clone(),
        );
        registry.register(
            "weft_access_log_dropped",
            "Access-log lines dropped because standard output could not keep up",
            access_log_dropped.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            tcp_open,
            tcp_bytes,
            retries,
            rejected,
            authz,
            ejections,
            config_version,
            config_reloads,
            certificate_expiry,
            taps_open,
            trace_spans_dropped,
            certificate_renewals,
            access_log_dropped,
            saturated,
            dns_queries,
            dns_relays_in_flight,
            ebpf,
            traffic: TrafficStats::default(),
        }
    }

    /// Counts requests to `destination` that found its connections saturated.
    pub fn saturated(&self, destination: Arc<str>) -> LazyCounter {
        LazyCounter::new(&self.saturated, DestinationLabels { destination })
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }

    pub fn request_metrics(
        &self,
        direction: Direction,
        source: Arc<str>,
        destination: Arc<str>,
        route: Arc<str>,
    ) -> RequestMetrics {
        let inbound = direction == Direction::Inbound;
        let peer = if inbound { &source } else { &destination };
        RequestMetrics {
            traffic: self.traffic.stat(inbound, peer, &route),
            base: RequestLabels {
                direction: direction.as_str(),
                source,
                destination,
                route,
                status_code: 0,
            },
            requests: self.requests.clone(),
            durations: self.durations.clone(),
            by_status: RwLock::new(Vec::new()),
        }
    }

    pub fn tcp_metrics(
        &self,
        direction: Direction,
        source: Arc<str>,
        destination: Arc<str>,
    ) -> TcpMetrics {
        let labels = |flow| TcpByteLabels {
            direction: direction.as_str(),
            source: source.clone(),
            destination: destination.clone(),
            flow,
        };
        let inbound = direction == Direction::Inbound;
        let peer = if inbound { &source } else { &destination };
        TcpMetrics {
            traffic: self.traffic.stat(inbound, peer, &Arc::from("")),
            open: self.tcp_open.get_or_create_owned(&TcpLabels {
                direction: direction.as_str(),
                source: source.clone(),
                destination: destination.clone(),
            }),
            read: self.tcp_bytes.get_or_create_owned(&labels("read")),
            written: self.tcp_bytes.get_or_create_owned(&labels("write")),
        }
    }

    pub fn retries(&self, destination: Arc<str>, route: Arc<str>) -> LazyCounter {
        LazyCounter::new(&self.retries, RouteLabels { destination, route })
    }

    pub fn reject(&self, direction: Direction, reason: &'static str) {
        self.rejected
            .get_or_create(&RejectLabels {
                direction: direction.as_str(),
                reason,
            })
            .inc();
    }

    /// Counts one authorization decision (`allow`, `deny`, `dry_run_deny`, `audit`).
    pub fn authz_decision(&self, decision: &'static str, policy: &Arc<str>, rule: RuleRef) {
        self.authz
            .get_or_create(&AuthzLabels {
                decision,
                policy: policy.clone(),
                rule: RuleLabel(rule),
            })
            .inc();
    }

    pub fn ejection(&self, destination: Arc<str>, endpoint: String) {
        self.ejections
            .get_or_create(&EndpointLabels {
                destination,
                endpoint,
            })
            .inc();
    }

    pub fn config_loaded(&self, version: &str, generation: i64) {
        self.config_version.clear();
        self.config_version
            .get_or_create(&VersionLabels {
                version: version.to_string(),
            })
            .set(generation);
        self.config_reloads
            .get_or_create(&ResultLabels { result: "ok" })
            .inc();
    }

    pub fn certificate_expiry(&self, not_after: std::time::SystemTime) {
        let seconds = not_after
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.certificate_expiry
            .set(i64::try_from(seconds).unwrap_or(i64::MAX));
    }

    pub fn certificate_renewed(&self, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.certificate_renewals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Counts one DNS query by its `result`.
    pub fn dns_query(&self, result: &'static str) {
        self.dns_queries
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn config_rejected(&self) {
        self.config_reloads
            .get_or_create(&ResultLabels { result: "error" })
            .inc();
    }
}

/// Request counters for one (direction, source, destination, route). Status codes are
/// few per route, so their handles live in a short list behind a read-mostly lock.
pub struct RequestMetrics {
    base: RequestLabels,
    requests: Family<RequestLabels, Counter>,
    durations: HistogramFamily<RequestLabels>,
    by_status: RwLock<Vec<(u16, Counter, Histogram)>>,
    traffic: Arc<EdgeStat>,
}

impl RequestMetrics {
    /// The golden-metrics stat these requests count in too.
    pub fn traffic(&self) -> &Arc<EdgeStat> {
        &self.traffic
    }

    pub fn record(&self, status: u16, seconds: f64) {
        self.traffic.request(status, seconds);
        {
            let known = self.by_status.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, count, latency)) = known.iter().find(|(s, _, _)| *s == status) {
                count.inc();
                latency.observe(seconds);
                return;
            }
        }
        let labels = RequestLabels {
            status_code: status,
            ..self.base.clone()
        };
        let count = self.requests.get_or_create_owned(&labels);
        let latency = self.durations.get_or_create_owned(&labels);
        count.inc();
        latency.observe(seconds);
        self.by_status
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((status, count, latency));
    }
}

pub struct TcpMetrics {
    pub traffic: Arc<EdgeStat>,
    pub open: Gauge,
    pub read: Counter,
    pub written: Counter,
}

/// A counter that shows in `/metrics` only once it has counted something: a proxy that
/// holds thousands of services it never calls exports no zero series for them (and keeps
/// no counter for them). Created at the first increment, then one atomic add.
pub struct LazyCounter {
    create: Box<dyn Fn() -> Counter + Send + Sync>,
    counter: OnceLock<Counter>,
}

impl LazyCounter {
    fn new<L>(family: &Family<L, Counter>, labels: L) -> Self
    where
        L: Clone + std::hash::Hash + Eq + Send + Sync + 'static,
    {
        let family = family.clone();
        LazyCounter {
            create: Box::new(move || family.get_or_create_owned(&labels)),
            counter: OnceLock::new(),
        }
    }

    pub fn inc(&self) {
        self.counter.get_or_init(&self.create).inc();
    }
}

/// The eBPF capture's counters, as Prometheus counters.
#[derive(Default)]
pub struct EbpfMetrics {
    redirects: Counter,
    local_sockets: Counter,
    local_messages: Counter,
}

impl EbpfMetrics {
    /// Brings the counters up to the programs' own totals.
    pub fn sync(&self, counts: crate::capture::EbpfCounts) {
        for (counter, total) in [
            (&self.redirects, counts.redirects),
            (&self.local_sockets, counts.local_sockets),
            (&self.local_messages, counts.local_messages),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}
