//! Gateway API route filters: header modifiers, redirect, URL rewrite, mirror, CORS.

use super::checked::{self, deserialize_with, FromMap};
use super::cors::CorsSpec;
use super::names::{HeaderName, Hostname, HttpPath};
use super::numbers::{Percent, Port, RedirectStatus};
use super::refs::ServiceRef;
use serde::de::value::MapAccessDeserializer;
use serde::de::MapAccess;
use serde::Deserialize;
use std::collections::HashSet;
use std::num::NonZeroU32;

/// One filter, from the Gateway API's `{type: X, x: {...}}` shape.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteFilter {
    RequestHeaderModifier(HeaderModifierSpec),
    ResponseHeaderModifier(HeaderModifierSpec),
    RequestRedirect(RedirectSpec),
    UrlRewrite(UrlRewriteSpec),
    RequestMirror(MirrorSpec),
    Cors(CorsSpec),
}

impl RouteFilter {
    /// The filter's `type`, as written.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteFilter::RequestHeaderModifier(_) => "RequestHeaderModifier",
            RouteFilter::ResponseHeaderModifier(_) => "ResponseHeaderModifier",
            RouteFilter::RequestRedirect(_) => "RequestRedirect",
            RouteFilter::UrlRewrite(_) => "URLRewrite",
            RouteFilter::RequestMirror(_) => "RequestMirror",
            RouteFilter::Cors(_) => "CORS",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    RequestMirror,
    #[serde(rename = "CORS")]
    Cors,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFilter {
    #[serde(rename = "type")]
    kind: FilterType,
    #[serde(default)]
    request_header_modifier: Option<HeaderModifierSpec>,
    #[serde(default)]
    response_header_modifier: Option<HeaderModifierSpec>,
    #[serde(default)]
    request_redirect: Option<RedirectSpec>,
    #[serde(default)]
    url_rewrite: Option<UrlRewriteSpec>,
    #[serde(default)]
    request_mirror: Option<MirrorSpec>,
    #[serde(default)]
    cors: Option<CorsSpec>,
}

impl RawFilter {
    fn into_filter(self) -> Result<RouteFilter, String> {
        let present = [
            (
                "requestHeaderModifier",
                self.request_header_modifier.is_some(),
            ),
            (
                "responseHeaderModifier",
                self.response_header_modifier.is_some(),
            ),
            ("requestRedirect", self.request_redirect.is_some()),
            ("urlRewrite", self.url_rewrite.is_some()),
            ("requestMirror", self.request_mirror.is_some()),
            ("cors", self.cors.is_some()),
        ];
        let (kind, wanted, filter) = match self.kind {
            FilterType::RequestHeaderModifier => (
                "RequestHeaderModifier",
                "requestHeaderModifier",
                self.request_header_modifier
                    .map(RouteFilter::RequestHeaderModifier),
            ),
            FilterType::ResponseHeaderModifier => (
                "ResponseHeaderModifier",
                "responseHeaderModifier",
                self.response_header_modifier
                    .map(RouteFilter::ResponseHeaderModifier),
            ),
            FilterType::RequestRedirect => (
                "RequestRedirect",
                "requestRedirect",
                self.request_redirect.map(RouteFilter::RequestRedirect),
            ),
            FilterType::UrlRewrite => (
                "URLRewrite",
                "urlRewrite",
                self.url_rewrite.map(RouteFilter::UrlRewrite),
            ),
            FilterType::RequestMirror => (
                "RequestMirror",
                "requestMirror",
                self.request_mirror.map(RouteFilter::RequestMirror),
            ),
            FilterType::Cors => ("CORS", "cors", self.cors.map(RouteFilter::Cors)),
        };
        if let Some((stray, _)) = present.iter().find(|(name, set)| *set && *name != wanted) {
            return Err(format!("a {kind} filter takes `{wanted}`, not `{stray}`"));
        }
        filter.ok_or_else(|| format!("a {kind} filter needs a `{wanted}` field"))
    }
}

impl FromMap for RouteFilter {
    const EXPECTING: &'static str = "a filter like {type: RequestHeaderModifier, ...}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawFilter = checked::fields(map)?;
        checked::checked(raw.into_filter())
    }
}

/// Header names are stored lower-case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(remote = "Self", deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderModifierSpec {
    #[serde(default)]
    pub set: Vec<HeaderValue>,
    #[serde(default)]
    pub add: Vec<HeaderValue>,
    #[serde(default)]
    pub remove: Vec<HeaderName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HeaderValue {
    pub name: HeaderName,
    pub value: String,
}

