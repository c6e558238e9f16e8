//! The compiled configuration one proxy runs.
//!
//! This is the contract between the compiler (resources -> config) and the data plane.
//! Everything here is already validated: names resolved, durations parsed, regexes known to
//! compile, weights and percentages in range. It serializes to JSON for the proxy's `/config`
//! admin endpoint, and it is what the control plane will push over the wire later.

use crate::authz::{AuthzPolicy, DefaultAuthorization};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything one proxy needs: the services it can reach and their policies.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyConfig {
    /// Changes whenever the content changes (a hash of the content, or a push counter).
    pub version: String,
    /// SPIFFE trust domain, `weft.local` unless a `Mesh` resource says otherwise.
    pub trust_domain: String,
    /// Whether inbound accepts plaintext (from the `Mesh` resource); strict unless it says so.
    #[serde(default, skip_serializing_if = "MtlsMode::is_strict")]
    pub mtls_mode: MtlsMode,
    /// What a call that no AuthorizationPolicy allows or denies gets (from the `Mesh`).
    #[serde(default, skip_serializing_if = "DefaultAuthorization::is_allow")]
    pub default_authorization: DefaultAuthorization,
    /// What a captured connection to an address no service has gets (from the `Mesh`).
    #[serde(default, skip_serializing_if = "OutboundTrafficPolicy::is_allow_any")]
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// 0-100: the share of authorization decisions sampled into the audit log (from the
    /// `Mesh`; denials are reported whatever it is).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub audit_decisions_percent: f64,
    /// Where spans of sampled traces go (from the `Mesh`); a proxy's flag wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracing: Option<TracingConfig>,
    /// The roots proxies trust, from the control plane's CA (absent in local mode, where
    /// `--ca` gives them). Several while a root rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustConfig>,
    pub services: Vec<ServiceConfig>,
}

/// An OTLP/gRPC collector and the head-sampling share.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TracingConfig {
    pub collector: String,
    pub sample_percent: f64,
}

fn is_zero(percent: &f64) -> bool {
    *percent == 0.0
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustConfig {
    /// Every root to trust, PEM.
    pub bundle_pem: String,
    /// SHA-256 (hex) of the root that signs certificates now. A proxy whose certificate
    /// comes from another root asks for a new one at once, so an old root can be retired.
    pub signing_root: String,
    /// The CA's trust domain: every certificate is issued in it, so peers are named in it,
    /// whatever a `Mesh` resource says.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub trust_domain: String,
    /// Revoked workload identities (SPIFFE ids): peers presenting them are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_identities: Vec<String>,
    /// Revoked certificates, by the SHA-256 (hex) of their DER.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked_certificates: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// A proxy with an identity refuses plaintext on inbound.
    #[default]
    Strict,
    /// Plaintext is accepted too, and labelled `source="plaintext"` in metrics and logs, so
    /// operators can see what still has to join the mesh.
    Permissive,
}

/// Where captured traffic to destinations outside the mesh may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OutboundTrafficPolicy {
    /// Passed through as plain TCP, counted as `destination="external"`.
    #[default]
    AllowAny,
    /// Refused, counted and logged: only services in the registry can be reached.
    RegistryOnly,
}

impl OutboundTrafficPolicy {
    pub fn is_allow_any(&self) -> bool {
        *self == OutboundTrafficPolicy::AllowAny
    }
}

