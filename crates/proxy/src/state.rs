//! The proxy's view of the mesh, built from a `ProxyConfig` into structures ready for the
//! request path, and swapped in atomically as a whole.
//!
//! Live state outlives snapshots (`Carried`): a rebuilt snapshot reuses the endpoint of the
//! same service, address and identity (latency estimates, ejections, connection pools), and
//! each service's resilience state whose settings did not change (circuit-breaker counts,
//! rate-limit tokens, retry budget).

use crate::balance::{Balancer, Endpoint, Outcome};
use crate::config_error::ConfigError;
use crate::metrics::{Direction, Metrics};
use crate::proxy::Proxy;
use crate::resilience::{RateLimiter, Resilience, RetryBudget};
use crate::routes::{Route, RouteParts, WeightedBackend};
use crate::upstream::{ConnectionPolicy, EndpointPool};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use weft_identity::{SpiffeId, TlsIdentity};
use weft_model::config::{
    BackendRef, Fault, OutlierDetection, Protocol, ProxyConfig, RouteConfig, ServiceConfig,
};

/// Traffic policy and endpoints of one service, as a destination of requests.
pub struct Backend {
    /// `name.namespace`: the `destination` label.
    pub label: Arc<str>,
    pub balancer: Balancer,
    pub connections: ConnectionPolicy,
    pub outlier: Option<OutlierDetection>,
    pub retry_budget: Option<Arc<RetryBudget>>,
    pub fault: Option<Fault>,
    /// Enforced on inbound by the proxy in front of this service.
    pub rate_limit: Option<Arc<RateLimiter>>,
    pub protocol: Protocol,
}

impl Backend {
    /// Feeds outlier detection with one try's outcome on `endpoint`, ejecting it (counted
    /// and logged) when its policy says so and no more than its share is out already.
    pub fn record_outcome(&self, proxy: &Proxy, endpoint: &Endpoint, outcome: Outcome) {
        let Some(outlier) = &self.outlier else {
            return;
        };
        let balancer = &self.balancer;
        let may_eject = || {
            (balancer.ejected_count() + 1) * 100
                <= balancer.endpoints().len() * outlier.max_ejection_percent as usize
        };
        if endpoint.record_outcome(outcome, outlier, may_eject) {
            proxy
                .metrics
                .ejection(self.label.clone(), endpoint.address.to_string());
            tracing::warn!(endpoint = %endpoint.address, service = %self.label, "endpoint ejected by outlier detection");
        }
    }
}

/// A service as a name clients address: its routes, and itself as the default backend.
pub struct ServiceRoutes {
    pub backend: Arc<Backend>,
    pub routes: Vec<Route>,
    pub default_route: Route,
}

pub struct Snapshot {
    pub generation: u64,
    pub config: Arc<ProxyConfig>,
    services: HashMap<String, Arc<ServiceRoutes>>,
    hosts: HashMap<String, Arc<ServiceRoutes>>,
    /// This proxy's own service, looked up once per build for the inbound path.
    own: Option<Arc<ServiceRoutes>>,
}

pub fn service_key(name: &str, namespace: &str) -> String {
    format!("{name}.{namespace}")
}

/// Everything a build needs that outlives one snapshot.
pub struct BuildContext<'a> {
    pub metrics: &'a Metrics,
    pub tls: Option<&'a Arc<TlsIdentity>>,
    pub service: &'a str,
    pub namespace: &'a str,
    /// This proxy's `source` label.
    pub source: Arc<str>,
    pub carried: &'a Mutex<Carried>,
}

/// What one snapshot hands to the next.
#[derive(Default)]
pub struct Carried {
    endpoints: HashMap<EndpointKey, Arc<Endpoint>>,
    /// By `service_key`.
    resilience: HashMap<String, Resilience>,
}

