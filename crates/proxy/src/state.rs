//! The proxy's view of the mesh, built from a `ProxyConfig` into structures ready for the
//! request path, and swapped in atomically as a whole.
//!
//! A service's runtime state (balancer, endpoints and their pools, routes) is built the
//! first time a request needs it, not with the snapshot: a proxy sent a mesh of thousands
//! of services pays for the few it calls, and holds the rest as the config it was sent.
//! The whole config is still checked before it is swapped in, so a config that cannot run
//! is refused (and NACKed) as a whole, and a new snapshot builds at once the services the
//! one before it had built, so traffic never waits for them.
//!
//! Live state outlives snapshots (`Carried`): a rebuilt snapshot reuses the endpoint of the
//! same service, address and identity (latency estimates, ejections, connection pools), and
//! each service's resilience state whose settings did not change (circuit-breaker counts,
//! rate-limit tokens, retry budget).

use crate::address_index::AddressIndex;
use crate::authorization::OwnPolicies;
use crate::balance::{Balancer, Endpoint, Outcome};
use crate::config_error::ConfigError;
use crate::metrics::{Direction, Metrics};
use crate::proxy::Proxy;
use crate::resilience::{RateLimiter, Resilience, RetryBudget};
use crate::routes::{Route, RouteParts, WeightedBackend};
use crate::upstream::{ConnectionPolicy, EndpointPool, OriginTls, Security};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use weft_identity::{SpiffeId, TlsIdentity};
use weft_model::config::{
    BackendRef, EndpointConfig, Fault, OutlierDetection, Protocol, ProxyConfig, RouteConfig,
    ServiceConfig,
};
use weft_model::host::{host_target, HostTarget};
use weft_model::{Address, VirtualIps};

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
    /// `name.namespace` -> index in `config.services`.
    by_key: HashMap<Box<str>, usize>,
    /// Services of this proxy's own namespace, by bare name (what apps call them).
    local_names: HashMap<Box<str>, usize>,
    /// Services by the host names they claim (`hosts`, lower case).
    hosts: HashMap<Box<str>, usize>,
    /// Each service's routes, built on first use.
    services: Box<[OnceLock<Arc<ServiceRoutes>>]>,
    /// Each service as a destination, built on first use (by its routes or another's).
    backends: Box<[OnceLock<Arc<Backend>>]>,
    /// This proxy's own service, built with the snapshot for the inbound path.
    own: Option<Arc<ServiceRoutes>>,
    /// Its authorization policies, as the inbound path judges with them.
    pub policies: OwnPolicies,
    /// Services by their endpoints' addresses, built for the first captured connection.
    by_address: OnceLock<AddressIndex>,
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
    /// Resolves endpoints' host names.
    pub resolver: &'a Arc<crate::resolve::HostResolver>,
}

/// What one snapshot hands to the next: each built service's live state, by `service_key`.
#[derive(Default)]
pub struct Carried {
    services: HashMap<String, ServiceState>,
}

type EndpointKey = (
    Address,
    Option<String>,
    Option<weft_model::config::OriginTls>,
);

#[derive(Clone, Default)]
struct ServiceState {
    /// By address and how it is reached (expected identity, TLS origination).
    endpoints: HashMap<EndpointKey, Arc<Endpoint>>,
    resilience: Option<Resilience>,
}

impl Snapshot {
    pub fn empty() -> Self {
        Self {
            generation: 0,
            config: Arc::default(),
            by_key: HashMap::new(),
            local_names: HashMap::new(),
            hosts: HashMap::new(),
            services: Box::default(),
            backends: Box::default(),
            own: None,
            policies: OwnPolicies::new(&ProxyConfig::default(), None),
            by_address: OnceLock::new(),
        }
    }

