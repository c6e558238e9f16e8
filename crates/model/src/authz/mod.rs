//! Authorization as the proxies run it: the `AuthorizationPolicy` resources that target one
//! Service, compiled into plain data (no regexes, prefixes where a prefix will do), and the
//! judgment of one call against them.
//!
//! The inbound proxy judges each TCP connection (L4) and each HTTP or gRPC request (L7)
//! here; `weft explain` calls the same code on the control plane's view, so both give the
//! same answer by construction. Judging allocates nothing.

mod index;
mod judge;
mod pattern;
#[cfg(test)]
mod tests;

pub use index::AuthzIndex;
pub use judge::{
    judge, trace, Call, Caller, Cause, Headers, Judgment, PolicyTrace, Request, RuleRef,
};
pub use pattern::Pattern;

use crate::config::{Protocol, ServiceConfig};
use serde::{Deserialize, Serialize};

/// What a call that no policy allows or denies gets (the `Mesh`'s `defaultAuthorization`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DefaultAuthorization {
    #[default]
    Allow,
    Deny,
}

impl DefaultAuthorization {
    pub fn is_allow(&self) -> bool {
        *self == DefaultAuthorization::Allow
    }
}

/// One `AuthorizationPolicy`, as its Service's proxies enforce it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthzPolicy {
    /// `<namespace>/<name>`: the `policy` label in metrics, logs and denied answers.
    pub name: String,
    pub action: AuthzAction,
    /// Judged, recorded when it would deny, never enforced (`mode: dry-run`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Applies to calls to this port of the Service only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// A call matches the policy when it matches any one rule; no rules match nothing.
    #[serde(default)]
    pub rules: Vec<AuthzRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthzAction {
    Allow,
    Deny,
    /// Records the calls it matches; decides nothing.
    Audit,
}

/// All of `from`, `to` and `when` must hold; within each list, any one entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthzRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<AuthzSource>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<AuthzOperation>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub when: Vec<AuthzCondition>,
}

/// Who calls. Each list left empty matches anyone.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthzSource {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<Pattern>,
    /// `(namespace, name)` of caller services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<(String, String)>,
    /// Caller namespaces (only used when `services` is empty: the compiler folds them in).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Matches callers without a mesh identity, and only them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unauthenticated: bool,
}

/// What is called. Each list left empty matches anything.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthzOperation {
    /// Upper-case HTTP methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<Pattern>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

/// A request header (lower-case name) that must have one of `values`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuthzCondition {
    pub header: String,
    pub values: Vec<String>,
}

/// The Service port a call is for: the one the caller named when the Service has it, else
/// (for a TCP connection) its first `tcp` port, else its first port.
pub fn called_port(service: Option<&ServiceConfig>, named: Option<u16>, connection: bool) -> u16 {
    let Some(service) = service else {
        return named.unwrap_or(0);
    };
    if let Some(port) = named.filter(|n| service.ports.iter().any(|p| p.port == *n)) {
        return port;
    }
    let tcp = service.ports.iter().find(|p| p.protocol == Protocol::Tcp);
    let first = if connection { tcp } else { None };
    first.or(service.ports.first()).map_or(0, |p| p.port)
}
