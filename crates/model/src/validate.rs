//! Checks across resources: duplicates, singletons, and references between them.

use crate::catalog::{target_key, Catalog, ServiceKey};
use crate::error::{Diagnostic, LoadError, Warning};
use crate::resources::{
    AuthorizationAction, AuthorizationPolicySpec, Kind, ParentRef, Resource, RouteFilter,
    ServiceRef, Spec,
};
use std::collections::HashMap;

/// Checks a whole set of resources, as it would be applied. Returns the warnings
/// (references to Services that do not exist, which compile to nothing) or every error
/// (duplicates, a second Mesh, two TrafficPolicies for one Service).
pub fn validate(resources: &[Resource]) -> Result<Vec<Warning>, LoadError> {
    let mut errors = Vec::new();
    let mut seen: HashMap<(Kind, &str, &str), &Resource> = HashMap::new();
    let mut unique = Vec::new();
    for resource in resources {
        let key = (
            resource.kind(),
            resource.metadata.namespace.as_str(),
            resource.metadata.name.as_str(),
        );
        match seen.get(&key) {
            Some(first) => errors.push(Diagnostic {
                location: resource.location.clone(),
                message: format!(
                    "duplicate {}: it is also defined at {}",
                    resource.describe(),
                    first.location
                ),
            }),
            None => {
                seen.insert(key, resource);
                unique.push(resource);
            }
        }
    }

    let mut meshes = unique.iter().filter(|r| r.kind() == Kind::Mesh);
    if let Some(first) = meshes.next() {
        for extra in meshes {
            errors.push(Diagnostic {
                location: extra.location.clone(),
                message: format!(
                    "more than one Mesh: {} and {} (at {}); keep one",
                    extra.describe(),
                    first.describe(),
                    first.location
                ),
            });
        }
    }

    // A host name is one service's: two claiming it would make DNS and routing pick one.
    let mut hosts: HashMap<&str, &Resource> = HashMap::new();
    for resource in &unique {
        let Spec::Service(spec) = &resource.spec else {
            continue;
        };
        for host in &spec.hosts {
            let first = *hosts.entry(host.as_str()).or_insert(resource);
            if !std::ptr::eq(first, *resource) {
                errors.push(Diagnostic {
                    location: resource.location.clone(),
                    message: format!(
                        "host {host} is claimed by {} and by {} (at {}); a host name belongs \
                         to one Service",
                        resource.describe(),
                        first.describe(),
                        first.location
                    ),
                });
            }
        }
    }

    let catalog = Catalog::new(unique.iter().copied());
    let mut warnings = Vec::new();
    for resource in &unique {
        let namespace = resource.metadata.namespace.as_str();
        let mut warn = |field: String, why: String| {
            warnings.push(Diagnostic {
                location: resource.location.clone(),
                message: format!("{}: {field}: {why}", resource.describe()),
            })
        };
        match &resource.spec {
            Spec::HttpRoute(route) => {
                check_parents(&catalog, namespace, &route.parent_refs, &mut warn);
                for (i, rule) in route.rules.iter().enumerate() {
                    let refs = rule.backend_refs.iter().map(|b| &b.service);
                    check_backends(&catalog, namespace, i, refs, &rule.filters, &mut warn);
                }
            }
            Spec::GrpcRoute(route) => {
                check_parents(&catalog, namespace, &route.parent_refs, &mut warn);
                for (i, rule) in route.rules.iter().enumerate() {
                    let refs = rule.backend_refs.iter().map(|b| &b.service);
                    check_backends(&catalog, namespace, i, refs, &rule.filters, &mut warn);
                }
            }
            Spec::TrafficPolicy(policy) => {
                let key = target_key(&policy.target_ref, namespace);
                check_target(&catalog, key, &mut warn);
                if policy.target_ref.port.is_some() {
                    errors.push(Diagnostic {
                        location: resource.location.clone(),
                        message: format!(
                            "{}: spec.targetRef.port: a TrafficPolicy applies to the whole \
                             Service; remove the port",
                            resource.describe()
                        ),
                    });
                }
                let (owner, _) = catalog.policies[&key];
                if !std::ptr::eq(owner, *resource) {
                    errors.push(Diagnostic {
                        location: resource.location.clone(),
                        message: format!(
                            "{} targets Service {}/{}, which {} (at {}) already targets; \
                             merge them into one",
                            resource.describe(),
                            key.0,
                            key.1,
                            owner.describe(),
                            owner.location
                        ),
                    });
                }
            }
            Spec::AuthorizationPolicy(policy) => {
                let key = target_key(&policy.target_ref, namespace);
                check_target(&catalog, key, &mut warn);
                check_authorization(&catalog, key, resource, policy, &mut warn, &mut errors);
            }
            Spec::Service(service) => {
                for (i, called) in service.calls.iter().flatten().enumerate() {
                    let called_namespace =
                        called.namespace.as_ref().map_or(namespace, |n| n.as_str());
                    if !catalog
                        .services
                        .contains_key(&(called_namespace, called.name.as_str()))
                    {
                        warn(
                            format!("spec.calls[{i}]"),
                            format!(
                                "Service {called_namespace}/{} does not exist; its proxies will \
                                 not know it until it does",
                                called.name
                            ),
                        );
                    }
                }
            }
            Spec::Mesh(_) => {}
        }
    }

    if errors.is_empty() {
        Ok(warnings)
    } else {
        Err(LoadError::Invalid(errors))
    }
}

