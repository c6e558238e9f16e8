//! Workloads registered with the control plane become endpoints of their Service.

use super::{unversioned, versioned};
use crate::config::{EndpointConfig, ProxyConfig, TrustConfig};
use crate::resources::Resource;
use crate::Address;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

/// One instance of a service, as its proxy registered it with the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub service: String,
    pub namespace: String,
    /// The proxy's inbound listener: where other proxies reach this workload.
    pub address: SocketAddr,
    pub labels: BTreeMap<String, String>,
    pub zone: Option<String>,
}

/// Compiles `resources` as [`super::compile`] does, with every workload added as a mesh
/// endpoint of its Service (after the Service's static endpoints), presenting the identity
/// `spiffe://<trust domain>/ns/<namespace>/svc/<service>`.
///
/// The order of `workloads` does not matter: a service's workloads are sorted by address,
/// so the same registry always compiles to the same version. Left out: workloads of a
/// service no Service resource declares (nothing could address them), and workloads at an
/// address the service already lists (a static endpoint, or another workload there).
/// `trust` is the control plane's trust bundle, part of the config (and its version); its
/// trust domain, when set, names every peer.
pub fn compile_with_workloads(
    resources: &[Resource],
    workloads: &[Workload],
    trust: Option<TrustConfig>,
) -> ProxyConfig {
    let ca_trust_domain = trust
        .as_ref()
        .map(|t| t.trust_domain.as_str())
        .filter(|domain| !domain.is_empty());
    let mut config = unversioned(resources, ca_trust_domain);
    config.trust = trust;
    let mut by_service: HashMap<(&str, &str), Vec<&Workload>> = HashMap::new();
    for workload in workloads {
        by_service
            .entry((&workload.namespace, &workload.service))
            .or_default()
            .push(workload);
    }
    for service in &mut config.services {
        let Some(mut found) =
            by_service.remove(&(service.namespace.as_str(), service.name.as_str()))
        else {
            continue;
        };
        // A total order, so that which of two workloads at one address wins is stable too.
        found.sort_by(|a, b| (a.address, &a.labels, &a.zone).cmp(&(b.address, &b.labels, &b.zone)));
        let mut taken: HashSet<Address> = service
            .endpoints
            .iter()
            .map(|e| e.address.clone())
            .collect();
        let identity = format!(
            "spiffe://{}/ns/{}/svc/{}",
            config.trust_domain, service.namespace, service.name
        );
        for workload in found {
            if taken.insert(Address::Ip(workload.address)) {
                service.endpoints.push(EndpointConfig {
                    address: Address::Ip(workload.address),
                    labels: workload.labels.clone(),
                    zone: workload.zone.clone(),
                    identity: Some(identity.clone()),
                    tls: None,
                });
            }
        }
    }
    versioned(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{compile, load_str};

    const MESH: &str = "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: default}
spec: {trustDomain: example.org}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80}]
  endpoints: [{address: 10.0.0.1:80}]
";

    fn workload(service: &str, address: &str, version: &str) -> Workload {
        Workload {
            service: service.to_owned(),
            namespace: "shop".to_owned(),
            address: address.parse().unwrap(),
            labels: BTreeMap::from([("version".to_owned(), version.to_owned())]),
            zone: Some("zone-a".to_owned()),
        }
    }

    #[test]
    fn without_workloads_it_is_compile() {
        let resources = load_str("mesh.yaml", MESH).unwrap();
        assert_eq!(
            compile_with_workloads(&resources, &[], None),
            compile(&resources)
        );
    }

    #[test]
    fn the_cas_trust_domain_names_peers_whatever_the_mesh_says() {
        let resources = load_str("mesh.yaml", MESH).unwrap();
        let trust = TrustConfig {
            trust_domain: "corp.example".to_owned(),
            ..TrustConfig::default()
        };
        let workloads = [workload("web", "127.0.0.1:7201", "v1")];
        let config = compile_with_workloads(&resources, &workloads, Some(trust));
        assert_eq!(config.trust_domain, "corp.example");
        assert_eq!(
            config.services[0].endpoints[1].identity.as_deref(),
            Some("spiffe://corp.example/ns/shop/svc/web")
        );
    }

    #[test]
    fn workloads_become_mesh_endpoints_of_their_service() {
        let resources = load_str("mesh.yaml", MESH).unwrap();
        let workloads = [
            workload("web", "127.0.0.1:7202", "v2"),
            workload("web", "127.0.0.1:7201", "v1"),
            // Nothing declares `db`, and the static endpoint already holds 10.0.0.1:80.
            workload("db", "127.0.0.1:7300", "v1"),
            workload("web", "10.0.0.1:80", "v1"),
        ];
        let config = compile_with_workloads(&resources, &workloads, None);
        let web = &config.services[0];
        let addresses: Vec<String> = web
            .endpoints
            .iter()
            .map(|e| e.address.to_string())
            .collect();
        assert_eq!(
            addresses,
            ["10.0.0.1:80", "127.0.0.1:7201", "127.0.0.1:7202"]
        );
        assert_eq!(web.endpoints[0].identity, None);
        let registered = &web.endpoints[1];
        assert_eq!(
            registered.identity.as_deref(),
            Some("spiffe://example.org/ns/shop/svc/web")
        );
        assert_eq!(registered.labels["version"], "v1");
        assert_eq!(registered.zone.as_deref(), Some("zone-a"));

        let mut reversed = workloads.to_vec();
        reversed.reverse();
        assert_eq!(compile_with_workloads(&resources, &reversed, None), config);
        assert_ne!(config.version, compile(&resources).version);
    }
}
