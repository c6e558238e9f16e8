//! The resources users write, Kubernetes-style: `apiVersion`, `kind`, `metadata`, `spec`.
//!
//! Every type here checks its own values while it is deserialized (see `checked`), so a
//! bad value is reported with its file, line and field path.

mod authorization;
mod checked;
mod cors;
mod duration;
mod grpc_route;
mod mesh;
mod names;
mod numbers;
mod refs;
mod route;
mod route_filters;
mod service;
mod traffic_policy;

pub use authorization::{
    AuthorizationAction, AuthorizationMode, AuthorizationPolicySpec, AuthorizationRule, Condition,
    Operation, Source,
};
pub use cors::{parse_origin, CorsOrigin, CorsSpec, Origin, Wildcard};
pub use duration::{Duration, NonZeroDuration};
pub use grpc_route::{GrpcMethodMatch, GrpcRouteMatch, GrpcRouteRule, GrpcRouteSpec};
pub use mesh::{
    default_virtual_ip_range, default_virtual_ipv6_range, DefaultAuthorization, MeshSpec, MtlsMode,
    MtlsSpec,
};
pub(crate) use names::check_hostname;
pub use names::{
    HeaderName, Hostname, HttpPath, Method, Name, RegexPattern, SpiffeId, SpiffeIdPattern,
    TrustDomain,
};
pub use numbers::{
    AbortStatus, EndpointAddress, GrpcCode, HttpStatus, Percent, Port, Ratio, RedirectStatus,
    RequestRate, RetryStatus, Weight, WholePercent,
};
pub use refs::{BackendRef, ParentRef, ServiceRef, TargetRef};
pub use route::{
    HeaderMatch, HttpRouteMatch, HttpRouteRule, HttpRouteSpec, PathMatch, QueryParamMatch,
    RetrySpec, RouteTimeouts, StringMatch,
};
pub use route_filters::{
    HeaderModifierSpec, HeaderValue, MirrorSpec, PathModifierSpec, RedirectSpec, RouteFilter,
    Scheme, UrlRewriteSpec,
};
pub use service::{
    CalledService, EndpointSpec, EndpointTls, HealthCheckSpec, HttpHealthCheck, ServicePort,
    ServiceSpec, TcpHealthCheck,
};
pub use traffic_policy::{
    ConnectionLimitsSpec, FaultAbortSpec, FaultDelaySpec, FaultSpec, HashOn, LoadBalancerSpec,
    OutlierDetectionSpec, RateLimitSpec, RetryBudgetSpec, TrafficPolicySpec,
};

use crate::error::Location;
use checked::{deserialize_with, FromText};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

/// One resource, as loaded from a YAML document.
#[derive(Clone, Debug, PartialEq)]
pub struct Resource {
    pub api_version: String,
    pub metadata: Metadata,
    pub spec: Spec,
    /// Where the document starts, for messages that name the resource.
    pub location: Location,
}

impl Resource {
    pub fn kind(&self) -> Kind {
        match self.spec {
            Spec::Mesh(_) => Kind::Mesh,
            Spec::Service(_) => Kind::Service,
            Spec::HttpRoute(_) => Kind::HttpRoute,
            Spec::GrpcRoute(_) => Kind::GrpcRoute,
            Spec::TrafficPolicy(_) => Kind::TrafficPolicy,
            Spec::AuthorizationPolicy(_) => Kind::AuthorizationPolicy,
        }
    }

    /// `Kind namespace/name`, the way messages name a resource.
    pub fn describe(&self) -> String {
        format!(
            "{} {}/{}",
            self.kind(),
            self.metadata.namespace,
            self.metadata.name
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Mesh(MeshSpec),
    Service(ServiceSpec),
    HttpRoute(HttpRouteSpec),
    GrpcRoute(GrpcRouteSpec),
    TrafficPolicy(TrafficPolicySpec),
    AuthorizationPolicy(AuthorizationPolicySpec),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Mesh,
    Service,
    HttpRoute,
    GrpcRoute,
    TrafficPolicy,
    AuthorizationPolicy,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Mesh,
        Kind::Service,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::TrafficPolicy,
        Kind::AuthorizationPolicy,
    ];

    /// The name written in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Mesh => "Mesh",
            Kind::Service => "Service",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::TrafficPolicy => "TrafficPolicy",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromText for Kind {
    const EXPECTING: &'static str = "a resource kind";

    fn from_text(text: &str) -> Result<Self, String> {
        Kind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| {
                let known: Vec<_> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown kind {text:?}; known kinds: {}", known.join(", "))
            })
    }
}

deserialize_with!(text: Kind);

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(from = "RawMetadata")]
pub struct Metadata {
    pub name: Name,
    pub namespace: Name,
    pub labels: BTreeMap<String, String>,
    /// Creation order: the store revision that created the resource. Gateway API breaks
    /// ties between equally specific route matches by age, oldest first. Set by the
    /// control plane's store; resources read from files have none and tie by name.
    pub created: Option<u64>,
    /// A Service's place in the `Mesh`'s virtual IP range, kept by the control plane's
    /// store for the Service's whole life (so its address never changes) and free for
    /// another only once it is deleted. Files have none: each is given the lowest free one
    /// in name order.
    pub virtual_ip_slot: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMetadata {
    name: Name,
    #[serde(default = "Name::default_namespace")]
    namespace: Name,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    // Written by Kubernetes, not by users: accepted so that `kubectl get -o yaml`
    // output loads as is, and otherwise meaningless here.
    #[serde(default, rename = "annotations")]
    _annotations: IgnoredAny,
    #[serde(default, rename = "uid")]
    _uid: IgnoredAny,
    #[serde(default, rename = "resourceVersion")]
    _resource_version: IgnoredAny,
    #[serde(default, rename = "generation")]
    _generation: IgnoredAny,
    #[serde(default, rename = "creationTimestamp")]
    _creation_timestamp: IgnoredAny,
    #[serde(default, rename = "managedFields")]
    _managed_fields: IgnoredAny,
}

impl From<RawMetadata> for Metadata {
    fn from(raw: RawMetadata) -> Self {
        Metadata {
            name: raw.name,
            namespace: raw.namespace,
            labels: raw.labels,
            created: None,
            virtual_ip_slot: None,
        }
    }
}

/// What a document's kind says about its `apiVersion` and its `spec`.
pub(crate) trait SpecKind: DeserializeOwned {
    const KIND: Kind;
    const API_VERSIONS: &'static [&'static str];
    fn into_spec(self) -> Spec;
    /// The spec of a document that has none, if the kind allows that.
    fn when_absent() -> Option<Self> {
        None
    }
}

