//! One Service's route table: the rules of every HTTPRoute and GRPCRoute attached to it,
//! one entry per match, in Gateway API precedence order.

use crate::catalog::{Catalog, ServiceKey};
use crate::config::{
    self, Cors, HeaderModifier, Mirror, PathModifier, Redirect, RetryOn, RetryPolicy, Rewrite,
    RouteConfig, RouteFilters, RouteMatch, Timeouts, ValueMatch,
};
use crate::resources::{
    BackendRef, CorsSpec, GrpcMethodMatch, GrpcRouteMatch, HeaderModifierSpec, HttpRouteMatch,
    Kind, ParentRef, PathMatch, PathModifierSpec, Resource, RetrySpec, RouteFilter, RouteTimeouts,
    ServiceRef, Spec, StringMatch, Wildcard,
};
use std::cmp::Reverse;

/// Used when a retry says nothing about them (the values Istio and Envoy use).
const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
const DEFAULT_BACKOFF_MS: u64 = 25;
/// gRPC `UNAVAILABLE`: the server did not handle the call, so it is safe to retry.
const GRPC_UNAVAILABLE: u32 = 14;

pub(super) fn compile(catalog: &Catalog, service: ServiceKey) -> Vec<RouteConfig> {
    let mut table: Vec<(Precedence, RouteConfig)> = Vec::new();
    for &route in &catalog.routes {
        match &route.spec {
            Spec::HttpRoute(spec) => {
                let Some(parent) = parent_for(catalog, route, &spec.parent_refs, service) else {
                    continue;
                };
                for (index, rule) in spec.rules.iter().enumerate() {
                    let rule_parts = Rule {
                        filters: &rule.filters,
                        backend_refs: &rule.backend_refs,
                        timeouts: rule.timeouts.as_ref(),
                        retry: rule.retry.as_ref(),
                        grpc: false,
                    };
                    let base = rule_parts.compile(catalog, route, index, parent, service);
                    let matches = rule.matches.iter().map(http_match);
                    expand(&mut table, route, index, base, matches);
                }
            }
            Spec::GrpcRoute(spec) => {
                let Some(parent) = parent_for(catalog, route, &spec.parent_refs, service) else {
                    continue;
                };
                for (index, rule) in spec.rules.iter().enumerate() {
                    let rule_parts = Rule {
                        filters: &rule.filters,
                        backend_refs: &rule.backend_refs,
                        timeouts: rule.timeouts.as_ref(),
                        retry: rule.retry.as_ref(),
                        grpc: true,
                    };
                    let base = rule_parts.compile(catalog, route, index, parent, service);
                    let matches = rule.matches.iter().map(grpc_match);
                    expand(&mut table, route, index, base, matches);
                }
            }
            _ => {}
        }
    }
    table.sort_by(|a, b| a.0.cmp(&b.0));
    table.into_iter().map(|(_, route)| route).collect()
}

/// The route's reference to `service`, if it is attached to it.
fn parent_for<'a>(
    catalog: &Catalog<'a>,
    route: &'a Resource,
    parents: &'a [ParentRef],
    service: ServiceKey,
) -> Option<&'a ServiceRef> {
    let namespace = route.metadata.namespace.as_str();
    parents
        .iter()
        .map(|parent| &parent.0)
        .find(|parent| catalog.resolve(parent, namespace) == Ok(service))
}

/// Gateway API precedence, most specific first; the derived order compares fields top
/// to bottom.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Precedence {
    /// Exact path, then prefix, then regex.
    path_kind: u8,
    /// Longer prefixes first.
    path_len: Reverse<usize>,
    /// Matches on the method first.
    no_method: bool,
    headers: Reverse<usize>,
    query: Reverse<usize>,
    /// Ties: oldest first (resources without a creation order after those with one),
    /// then by `namespace/name`, then rule and match order.
    created: (bool, u64),
    namespace: String,
    name: String,
    kind: Kind,
    rule: usize,
    match_index: usize,
}