fn check_parents(
    catalog: &Catalog,
    namespace: &str,
    parents: &[ParentRef],
    warn: &mut impl FnMut(String, String),
) {
    for (i, parent) in parents.iter().enumerate() {
        if let Err(why) = catalog.resolve(parent, namespace) {
            warn(
                format!("spec.parentRefs[{i}]"),
                format!("{why}; the route is not attached there"),
            );
        }
    }
}

fn check_backends<'a>(
    catalog: &Catalog<'a>,
    namespace: &'a str,
    rule: usize,
    backends: impl Iterator<Item = &'a ServiceRef>,
    filters: &'a [RouteFilter],
    warn: &mut impl FnMut(String, String),
) {
    for (i, backend) in backends.enumerate() {
        if let Err(why) = catalog.resolve(backend, namespace) {
            warn(
                format!("spec.rules[{rule}].backendRefs[{i}]"),
                format!("{why}; the backend is left out (a rule left with none answers 500)"),
            );
        }
    }
    for (i, filter) in filters.iter().enumerate() {
        if let RouteFilter::RequestMirror(mirror) = filter {
            if let Err(why) = catalog.resolve(&mirror.backend, namespace) {
                warn(
                    format!("spec.rules[{rule}].filters[{i}].requestMirror.backendRef"),
                    format!("{why}; the mirror is dropped"),
                );
            }
        }
    }
}

fn check_target(catalog: &Catalog, key: ServiceKey, warn: &mut impl FnMut(String, String)) {
    if !catalog.has_service(key) {
        warn(
            "spec.targetRef".to_owned(),
            format!(
                "Service {}/{} does not exist; the policy applies to nothing",
                key.0, key.1
            ),
        );
    }
}

