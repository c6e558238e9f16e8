//! `weft explain`: what the mesh would do with one request, from the config the calling
//! proxy runs and without sending anything. Every decision is made by the code the proxies
//! run: the host lookup ([`crate::host`]), route matching ([`crate::route_match`]) and the
//! authorization judgment ([`crate::authz`]).

use crate::authz::{self, called_port, AuthzAction, Call, Caller, RuleRef};
use crate::config::{
    EndpointConfig, MtlsMode, Protocol, ProxyConfig, RateLimit, RetryBudget, RetryPolicy,
    RouteConfig, ServiceConfig,
};
use crate::host::{host_target, HostTarget};
use crate::route_match::{InvalidRegex, Mismatch, RequestView, RuleMatcher};
use serde::Serialize;

/// The request to explain, as the calling app would send it.
pub struct Question<'a> {
    /// The calling Service: `(namespace, name)`.
    pub from: (&'a str, &'a str),
    /// The host the app addresses (`reviews`, `reviews.shop`, `reviews.shop:9080`).
    pub to: &'a str,
    pub method: &'a str,
    /// The path, with its query string if any.
    pub path: &'a str,
    /// Request headers, names lower-case.
    pub headers: &'a [(String, String)],
    /// The port called, when the host does not say.
    pub port: Option<u16>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub from: Party,
    pub to: String,
    /// `strict` or `permissive`.
    pub mtls: &'static str,
    /// The Service the host names, `namespace/name`; `None` when the caller's proxy knows
    /// none by that name.
    pub destination: Option<String>,
    /// One line: what the app gets.
    pub outcome: String,
    /// The destination's route rules in the order they are tried, up to the one that
    /// matched.
    pub routes: Vec<RouteTrial>,
    pub route: Option<RouteChoice>,
    /// Where the route sends the request; each is judged by its own authorization.
    pub backends: Vec<BackendPath>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Party {
    pub service: String,
    pub namespace: String,
    pub identity: String,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteTrial {
    pub name: String,
    pub matched: bool,
    /// Why each of its match entries does not match (empty when one matched).
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteChoice {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_request_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect_status: Option<u16>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendPath {
    /// `namespace/name`.
    pub service: String,
    pub weight: u32,
    /// Of the requests this route takes.
    pub share_percent: f64,
    /// The reference names no Service: its share is answered 500.
    pub missing: bool,
    pub connect_timeout_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_budget: Option<RetryBudget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    pub endpoints: Vec<EndpointView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authorization: Option<AuthzView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    pub address: String,
    /// The SPIFFE id its proxy must present; `None` outside the mesh (plain text).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// In rotation (healthy); the control plane adds the ones out of rotation.
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The backend's proxy's judgment of the call, and every policy as it saw it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthzView {
    pub allowed: bool,
    /// `L7` (each request) or `L4` (the connection: the Service speaks TCP).
    pub layer: &'static str,
    pub policy: String,
    pub rule: String,
    /// The `Mesh`'s `defaultAuthorization`.
    pub default: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run_would_deny: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audited_by: Option<String>,
    pub policies: Vec<PolicyView>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub name: String,
    pub action: AuthzAction,
    pub dry_run: bool,
    /// `false` when it targets another port.
    pub applies: bool,
    /// The rules that match the call, by index.
    pub matching_rules: Vec<usize>,
    pub rules: usize,
}

/// The question's request as route matching reads it.
struct Asked<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    headers: &'a [(String, String)],
}

impl RequestView for Asked<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn query(&self) -> &str {
        self.query
    }

    fn any_header(&self, name: &str, test: &dyn Fn(&str) -> bool) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && test(v))
    }
}

impl authz::Headers for Asked<'_> {
    fn has(&self, name: &str, value: &str) -> bool {
        self.headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && v == value)
    }
}

