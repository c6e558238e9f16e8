//! Routes compiled for matching: regexes built once, header names parsed once, backends
//! resolved to live `Backend`s and metric handles looked up once per route.

use crate::config_error::ConfigError;
use crate::cors::Cors;
use crate::metrics::{LazyCounter, RequestMetrics};
use crate::state::Backend;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use std::sync::Arc;
use weft_model::config::{RetryPolicy, RouteConfig, Timeouts};
use weft_model::route_match::{RequestView, RuleMatcher};

pub struct Route {
    pub name: Arc<str>,
    matches: RuleMatcher,
    /// `None` for a route without filters, as most are (every service's default route):
    /// the common case costs a pointer, not the whole set.
    filters: Option<Box<Filters>>,
    pub backends: Vec<WeightedBackend>,
    total_weight: u64,
    pub timeouts: Timeouts,
    pub retry: Option<RetryPolicy>,
    pub metrics: RequestMetrics,
    pub retries: LazyCounter,
}

pub struct WeightedBackend {
    /// `None` for a reference to a Service the configuration does not have: its share of
    /// requests is answered 500, as the Gateway API says, rather than given to the others.
    pub backend: Option<Arc<Backend>>,
    pub weight: u32,
    /// The backendRef's own filters, applied after the rule's (requests) and before them
    /// (answers).
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
}

impl WeightedBackend {
    pub fn new(
        config: &weft_model::config::BackendRef,
        backend: Option<Arc<Backend>>,
    ) -> Result<Self, ConfigError> {
        let edits = |modifier: &Option<weft_model::config::HeaderModifier>| {
            modifier.as_ref().map(HeaderEdits::new).transpose()
        };
        Ok(Self {
            backend: backend.filter(|_| !config.missing),
            weight: config.weight,
            request_headers: edits(&config.request_headers)?,
            response_headers: edits(&config.response_headers)?,
        })
    }
}

/// Why a route has no backend for a request.
pub enum NoBackend {
    /// Every backend has weight 0.
    NoWeight,
    /// The request fell in the share of a backend that does not exist.
    Missing,
}

/// What a route with no filters reads.
static NO_FILTERS: Filters = Filters {
    request_headers: None,
    response_headers: None,
    redirect: None,
    rewrite: None,
    mirrors: Vec::new(),
    cors: None,
};

pub struct Filters {
    pub request_headers: Option<HeaderEdits>,
    pub response_headers: Option<HeaderEdits>,
    pub redirect: Option<weft_model::config::Redirect>,
    pub rewrite: Option<weft_model::config::Rewrite>,
    pub mirrors: Vec<(Arc<Backend>, f64)>,
    pub cors: Option<Cors>,
}

impl Filters {
    fn is_empty(&self) -> bool {
        let Filters {
            request_headers,
            response_headers,
            redirect,
            rewrite,
            mirrors,
            cors,
        } = self;
        request_headers.is_none()
            && response_headers.is_none()
            && redirect.is_none()
            && rewrite.is_none()
            && mirrors.is_empty()
            && cors.is_none()
    }
}

