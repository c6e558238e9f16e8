//! `HTTPRoute` in the Gateway API's GAMMA shape (`parentRefs` name Services), and the
//! parts GRPCRoute shares with it: header matches, filter rules, timeouts, retries.

use super::checked::{self, deserialize_with, FromMap, TypedFields};
use super::duration::Duration;
use super::names::{check_path, check_regex, HeaderName, HttpPath, Method, Name, RegexPattern};
use super::numbers::{GrpcCode, RetryStatus};
use super::refs::{BackendRef, ParentRef};
use super::route_filters::{PathModifierSpec, RouteFilter};
use crate::config::RetryOn;
use serde::de::value::MapAccessDeserializer;
use serde::de::{self, MapAccess};
use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteSpec {
    /// The Services whose traffic this route governs.
    #[serde(deserialize_with = "checked::non_empty")]
    pub parent_refs: Vec<ParentRef>,
    /// Accepted so Gateway API YAML loads; a mesh route is chosen by its parent Service.
    #[serde(default)]
    pub hostnames: Vec<String>,
    #[serde(default)]
    pub rules: Vec<HttpRouteRule>,
}

#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteRule {
    /// Gateway API rule name; informational.
    #[serde(default)]
    pub name: Option<Name>,
    /// Any one must match; none means every request (a `/` prefix).
    #[serde(default)]
    pub matches: Vec<HttpRouteMatch>,
    #[serde(default)]
    pub filters: Vec<RouteFilter>,
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    #[serde(default)]
    pub timeouts: Option<RouteTimeouts>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
}

impl FromMap for HttpRouteRule {
    const EXPECTING: &'static str = "a route rule mapping";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let rule = HttpRouteRule::deserialize(MapAccessDeserializer::new(map))?;
        checked::checked(check_filters(&rule.filters, !rule.backend_refs.is_empty()))?;
        let prefix_only = rule
            .matches
            .iter()
            .all(|m| matches!(m.path, None | Some(PathMatch::PathPrefix(_))));
        let replaces_prefix = rule.filters.iter().any(|f| match f {
            RouteFilter::RequestRedirect(r) => {
                matches!(r.path, Some(PathModifierSpec::ReplacePrefixMatch(_)))
            }
            RouteFilter::UrlRewrite(r) => {
                matches!(r.path, Some(PathModifierSpec::ReplacePrefixMatch(_)))
            }
            _ => false,
        });
        if replaces_prefix && !prefix_only {
            return checked::checked(Err(
                "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match"
                    .to_owned(),
            ));
        }
        if let Some(timeouts) = &rule.timeouts {
            checked::checked(timeouts.check())?;
        }
        Ok(rule)
    }
}