/// Explains `question` with `config`, the config the caller's proxy runs.
pub fn explain(config: &ProxyConfig, question: &Question) -> Result<Explanation, InvalidRegex> {
    let (namespace, service) = question.from;
    let identity = format!(
        "spiffe://{}/ns/{namespace}/svc/{service}",
        config.trust_domain
    );
    let (path, query) = question.path.split_once('?').unwrap_or((question.path, ""));
    let method = question.method.to_ascii_uppercase();
    let asked = Asked {
        method: &method,
        path,
        query,
        headers: question.headers,
    };
    let mut explanation = Explanation {
        from: Party {
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            identity: identity.clone(),
        },
        to: question.to.to_owned(),
        mtls: match config.mtls_mode {
            MtlsMode::Strict => "strict",
            MtlsMode::Permissive => "permissive",
        },
        destination: None,
        outcome: String::new(),
        routes: Vec::new(),
        route: None,
        backends: Vec::new(),
        notes: Vec::new(),
    };
    if !config
        .services
        .iter()
        .any(|s| s.namespace == namespace && s.name == service)
    {
        explanation.notes.push(format!(
            "no Service {namespace}/{service}: its proxies have no identity or config of their own"
        ));
    }
    let Some(destination) = resolve(config, namespace, question.to) else {
        explanation.outcome = format!(
            "404: the caller's proxy knows no Service by the host {:?}",
            question.to
        );
        return Ok(explanation);
    };
    explanation.destination = Some(format!("{}/{}", destination.namespace, destination.name));
    let named_port = question.port.or_else(|| {
        question
            .to
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
    });
    let caller = Caller::Mesh {
        identity: &identity,
        namespace,
        service,
    };
    let judge = |target: &ServiceConfig| {
        let connection = is_tcp(target);
        let call = Call {
            caller,
            port: called_port(Some(target), named_port, connection),
            request: (!connection).then_some(authz::Request {
                method: &method,
                path,
                headers: &asked,
            }),
        };
        authz_view(config, target, &call, connection)
    };
    if is_tcp(destination) {
        // TCP goes to the Service itself: no routes, judged per connection.
        explanation
            .backends
            .push(backend_path(destination, 1, 1, &judge));
        explanation.outcome = outcome(&explanation.backends);
        return Ok(explanation);
    }
    let default_route;
    let chosen = if destination.routes.is_empty() {
        default_route = RouteConfig::default_for(destination);
        Some(&default_route)
    } else {
        let mut found = None;
        for route in &destination.routes {
            let matcher = RuleMatcher::new(&route.matches)?;
            let matched = matcher.match_request(&asked).is_some();
            let reasons = if matched {
                Vec::new()
            } else {
                matcher
                    .mismatches(&asked)
                    .into_iter()
                    .flatten()
                    .map(|m| describe(m, &method, path))
                    .collect()
            };
            explanation.routes.push(RouteTrial {
                name: route.name.clone(),
                matched,
                reasons,
            });
            if matched {
                found = Some(route);
                break;
            }
        }
        found
    };
    let Some(route) = chosen else {
        explanation.outcome = "404: no route matches this request".to_owned();
        return Ok(explanation);
    };
    let filters = &route.filters;
    explanation.route = Some(RouteChoice {
        name: route.name.clone(),
        request_timeout_ms: route.timeouts.request_ms,
        backend_request_timeout_ms: route.timeouts.backend_request_ms,
        retry: route.retry.clone(),
        redirect_status: filters.redirect.as_ref().map(|r| r.status_code),
        mirrors: filters
            .mirrors
            .iter()
            .map(|m| {
                format!(
                    "{}/{} ({} %)",
                    m.backend.namespace, m.backend.service, m.percent
                )
            })
            .collect(),
    });
    if let Some(redirect) = &filters.redirect {
        explanation.outcome = format!("{}: the route redirects", redirect.status_code);
        return Ok(explanation);
    }
    if filters.rewrite.is_some() || filters.request_headers.is_some() {
        explanation.notes.push(
            "the route rewrites the request; the backend's authorization is shown for the \
             request as sent by the app"
                .to_owned(),
        );
    }
    let total: u64 = route.backends.iter().map(|b| u64::from(b.weight)).sum();
    for backend in &route.backends {
        let target = config
            .services
            .iter()
            .find(|s| s.namespace == backend.namespace && s.name == backend.service)
            .filter(|_| !backend.missing);
        let path = match target {
            Some(target) => backend_path(target, backend.weight, total, &judge),
            None => BackendPath {
                service: format!("{}/{}", backend.namespace, backend.service),
                weight: backend.weight,
                share_percent: share(backend.weight, total),
                missing: true,
                connect_timeout_ms: 0,
                retry_budget: None,
                rate_limit: None,
                endpoints: Vec::new(),
                authorization: None,
            },
        };
        explanation.backends.push(path);
    }
    explanation.outcome = if total == 0 {
        "500: the route has no backend with weight".to_owned()
    } else {
        outcome(&explanation.backends)
    };
    Ok(explanation)
}

fn is_tcp(service: &ServiceConfig) -> bool {
    service.ports.first().map(|p| p.protocol) == Some(Protocol::Tcp)
}