impl FromMap for HeaderModifierSpec {
    const EXPECTING: &'static str = "a header modifier like {set: [{name: x-a, value: b}]}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let spec = HeaderModifierSpec::deserialize(MapAccessDeserializer::new(map))?;
        let lists = [
            ("set", spec.set.iter().map(|h| &h.name).collect::<Vec<_>>()),
            ("add", spec.add.iter().map(|h| &h.name).collect()),
            ("remove", spec.remove.iter().collect()),
        ];
        for (list, names) in lists {
            let mut seen = HashSet::new();
            if let Some(dup) = names.into_iter().find(|name| !seen.insert(*name)) {
                return checked::checked(Err(format!("{list}: header {dup:?} is listed twice")));
            }
        }
        Ok(spec)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Each part left out keeps the request's own.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RedirectSpec {
    #[serde(default)]
    pub scheme: Option<Scheme>,
    #[serde(default)]
    pub hostname: Option<Hostname>,
    #[serde(default)]
    pub path: Option<PathModifierSpec>,
    #[serde(default)]
    pub port: Option<Port>,
    #[serde(default)]
    pub status_code: RedirectStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UrlRewriteSpec {
    #[serde(default)]
    pub hostname: Option<Hostname>,
    #[serde(default)]
    pub path: Option<PathModifierSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathModifierSpec {
    ReplaceFullPath(HttpPath),
    /// Replaces the part of the path that the rule's PathPrefix match matched.
    ReplacePrefixMatch(HttpPath),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPathModifier {
    #[serde(rename = "type")]
    kind: PathModifierType,
    #[serde(default)]
    replace_full_path: Option<HttpPath>,
    #[serde(default)]
    replace_prefix_match: Option<HttpPath>,
}

impl FromMap for PathModifierSpec {
    const EXPECTING: &'static str =
        "a path modifier like {type: ReplaceFullPath, replaceFullPath: /}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawPathModifier = checked::fields(map)?;
        checked::checked(
            match (raw.kind, raw.replace_full_path, raw.replace_prefix_match) {
                (PathModifierType::ReplaceFullPath, Some(path), None) => {
                    Ok(PathModifierSpec::ReplaceFullPath(path))
                }
                (PathModifierType::ReplacePrefixMatch, None, Some(path)) => {
                    Ok(PathModifierSpec::ReplacePrefixMatch(path))
                }
                (PathModifierType::ReplaceFullPath, _, _) => {
                    Err("type ReplaceFullPath needs `replaceFullPath` and nothing else".to_owned())
                }
                (PathModifierType::ReplacePrefixMatch, _, _) => Err(
                    "type ReplacePrefixMatch needs `replacePrefixMatch` and nothing else"
                        .to_owned(),
                ),
            },
        )
    }
}

/// Copies a share of requests to another service, fire and forget.
#[derive(Clone, Debug, PartialEq)]
pub struct MirrorSpec {
    pub backend: ServiceRef,
    pub percent: Percent,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawMirror {
    backend_ref: ServiceRef,
    #[serde(default)]
    percent: Option<Percent>,
    #[serde(default)]
    fraction: Option<Fraction>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Fraction {
    numerator: u32,
    #[serde(default = "hundred")]
    denominator: NonZeroU32,
}

fn hundred() -> NonZeroU32 {
    NonZeroU32::new(100).expect("100 is not zero")
}

impl FromMap for MirrorSpec {
    const EXPECTING: &'static str = "a mirror like {backendRef: {name: web-shadow}, percent: 10}";

    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Self, A::Error> {
        let raw: RawMirror = checked::fields(map)?;
        let percent = match (raw.percent, raw.fraction) {
            (Some(_), Some(_)) => Err("set `percent` or `fraction`, not both".to_owned()),
            (Some(percent), None) => Ok(percent),
            (None, Some(f)) if f.numerator > f.denominator.get() => Err(format!(
                "fraction {}/{} is more than 1",
                f.numerator, f.denominator
            )),
            (None, Some(f)) => Ok(Percent::of_fraction(f.numerator, f.denominator.get())),
            (None, None) => Ok(Percent::ALL),
        };
        Ok(MirrorSpec {
            backend: raw.backend_ref,
            percent: checked::checked(percent)?,
        })
    }
}

deserialize_with!(map: RouteFilter, HeaderModifierSpec, PathModifierSpec, MirrorSpec);
