//! `Mesh`: mesh-wide settings. At most one per mesh.

use super::duration::NonZeroDuration;
use super::names::TrustDomain;
use super::numbers::Percent;
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
}

impl Default for MeshSpec {
    fn default() -> Self {
        MeshSpec {
            trust_domain: TrustDomain::default_trust_domain(),
            mtls: MtlsSpec::default(),
            certificate_ttl: default_certificate_ttl(),
            default_authorization: DefaultAuthorization::default(),
            audit_decisions_percent: None,
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