/// Header modifications with names and values parsed up front.
pub struct HeaderEdits {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderEdits {
    fn new(config: &weft_model::config::HeaderModifier) -> Result<Self, ConfigError> {
        let pair = |(n, v): &(String, String)| -> Result<(HeaderName, HeaderValue), ConfigError> {
            Ok((
                header_name(n)?,
                HeaderValue::try_from(v.as_str())
                    .map_err(|_| ConfigError::HeaderValue(v.clone()))?,
            ))
        };
        Ok(Self {
            set: config.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: config.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: config
                .remove
                .iter()
                .map(|n| header_name(n))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

fn header_name(name: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(name).map_err(|_| ConfigError::HeaderName(name.to_owned()))
}

/// What matched, for filters that depend on it (prefix rewrites).
pub struct RouteMatchResult<'a> {
    pub route: &'a Route,
    pub matched_prefix: Option<&'a str>,
}

/// A request as route matching reads it.
struct Incoming<'a, B>(&'a Request<B>);

impl<B> RequestView for Incoming<'_, B> {
    fn method(&self) -> &str {
        self.0.method().as_str()
    }

    fn path(&self) -> &str {
        self.0.uri().path()
    }

    fn query(&self) -> &str {
        self.0.uri().query().unwrap_or("")
    }

    fn any_header(&self, name: &str, test: &dyn Fn(&str) -> bool) -> bool {
        self.0
            .headers()
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(test))
    }
}

/// What a route needs from its surroundings while it is built.
pub struct RouteParts {
    pub backends: Vec<WeightedBackend>,
    pub mirrors: Vec<(Arc<Backend>, f64)>,
    pub metrics: RequestMetrics,
    pub retries: LazyCounter,
}

impl Route {
    pub fn new(config: &RouteConfig, parts: RouteParts) -> Result<Self, ConfigError> {
        let total_weight = parts.backends.iter().map(|b| u64::from(b.weight)).sum();
        let filters = &config.filters;
        let built = Filters {
            request_headers: filters
                .request_headers
                .as_ref()
                .map(HeaderEdits::new)
                .transpose()?,
            response_headers: filters
                .response_headers
                .as_ref()
                .map(HeaderEdits::new)
                .transpose()?,
            redirect: filters.redirect.clone(),
            rewrite: filters.rewrite.clone(),
            mirrors: parts.mirrors,
            cors: filters.cors.as_ref().map(Cors::new).transpose()?,
        };
        Ok(Self {
            name: Arc::from(config.name.as_str()),
            matches: RuleMatcher::new(&config.matches).map_err(|e| ConfigError::Regex {
                pattern: e.pattern,
                reason: e.reason,
            })?,
            filters: (!built.is_empty()).then(|| Box::new(built)),
            backends: parts.backends,
            total_weight,
            timeouts: config.timeouts.clone(),
            retry: config.retry.clone(),
            metrics: parts.metrics,
            retries: parts.retries,
        })
    }

    pub fn filters(&self) -> &Filters {
        self.filters.as_deref().unwrap_or(&NO_FILTERS)
    }

    /// `Some(prefix)` when it matched on a path prefix; `None` inside when no prefix applies.
    fn match_request<B>(&self, request: &Request<B>) -> Option<Option<&str>> {
        self.matches.match_request(&Incoming(request))
    }

    /// A backend chosen by weight, among the backends that have endpoints: a split keeps
    /// working when one side has none left (all failed their health checks), instead of
    /// failing its share of requests. A missing backend keeps its share (answered 500).
    pub fn pick_backend(&self) -> Result<(&Arc<Backend>, &WeightedBackend), NoBackend> {
        if self.total_weight == 0 {
            return Err(NoBackend::NoWeight);
        }
        let has_endpoints = |b: &&WeightedBackend| {
            b.backend
                .as_ref()
                .is_none_or(|backend| !backend.balancer.endpoints().is_empty())
        };
        let live: u64 = self
            .backends
            .iter()
            .filter(has_endpoints)
            .map(|b| u64::from(b.weight))
            .sum();
        // With no endpoints anywhere, pick as configured and let the request fail clearly.
        let (total, usable): (u64, &dyn Fn(&&WeightedBackend) -> bool) = if live > 0 {
            (live, &has_endpoints)
        } else {
            (self.total_weight, &|_| true)
        };
        let mut ticket = fastrand::u64(..total);
        for candidate in self.backends.iter().filter(usable) {
            let weight = u64::from(candidate.weight);
            if ticket < weight {
                let backend = candidate.backend.as_ref().ok_or(NoBackend::Missing)?;
                return Ok((backend, candidate));
            }
            ticket -= weight;
        }
        Err(NoBackend::NoWeight)
    }
}

/// First matching route, in the precedence order the compiler sorted them in.
pub fn select<'a, B>(routes: &'a [Route], request: &Request<B>) -> Option<RouteMatchResult<'a>> {
    routes.iter().find_map(|route| {
        route
            .match_request(request)
            .map(|matched_prefix| RouteMatchResult {
                route,
                matched_prefix,
            })
    })
}

#[cfg(test)]
mod tests {
    /// A proxy holds one route per service (its default) plus the routes it is given: in a
    /// mesh of thousands of services their size is most of the proxy's memory. Filters
    /// (over 500 bytes) are boxed and only present where configured.
    #[test]
    fn a_route_stays_small() {
        let size = std::mem::size_of::<super::Route>();
        assert!(size <= 400, "a Route is {size} bytes");
    }
}
