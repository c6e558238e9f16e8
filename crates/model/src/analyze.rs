//! `weft check`'s look at the configuration itself, as `istioctl analyze` does: what is
//! accepted but cannot work as meant. Each finding names the resource, says what is wrong
//! and what to do; errors make `weft check` fail.

use crate::authz::{AuthzAction, AuthzRule};
use crate::config::{ProxyConfig, RouteConfig, RouteMatch, ServiceConfig};
use crate::resources::Resource;
use crate::validate;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Traffic fails, or a proxy runs without a config of its own.
    Error,
    /// Something is ignored or unreachable, probably not as meant.
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// `Kind namespace/name`.
    pub resource: String,
    pub finding: String,
    pub hint: String,
}

/// What the mesh runs, beside its resources.
pub struct Running<'a> {
    /// The whole mesh's compiled config, with the endpoints in rotation.
    pub config: &'a ProxyConfig,
    /// `(namespace, service)` of every connected proxy.
    pub proxies: &'a [(String, String)],
}

/// Every finding on `resources` as `running` runs them, errors first.
pub fn analyze(resources: &[Resource], running: &Running) -> Vec<Finding> {
    let mut findings = Vec::new();
    // What `weft apply` warned about, for as long as it is true.
    if let Ok(warnings) = validate(resources) {
        for warning in warnings {
            let (resource, finding) = warning
                .message
                .split_once(": ")
                .unwrap_or(("", &warning.message));
            findings.push(Finding {
                severity: Severity::Warning,
                resource: resource.to_owned(),
                finding: finding.to_owned(),
                hint: "apply what it names, or fix the reference".to_owned(),
            });
        }
    }
    let config = running.config;
    let known: HashSet<(&str, &str)> = config
        .services
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str()))
        .collect();
    let mut unknown: Vec<&(String, String)> = running
        .proxies
        .iter()
        .filter(|(ns, name)| !known.contains(&(ns.as_str(), name.as_str())))
        .collect();
    unknown.sort();
    unknown.dedup();
    for (namespace, name) in unknown {
        findings.push(Finding {
            severity: Severity::Error,
            resource: format!("Service {namespace}/{name}"),
            finding: "proxies run for this Service, which does not exist: nobody can call \
                      them, and their policies and health check do not apply"
                .to_owned(),
            hint: format!(
                "apply a Service {name} in namespace {namespace}, or restart the proxies with \
                 the right --service and --namespace"
            ),
        });
    }
    for service in &config.services {
        empty_backends(config, service, &mut findings);
        shadowed_routes(service, &mut findings);
        policies(config, service, running, &mut findings);
    }
    findings.sort_by(|a, b| (a.severity, &a.resource).cmp(&(b.severity, &b.resource)));
    findings
}

/// `<namespace>/<route>/<rule>` as the resource it comes from.
fn route_resource(route: &RouteConfig) -> String {
    let mut parts = route.name.rsplitn(2, '/');
    let (_rule, resource) = (parts.next(), parts.next().unwrap_or(&route.name));
    format!("route {resource}")
}

fn empty_backends(config: &ProxyConfig, service: &ServiceConfig, findings: &mut Vec<Finding>) {
    for route in &service.routes {
        for backend in route.backends.iter().filter(|b| b.weight > 0 && !b.missing) {
            let empty = config.services.iter().any(|s| {
                s.namespace == backend.namespace
                    && s.name == backend.service
                    && s.endpoints.is_empty()
            });
            if empty {
                findings.push(Finding {
                    severity: Severity::Error,
                    resource: route_resource(route),
                    finding: format!(
                        "rule {} sends to Service {}/{}, which has no endpoint in rotation: \
                         its share is answered 503",
                        route.name, backend.namespace, backend.service
                    ),
                    hint: "start its instances, or fix their health check (`weft proxies` \
                           shows why they are out of rotation)"
                        .to_owned(),
                });
            }
        }
    }
}

/// A rule no request can reach: an earlier rule (in precedence order) matches everything
/// it matches.
fn shadowed_routes(service: &ServiceConfig, findings: &mut Vec<Finding>) {
    for (j, later) in service.routes.iter().enumerate() {
        let shadow = service.routes[..j]
            .iter()
            .find(|earlier| covers_all(&earlier.matches, &later.matches));
        if let Some(earlier) = shadow {
            findings.push(Finding {
                severity: Severity::Warning,
                resource: route_resource(later),
                finding: format!(
                    "rule {} is never used: rule {}, tried before it, matches every request it \
                     matches",
                    later.name, earlier.name
                ),
                hint: "make the earlier rule narrower, or remove this one (`weft explain` \
                       shows the order rules are tried in)"
                    .to_owned(),
            });
        }
    }
}

/// Whether every request `later` matches is matched by `earlier` (conservatively: `false`
/// when unsure).
fn covers_all(earlier: &[RouteMatch], later: &[RouteMatch]) -> bool {
    if earlier.is_empty() {
        return true;
    }
    if later.is_empty() {
        // `later` matches everything; only a catch-all covers it.
        return earlier.iter().any(|m| covers(m, &RouteMatch::default()));
    }
    later.iter().all(|l| earlier.iter().any(|e| covers(e, l)))
}