/// The Service `host` names, as the caller's proxy looks it up (exact, then lower-case).
fn resolve<'c>(config: &'c ProxyConfig, namespace: &str, host: &str) -> Option<&'c ServiceConfig> {
    let find = |host: &str| match host_target(host) {
        HostTarget::Qualified(key) => {
            let (name, ns) = key.split_once('.')?;
            config
                .services
                .iter()
                .find(|s| s.name == name && s.namespace == ns)
        }
        HostTarget::Local(name) => config
            .services
            .iter()
            .find(|s| s.name == name && s.namespace == namespace),
    };
    find(host).or_else(|| find(&host.to_ascii_lowercase()))
}

fn share(weight: u32, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (f64::from(weight) * 1000.0 / total as f64).round() / 10.0
    }
}

fn backend_path(
    target: &ServiceConfig,
    weight: u32,
    total: u64,
    judge: &dyn Fn(&ServiceConfig) -> AuthzView,
) -> BackendPath {
    BackendPath {
        service: format!("{}/{}", target.namespace, target.name),
        weight,
        share_percent: share(weight, total),
        missing: false,
        connect_timeout_ms: target.policy.connect_timeout_ms,
        retry_budget: target.policy.retry_budget.clone(),
        rate_limit: target.policy.rate_limit.clone(),
        endpoints: target.endpoints.iter().map(endpoint_view).collect(),
        authorization: Some(judge(target)),
    }
}

fn endpoint_view(endpoint: &EndpointConfig) -> EndpointView {
    EndpointView {
        address: endpoint.address.to_string(),
        identity: endpoint.identity.clone(),
        healthy: true,
        detail: None,
    }
}

fn authz_view(config: &ProxyConfig, target: &ServiceConfig, call: &Call, l4: bool) -> AuthzView {
    let policies = &target.authorization;
    let index = authz::AuthzIndex::new(policies);
    let judgment = authz::judge(policies, &index, config.default_authorization, call);
    let cause = |c: &authz::Cause| match c.rule {
        RuleRef::Rule(index) => format!("{} rule {index}", c.policy_name()),
        _ => c.policy_name().to_owned(),
    };
    AuthzView {
        allowed: judgment.allowed,
        layer: if l4 { "L4" } else { "L7" },
        policy: judgment.cause.policy_name().to_owned(),
        rule: judgment.cause.rule.to_string(),
        default: if config.default_authorization.is_allow() {
            "allow"
        } else {
            "deny"
        },
        dry_run_would_deny: judgment.would_deny.as_ref().map(cause),
        audited_by: judgment.audited.as_ref().map(cause),
        policies: authz::trace(policies, call)
            .into_iter()
            .map(|t| PolicyView {
                name: t.policy.name.clone(),
                action: t.policy.action,
                dry_run: t.policy.dry_run,
                applies: t.applies,
                matching_rules: t.matching_rules,
                rules: t.policy.rules.len(),
            })
            .collect(),
    }
}

/// What the app gets, from the backends the route may pick.
fn outcome(backends: &[BackendPath]) -> String {
    let live: Vec<&BackendPath> = backends.iter().filter(|b| b.weight > 0).collect();
    let denied: Vec<&BackendPath> = live
        .iter()
        .copied()
        .filter(|b| b.authorization.as_ref().is_some_and(|a| !a.allowed))
        .collect();
    let missing = live.iter().any(|b| b.missing);
    let empty = live.iter().any(|b| !b.missing && b.endpoints.is_empty());
    if denied.len() == live.len() && !live.is_empty() {
        let authz = denied[0].authorization.as_ref().expect("judged");
        return format!("403: denied by authorization policy {}", authz.policy);
    }
    let mut parts = Vec::new();
    if !denied.is_empty() {
        parts.push("denied on some backends (see each)".to_owned());
    }
    if missing {
        parts.push("500 for the share of a backend that does not exist".to_owned());
    }
    if empty {
        parts.push("503 where a backend has no endpoints".to_owned());
    }
    if parts.is_empty() {
        "allowed: sent to the app".to_owned()
    } else {
        format!("allowed, but {}", parts.join("; "))
    }
}

fn describe(mismatch: Mismatch, method: &str, path: &str) -> String {
    match mismatch {
        Mismatch::Method(wanted) => format!("method is {method}, the rule wants {wanted}"),
        Mismatch::Path(how, wanted) => format!("path {path} is not {how} {wanted}"),
        Mismatch::Header(name) => format!("header {name} is missing or does not match"),
        Mismatch::Query(name) => format!("query parameter {name} is missing or does not match"),
    }
}