/// Adds one table entry per match of a rule (precedence ranks matches, not rules), or
/// one match-all entry for a rule without matches.
fn expand(
    table: &mut Vec<(Precedence, RouteConfig)>,
    route: &Resource,
    rule: usize,
    base: RouteConfig,
    matches: impl ExactSizeIterator<Item = RouteMatch>,
) {
    let precedence = |m: &RouteMatch, match_index| {
        let (path_kind, path_len) = match &m.path {
            Some(config::PathMatch::Exact(path)) => (0, path.len()),
            Some(config::PathMatch::Prefix(path)) => (1, path.len()),
            Some(config::PathMatch::Regex(_)) => (2, 0),
            None => (1, 1),
        };
        Precedence {
            path_kind,
            path_len: Reverse(path_len),
            no_method: m.method.is_none(),
            headers: Reverse(m.headers.len()),
            query: Reverse(m.query.len()),
            created: route
                .metadata
                .created
                .map_or((true, 0), |revision| (false, revision)),
            namespace: route.metadata.namespace.to_string(),
            name: route.metadata.name.to_string(),
            kind: route.kind(),
            rule,
            match_index,
        }
    };
    if matches.len() == 0 {
        table.push((precedence(&RouteMatch::default(), 0), base));
        return;
    }
    for (match_index, m) in matches.enumerate() {
        let mut entry = base.clone();
        let rank = precedence(&m, match_index);
        entry.matches = vec![m];
        table.push((rank, entry));
    }
}

/// What HTTPRoute and GRPCRoute rules share.
struct Rule<'a> {
    filters: &'a [RouteFilter],
    backend_refs: &'a [BackendRef],
    timeouts: Option<&'a RouteTimeouts>,
    retry: Option<&'a RetrySpec>,
    grpc: bool,
}

impl Rule<'_> {
    /// The rule without its matches.
    fn compile(
        &self,
        catalog: &Catalog,
        route: &Resource,
        index: usize,
        parent: &ServiceRef,
        service: ServiceKey,
    ) -> RouteConfig {
        let namespace = route.metadata.namespace.as_str();
        let rule_filters = filters(catalog, namespace, self.filters);
        let backends = if self.backend_refs.is_empty() && rule_filters.redirect.is_none() {
            // A rule that names no backend sends to the Service it is attached to (as
            // Linkerd does), so a route can add timeouts or retries without repeating it.
            vec![backend(service, parent.port.map(|p| p.get()), 1)]
        } else {
            // A backend that does not resolve keeps its place and weight: the proxy answers
            // its share with 500 (Gateway API), instead of giving it to the others.
            self.backend_refs
                .iter()
                .map(|b| {
                    let port = b.service.port.map(|p| p.get());
                    let resolved = match catalog.resolve(&b.service, namespace) {
                        Ok(key) => backend(key, port, b.weight.get()),
                        Err(_) => {
                            let name = b.service.name.as_str();
                            let ns = b
                                .service
                                .namespace
                                .as_ref()
                                .map_or(namespace, |n| n.as_str());
                            config::BackendRef {
                                missing: true,
                                ..backend((ns, name), port, b.weight.get())
                            }
                        }
                    };
                    let own = filters(catalog, namespace, &b.filters);
                    config::BackendRef {
                        request_headers: own.request_headers,
                        response_headers: own.response_headers,
                        ..resolved
                    }
                })
                .collect()
        };
        RouteConfig {
            name: format!("{namespace}/{}/{index}", route.metadata.name),
            matches: Vec::new(),
            filters: rule_filters,
            backends,
            timeouts: timeouts(self.timeouts),
            retry: self.retry.map(|spec| retry(spec, self.grpc)),
        }
    }
}

fn backend(key: ServiceKey, port: Option<u16>, weight: u32) -> config::BackendRef {
    config::BackendRef {
        service: key.1.to_owned(),
        namespace: key.0.to_owned(),
        port,
        weight,
        missing: false,
        request_headers: None,
        response_headers: None,
    }
}

