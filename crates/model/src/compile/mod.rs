//! Resources in, one `ProxyConfig` out. Pure: no I/O, same input, same output.

mod authorization;
mod policy;
mod routes;
mod scope;
mod workloads;

pub use scope::{scope_of, scoped, scopes, Scope};
pub use workloads::{compile_with_workloads, Workload};

use crate::authz::DefaultAuthorization;
use crate::catalog::{Catalog, ServiceKey};
use crate::config::{
    EndpointConfig, HealthCheckConfig, MtlsMode, OriginTls, PortConfig, ProxyConfig, ServiceConfig,
};
use crate::resources::{HealthCheckSpec, Resource, ServiceSpec, TrustDomain};
use std::collections::BTreeMap;

/// Compiles `resources` into the configuration a proxy runs.
///
/// Expects resources that [`crate::validate`] accepted. What it warned about compiles to
/// nothing: routes and policies for missing Services are left out, and so are backends
/// and mirrors that name one.
pub fn compile(resources: &[Resource]) -> ProxyConfig {
    versioned(unversioned(resources, None))
}

/// The config without its version, so callers that add to it hash it only once. Peers are
/// named in `ca_trust_domain` when given (the control plane's CA issues every certificate
/// in it), else in the `Mesh` resource's trust domain.
fn unversioned(resources: &[Resource], ca_trust_domain: Option<&str>) -> ProxyConfig {
    let catalog = Catalog::new(resources);
    let trust_domain = match ca_trust_domain {
        Some(domain) => domain.to_owned(),
        None => catalog
            .mesh
            .map_or_else(TrustDomain::default_trust_domain, |mesh| {
                mesh.trust_domain.clone()
            })
            .to_string(),
    };
    let virtual_ips = virtual_ips(&catalog);
    let services = catalog
        .services
        .iter()
        .map(|(&key, (_, spec))| ServiceConfig {
            name: key.1.to_owned(),
            namespace: key.0.to_owned(),
            virtual_ip: virtual_ips.get(&key).and_then(|ips| ips.v4),
            virtual_ipv6: virtual_ips.get(&key).and_then(|ips| ips.v6),
            hosts: spec.hosts.iter().map(ToString::to_string).collect(),
            ports: spec
                .ports
                .iter()
                .map(|port| PortConfig {
                    port: port.port.get(),
                    protocol: port.protocol,
                    name: port.name.as_ref().map(ToString::to_string),
                })
                .collect(),
            endpoints: endpoints(&trust_domain, key, spec),
            routes: routes::compile(&catalog, key),
            policy: policy::compile(catalog.policies.get(&key).map(|(_, spec)| *spec)),
            health_check: spec.health_check.as_ref().map(health_check),
            authorization: authorization::compile(&catalog, key),
        })
        .collect();
    let mtls_mode = match catalog.mesh.map(|mesh| mesh.mtls.mode) {
        Some(crate::resources::MtlsMode::Permissive) => MtlsMode::Permissive,
        _ => MtlsMode::Strict,
    };
    let default_authorization = match catalog.mesh.map(|mesh| mesh.default_authorization) {
        Some(crate::resources::DefaultAuthorization::Deny) => DefaultAuthorization::Deny,
        _ => DefaultAuthorization::Allow,
    };
    ProxyConfig {
        version: String::new(),
        trust_domain,
        mtls_mode,
        default_authorization,
        outbound_traffic_policy: catalog
            .mesh
            .map(|mesh| mesh.outbound_traffic_policy)
            .unwrap_or_default(),
        audit_decisions_percent: catalog
            .mesh
            .and_then(|mesh| mesh.audit_decisions_percent)
            .map_or(0.0, |percent| percent.get()),
        tracing: catalog
            .mesh
            .and_then(|mesh| mesh.tracing.as_ref())
            .map(|tracing| crate::config::TracingConfig {
                collector: tracing.collector.as_str().to_owned(),
                sample_percent: tracing.sample_percent.get(),
            }),
        trust: None,
        services,
    }
}

/// A Service's virtual IPs: the same place in the `Mesh`'s IPv4 and IPv6 ranges.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtualIps {
    pub v4: Option<std::net::IpAddr>,
    pub v6: Option<std::net::IpAddr>,
}

/// Each Service's virtual IPs, by `(namespace, name)`, as [`compile`] gives them.
pub fn service_virtual_ips(resources: &[Resource]) -> BTreeMap<(String, String), VirtualIps> {
    virtual_ips(&Catalog::new(resources))
        .into_iter()
        .map(|((namespace, name), ips)| ((namespace.to_owned(), name.to_owned()), ips))
        .collect()
}

/// Each Service's virtual IPs: the addresses of its slot in the `Mesh`'s ranges (slot 0 is
/// a range's first host). A Service without a slot (read from a file) takes the lowest
/// free one, in name order; one whose slot is past the end of a range has no address in
/// it.
fn virtual_ips<'a>(catalog: &Catalog<'a>) -> BTreeMap<ServiceKey<'a>, VirtualIps> {
    let (v4_range, v6_range) = catalog.mesh.map_or_else(
        || {
            (
                crate::resources::default_virtual_ip_range(),
                crate::resources::default_virtual_ipv6_range(),
            )
        },
        |mesh| (mesh.virtual_ip_range, mesh.virtual_ipv6_range),
    );
    let slot_of = |resource: &Resource| resource.metadata.virtual_ip_slot;
    let taken: std::collections::HashSet<u32> = catalog
        .services
        .values()
        .filter_map(|(resource, _)| slot_of(resource))
        .collect();
    let mut free = (0u32..).filter(|slot| !taken.contains(slot));
    catalog
        .services
        .iter()
        .filter_map(|(&key, (resource, _))| {
            let slot = u128::from(slot_of(resource).or_else(|| free.next())?);
            let ips = VirtualIps {
                v4: v4_range.nth(slot + 1),
                v6: v6_range.nth(slot + 1),
            };
            Some((key, ips))
        })
        .collect()
}

fn versioned(mut config: ProxyConfig) -> ProxyConfig {
    config.version = version_of(&config);
    config
}

fn health_check(spec: &HealthCheckSpec) -> HealthCheckConfig {
    HealthCheckConfig {
        http_path: spec.http.as_ref().map(|http| http.path.to_string()),
        interval_ms: spec.interval.as_millis(),
        timeout_ms: spec.timeout.as_millis(),
        unhealthy_threshold: spec.unhealthy_threshold.get(),
        healthy_threshold: spec.healthy_threshold.get(),
    }
}

fn endpoints(trust_domain: &str, key: ServiceKey, spec: &ServiceSpec) -> Vec<EndpointConfig> {
    spec.endpoints
        .iter()
        .map(|endpoint| EndpointConfig {
            address: endpoint.address.get().clone(),
            labels: endpoint.labels.clone(),
            zone: endpoint.zone.clone(),
            identity: endpoint.mesh.then(|| match &endpoint.identity {
                Some(identity) => identity.to_string(),
                None => format!("spiffe://{trust_domain}/ns/{}/svc/{}", key.0, key.1),
            }),
            tls: endpoint.tls.as_ref().map(|tls| OriginTls {
                server_name: tls.server_name.as_ref().map(|name| name.to_string()),
                ca_certificates_pem: tls.ca_certificates.clone(),
            }),
        })
        .collect()
}

/// A 64-bit FNV-1a hash of the config's JSON form, in hex: stable across runs and
/// builds (unlike `DefaultHasher`, whose algorithm may change between Rust releases).
fn version_of(config: &ProxyConfig) -> String {
    let json = serde_json::to_vec(config).expect("ProxyConfig always serializes to JSON");
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests;
