//! Matching a request against a route rule's `matches`, compiled once (regexes built,
//! prefixes trimmed). The proxy routes with it and `weft explain` tells with it why a rule
//! did or did not match, so the two agree by construction.

use crate::config::{PathMatch, RouteMatch, StringMatch};
use regex::Regex;

/// What matching reads from a request.
pub trait RequestView {
    /// Upper-case.
    fn method(&self) -> &str;
    fn path(&self) -> &str;
    /// The query string without `?`; empty when there is none.
    fn query(&self) -> &str;
    /// Whether any value of header `name` (lower-case) passes `test`.
    fn any_header(&self, name: &str, test: &dyn Fn(&str) -> bool) -> bool;
}

/// A rule's `matches`: any one must hold; none means every request.
pub struct RuleMatcher {
    matches: Vec<Matcher>,
}

/// A regular expression in the config that does not compile (the compiler checks them, so
/// only a hand-written or corrupted config gets here).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidRegex {
    pub pattern: String,
    pub reason: String,
}

impl RuleMatcher {
    pub fn new(matches: &[RouteMatch]) -> Result<Self, InvalidRegex> {
        Ok(RuleMatcher {
            matches: matches.iter().map(Matcher::new).collect::<Result<_, _>>()?,
        })
    }

    /// `Some(prefix)` when the request matches: the path prefix it matched on, if any.
    pub fn match_request(&self, request: &impl RequestView) -> Option<Option<&str>> {
        if self.matches.is_empty() {
            return Some(None);
        }
        self.matches
            .iter()
            .find(|m| m.first_mismatch(request).is_none())
            .map(Matcher::prefix)
    }

    /// For each match entry, why it does not match the request (`None`: it matches).
    pub fn mismatches<'a>(&'a self, request: &impl RequestView) -> Vec<Option<Mismatch<'a>>> {
        self.matches
            .iter()
            .map(|m| m.first_mismatch(request))
            .collect()
    }
}

/// The first condition of a match entry that a request fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mismatch<'a> {
    /// The method wanted.
    Method(&'a str),
    /// The path wanted: how (`exactly`, `under`, `matching`) and what.
    Path(&'static str, &'a str),
    /// The header whose values do not match.
    Header(&'a str),
    /// The query parameter whose values do not match.
    Query(&'a str),
}

struct Matcher {
    path: Option<PathMatcher>,
    method: Option<String>,
    headers: Vec<(String, ValueMatcher)>,
    query: Vec<(String, ValueMatcher)>,
}

enum PathMatcher {
    Exact(String),
    /// Without a trailing slash; matches itself and anything below it.
    Prefix(String),
    Regex(Regex),
}

enum ValueMatcher {
    Exact(String),
    Regex(Regex),
}

impl ValueMatcher {
    fn new(config: &StringMatch) -> Result<Self, InvalidRegex> {
        Ok(match config {
            StringMatch::Exact(v) => ValueMatcher::Exact(v.clone()),
            StringMatch::Regex(r) => ValueMatcher::Regex(anchored(r)?),
        })
    }

    fn matches(&self, value: &str) -> bool {
        match self {
            ValueMatcher::Exact(v) => v == value,
            ValueMatcher::Regex(r) => r.is_match(value),
        }
    }
}

fn anchored(pattern: &str) -> Result<Regex, InvalidRegex> {
    Regex::new(&format!("^(?:{pattern})$")).map_err(|e| InvalidRegex {
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    })
}

impl Matcher {
    fn new(config: &RouteMatch) -> Result<Self, InvalidRegex> {
        Ok(Self {
            path: config
                .path
                .as_ref()
                .map(|p| -> Result<_, InvalidRegex> {
                    Ok(match p {
                        PathMatch::Exact(v) => PathMatcher::Exact(v.clone()),
                        PathMatch::Prefix(v) => {
                            PathMatcher::Prefix(v.trim_end_matches('/').to_owned())
                        }
                        PathMatch::Regex(r) => PathMatcher::Regex(anchored(r)?),
                    })
                })
                .transpose()?,
            method: config.method.clone(),
            headers: config
                .headers
                .iter()
                .map(|h| Ok((h.name.clone(), ValueMatcher::new(&h.value)?)))
                .collect::<Result<_, InvalidRegex>>()?,
            query: config
                .query
                .iter()
                .map(|q| Ok((q.name.clone(), ValueMatcher::new(&q.value)?)))
                .collect::<Result<_, InvalidRegex>>()?,
        })
    }

    fn first_mismatch(&self, request: &impl RequestView) -> Option<Mismatch<'_>> {
        if let Some(method) = &self.method {
            if request.method() != method {
                return Some(Mismatch::Method(method));
            }
        }
        if let Some(path) = &self.path {
            let p = request.path();
            let (ok, wanted) = match path {
                PathMatcher::Exact(v) => (p == v, ("exactly", v.as_str())),
                PathMatcher::Prefix(v) => (
                    v.is_empty()
                        || (p.starts_with(v.as_str())
                            && (p.len() == v.len() || p.as_bytes()[v.len()] == b'/')),
                    ("under", v.as_str()),
                ),
                PathMatcher::Regex(r) => (r.is_match(p), ("matching", r.as_str())),
            };
            if !ok {
                return Some(Mismatch::Path(wanted.0, wanted.1));
            }
        }
        for (name, matcher) in &self.headers {
            if !request.any_header(name, &|v| matcher.matches(v)) {
                return Some(Mismatch::Header(name));
            }
        }
        let query = request.query();
        for (name, matcher) in &self.query {
            let found = query.split('&').any(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                k == name && matcher.matches(v)
            });
            if !found {
                return Some(Mismatch::Query(name));
            }
        }
        None
    }

    fn prefix(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatcher::Prefix(p)) => Some(p),
            _ => None,
        }
    }
}