impl MtlsMode {
    pub fn is_strict(&self) -> bool {
        *self == MtlsMode::Strict
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceConfig {
    pub name: String,
    pub namespace: String,
    pub ports: Vec<PortConfig>,
    /// The address apps call it by (DNS answers its name with it); captured connections
    /// to it are this service's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_ip: Option<std::net::IpAddr>,
    /// Its IPv6 virtual IP (DNS answers AAAA with it), the same place in the IPv6 range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_ipv6: Option<std::net::IpAddr>,
    /// Host names apps call it by besides its mesh names (lower case): DNS answers them
    /// with its virtual IPs, and a `Host` naming one routes to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    pub endpoints: Vec<EndpointConfig>,
    /// Rules from every HTTPRoute and GRPCRoute attached to this service, already sorted by
    /// Gateway API precedence: the proxy takes the first rule that matches. Empty means
    /// "send everything to this service's own endpoints".
    pub routes: Vec<RouteConfig>,
    pub policy: TrafficPolicyConfig,
    /// How the proxies in front of this service probe their app, from the Service's
    /// `healthCheck`. Only proxies registered with a control plane probe: the result
    /// decides whether they are endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckConfig>,
    /// The AuthorizationPolicies targeting this service, by namespace and name; its own
    /// proxies enforce them on inbound.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorization: Vec<AuthzPolicy>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheckConfig {
    /// Probe with an HTTP GET of this path, expecting 2xx; `None` probes with a TCP connect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_path: Option<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Failed probes in a row before the workload is taken out of rotation.
    pub unhealthy_threshold: u32,
    /// Successful probes in a row before it is put back.
    pub healthy_threshold: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PortConfig {
    pub port: u16,
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    #[default]
    Auto,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointConfig {
    pub address: crate::Address,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The SPIFFE id the proxy in front of this endpoint must present. `None` means the
    /// endpoint is outside the mesh and is reached in plain text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Reached over TLS the proxy starts (an endpoint outside the mesh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<OriginTls>,
}

/// How a proxy verifies an endpoint outside the mesh it reaches over TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OriginTls {
    /// The name the certificate must carry, sent as SNI; the endpoint's host (or IP) when
    /// `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// CA certificates (PEM) to verify with; the host's CA store when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_certificates_pem: Option<String>,
}

impl EndpointConfig {
    /// The name the endpoint's certificate is checked against when it is reached over TLS
    /// the proxy starts.
    pub fn tls_server_name(&self) -> Option<String> {
        let tls = self.tls.as_ref()?;
        Some(match (&tls.server_name, &self.address) {
            (Some(name), _) => name.clone(),
            (None, crate::Address::Dns { host, .. }) => host.to_string(),
            (None, crate::Address::Ip(addr)) => addr.ip().to_string(),
        })
    }
}

/// One rule of an HTTPRoute or GRPCRoute (GRPCRoute matches are compiled to path and
/// header matches, so the proxy sees one shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteConfig {
    /// `<namespace>/<route name>/<rule index>`: the `route` label in metrics and logs.
    pub name: String,
    /// Any one of these must match; empty matches every request.
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    #[serde(default)]
    pub filters: RouteFilters,
    /// Weighted backends. Empty (with no redirect) means the route answers 500, as the
    /// Gateway API says for a rule whose backends are all invalid.
    #[serde(default)]
    pub backends: Vec<BackendRef>,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl RouteConfig {
    /// The route of a Service without routes: every request to its own endpoints. Named
    /// `<namespace>/<service>/default`, the `route` label such requests carry.
    pub fn default_for(service: &ServiceConfig) -> RouteConfig {
        RouteConfig {
            name: format!("{}/{}/default", service.namespace, service.name),
            matches: Vec::new(),
            filters: RouteFilters::default(),
            backends: vec![BackendRef {
                service: service.name.clone(),
                namespace: service.namespace.clone(),
                port: None,
                weight: 1,
                missing: false,
                request_headers: None,
                response_headers: None,
            }],
            timeouts: Timeouts::default(),
            retry: None,
        }
    }
}

/// All conditions in one match must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteMatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathMatch>,
    /// Upper-case HTTP method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<ValueMatch>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<ValueMatch>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum PathMatch {
    Exact(String),
    /// Gateway API prefix semantics: `/foo` matches `/foo` and `/foo/bar`, not `/foobar`.
    Prefix(String),
    /// Must match the whole path.
    Regex(String),
}

/// A header (name case-insensitive, stored lower-case) or query parameter condition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum StringMatch {
    Exact(String),
    /// Must match the whole value.
    Regex(String),
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<Mirror>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<Cors>,
}

/// Which browser origins may call the route (the Gateway API `CORS` filter). Lists hold
/// `*` for "any"; origins are normalized (`scheme://host[:port]`, lower case, no default
/// port; the host may start with `*`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cors {
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    pub max_age_seconds: u32,
}

