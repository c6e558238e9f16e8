//! `AuthorizationPolicy`: who may call a Service, and what. Compiled into the config of the
//! Service's proxies (`crate::authz`), which enforce it on inbound.

use super::checked;
use super::names::{HeaderName, HttpPath, Method, Name, SpiffeIdPattern};
use super::numbers::Port;
use super::refs::TargetRef;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthorizationPolicySpec {
    pub target_ref: TargetRef,
    #[serde(default)]
    pub action: AuthorizationAction,
    #[serde(default)]
    pub mode: AuthorizationMode,
    /// A request the policy applies to matches any one rule; no rules match nothing.
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthorizationMode {
    #[default]
    Enforce,
    /// Denies nothing; records what the policy would have denied, so it can be watched on
    /// live traffic before it is enforced.
    DryRun,
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
    pub identities: Vec<SpiffeIdPattern>,
    /// Caller services, in the policy's namespace unless `namespaces` says where.
    #[serde(default)]
    pub services: Vec<Name>,
    #[serde(default)]
    pub namespaces: Vec<Name>,
    /// Callers without a mesh identity (plain text, accepted in permissive mode). Set alone.
    #[serde(default)]
    pub unauthenticated: bool,
}

/// The request; each list left empty matches anything.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Operation {
    #[serde(default)]
    pub methods: Vec<Method>,
    /// Exact paths, prefixes ending in `*` (`/api/*`), or globs whose inner `*` stands for
    /// part of one segment (`/users/*/orders`).
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