fn http_match(m: &HttpRouteMatch) -> RouteMatch {
    RouteMatch {
        path: m.path.as_ref().map(|path| match path {
            PathMatch::Exact(path) => config::PathMatch::Exact(path.to_string()),
            PathMatch::PathPrefix(path) => {
                config::PathMatch::Prefix(normalize_prefix(path.as_str()))
            }
            PathMatch::RegularExpression(regex) => config::PathMatch::Regex(regex.to_string()),
        }),
        method: m.method.as_ref().map(ToString::to_string),
        headers: value_matches(m.headers.iter().map(|h| (h.name.as_str(), &h.value))),
        query: value_matches(m.query_params.iter().map(|q| (q.name.as_str(), &q.value))),
    }
}

/// The Gateway API ignores a prefix's trailing `/` (`/api/` matches `/api`); dropping it
/// leaves the proxy one rule: a prefix matches whole segments.
fn normalize_prefix(prefix: &str) -> String {
    match prefix.trim_end_matches('/') {
        "" => "/".to_owned(),
        trimmed => trimmed.to_owned(),
    }
}

/// gRPC calls are `POST /<package.Service>/<Method>`, so method matches become path matches.
fn grpc_match(m: &GrpcRouteMatch) -> RouteMatch {
    const ANY: &str = "[^/]+";
    let path = m.method.as_ref().map(|method| match method {
        GrpcMethodMatch::Exact {
            service: Some(service),
            method: Some(method),
        } => config::PathMatch::Exact(format!("/{service}/{method}")),
        GrpcMethodMatch::Exact {
            service: Some(service),
            method: None,
        } => config::PathMatch::Prefix(format!("/{service}")),
        GrpcMethodMatch::Exact { service, method } => config::PathMatch::Regex(format!(
            "/{}/{}",
            service.as_deref().map_or(ANY.to_owned(), regex::escape),
            method.as_deref().map_or(ANY.to_owned(), regex::escape),
        )),
        GrpcMethodMatch::RegularExpression { service, method } => {
            config::PathMatch::Regex(format!(
                "/(?:{})/(?:{})",
                service.as_ref().map_or(ANY, |s| s.as_str()),
                method.as_ref().map_or(ANY, |m| m.as_str()),
            ))
        }
    });
    RouteMatch {
        path,
        method: None,
        headers: value_matches(m.headers.iter().map(|h| (h.name.as_str(), &h.value))),
        query: Vec::new(),
    }
}

/// The Gateway API says only the first condition on a given name counts.
fn value_matches<'a>(
    conditions: impl Iterator<Item = (&'a str, &'a StringMatch)>,
) -> Vec<ValueMatch> {
    let mut out: Vec<ValueMatch> = Vec::new();
    for (name, value) in conditions {
        if out.iter().any(|earlier| earlier.name == name) {
            continue;
        }
        out.push(ValueMatch {
            name: name.to_owned(),
            value: match value {
                StringMatch::Exact(text) => config::StringMatch::Exact(text.clone()),
                StringMatch::RegularExpression(regex) => {
                    config::StringMatch::Regex(regex.to_string())
                }
            },
        });
    }
    out
}

fn filters(catalog: &Catalog, namespace: &str, filters: &[RouteFilter]) -> RouteFilters {
    let mut out = RouteFilters::default();
    for filter in filters {
        match filter {
            RouteFilter::RequestHeaderModifier(spec) => out.request_headers = Some(headers(spec)),
            RouteFilter::ResponseHeaderModifier(spec) => out.response_headers = Some(headers(spec)),
            RouteFilter::RequestRedirect(spec) => {
                out.redirect = Some(Redirect {
                    scheme: spec.scheme.map(|s| s.as_str().to_owned()),
                    hostname: spec.hostname.as_ref().map(ToString::to_string),
                    path: spec.path.as_ref().map(path_modifier),
                    port: spec.port.map(|p| p.get()),
                    status_code: spec.status_code.get(),
                })
            }
            RouteFilter::UrlRewrite(spec) => {
                out.rewrite = Some(Rewrite {
                    hostname: spec.hostname.as_ref().map(ToString::to_string),
                    path: spec.path.as_ref().map(path_modifier),
                })
            }
            RouteFilter::Cors(spec) => out.cors = Some(cors(spec)),
            RouteFilter::RequestMirror(spec) => {
                // A mirror to a Service that does not exist was a warning; it is dropped.
                if let Ok(key) = catalog.resolve(&spec.backend, namespace) {
                    out.mirrors.push(Mirror {
                        backend: backend(key, spec.backend.port.map(|p| p.get()), 1),
                        percent: spec.percent.get(),
                    });
                }
            }
        }
    }
    out
}

