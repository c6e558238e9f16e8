//! An index of loaded resources by what refers to them, shared by `validate` (which
//! warns about references that resolve to nothing) and `compile` (which drops them).

use crate::resources::{
    AuthorizationPolicySpec, MeshSpec, Port, Resource, ServiceRef, ServiceSpec, Spec, TargetRef,
    TrafficPolicySpec,
};
use std::collections::BTreeMap;

/// A Service's `(namespace, name)`; ordered by namespace, then name.
pub(crate) type ServiceKey<'a> = (&'a str, &'a str);

pub(crate) struct Catalog<'a> {
    pub mesh: Option<&'a MeshSpec>,
    pub services: BTreeMap<ServiceKey<'a>, (&'a Resource, &'a ServiceSpec)>,
    /// The TrafficPolicy for each Service it targets.
    pub policies: BTreeMap<ServiceKey<'a>, (&'a Resource, &'a TrafficPolicySpec)>,
    /// The AuthorizationPolicies targeting each Service, in input order.
    pub authorizations: BTreeMap<ServiceKey<'a>, Vec<(&'a Resource, &'a AuthorizationPolicySpec)>>,
    /// HTTPRoutes and GRPCRoutes, in input order.
    pub routes: Vec<&'a Resource>,
}

impl<'a> Catalog<'a> {
    /// Indexes `resources`; where two claim the same place, the first wins (`validate`
    /// reports the second as an error).
    pub fn new(resources: impl IntoIterator<Item = &'a Resource>) -> Catalog<'a> {
        let mut catalog = Catalog {
            mesh: None,
            services: BTreeMap::new(),
            policies: BTreeMap::new(),
            authorizations: BTreeMap::new(),
            routes: Vec::new(),
        };
        for resource in resources {
            let namespace = resource.metadata.namespace.as_str();
            match &resource.spec {
                Spec::Mesh(mesh) => {
                    catalog.mesh.get_or_insert(mesh);
                }
                Spec::Service(service) => {
                    let key = (namespace, resource.metadata.name.as_str());
                    catalog.services.entry(key).or_insert((resource, service));
                }
                Spec::TrafficPolicy(policy) => {
                    let key = target_key(&policy.target_ref, namespace);
                    catalog.policies.entry(key).or_insert((resource, policy));
                }
                Spec::HttpRoute(_) | Spec::GrpcRoute(_) => catalog.routes.push(resource),
                Spec::AuthorizationPolicy(policy) => {
                    let key = target_key(&policy.target_ref, namespace);
                    let targeting = catalog.authorizations.entry(key).or_default();
                    targeting.push((resource, policy));
                }
            }
        }
        catalog
    }

    /// The Service `reference` names, seen from `namespace`; or why there is none.
    pub fn resolve(
        &self,
        reference: &'a ServiceRef,
        namespace: &'a str,
    ) -> Result<ServiceKey<'a>, String> {
        let key = (
            reference
                .namespace
                .as_ref()
                .map_or(namespace, |ns| ns.as_str()),
            reference.name.as_str(),
        );
        let (_, service) = self
            .services
            .get(&key)
            .ok_or_else(|| format!("Service {}/{} does not exist", key.0, key.1))?;
        match reference.port {
            Some(port) if !has_port(service, port) => Err(format!(
                "Service {}/{} has no port {}",
                key.0,
                key.1,
                port.get()
            )),
            _ => Ok(key),
        }
    }

    pub fn has_service(&self, key: ServiceKey<'_>) -> bool {
        self.services.contains_key(&key)
    }
}

/// The Service a policy's `targetRef` names, seen from the policy's `namespace`.
pub(crate) fn target_key<'a>(target: &'a TargetRef, namespace: &'a str) -> ServiceKey<'a> {
    (
        target
            .namespace
            .as_ref()
            .map_or(namespace, |ns| ns.as_str()),
        target.name.as_str(),
    )
}

fn has_port(service: &ServiceSpec, port: Port) -> bool {
    service.ports.iter().any(|p| p.port == port)
}
