//! `GRPCRoute` in the Gateway API's shape. Weft also accepts `timeouts` and `retry` on its
//! rules (with `retry.grpcCodes`), which the Gateway API has only on HTTPRoute.

use super::checked::{self, deserialize_with, FromMap, TypedFields};
use super::names::{check_regex, Name, RegexPattern};
use super::refs::{BackendRef, ParentRef};
use super::route::{check_filters, HeaderMatch, RetrySpec, RouteTimeouts};
use super::route_filters::RouteFilter;
use serde::de::value::MapAccessDeserializer;
use serde::de::MapAccess;
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteSpec {
    #[serde(deserialize_with = "checked::non_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Accepted so Gateway API YAML loads; a mesh route is chosen by its parent Service.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<GrpcRouteRule>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteRule {
    #[serde(default)]
    pub name: Option<Name>,
    #[serde(default)]
    pub matches: Vec<GrpcRouteMatch>,
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub timeouts: Option<RouteTimeouts>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
}

impl FromMap for GrpcRouteRule {
    const EXPECTING: &'static str = "a route rule mapping";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let rule = GrpcRouteRule::deserialize(MapAccessDeserializer::new(map))?;
        let http_only = rule.filters.iter().find(|f| {
            matches!(
                f,
                RouteFilter::RequestRedirect(_) | RouteFilter::UrlRewrite(_) | RouteFilter::Cors(_)
            )
        });
        if let Some(filter) = http_only {
            return checked::checked(Err(format!(
                "a GRPCRoute cannot use a {} filter (the Gateway API allows it on HTTPRoute only)",
                filter.kind()
            )));
        }
        checked::checked(check_filters(&rule.filters, !rule.backend_refs.is_empty()))?;
        Ok(rule)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct GrpcRouteMatch {
    /// `None` matches every method.
    #[serde(default)]
    pub method: Option<GrpcMethodMatch>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
}

/// Which gRPC methods match; at least one of `service` and `method` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrpcMethodMatch {
    /// `service` is the full name (`pkg.Service`), `method` the bare method (`Get`).
    Exact {
        service: Option<String>,
        method: Option<String>,
    },
    /// Each must match the whole service or method name.
    RegularExpression {
        service: Option<RegexPattern>,
        method: Option<RegexPattern>,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
enum MethodMatchType {
    #[default]
    Exact,
    RegularExpression,
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_method_field(
    kind: Option<MethodMatchType>,
    field: &str,
    text: &str,
) -> Result<(), String> {
    match (kind, field) {
        (None, _) => Ok(()),
        (Some(MethodMatchType::RegularExpression), _) => check_regex(text).map(drop),
        (Some(MethodMatchType::Exact), "service") if text.split('.').all(is_identifier) => Ok(()),
        (Some(MethodMatchType::Exact), "service") => Err(format!(
            "invalid gRPC service {text:?}: write the full name, like helloworld.Greeter"
        )),
        (Some(MethodMatchType::Exact), _) if is_identifier(text) => Ok(()),
        (Some(MethodMatchType::Exact), _) => Err(format!(
            "invalid gRPC method {text:?}: write the bare method name, like SayHello"
        )),
    }
}

impl FromMap for GrpcMethodMatch {
    const EXPECTING: &'static str = "a method match like {service: pkg.Service, method: Get}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let fields = &["type", "service", "method"];
        let TypedFields { kind, values } = checked::typed_fields(map, fields, check_method_field)?;
        let mut values = values.into_iter();
        let (service, method) = (values.next().flatten(), values.next().flatten());
        if service.is_none() && method.is_none() {
            return checked::checked(Err("set `service`, `method` or both".to_owned()));
        }
        // Already checked while reading; these only wrap the values.
        let regex = |value: Option<String>| value.map(|v| RegexPattern::new(&v)).transpose();
        Ok(match kind {
            MethodMatchType::Exact => GrpcMethodMatch::Exact { service, method },
            MethodMatchType::RegularExpression => GrpcMethodMatch::RegularExpression {
                service: checked::checked(regex(service))?,
                method: checked::checked(regex(method))?,
            },
        })
    }
}

deserialize_with!(map: GrpcRouteRule, GrpcMethodMatch);