/// Header names are lower-case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderModifier {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Redirect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308 (Gateway API default 302).
    pub status_code: u16,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rewrite {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathModifier>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "value")]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path the rule's prefix match matched.
    ReplacePrefixMatch(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    pub backend: BackendRef,
    /// 0.0..=100.0 percent of requests copied (fire and forget).
    pub percent: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BackendRef {
    pub service: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Relative weight; 0 takes no traffic.
    pub weight: u32,
    /// The reference names no Service (or a port it lacks): its share is answered 500.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    /// Header changes for requests sent to this backend (after the rule's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_headers: Option<HeaderModifier>,
    /// Header changes for this backend's answers (before the rule's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_headers: Option<HeaderModifier>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeouts {
    /// Whole request, retries included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_ms: Option<u64>,
    /// Each try.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_request_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first try (so `attempts: 2` means up to three tries).
    pub attempts: u32,
    pub on: Vec<RetryOn>,
    /// Extra HTTP status codes that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub status_codes: Vec<u16>,
    /// gRPC status codes (from `grpc-status`) that are retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grpc_codes: Vec<u32>,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// Any 5xx answer.
    #[serde(rename = "5xx")]
    ServerError,
    /// 502, 503, 504.
    GatewayError,
    /// The upstream connection was reset or closed mid-request.
    Reset,
    /// No connection to the endpoint could be made.
    ConnectFailure,
}

/// Policy for traffic to one service (from its TrafficPolicy, or defaults).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrafficPolicyConfig {
    pub load_balancer: LoadBalancer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_limits: Option<ConnectionLimits>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    /// Enforced by the proxy in front of the service (inbound), protecting it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
    pub connect_timeout_ms: u64,
    pub idle_timeout_ms: u64,
}

impl Default for TrafficPolicyConfig {
    fn default() -> Self {
        Self {
            load_balancer: LoadBalancer::default(),
            connection_limits: None,
            outlier_detection: None,
            retry_budget: None,
            rate_limit: None,
            fault: None,
            connect_timeout_ms: 1_000,
            idle_timeout_ms: 60_000,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum LoadBalancer {
    /// Power of two choices over peak-EWMA latency.
    #[default]
    PeakEwma,
    RoundRobin,
    /// Consistent hashing for affinity, on a header or a cookie (one of them is set).
    RingHash {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cookie: Option<String>,
    },
}

/// Circuit breaking. Each limit, when reached, makes the proxy answer 503 at once with
/// `x-weft-overloaded: <limit name>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionLimits {
    pub max_connections: Option<u32>,
    pub max_pending_requests: Option<u32>,
    pub max_requests: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutlierDetection {
    pub consecutive_5xx: u32,
    pub consecutive_connect_failures: u32,
    /// Ejection time grows with each ejection: base * times ejected, up to `max_ejection_ms`.
    pub base_ejection_ms: u64,
    pub max_ejection_ms: u64,
    /// Never eject more than this share of a service's endpoints (0..=100).
    pub max_ejection_percent: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// Retries allowed as a share of requests over the window (0.2 = 20 %).
    pub ratio: f64,
    pub min_retries_per_second: u32,
    pub window_ms: u64,
}

/// Token bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    pub requests_per_second: f64,
    pub burst: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<FaultDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<FaultAbort>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultDelay {
    pub percent: f64,
    pub delay_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultAbort {
    pub percent: f64,
    pub status: u16,
}