const WEFT_V1ALPHA1: &str = "weft.dev/v1alpha1";

impl SpecKind for MeshSpec {
    const KIND: Kind = Kind::Mesh;
    const API_VERSIONS: &'static [&'static str] = &[WEFT_V1ALPHA1];
    fn into_spec(self) -> Spec {
        Spec::Mesh(self)
    }
    fn when_absent() -> Option<Self> {
        Some(MeshSpec::default())
    }
}

impl SpecKind for ServiceSpec {
    const KIND: Kind = Kind::Service;
    const API_VERSIONS: &'static [&'static str] = &[WEFT_V1ALPHA1];
    fn into_spec(self) -> Spec {
        Spec::Service(self)
    }
}

impl SpecKind for HttpRouteSpec {
    const KIND: Kind = Kind::HttpRoute;
    const API_VERSIONS: &'static [&'static str] = &[
        "gateway.networking.k8s.io/v1",
        "gateway.networking.k8s.io/v1beta1",
        WEFT_V1ALPHA1,
    ];
    fn into_spec(self) -> Spec {
        Spec::HttpRoute(self)
    }
}

impl SpecKind for GrpcRouteSpec {
    const KIND: Kind = Kind::GrpcRoute;
    const API_VERSIONS: &'static [&'static str] = &[
        "gateway.networking.k8s.io/v1",
        "gateway.networking.k8s.io/v1alpha2",
        WEFT_V1ALPHA1,
    ];
    fn into_spec(self) -> Spec {
        Spec::GrpcRoute(self)
    }
}

impl SpecKind for TrafficPolicySpec {
    const KIND: Kind = Kind::TrafficPolicy;
    const API_VERSIONS: &'static [&'static str] = &[WEFT_V1ALPHA1];
    fn into_spec(self) -> Spec {
        Spec::TrafficPolicy(self)
    }
}

impl SpecKind for AuthorizationPolicySpec {
    const KIND: Kind = Kind::AuthorizationPolicy;
    const API_VERSIONS: &'static [&'static str] = &[WEFT_V1ALPHA1];
    fn into_spec(self) -> Spec {
        Spec::AuthorizationPolicy(self)
    }
}

/// The first read of a document: only its kind, so the second read knows the spec type.
#[derive(Deserialize)]
#[serde(expecting = "a resource: a mapping with apiVersion, kind, metadata and spec")]
pub(crate) struct Header {
    pub kind: Kind,
}

/// The second, complete read of a document whose kind is known.
#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    rename_all = "camelCase",
    bound(deserialize = "S: SpecKind")
)]
pub(crate) struct Document<S> {
    pub api_version: ApiVersion<S>,
    #[serde(rename = "kind")]
    _kind: IgnoredAny,
    pub metadata: Metadata,
    pub spec: Option<S>,
    // Kubernetes writes it; it says nothing about what the user wants.
    #[serde(default, rename = "status")]
    _status: IgnoredAny,
}

/// An `apiVersion` the kind `S` accepts.
pub(crate) struct ApiVersion<S>(pub String, PhantomData<S>);

impl<S: SpecKind> FromText for ApiVersion<S> {
    const EXPECTING: &'static str = "an apiVersion";

    fn from_text(text: &str) -> Result<Self, String> {
        if S::API_VERSIONS.contains(&text) {
            Ok(ApiVersion(text.to_owned(), PhantomData))
        } else {
            Err(format!(
                "unsupported apiVersion {text:?} for kind {}; use {}",
                S::KIND,
                S::API_VERSIONS.join(" or ")
            ))
        }
    }
}

impl<'de, S: SpecKind> Deserialize<'de> for ApiVersion<S> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::text(d)
    }
}