    /// Checks that every service of `config` builds, then indexes it, building at once
    /// this proxy's own service and those `previous` had built. On error nothing changes:
    /// the live state carried between snapshots is only touched once the check passed.
    pub fn build(
        config: ProxyConfig,
        generation: u64,
        ctx: &BuildContext,
        previous: &Snapshot,
    ) -> Result<Self, ConfigError> {
        check(&config, ctx)?;
        let mut by_key = HashMap::with_capacity(config.services.len());
        let mut local_names = HashMap::new();
        let mut hosts = HashMap::new();
        for (at, service) in config.services.iter().enumerate() {
            by_key.insert(service_key(&service.name, &service.namespace).into(), at);
            if service.namespace == ctx.namespace {
                local_names.insert(service.name.as_str().into(), at);
            }
            for host in &service.hosts {
                hosts.insert(host.as_str().into(), at);
            }
        }
        let count = config.services.len();
        let own_key = service_key(ctx.service, ctx.namespace);
        let policies = OwnPolicies::new(&config, by_key.get(own_key.as_str()).copied());
        let mut snapshot = Self {
            generation,
            config: Arc::new(config),
            by_key,
            local_names,
            hosts,
            services: (0..count).map(|_| OnceLock::new()).collect(),
            backends: (0..count).map(|_| OnceLock::new()).collect(),
            own: None,
            policies,
            by_address: OnceLock::new(),
        };
        {
            let mut carried = ctx.carried.lock().unwrap_or_else(|e| e.into_inner());
            carried
                .services
                .retain(|key, _| snapshot.by_key.contains_key(key.as_str()));
        }
        for (key, &at) in &previous.by_key {
            if previous.services[at].get().is_some() {
                snapshot.by_key_built(key, ctx);
            }
        }
        snapshot.own = snapshot.by_key_built(&own_key, ctx);
        Ok(snapshot)
    }

    /// Looks a service up by a `Host`/`:authority` value (port ignored, case-insensitive):
    /// `reviews` (this proxy's namespace), `reviews.ns`, `reviews.ns.svc` or
    /// `reviews.ns.svc.cluster.local`, the forms apps already use in Kubernetes, or a host
    /// name a service claims (`api.example.com`).
    pub fn by_host(&self, proxy: &Proxy, authority: &str) -> Option<Arc<ServiceRoutes>> {
        let host = weft_model::host::strip_port(authority);
        let at = self.host_index(host).or_else(|| {
            let lower = host.to_ascii_lowercase();
            self.host_index(&lower)
                .or_else(|| self.claimed_host(&lower))
        })?;
        self.service_at(at, &proxy.build_context())
    }

    /// The service claiming `host` (lower case), with or without the final dot.
    fn claimed_host(&self, host: &str) -> Option<usize> {
        if self.hosts.is_empty() {
            return None;
        }
        self.hosts
            .get(host.strip_suffix('.').unwrap_or(host))
            .copied()
    }

    /// The virtual IPs of the service claiming `host` (lower case) among its `hosts`.
    pub fn host_virtual_ips(&self, host: &str) -> Option<VirtualIps> {
        Some(self.virtual_ips_at(self.claimed_host(host)?))
    }

    fn virtual_ips_at(&self, at: usize) -> VirtualIps {
        let service = &self.config.services[at];
        VirtualIps {
            v4: service.virtual_ip,
            v6: service.virtual_ipv6,
        }
    }

    fn host_index(&self, host: &str) -> Option<usize> {
        match host_target(host) {
            HostTarget::Qualified(key) => self.by_key.get(key).copied(),
            HostTarget::Local(name) => self.local_names.get(name).copied(),
        }
    }

    /// The service a captured connection to `destination` was for (see `AddressIndex`).
    pub fn by_destination(
        &self,
        proxy: &Proxy,
        destination: SocketAddr,
    ) -> Option<Arc<ServiceRoutes>> {
        let services = &self.config.services;
        let index = self.by_address.get_or_init(|| AddressIndex::new(services));
        let at = index.find(services, destination)?;
        self.service_at(at, &proxy.build_context())
    }

    /// The virtual IPs of the service an app looks up by `name` in `namespace`, or in
    /// this proxy's own namespace when the name has none; `None` when no service has the
    /// name.
    pub fn virtual_ips(&self, name: &str, namespace: Option<&str>) -> Option<VirtualIps> {
        let at = match namespace {
            Some(namespace) => *self.by_key.get(service_key(name, namespace).as_str())?,
            None => *self.local_names.get(name)?,
        };
        Some(self.virtual_ips_at(at))
    }

    /// By `service_key` (`name.namespace`).
    pub fn by_key(&self, proxy: &Proxy, key: &str) -> Option<Arc<ServiceRoutes>> {
        self.by_key_built(key, &proxy.build_context())
    }

    fn by_key_built(&self, key: &str, ctx: &BuildContext) -> Option<Arc<ServiceRoutes>> {
        let at = *self.by_key.get(key)?;
        self.service_at(at, ctx)
    }

    /// The service this proxy runs for, if the configuration has it.
    pub fn own(&self) -> Option<&Arc<ServiceRoutes>> {
        self.own.as_ref()
    }

