//! Scoping: the slice of the mesh a proxy needs, for Services that say what they call.
//!
//! A proxy in a mesh of thousands of services usually talks to a handful. A Service that
//! lists `calls` gets a config holding only itself, the services it calls, and every
//! service their routes send to or mirror to (followed transitively, so a split or a
//! mirror never points at a service the proxy does not know). Everything else stays out:
//! a smaller config to send, decode and hold, and no work when an unrelated service
//! changes. Scoping filters the config compiled for the whole mesh, so the two can never
//! disagree about a service both hold.

use super::versioned;
use crate::catalog::Catalog;
use crate::config::ProxyConfig;
use crate::resources::Resource;
use std::collections::{BTreeSet, HashMap};

/// The services one Service's proxies are sent, as `(namespace, name)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub namespace: String,
    pub service: String,
    /// The services it lists in `calls`, resolved; missing ones are left out (a warning).
    calls: BTreeSet<(String, String)>,
}

/// One scope per Service that lists `calls`, in (namespace, name) order.
pub fn scopes(resources: &[Resource]) -> Vec<Scope> {
    let catalog = Catalog::new(resources);
    catalog
        .services
        .iter()
        .filter_map(|(&(namespace, name), (_, spec))| {
            let calls = spec.calls.as_ref()?;
            let calls = calls
                .iter()
                .map(|called| {
                    let called_namespace =
                        called.namespace.as_ref().map_or(namespace, |n| n.as_str());
                    (called_namespace.to_owned(), called.name.to_string())
                })
                .filter(|(ns, name)| catalog.services.contains_key(&(ns.as_str(), name.as_str())))
                .collect();
            Some(Scope {
                namespace: namespace.to_owned(),
                service: name.to_owned(),
                calls,
            })
        })
        .collect()
}

/// `config` (the whole mesh's) cut down to what `scope`'s proxies need, with its own
/// version.
pub fn scoped(config: &ProxyConfig, scope: &Scope) -> ProxyConfig {
    let index: HashMap<(&str, &str), usize> = config
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| ((s.namespace.as_str(), s.name.as_str()), i))
        .collect();
    let mut needed = BTreeSet::new();
    let mut pending: Vec<(&str, &str)> =
        std::iter::once((scope.namespace.as_str(), scope.service.as_str()))
            .chain(
                scope
                    .calls
                    .iter()
                    .map(|(ns, name)| (ns.as_str(), name.as_str())),
            )
            .collect();
    while let Some(key) = pending.pop() {
        let Some(&at) = index.get(&key) else {
            continue;
        };
        if !needed.insert(at) {
            continue;
        }
        // Only the services a caller addresses carry routes that lead further.
        let service = &config.services[at];
        for route in &service.routes {
            let mirrors = route.filters.mirrors.iter().map(|m| &m.backend);
            for backend in route.backends.iter().chain(mirrors) {
                pending.push((backend.namespace.as_str(), backend.service.as_str()));
            }
        }
    }
    versioned(ProxyConfig {
        version: String::new(),
        trust_domain: config.trust_domain.clone(),
        mtls_mode: config.mtls_mode,
        default_authorization: config.default_authorization,
        outbound_traffic_policy: config.outbound_traffic_policy,
        audit_decisions_percent: config.audit_decisions_percent,
        tracing: config.tracing.clone(),
        trust: config.trust.clone(),
        services: needed
            .into_iter()
            .map(|at| config.services[at].clone())
            .collect(),
    })
}

/// The scope of `service` in `namespace`, if that Service lists what it calls.
pub fn scope_of<'a>(scopes: &'a [Scope], namespace: &str, service: &str) -> Option<&'a Scope> {
    scopes
        .iter()
        .find(|scope| scope.namespace == namespace && scope.service == service)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, load_str};

    const MESH: &str = "
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: front}
spec:
  ports: [{port: 80}]
  calls: [shop, audit.ops]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: shop}
spec: {ports: [{port: 80}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: shop-v2}
spec: {ports: [{port: 80}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: shadow}
spec: {ports: [{port: 80}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: audit, namespace: ops}
spec: {ports: [{port: 80}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: unrelated}
spec:
  ports: [{port: 80}]
  calls: []
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{group: '', kind: Service, name: shop}]
  rules:
  - filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: shadow}}
    backendRefs: [{name: shop, weight: 9}, {name: shop-v2, weight: 1}]
";

    #[test]
    fn a_scope_holds_itself_what_it_calls_and_where_their_routes_lead() {
        let resources = load_str("mesh.yaml", MESH).unwrap();
        let config = compile(&resources);
        let scopes = scopes(&resources);
        let names = |config: &ProxyConfig| -> Vec<String> {
            config
                .services
                .iter()
                .map(|s| format!("{}.{}", s.name, s.namespace))
                .collect()
        };
        let front = scope_of(&scopes, "default", "front").unwrap();
        let front_config = scoped(&config, front);
        assert_eq!(
            names(&front_config),
            [
                "front.default",
                "shadow.default",
                "shop.default",
                "shop-v2.default",
                "audit.ops"
            ]
        );
        assert_ne!(front_config.version, config.version);
        let unrelated = scoped(&config, scope_of(&scopes, "default", "unrelated").unwrap());
        assert_eq!(names(&unrelated), ["unrelated.default"]);
        // Services without `calls` get the whole mesh: they have no scope.
        assert!(scope_of(&scopes, "default", "shop").is_none());
        // Scoped configs are what the whole mesh's config holds for those services.
        for service in &front_config.services {
            assert!(config.services.contains(service));
        }
    }
}
