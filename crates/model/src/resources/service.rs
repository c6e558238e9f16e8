//! `Service`: ports and protocols, health check, optional static endpoints, and the
//! services it calls.

use super::checked::{self, deserialize_with, FromMap, FromText};
use super::duration::NonZeroDuration;
use super::names::{Hostname, HttpPath, Name, SpiffeId};
use super::numbers::{EndpointAddress, Port};
use crate::config::Protocol;
use serde::de::value::MapAccessDeserializer;
use serde::de::MapAccess;
use serde::{Deserialize, Deserializer};
use std::collections::{BTreeMap, HashSet};
use std::num::NonZeroU32;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(deserialize_with = "ports")]
    pub ports: Vec<ServicePort>,
    /// Stored and checked; probing comes with the registry.
    #[serde(default)]
    pub health_check: Option<HealthCheckSpec>,
    /// Static endpoints, for services outside the mesh and for `weft proxy --local`.
    #[serde(default, deserialize_with = "endpoints")]
    pub endpoints: Vec<EndpointSpec>,
    /// Host names apps call this service by besides its mesh names (`api.example.com` for
    /// a service outside the mesh): the proxy's DNS answers them with the service's virtual
    /// IPs, and a `Host` naming one routes to it.
    #[serde(default, deserialize_with = "hosts")]
    pub hosts: Vec<Hostname>,
    /// The services this one calls. When set, its proxies are sent only those (and what
    /// their routes lead to), not the whole mesh; unset, they get every service.
    #[serde(default)]
    pub calls: Option<Vec<CalledService>>,
}

/// A service another one calls, written as apps address it: `name` (in the caller's
/// namespace) or `name.namespace`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CalledService {
    pub name: Name,
    pub namespace: Option<Name>,
}

impl FromText for CalledService {
    const EXPECTING: &'static str = "a service as `name` or `name.namespace`";

    fn from_text(text: &str) -> Result<Self, String> {
        let (name, namespace) = match text.split_once('.') {
            Some((name, namespace)) => (name, Some(namespace)),
            None => (text, None),
        };
        let named = |part: &str| {
            Name::new(part)
                .map_err(|why| format!("{text:?} is not `name` or `name.namespace`: {why}"))
        };
        Ok(CalledService {
            name: named(name)?,
            namespace: namespace.map(named).transpose()?,
        })
    }
}

deserialize_with!(text: CalledService);

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ServicePort {
    pub port: Port,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub name: Option<Name>,
}

fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServicePort>, D::Error> {
    checked::seq(d, |ports: &[ServicePort]| {
        if ports.is_empty() {
            return Err("a service needs at least one port".to_owned());
        }
        let mut numbers = HashSet::new();
        let mut names = HashSet::new();
        for port in ports {
            if !numbers.insert(port.port) {
                return Err(format!("port {} is listed twice", port.port.get()));
            }
            if let Some(name) = &port.name {
                if !names.insert(name) {
                    return Err(format!("port name {name:?} is used twice"));
                }
            }
        }
        Ok(())
    })
}

/// How the registry probes endpoints: exactly one of `http` and `tcp`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct HealthCheckSpec {
    #[serde(default)]
    pub http: Option<HttpHealthCheck>,
    #[serde(default)]
    pub tcp: Option<TcpHealthCheck>,
    #[serde(default = "default_interval")]
    pub interval: NonZeroDuration,
    #[serde(default = "default_timeout")]
    pub timeout: NonZeroDuration,
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: NonZeroU32,
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: NonZeroU32,
}

fn default_interval() -> NonZeroDuration {
    NonZeroDuration::from_secs(10)
}

fn default_timeout() -> NonZeroDuration {
    NonZeroDuration::from_secs(1)
}

fn default_unhealthy_threshold() -> NonZeroU32 {
    NonZeroU32::new(3).expect("3 is not zero")
}

fn default_healthy_threshold() -> NonZeroU32 {
    NonZeroU32::new(2).expect("2 is not zero")
}