    fn service_at(&self, at: usize, ctx: &BuildContext) -> Option<Arc<ServiceRoutes>> {
        if let Some(built) = self.services[at].get() {
            return Some(built.clone());
        }
        let service = &self.config.services[at];
        let backend = self.backend_at(at, ctx)?;
        let resolve = |r: &BackendRef| {
            let at = *self
                .by_key
                .get(service_key(&r.service, &r.namespace).as_str())?;
            self.backend_at(at, ctx)
        };
        match build_routes(service, backend, &resolve, ctx) {
            Ok(built) => Some(self.services[at].get_or_init(|| Arc::new(built)).clone()),
            Err(error) => {
                // `build` checked every service: only a bug gets here.
                tracing::error!(%error, service = %service.name, "cannot build a checked service");
                None
            }
        }
    }

    fn backend_at(&self, at: usize, ctx: &BuildContext) -> Option<Arc<Backend>> {
        if let Some(built) = self.backends[at].get() {
            return Some(built.clone());
        }
        let service = &self.config.services[at];
        let key = service_key(&service.name, &service.namespace);
        let mut carried = ctx.carried.lock().unwrap_or_else(|e| e.into_inner());
        let state = carried.services.entry(key.clone()).or_default();
        match build_backend(service, &key, ctx, state) {
            Ok(backend) => {
                drop(carried);
                Some(self.backends[at].get_or_init(|| Arc::new(backend)).clone())
            }
            Err(error) => {
                tracing::error!(%error, service = %key, "cannot build a checked service");
                None
            }
        }
    }
}

/// Builds every service of `config` once, each on its own and dropped at once, on state of
/// its own: what would fail later fails now, and nothing live is touched.
fn check(config: &ProxyConfig, ctx: &BuildContext) -> Result<(), ConfigError> {
    let index: HashMap<String, &ServiceConfig> = config
        .services
        .iter()
        .map(|s| (service_key(&s.name, &s.namespace), s))
        .collect();
    let scratch = |service: &ServiceConfig, key: &str| {
        build_backend(service, key, ctx, &mut ServiceState::default()).map(Arc::new)
    };
    for service in &config.services {
        let key = service_key(&service.name, &service.namespace);
        let backend = scratch(service, &key)?;
        let resolve = |r: &BackendRef| {
            let key = service_key(&r.service, &r.namespace);
            scratch(index.get(&key)?, &key).ok()
        };
        build_routes(service, backend, &resolve, ctx)?;
    }
    Ok(())
}

/// A service's routes and its default route, with `backend` as itself and `resolve`
/// finding the services they send to.
fn build_routes(
    service: &ServiceConfig,
    backend: Arc<Backend>,
    resolve: &dyn Fn(&BackendRef) -> Option<Arc<Backend>>,
    ctx: &BuildContext,
) -> Result<ServiceRoutes, ConfigError> {
    let routes = service
        .routes
        .iter()
        .map(|r| build_route(r, &backend, resolve, ctx))
        .collect::<Result<Vec<_>, _>>()?;
    let default = RouteConfig::default_for(service);
    let default_route = build_route(&default, &backend, resolve, ctx)?;
    Ok(ServiceRoutes {
        backend,
        routes,
        default_route,
    })
}

