//! References to Services, in the Gateway API's shape: `{group, kind, name, namespace,
//! port}`. In a mesh only the core group's `Service` is meaningful; anything else is an
//! error rather than a reference that silently resolves to nothing.

use super::checked::{self, deserialize_with, FromMap};
use super::names::Name;
use super::numbers::{Port, Weight};
use super::route_filters::RouteFilter;
use serde::de::MapAccess;
use serde::Deserialize;

/// A Service a route attaches to or mirrors to. Gateway API references carry a group
/// and kind; only the core group's `Service` is meaningful in a mesh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub name: Name,
    /// Defaults to the referring resource's namespace.
    pub namespace: Option<Name>,
    pub port: Option<Port>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawServiceRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: Name,
    #[serde(default)]
    namespace: Option<Name>,
    #[serde(default)]
    port: Option<Port>,
}

/// Accepts the core group (`""` or `core`, the default) and kind `Service` (the default).
pub(crate) fn check_service_kind(group: Option<&str>, kind: Option<&str>) -> Result<(), String> {
    match group.unwrap_or("") {
        "" | "core" => {}
        other => {
            return Err(format!(
                "group {other:?} is not supported: Weft refers to Services (group \"\" or core)"
            ))
        }
    }
    match kind.unwrap_or("Service") {
        "Service" => Ok(()),
        other => Err(format!("kind {other:?} is not supported: use Service")),
    }
}

impl FromMap for ServiceRef {
    const EXPECTING: &'static str = "a Service reference like {kind: Service, name: web}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawServiceRef = checked::fields(map)?;
        checked::checked(check_service_kind(
            raw.group.as_deref(),
            raw.kind.as_deref(),
        ))?;
        Ok(ServiceRef {
            name: raw.name,
            namespace: raw.namespace,
            port: raw.port,
        })
    }
}

/// A route's `parentRefs` entry. In the Gateway API a parent reference defaults to
/// `{group: gateway.networking.k8s.io, kind: Gateway}`, so an entry without `kind` names a
/// Gateway, not a Service: it is refused (Weft has no Gateways yet) rather than attached to a
/// Service that happens to have the name. A Service parent is `{group: "", kind: Service}`,
/// as an API server returns it; `kind: Service` alone is taken as the core Service too, as
/// no other group defines one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentRef(pub ServiceRef);

impl std::ops::Deref for ParentRef {
    type Target = ServiceRef;
    fn deref(&self) -> &ServiceRef {
        &self.0
    }
}

/// Accepts a Service parent; explains any other.
fn check_parent_kind(group: Option<&str>, kind: Option<&str>) -> Result<(), String> {
    match kind {
        None => Err(
            "this parent is a Gateway (a parentRefs entry without `kind` names one): \
             Weft attaches routes to Services and has no Gateways yet; to attach this route \
             to a Service write `{group: \"\", kind: Service, name: ...}`"
                .to_owned(),
        ),
        Some("Gateway") => Err(
            "kind \"Gateway\" is not supported yet: Weft attaches routes to \
             Services; write `{group: \"\", kind: Service, name: ...}`"
                .to_owned(),
        ),
        Some(kind) => check_service_kind(group, Some(kind)),
    }
}

impl FromMap for ParentRef {
    const EXPECTING: &'static str =
        "a parent reference like {group: \"\", kind: Service, name: web}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawServiceRef = checked::fields(map)?;
        checked::checked(check_parent_kind(raw.group.as_deref(), raw.kind.as_deref()))?;
        Ok(ParentRef(ServiceRef {
            name: raw.name,
            namespace: raw.namespace,
            port: raw.port,
        }))
    }
}

/// A weighted backend of a route rule.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendRef {
    pub service: ServiceRef,
    pub weight: Weight,
    /// Header modifications for the requests sent to this backend only.
    pub filters: Vec<RouteFilter>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawBackendRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: Name,
    #[serde(default)]
    namespace: Option<Name>,
    #[serde(default)]
    port: Option<Port>,
    #[serde(default)]
    weight: Weight,
    #[serde(default)]
    filters: Vec<RouteFilter>,
}

impl FromMap for BackendRef {
    const EXPECTING: &'static str = "a backend like {name: web-v2, port: 80, weight: 10}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawBackendRef = checked::fields(map)?;
        checked::checked(check_service_kind(
            raw.group.as_deref(),
            raw.kind.as_deref(),
        ))?;
        if let Some(other) = raw.filters.iter().find(|f| {
            !matches!(
                f,
                RouteFilter::RequestHeaderModifier(_) | RouteFilter::ResponseHeaderModifier(_)
            )
        }) {
            return checked::checked(Err(format!(
                "a backendRef takes RequestHeaderModifier and ResponseHeaderModifier filters, \
                 not {}: put it on the rule",
                other.kind()
            )));
        }
        Ok(BackendRef {
            service: ServiceRef {
                name: raw.name,
                namespace: raw.namespace,
                port: raw.port,
            },
            weight: raw.weight,
            filters: raw.filters,
        })
    }
}

/// The Service a policy applies to (policy attachment: `{kind: Service, name}`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetRef {
    pub name: Name,
    /// Defaults to the policy's namespace.
    pub namespace: Option<Name>,
    /// One port of the Service rather than all of it (AuthorizationPolicy only).
    pub port: Option<Port>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTargetRef {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: Name,
    #[serde(default)]
    namespace: Option<Name>,
    #[serde(default)]
    port: Option<Port>,
}

impl FromMap for TargetRef {
    const EXPECTING: &'static str = "a target like {kind: Service, name: web}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawTargetRef = checked::fields(map)?;
        checked::checked(check_service_kind(
            raw.group.as_deref(),
            raw.kind.as_deref(),
        ))?;
        Ok(TargetRef {
            name: raw.name,
            namespace: raw.namespace,
            port: raw.port,
        })
    }
}

deserialize_with!(map: ServiceRef, ParentRef, BackendRef, TargetRef);