impl FromMap for HealthCheckSpec {
    const EXPECTING: &'static str = "a health check mapping";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let spec = HealthCheckSpec::deserialize(MapAccessDeserializer::new(map))?;
        if spec.http.is_some() == spec.tcp.is_some() {
            return checked::checked(Err("set exactly one of `http` and `tcp`".to_owned()));
        }
        if spec.timeout > spec.interval {
            return checked::checked(Err(format!(
                "timeout {} is longer than interval {}",
                spec.timeout, spec.interval
            )));
        }
        Ok(spec)
    }
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpHealthCheck {
    pub path: HttpPath,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpHealthCheck {}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointSpec {
    pub address: EndpointAddress,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub zone: Option<String>,
    /// A Weft proxy listens here, so traffic to it is mTLS.
    #[serde(default)]
    pub mesh: bool,
    /// The identity the proxy presents, when it is not the service's own.
    #[serde(default)]
    pub identity: Option<SpiffeId>,
    /// Reached over TLS that the proxy starts (TLS origination): the app speaks plain text
    /// to its proxy, which verifies the server's certificate.
    #[serde(default)]
    pub tls: Option<EndpointTls>,
}

/// How the proxy verifies an endpoint it reaches over TLS.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct EndpointTls {
    /// The name the server's certificate must carry, also sent as SNI; by default the
    /// endpoint's host name (or its IP address).
    #[serde(default)]
    pub server_name: Option<Hostname>,
    /// The CA certificates (PEM) to verify the server with; by default the host's CA store
    /// (`/etc/ssl/certs`, Debian's `ca-certificates`).
    #[serde(default)]
    pub ca_certificates: Option<String>,
}

impl FromMap for EndpointTls {
    const EXPECTING: &'static str = "a TLS mapping (serverName, caCertificates)";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let spec = EndpointTls::deserialize(MapAccessDeserializer::new(map))?;
        if let Some(pem) = &spec.ca_certificates {
            let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("`caCertificates` is not valid PEM: {e}"));
            match certificates {
                Ok(found) if found.is_empty() => {
                    return checked::checked(Err(
                        "`caCertificates` holds no PEM \"CERTIFICATE\" block".to_owned(),
                    ))
                }
                Ok(_) => {}
                Err(why) => return checked::checked(Err(why)),
            }
        }
        Ok(spec)
    }
}

impl FromMap for EndpointSpec {
    const EXPECTING: &'static str = "an endpoint mapping with an address";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let spec = EndpointSpec::deserialize(MapAccessDeserializer::new(map))?;
        if spec.tls.is_some() && spec.mesh {
            return checked::checked(Err(
                "`tls` is for endpoints outside the mesh; mesh endpoints are reached over the \
                 mesh's mutual TLS"
                    .to_owned(),
            ));
        }
        if spec.identity.is_some() && !spec.mesh {
            // Without `mesh: true` the endpoint is reached in plain text, where an
            // identity would never be checked; say so rather than ignore it.
            return checked::checked(Err(
                "`identity` needs `mesh: true` (only mesh endpoints present an identity)"
                    .to_owned(),
            ));
        }
        Ok(spec)
    }
}

fn endpoints<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<EndpointSpec>, D::Error> {
    checked::seq(d, |endpoints: &[EndpointSpec]| {
        let mut seen = HashSet::new();
        match endpoints.iter().find(|e| !seen.insert(&e.address)) {
            Some(dup) => Err(format!("address {} is listed twice", dup.address.get())),
            None => Ok(()),
        }
    })
}

fn hosts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Hostname>, D::Error> {
    checked::seq(d, |hosts: &[Hostname]| {
        let mut seen = HashSet::new();
        match hosts.iter().find(|h| !seen.insert(*h)) {
            Some(dup) => Err(format!("host {dup} is listed twice")),
            None => Ok(()),
        }
    })
}

deserialize_with!(map: HealthCheckSpec, EndpointSpec, EndpointTls);
