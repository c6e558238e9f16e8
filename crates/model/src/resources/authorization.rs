//! `AuthorizationPolicy`: who may call a Service, and what. Loaded and checked now;
//! the proxy enforces it in a later step.

use super::checked;
use super::names::{HeaderName, HttpPath, Method, Name, SpiffeId};
use super::numbers::Port;
use super::refs::TargetRef;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub action: AuthorizationAction,
    /// A request the policy applies to matches any one rule.
    #[serde(default)]
    pub rules: Vec<AuthorizationRule>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum AuthorizationAction {
    #[default]
    Allow,
    Deny,
    /// Logs the decision the rules would make, and lets the request through.
    Audit,
}

/// All of `from`, `to` and `when` must hold; within each list, any one entry.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationRule {
    #[serde(default)]
    pub from: Vec<Source>,
    #[serde(default)]
    pub to: Vec<Operation>,
    #[serde(default)]
    pub when: Vec<Condition>,
}

/// The caller; each list left empty matches anyone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Source {
    #[serde(default)]
    pub identities: Vec<SpiffeId>,
    #[serde(default)]
    pub services: Vec<Name>,
    #[serde(default)]
    pub namespaces: Vec<Name>,
}

/// The request; each list left empty matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Exact paths, or prefixes ending in `*` (`/api/*`).
    #[serde(default)]
    pub paths: Vec<HttpPath>,
    #[serde(default)]
    pub ports: Vec<Port>,
}

/// A request header that must have one of `values`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Condition {
    pub header: HeaderName,
    #[serde(deserialize_with = "checked::non_empty")]
    pub values: Vec<String>,
}