fn cors(spec: &CorsSpec) -> Cors {
    fn list<T: ToString>(items: &[Wildcard<T>]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Wildcard::Any => "*".to_owned(),
                Wildcard::Only(item) => item.to_string(),
            })
            .collect()
    }
    Cors {
        allow_origins: spec
            .allow_origins
            .iter()
            .map(|o| o.as_str().to_owned())
            .collect(),
        allow_credentials: spec.allow_credentials,
        allow_methods: list(&spec.allow_methods),
        allow_headers: list(&spec.allow_headers),
        expose_headers: list(&spec.expose_headers),
        max_age_seconds: spec.max_age_seconds,
    }
}

fn headers(spec: &HeaderModifierSpec) -> HeaderModifier {
    let pairs = |list: &[crate::resources::HeaderValue]| {
        list.iter()
            .map(|h| (h.name.to_string(), h.value.clone()))
            .collect()
    };
    HeaderModifier {
        set: pairs(&spec.set),
        add: pairs(&spec.add),
        remove: spec.remove.iter().map(ToString::to_string).collect(),
    }
}

fn path_modifier(spec: &PathModifierSpec) -> PathModifier {
    match spec {
        PathModifierSpec::ReplaceFullPath(path) => PathModifier::ReplaceFullPath(path.to_string()),
        PathModifierSpec::ReplacePrefixMatch(path) => {
            PathModifier::ReplacePrefixMatch(path.to_string())
        }
    }
}

/// `0s` means no timeout.
fn timeouts(spec: Option<&RouteTimeouts>) -> Timeouts {
    let millis =
        |d: Option<crate::resources::Duration>| d.filter(|d| !d.is_zero()).map(|d| d.as_millis());
    spec.map_or_else(Timeouts::default, |spec| Timeouts {
        request_ms: millis(spec.request),
        backend_request_ms: millis(spec.backend_request),
    })
}

/// A retry that names no condition retries what is always safe to: failed connections,
/// resets, and gateway errors (HTTP) or `UNAVAILABLE` (gRPC).
fn retry(spec: &RetrySpec, grpc: bool) -> RetryPolicy {
    let names_nothing = spec.on.is_empty() && spec.codes.is_empty() && spec.grpc_codes.is_empty();
    let on = match (names_nothing, grpc) {
        (true, true) => vec![RetryOn::ConnectFailure, RetryOn::Reset],
        (true, false) => vec![
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::GatewayError,
        ],
        (false, _) => spec.on.clone(),
    };
    let grpc_codes = if names_nothing && grpc {
        vec![GRPC_UNAVAILABLE]
    } else {
        spec.grpc_codes.iter().map(|c| c.get()).collect()
    };
    let max = spec.max_backoff.map(|d| d.as_millis());
    let base = spec
        .backoff
        .map_or(DEFAULT_BACKOFF_MS.min(max.unwrap_or(u64::MAX)), |d| {
            d.as_millis()
        });
    RetryPolicy {
        attempts: spec.attempts.unwrap_or(DEFAULT_RETRY_ATTEMPTS),
        on,
        status_codes: spec.codes.iter().map(|c| c.get()).collect(),
        grpc_codes,
        backoff_base_ms: base,
        backoff_max_ms: max.unwrap_or(base.saturating_mul(10)),
    }
}
