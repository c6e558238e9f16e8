//! `Mesh`: mesh-wide settings. At most one per mesh.

use super::checked::{deserialize_with, FromText};
use super::duration::NonZeroDuration;
use super::names::TrustDomain;
use super::numbers::Percent;
use crate::cidr::Cidr;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MeshSpec {
    #[serde(default = "TrustDomain::default_trust_domain")]
    pub trust_domain: TrustDomain,
    #[serde(default)]
    pub mtls: MtlsSpec,
    /// Lifetime of workload certificates; proxies renew at about half of it.
    #[serde(default = "default_certificate_ttl", rename = "certificateTTL")]
    pub certificate_ttl: NonZeroDuration,
    /// What happens to a request no AuthorizationPolicy speaks about.
    #[serde(default)]
    pub default_authorization: DefaultAuthorization,
    /// The share of all authorization decisions (allowed ones too) proxies also send to the
    /// audit log, sampled; denials are always recorded. None by default.
    #[serde(default)]
    pub audit_decisions_percent: Option<Percent>,
    /// Where every proxy exports spans of sampled traces (a proxy's `--trace-collector`
    /// wins over it).
    #[serde(default)]
    pub tracing: Option<TracingSpec>,
    /// What an app's captured connection to an address outside the mesh gets.
    #[serde(default)]
    pub outbound_traffic_policy: crate::config::OutboundTrafficPolicy,
    /// Where every Service's virtual IP comes from (what DNS answers for its name).
    #[serde(
        default = "default_virtual_ip_range",
        rename = "virtualIPRange",
        deserialize_with = "ipv4_range"
    )]
    pub virtual_ip_range: Cidr,
    /// Where its IPv6 virtual IP comes from (what DNS answers AAAA with): the same place
    /// in this range as in the IPv4 one.
    #[serde(
        default = "default_virtual_ipv6_range",
        rename = "virtualIPv6Range",
        deserialize_with = "ipv6_range"
    )]
    pub virtual_ipv6_range: Cidr,
}

fn ipv4_range<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
    range_of_family(deserializer, true)
}

fn ipv6_range<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cidr, D::Error> {
    range_of_family(deserializer, false)
}

/// A virtual IP range, refused with the field that takes it when of the other family.
fn range_of_family<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
    ipv4: bool,
) -> Result<Cidr, D::Error> {
    let range = Cidr::deserialize(deserializer)?;
    if range.address.is_ipv4() != ipv4 {
        let (family, field, other) = match ipv4 {
            true => ("IPv6", "virtualIPRange", "virtualIPv6Range for IPv6"),
            false => ("IPv4", "virtualIPv6Range", "virtualIPRange for IPv4"),
        };
        let kind = if ipv4 { "IPv4" } else { "IPv6" };
        return Err(serde::de::Error::custom(format!(
            "{range} is an {family} range; {field} is the {kind} one (set {other})"
        )));
    }
    Ok(range)
}

/// Istio's range for automatically allocated service addresses: reserved (class E), so it
/// never clashes with a real network.
pub fn default_virtual_ip_range() -> Cidr {
    Cidr {
        address: std::net::Ipv4Addr::new(240, 240, 0, 0).into(),
        prefix: 16,
    }
}

/// Istio's IPv6 range for automatically allocated service addresses (RFC 5180's
/// benchmarking block, never routed on the internet).
pub fn default_virtual_ipv6_range() -> Cidr {
    Cidr {
        address: std::net::Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, 0).into(),
        prefix: 48,
    }
}

impl FromText for Cidr {
    const EXPECTING: &'static str = "an address range, like 240.240.0.0/16";

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
    }
}

deserialize_with!(text: Cidr);

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TracingSpec {
    /// `http://HOST:PORT` of an OTLP/gRPC collector.
    pub collector: CollectorUrl,
    /// The share of traces started at a proxy that are recorded.
    #[serde(default = "default_sample_percent")]
    pub sample_percent: Percent,
}

fn default_sample_percent() -> Percent {
    Percent::ONE
}

/// An OTLP/gRPC collector's URL: `http://` or `https://`, a host and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorUrl(String);

impl CollectorUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromText for CollectorUrl {
    const EXPECTING: &'static str = "a collector URL, like http://127.0.0.1:4317";

    fn from_text(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("http://")
            .or_else(|| text.strip_prefix("https://"))
            .ok_or_else(|| {
                format!("invalid collector {text:?}: start it with http:// or https://")
            })?;
        let authority = rest.trim_end_matches('/');
        let port = authority.rsplit_once(':').map(|(_, port)| port);
        match port.map(str::parse::<u16>) {
            Some(Ok(port)) if port > 0 && !authority.contains('/') => Ok(CollectorUrl(text.to_owned())),
            _ => Err(format!(
                "invalid collector {text:?}: write a scheme, a host and a port, like http://127.0.0.1:4317"
            )),
        }
    }
}

deserialize_with!(text: CollectorUrl);

impl Default for MeshSpec {
    fn default() -> Self {
        MeshSpec {
            trust_domain: TrustDomain::default_trust_domain(),
            mtls: MtlsSpec::default(),
            certificate_ttl: default_certificate_ttl(),
            default_authorization: DefaultAuthorization::default(),
            audit_decisions_percent: None,
            tracing: None,
            outbound_traffic_policy: Default::default(),
            virtual_ip_range: default_virtual_ip_range(),
            virtual_ipv6_range: default_virtual_ipv6_range(),
        }
    }
}

fn default_certificate_ttl() -> NonZeroDuration {
    NonZeroDuration::from_secs(24 * 3600)
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MtlsSpec {
    #[serde(default)]
    pub mode: MtlsMode,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Inbound traffic must be mTLS from a mesh proxy.
    #[default]
    Strict,
    /// Plain-text inbound traffic is accepted too (while workloads join the mesh).
    Permissive,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAuthorization {
    #[default]
    Allow,
    Deny,
}