/// `service` as a destination, reusing the live state `state` holds for it (its
/// endpoints by address and identity, its resilience state while its settings are the
/// same), and leaving in `state` what the next build reuses.
fn build_backend(
    service: &ServiceConfig,
    key: &str,
    ctx: &BuildContext,
    state: &mut ServiceState,
) -> Result<Backend, ConfigError> {
    let mut endpoints = Vec::with_capacity(service.endpoints.len());
    let mut kept = HashMap::with_capacity(service.endpoints.len());
    for config in &service.endpoints {
        let endpoint_key = (
            config.address.clone(),
            config.identity.clone(),
            config.tls.clone(),
        );
        let endpoint = match state.endpoints.get(&endpoint_key).cloned() {
            Some(existing) => existing,
            None => {
                let security = security(config, ctx).map_err(|e| e.in_service(key))?;
                let resolver =
                    matches!(config.address, Address::Dns { .. }).then(|| ctx.resolver.clone());
                let pool = EndpointPool::new(config.address.clone(), security, resolver);
                Arc::new(Endpoint::new(config, Arc::new(pool)))
            }
        };
        kept.insert(endpoint_key, endpoint.clone());
        endpoints.push(endpoint);
    }
    state.endpoints = kept;
    let policy = &service.policy;
    let resilience = Resilience::carry(state.resilience.as_ref(), policy);
    state.resilience = Some(resilience.clone());
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

/// How `config` is reached: mTLS to a peer (when this proxy has an identity), TLS it starts,
/// or plain TCP.
fn security(config: &EndpointConfig, ctx: &BuildContext) -> Result<Security, ConfigError> {
    if let (Some(id), Some(identity)) = (&config.identity, ctx.tls) {
        let expected = SpiffeId::parse(id).map_err(|e| ConfigError::EndpointIdentity {
            address: config.address.clone(),
            identity: id.clone(),
            reason: e.to_string(),
        })?;
        return Ok(Security::Mesh(identity.clone(), expected));
    }
    let (Some(origin), Some(server_name)) = (&config.tls, config.tls_server_name()) else {
        return Ok(Security::Plain);
    };
    // A CA store missing on this host, or a CA certificate that does not parse, fails this
    // endpoint's connections (with the reason) and nothing else of the config.
    Ok(
        match OriginTls::new(&server_name, origin.ca_certificates_pem.as_deref()) {
            Ok(tls) => Security::Origin(tls),
            Err(error) => {
                tracing::error!(endpoint = %config.address, %error, "cannot set up TLS to this endpoint; its connections will fail");
                Security::OriginUnavailable(error.to_string())
            }
        },
    )
}

fn build_route(
    config: &RouteConfig,
    service: &Arc<Backend>,
    resolve: &dyn Fn(&BackendRef) -> Option<Arc<Backend>>,
    ctx: &BuildContext,
) -> Result<Route, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::ProxyOptions;

    /// Services `test` (this proxy's own), `web` (whose route splits to `web-v2`) and
    /// `unused`, each with one plain endpoint.
    fn mesh(version: &str) -> ProxyConfig {
        let yaml = "
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: test}
spec: {ports: [{port: 80}], endpoints: [{address: '127.0.0.1:9001'}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}], endpoints: [{address: '127.0.0.1:9002'}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web-v2}
spec: {ports: [{port: 80}], endpoints: [{address: '127.0.0.1:9003'}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: unused}
spec: {ports: [{port: 80}], endpoints: [{address: '127.0.0.1:9004'}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: '', kind: Service, name: web}]
  rules: [{backendRefs: [{name: web, weight: 1}, {name: web-v2, weight: 1}]}]
";
        let mut config = weft_model::compile(&weft_model::load_str("mesh.yaml", yaml).unwrap());
        config.version = version.to_owned();
        config
    }

    fn built(snapshot: &Snapshot) -> Vec<&str> {
        let mut names: Vec<&str> = snapshot
            .config
            .services
            .iter()
            .enumerate()
            .filter(|(at, _)| snapshot.backends[*at].get().is_some())
            .map(|(_, s)| s.name.as_str())
            .collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn services_are_built_when_first_called_and_kept_built_across_pushes() {
        let proxy = Proxy::new(ProxyOptions::minimal("127.0.0.1:9".parse().unwrap()), None);
        proxy.apply(mesh("one")).unwrap();
        assert_eq!(
            built(&proxy.snapshot()),
            ["test"],
            "only its own service at first"
        );

        let web = proxy
            .snapshot()
            .by_host(&proxy, "WEB.default.svc.cluster.local:80");
        let web = web.expect("found by a Kubernetes-style name");
        assert_eq!(&*web.backend.label, "web.default");
        assert_eq!(built(&proxy.snapshot()), ["test", "web", "web-v2"]);
        assert!(proxy.snapshot().by_host(&proxy, "nothing").is_none());

        // The next config builds at once what the last one had built, on the same endpoints.
        proxy.apply(mesh("two")).unwrap();
        assert_eq!(built(&proxy.snapshot()), ["test", "web", "web-v2"]);
        let again = proxy.snapshot().by_key(&proxy, "web.default").unwrap();
        assert!(Arc::ptr_eq(
            &web.backend.balancer.endpoints()[0],
            &again.backend.balancer.endpoints()[0]
        ));
    }

    #[test]
    fn a_config_that_cannot_run_is_refused_whole_and_changes_nothing() {
        let proxy = Proxy::new(ProxyOptions::minimal("127.0.0.1:9".parse().unwrap()), None);
        proxy.apply(mesh("one")).unwrap();
        let mut bad = mesh("bad");
        let unused = bad
            .services
            .iter_mut()
            .find(|s| s.name == "unused")
            .unwrap();
        unused.routes = mesh("x")
            .services
            .iter()
            .find(|s| s.name == "web")
            .unwrap()
            .routes
            .clone();
        unused.routes[0].matches = vec![weft_model::config::RouteMatch {
            path: Some(weft_model::config::PathMatch::Regex("(".to_owned())),
            ..Default::default()
        }];
        let error = proxy.apply(bad).unwrap_err().to_string();
        assert!(error.contains("regular expression"), "{error}");
        assert_eq!(proxy.snapshot().config.version, "one");
    }
}