/// What an AuthorizationPolicy can get wrong beyond its fields' own checks.
fn check_authorization(
    catalog: &Catalog,
    target: ServiceKey,
    resource: &Resource,
    policy: &AuthorizationPolicySpec,
    warn: &mut impl FnMut(String, String),
    errors: &mut Vec<Diagnostic>,
) {
    for (i, rule) in policy.rules.iter().enumerate() {
        for (j, source) in rule.from.iter().enumerate() {
            let named = !source.identities.is_empty()
                || !source.services.is_empty()
                || !source.namespaces.is_empty();
            if source.unauthenticated && named {
                errors.push(Diagnostic {
                    location: resource.location.clone(),
                    message: format!(
                        "{}: spec.rules[{i}].from[{j}]: unauthenticated callers have no \
                         identity, service or namespace; put `unauthenticated: true` in an \
                         entry of its own",
                        resource.describe()
                    ),
                });
            }
        }
    }
    // What follows is about the Service targeted; a missing one is warned about already.
    let Some((_, service)) = catalog.services.get(&target) else {
        return;
    };
    if let Some(port) = policy.target_ref.port {
        if !service.ports.iter().any(|p| p.port == port) {
            warn(
                "spec.targetRef.port".to_owned(),
                format!(
                    "Service {}/{} has no port {}; the policy applies to nothing",
                    target.0,
                    target.1,
                    port.get()
                ),
            );
        }
    }
    if policy.rules.is_empty() && policy.action == AuthorizationAction::Allow {
        warn(
            "spec.rules".to_owned(),
            format!(
                "an ALLOW policy without rules allows nothing: every call to Service {}/{} \
                 is denied",
                target.0, target.1
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{load_str, testdata};

    fn load(files: &[(&str, &str)]) -> Vec<Resource> {
        files
            .iter()
            .flat_map(|(name, text)| load_str(name, text).unwrap())
            .collect()
    }

    fn errors(files: &[(&str, &str)]) -> Vec<String> {
        let err = validate(&load(files)).unwrap_err();
        err.diagnostics().iter().map(ToString::to_string).collect()
    }

    fn warnings(files: &[(&str, &str)]) -> Vec<String> {
        let warnings = validate(&load(files)).unwrap();
        warnings.iter().map(ToString::to_string).collect()
    }

    const WEB: &str = "apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
";

    #[test]
    fn the_examples_are_clean() {
        assert_eq!(
            warnings(&[("all.yaml", &testdata::all())]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn duplicates_name_both_places() {
        let second = format!("# the same again\n{WEB}");
        assert_eq!(
            errors(&[("a.yaml", WEB), ("b.yaml", &second)]),
            ["b.yaml:2:1: duplicate Service default/web: it is also defined at a.yaml:1:1"]
        );
        // Another namespace, or another kind, is another resource.
        let other_ns = WEB.replace("{name: web}", "{name: web, namespace: prod}");
        let policy = "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\n\
                      metadata: {name: web}\nspec: {targetRef: {name: web}}\n";
        assert_eq!(
            warnings(&[("a.yaml", WEB), ("b.yaml", &other_ns), ("c.yaml", policy)]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn one_mesh_at_most() {
        let mesh = |name: &str| {
            format!("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: {name}}}\n")
        };
        let text = format!("{}---\n{}", mesh("one"), mesh("two"));
        assert_eq!(
            errors(&[("mesh.yaml", &text)]),
            [
                "mesh.yaml:5:1: more than one Mesh: Mesh default/two and Mesh default/one \
              (at mesh.yaml:1:1); keep one"
            ]
        );
    }

    #[test]
    fn one_traffic_policy_per_service() {
        let policy = |name: &str| {
            format!(
                "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {{name: {name}}}\n\
                 spec:\n  targetRef: {{kind: Service, name: web, namespace: default}}\n"
            )
        };
        assert_eq!(
            errors(&[
                ("web.yaml", WEB),
                ("p1.yaml", &policy("one")),
                ("p2.yaml", &policy("two"))
            ]),
            [
                "p2.yaml:1:1: TrafficPolicy default/two targets Service default/web, which \
              TrafficPolicy default/one (at p1.yaml:1:1) already targets; merge them into one"
            ]
        );
    }

    #[test]
    fn authorization_policies_that_cannot_work_are_reported() {
        let policy = "apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: p}
spec:
  targetRef: {name: web, port: 81}
  rules: [{from: [{unauthenticated: true, namespaces: [default]}]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: nothing}
spec: {targetRef: {name: web}}
";
        assert_eq!(
            errors(&[("web.yaml", WEB), ("authz.yaml", policy)]),
            [
                "authz.yaml:1:1: AuthorizationPolicy default/p: spec.rules[0].from[0]: \
              unauthenticated callers have no identity, service or namespace; put \
              `unauthenticated: true` in an entry of its own"
            ]
        );
        let fixed = policy.replace(", namespaces: [default]", "");
        assert_eq!(
            warnings(&[("web.yaml", WEB), ("authz.yaml", &fixed)]),
            [
                "authz.yaml:1:1: AuthorizationPolicy default/p: spec.targetRef.port: Service \
                 default/web has no port 81; the policy applies to nothing",
                "authz.yaml:8:1: AuthorizationPolicy default/nothing: spec.rules: an ALLOW \
                 policy without rules allows nothing: every call to Service default/web is \
                 denied"
            ]
        );
        let traffic = "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\n\
                       metadata: {name: web}\nspec: {targetRef: {name: web, port: 80}}\n";
        assert_eq!(
            errors(&[("web.yaml", WEB), ("tp.yaml", traffic)]),
            [
                "tp.yaml:1:1: TrafficPolicy default/web: spec.targetRef.port: a TrafficPolicy \
              applies to the whole Service; remove the port"
            ]
        );
    }

    const FRONT: &str = "apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: front}
spec: {ports: [{port: 80}], calls: [web, audit.ops]}
";

    #[test]
    fn references_to_missing_services_are_warnings() {
        let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web}, {group: \"\", kind: Service, name: api}, {group: \"\", kind: Service, name: web, port: 81}]
  rules:
  - backendRefs: [{name: web}, {name: web-v2}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow}}
";
        let policy = "apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api, namespace: prod}
spec: {targetRef: {name: api}}
";
        assert_eq!(
            warnings(&[
                ("web.yaml", WEB),
                ("route.yaml", route),
                ("authz.yaml", policy),
                ("front.yaml", FRONT)
            ]),
            [
                "route.yaml:1:1: HTTPRoute default/web: spec.parentRefs[1]: Service default/api \
                 does not exist; the route is not attached there",
                "route.yaml:1:1: HTTPRoute default/web: spec.parentRefs[2]: Service default/web \
                 has no port 81; the route is not attached there",
                "route.yaml:1:1: HTTPRoute default/web: spec.rules[0].backendRefs[1]: Service \
                 default/web-v2 does not exist; the backend is left out (a rule left with none \
                 answers 500)",
                "route.yaml:1:1: HTTPRoute default/web: spec.rules[0].filters[0].requestMirror.\
                 backendRef: Service default/shadow does not exist; the mirror is dropped",
                "authz.yaml:1:1: AuthorizationPolicy prod/api: spec.targetRef: Service prod/api \
                 does not exist; the policy applies to nothing",
                "front.yaml:1:1: Service default/front: spec.calls[1]: Service ops/audit does \
                 not exist; its proxies will not know it until it does",
            ]
        );
    }
}