fn covers(earlier: &RouteMatch, later: &RouteMatch) -> bool {
    use crate::config::PathMatch;
    let method = earlier.method.is_none() || earlier.method == later.method;
    let path = match (&earlier.path, &later.path) {
        (None, _) => true,
        (Some(PathMatch::Prefix(p)), Some(PathMatch::Prefix(q) | PathMatch::Exact(q))) => {
            let p = p.trim_end_matches('/');
            p.is_empty() || q == p || q.starts_with(&format!("{p}/"))
        }
        (Some(e), Some(l)) => e == l,
        (Some(_), None) => false,
    };
    let headers = earlier.headers.iter().all(|h| later.headers.contains(h));
    let query = earlier.query.iter().all(|q| later.query.contains(q));
    method && path && headers && query
}

fn is_catch_all(rule: &AuthzRule) -> bool {
    rule.from.is_empty() && rule.to.is_empty() && rule.when.is_empty()
}

fn policies(
    config: &ProxyConfig,
    service: &ServiceConfig,
    running: &Running,
    findings: &mut Vec<Finding>,
) {
    let enforced = service.authorization.iter().filter(|p| !p.dry_run);
    for policy in enforced.clone() {
        let resource = format!("AuthorizationPolicy {}", policy.name);
        if policy.action == AuthzAction::Deny && policy.rules.iter().any(is_catch_all) {
            findings.push(Finding {
                severity: Severity::Error,
                resource,
                finding: format!(
                    "a rule without from, to or when denies every call to Service {}/{}",
                    service.namespace, service.name
                ),
                hint: "give the rule conditions, or set `mode: dry-run` to watch what it \
                       would deny first"
                    .to_owned(),
            });
        }
    }
    let allowed_somehow = enforced
        .clone()
        .any(|p| p.action == AuthzAction::Allow && !p.rules.is_empty());
    let called = running
        .proxies
        .iter()
        .any(|(ns, name)| *ns == service.namespace && *name == service.name);
    if !config.default_authorization.is_allow() && called && !allowed_somehow {
        findings.push(Finding {
            severity: Severity::Warning,
            resource: format!("Service {}/{}", service.namespace, service.name),
            finding: "the mesh denies by default and no ALLOW policy names this Service: \
                      every call to it is denied"
                .to_owned(),
            hint: "add an AuthorizationPolicy that allows its callers (`weft explain --from \
                   CALLER --to SERVICE` shows the verdict)"
                .to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, load_str};

    fn findings(text: &str, proxies: &[(&str, &str)]) -> Vec<String> {
        let resources = load_str("test.yaml", text).unwrap();
        let config = compile(&resources);
        let proxies: Vec<(String, String)> = proxies
            .iter()
            .map(|(ns, name)| (ns.to_string(), name.to_string()))
            .collect();
        analyze(
            &resources,
            &Running {
                config: &config,
                proxies: &proxies,
            },
        )
        .into_iter()
        .map(|f| format!("{:?} {}: {}", f.severity, f.resource, f.finding))
        .collect()
    }

    const HEALTHY: &str = r#"apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: "127.0.0.1:8080"}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api-v2}
spec:
  ports: [{port: 80, protocol: http}]
  endpoints: [{address: "127.0.0.1:8081"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: api-v2}]
  - backendRefs: [{name: api}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api}
spec:
  targetRef: {kind: Service, name: api}
  rules: [{from: [{services: [web]}]}]
"#;

    #[test]
    fn a_healthy_config_has_no_findings() {
        assert_eq!(
            findings(HEALTHY, &[("default", "api")]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_broken_thing_is_found() {
        let broken = format!(
            "{HEALTHY}---\n{}",
            r#"apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {defaultAuthorization: deny}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: empty}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shadowed}
spec:
  parentRefs: [{group: "", kind: Service, name: api-v2}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: api-v2}]
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: empty}]
  - matches: [{path: {type: Exact, value: /b}}]
    backendRefs: [{name: nosuch}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: wall}
spec:
  targetRef: {kind: Service, name: api-v2}
  action: DENY
  rules: [{}]
"#
        );
        let found = findings(
            &broken,
            &[
                ("default", "api"),
                ("default", "empty"),
                ("default", "ghost"),
            ],
        );
        let expected = [
            "Error AuthorizationPolicy default/wall: a rule without from, to or when denies every call to Service default/api-v2",
            "Error Service default/ghost: proxies run for this Service, which does not exist: nobody can call them, and their policies and health check do not apply",
            "Error route default/shadowed: rule default/shadowed/1 sends to Service default/empty, which has no endpoint in rotation: its share is answered 503",
            "Warning HTTPRoute default/shadowed: spec.rules[2].backendRefs[0]: Service default/nosuch does not exist; the backend is left out (a rule left with none answers 500)",
            "Warning Service default/empty: the mesh denies by default and no ALLOW policy names this Service: every call to it is denied",
            "Warning route default/shadowed: rule default/shadowed/1 is never used: rule default/shadowed/0, tried before it, matches every request it matches",
        ];
        assert_eq!(found, expected);
    }
}