/// The filter rules the Gateway API sets for one route rule.
pub(crate) fn check_filters(filters: &[RouteFilter], has_backends: bool) -> Result<(), String> {
    for (i, filter) in filters.iter().enumerate() {
        let repeated = filters[..i]
            .iter()
            .any(|earlier| earlier.kind() == filter.kind());
        if repeated && !matches!(filter, RouteFilter::RequestMirror(_)) {
            return Err(format!(
                "filters[{i}]: only one {} filter is allowed per rule",
                filter.kind()
            ));
        }
    }
    let redirects = filters
        .iter()
        .any(|f| matches!(f, RouteFilter::RequestRedirect(_)));
    let rewrites = filters
        .iter()
        .any(|f| matches!(f, RouteFilter::UrlRewrite(_)));
    if redirects && rewrites {
        return Err(
            "a rule cannot both redirect and rewrite (RequestRedirect with URLRewrite)".into(),
        );
    }
    if redirects && has_backends {
        return Err("a RequestRedirect rule answers by itself; remove its backendRefs".to_owned());
    }
    Ok(())
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpRouteMatch {
    /// `None` matches any path (the Gateway API default, a `/` prefix).
    #[serde(default)]
    pub path: Option<PathMatch>,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    #[serde(default)]
    pub query_params: Vec<QueryParamMatch>,
    #[serde(default)]
    pub method: Option<Method>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMatch {
    Exact(HttpPath),
    /// Whole segments: `/api` matches `/api` and `/api/users`, not `/apis`.
    PathPrefix(HttpPath),
    /// Must match the whole path.
    RegularExpression(RegexPattern),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
enum PathMatchType {
    Exact,
    #[default]
    PathPrefix,
    RegularExpression,
}

impl FromMap for PathMatch {
    const EXPECTING: &'static str = "a path match like {type: PathPrefix, value: /api}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let TypedFields { kind, values } =
            checked::typed_fields(map, &["type", "value"], |kind, _, value| match kind {
                None => Ok(()),
                Some(PathMatchType::RegularExpression) => check_regex(value).map(drop),
                Some(_) => check_path(value).map(drop),
            })?;
        let value = values
            .into_iter()
            .next()
            .flatten()
            .unwrap_or_else(|| "/".to_owned());
        // Both constructors repeat the check `typed_fields` already made, so they cannot fail.
        checked::checked(match kind {
            PathMatchType::Exact => HttpPath::new(&value).map(PathMatch::Exact),
            PathMatchType::PathPrefix => HttpPath::new(&value).map(PathMatch::PathPrefix),
            PathMatchType::RegularExpression => {
                RegexPattern::new(&value).map(PathMatch::RegularExpression)
            }
        })
    }
}

/// A string condition on a header or query parameter value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    /// Must match the whole value.
    RegularExpression(RegexPattern),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
enum StringMatchType {
    #[default]
    Exact,
    RegularExpression,
}

/// Reads `{type, name, value}`, checking the value as a regex when the type says so.
fn name_value_match<'de, A: MapAccess<'de>>(
    map: A,
    check_name: fn(&str) -> Result<(), String>,
) -> Result<(String, StringMatch), A::Error> {
    let fields = &["type", "name", "value"];
    let TypedFields { kind, values } =
        checked::typed_fields(map, fields, |kind, field, text| match (field, kind) {
            ("name", _) => check_name(text),
            ("value", Some(StringMatchType::RegularExpression)) => check_regex(text).map(drop),
            _ => Ok(()),
        })?;
    let mut values = values.into_iter();
    let name = values
        .next()
        .flatten()
        .ok_or_else(|| de::Error::missing_field("name"))?;
    let value = values
        .next()
        .flatten()
        .ok_or_else(|| de::Error::missing_field("value"))?;
    let value = match kind {
        StringMatchType::Exact => StringMatch::Exact(value),
        StringMatchType::RegularExpression => {
            StringMatch::RegularExpression(checked::checked(RegexPattern::new(&value))?)
        }
    };
    Ok((name, value))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderMatch {
    pub name: HeaderName,
    pub value: StringMatch,
}

impl FromMap for HeaderMatch {
    const EXPECTING: &'static str = "a header match like {name: x-user, value: alice}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let (name, value) = name_value_match(map, |name| HeaderName::new(name).map(drop))?;
        // Already checked while reading; this only lower-cases it.
        let name = checked::checked(HeaderName::new(&name))?;
        Ok(HeaderMatch { name, value })
    }
}

/// Query parameter names are case-sensitive, so they are kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryParamMatch {
    pub name: String,
    pub value: StringMatch,
}

impl FromMap for QueryParamMatch {
    const EXPECTING: &'static str = "a query parameter match like {name: page, value: \"1\"}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let (name, value) = name_value_match(map, |name| {
            if name.is_empty() || name.len() > 256 {
                Err(format!(
                    "invalid query parameter name {name:?}: use 1-256 characters"
                ))
            } else {
                Ok(())
            }
        })?;
        Ok(QueryParamMatch { name, value })
    }
}

/// `0s` means no timeout.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RouteTimeouts {
    /// The whole request, retries included.
    #[serde(default)]
    pub request: Option<Duration>,
    /// Each try.
    #[serde(default)]
    pub backend_request: Option<Duration>,
}

impl RouteTimeouts {
    fn check(&self) -> Result<(), String> {
        match (self.request, self.backend_request) {
            (Some(request), Some(backend)) if !request.is_zero() && backend > request => Err(
                format!("timeouts: backendRequest {backend} is longer than request {request}"),
            ),
            _ => Ok(()),
        }
    }
}

/// The Gateway API retry shape (`attempts`, `codes`, `backoff`) plus Weft's `on`,
/// `maxBackoff` and `grpcCodes`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct RetrySpec {
    /// Retries after the first try.
    #[serde(default)]
    pub attempts: Option<u32>,
    /// HTTP statuses that are retried.
    #[serde(default)]
    pub codes: Vec<RetryStatus>,
    #[serde(default)]
    pub backoff: Option<Duration>,
    #[serde(default)]
    pub on: Vec<RetryOn>,
    #[serde(default)]
    pub max_backoff: Option<Duration>,
    /// gRPC statuses that are retried, by name or number.
    #[serde(default)]
    pub grpc_codes: Vec<GrpcCode>,
}

impl FromMap for RetrySpec {
    const EXPECTING: &'static str = "a retry mapping like {attempts: 2, backoff: 25ms}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let spec = RetrySpec::deserialize(MapAccessDeserializer::new(map))?;
        if let (Some(base), Some(max)) = (spec.backoff, spec.max_backoff) {
            if base > max {
                return checked::checked(Err(format!(
                    "backoff {base} is longer than maxBackoff {max}"
                )));
            }
        }
        Ok(spec)
    }
}

deserialize_with!(map: HttpRouteRule, PathMatch, HeaderMatch, QueryParamMatch);
deserialize_with!(map: RetrySpec);