#[derive(Clone, Hash, PartialEq, Eq)]
struct EndpointKey {
    service: String,
    address: SocketAddr,
    identity: Option<String>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self {
            generation: 0,
            config: Arc::default(),
            services: HashMap::new(),
            hosts: HashMap::new(),
            own: None,
        }
    }

    pub fn build(
        config: ProxyConfig,
        generation: u64,
        ctx: &BuildContext,
    ) -> Result<Self, ConfigError> {
        let mut carried = ctx.carried.lock().unwrap_or_else(|e| e.into_inner());
        // Built aside and swapped in only once the whole build succeeded: a rejected config
        // must not cost the running one its state.
        let mut kept = Carried::default();
        let mut backends = HashMap::new();
        for service in &config.services {
            let key = service_key(&service.name, &service.namespace);
            let backend = build_backend(service, &key, ctx, &carried, &mut kept)?;
            backends.insert(key, Arc::new(backend));
        }
        let mut services = HashMap::new();
        let mut hosts = HashMap::new();
        for service in &config.services {
            let key = service_key(&service.name, &service.namespace);
            let backend = backends[&key].clone();
            let routes = service
                .routes
                .iter()
                .map(|r| build_route(r, &backend, &backends, ctx))
                .collect::<Result<Vec<_>, _>>()?;
            let default = RouteConfig {
                name: format!("{}/{}/default", service.namespace, service.name),
                matches: Vec::new(),
                filters: Default::default(),
                backends: vec![BackendRef {
                    service: service.name.clone(),
                    namespace: service.namespace.clone(),
                    port: None,
                    weight: 1,
                    missing: false,
                    request_headers: None,
                    response_headers: None,
                }],
                timeouts: Default::default(),
                retry: None,
            };
            let default_route = build_route(&default, &backend, &backends, ctx)?;
            let entry = Arc::new(ServiceRoutes {
                backend,
                routes,
                default_route,
            });
            for host in host_names(service, ctx.namespace) {
                hosts.insert(host, entry.clone());
            }
            services.insert(key, entry);
        }
        *carried = kept;
        let own = services
            .get(&service_key(ctx.service, ctx.namespace))
            .cloned();
        Ok(Self {
            own,
            generation,
            config: Arc::new(config),
            services,
            hosts,
        })
    }

    /// Looks a service up by a `Host`/`:authority` value (port ignored, case-insensitive).
    pub fn by_host(&self, authority: &str) -> Option<&Arc<ServiceRoutes>> {
        let host = strip_port(authority);
        if let Some(found) = self.hosts.get(host) {
            return Some(found);
        }
        self.hosts.get(&host.to_ascii_lowercase())
    }

    /// By `service_key` (`name.namespace`).
    pub fn by_key(&self, key: &str) -> Option<&Arc<ServiceRoutes>> {
        self.services.get(key)
    }

    /// The service this proxy runs for, if the configuration has it.
    pub fn own(&self) -> Option<&Arc<ServiceRoutes>> {
        self.own.as_ref()
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority, |(h, _)| &h[1..]);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// `reviews` (same namespace only), `reviews.ns`, `reviews.ns.svc`,
/// `reviews.ns.svc.cluster.local`: the forms apps already use in Kubernetes.
fn host_names(service: &ServiceConfig, own_namespace: &str) -> Vec<String> {
    let base = service_key(&service.name, &service.namespace);
    let mut names = vec![
        format!("{base}.svc"),
        format!("{base}.svc.cluster.local"),
        base,
    ];
    if service.namespace == own_namespace {
        names.push(service.name.clone());
    }
    names
}

fn build_backend(
    service: &ServiceConfig,
    key: &str,
    ctx: &BuildContext,
    old: &Carried,
    kept: &mut Carried,
) -> Result<Backend, ConfigError> {
    let mut endpoints = Vec::with_capacity(service.endpoints.len());
    for config in &service.endpoints {
        let endpoint_key = EndpointKey {
            service: key.to_string(),
            address: config.address,
            identity: config.identity.clone(),
        };
        let endpoint = match kept
            .endpoints
            .get(&endpoint_key)
            .or_else(|| old.endpoints.get(&endpoint_key))
            .cloned()
        {
            Some(existing) => existing,
            None => {
                let tls = match (&config.identity, ctx.tls) {
                    (Some(id), Some(identity)) => {
                        let expected = SpiffeId::parse(id).map_err(|e| {
                            ConfigError::EndpointIdentity {
                                address: config.address,
                                identity: id.clone(),
                                reason: e.to_string(),
                            }
                            .in_service(key)
                        })?;
                        Some((identity.clone(), expected))
                    }
                    _ => None,
                };
                let pool = Arc::new(EndpointPool::new(config.address, tls));
                Arc::new(Endpoint::new(config, pool))
            }
        };
        kept.endpoints.insert(endpoint_key, endpoint.clone());
        endpoints.push(endpoint);
    }
    let policy = &service.policy;
    let resilience = Resilience::carry(old.resilience.get(key), policy);
    kept.resilience.insert(key.to_string(), resilience.clone());
    Ok(Backend {
        label: Arc::from(key),
        balancer: Balancer::new(endpoints, &policy.load_balancer),
        connections: ConnectionPolicy {
            limits: resilience.limits,
            connect_timeout: Duration::from_millis(policy.connect_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(policy.idle_timeout_ms.max(1)),
            saturated: ctx.metrics.saturated(Arc::from(key)),
        },
        outlier: policy.outlier_detection.clone(),
        retry_budget: resilience.retry_budget,
        fault: policy.fault.clone(),
        rate_limit: resilience.rate_limit,
        protocol: service.ports.first().map_or(Protocol::Auto, |p| p.protocol),
    })
}

fn build_route(
    config: &RouteConfig,
    service: &Arc<Backend>,
    backends: &HashMap<String, Arc<Backend>>,
    ctx: &BuildContext,
) -> Result<Route, ConfigError> {
    let resolve = |r: &BackendRef| {
        backends
            .get(&service_key(&r.service, &r.namespace))
            .cloned()
    };
    let weighted = config
        .backends
        .iter()
        .map(|r| WeightedBackend::new(r, resolve(r)))
        .collect::<Result<_, _>>()
        .map_err(|e: ConfigError| e.in_route(&config.name))?;
    let mirrors = config
        .filters
        .mirrors
        .iter()
        .filter_map(|m| resolve(&m.backend).map(|b| (b, m.percent)))
        .collect();
    let route_label: Arc<str> = Arc::from(config.name.as_str());
    let parts = RouteParts {
        backends: weighted,
        mirrors,
        metrics: ctx.metrics.request_metrics(
            Direction::Outbound,
            ctx.source.clone(),
            service.label.clone(),
            route_label.clone(),
        ),
        retries: ctx.metrics.retries(service.label.clone(), route_label),
    };
    Route::new(config, parts).map_err(|e| e.in_route(&config.name))
}
