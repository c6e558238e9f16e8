//! The Gateway API `CORS` filter: the proxy answers a browser's preflight request itself
//! and marks the answers to cross-origin requests it allows, so the app behind the route
//! needs no CORS code of its own.
//!
//! An allowed origin is always echoed (never `*`): that is what credentialed requests
//! require and what every browser accepts, and `Vary: Origin` keeps caches from serving
//! one origin's answer to another.

use crate::body::Body;
use crate::config_error::ConfigError;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use weft_model::resources::{parse_origin, Origin};

pub struct Cors {
    origins: Vec<OriginPattern>,
    credentials: bool,
    methods: Option<Allowed>,
    headers: Option<Allowed>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// What a preflight answer says for a list the route sets.
enum Allowed {
    /// `*` in the route: the request's own ask is echoed (a literal `*` means nothing to
    /// a browser sending credentials).
    Echo,
    Listed(HeaderValue),
}

enum OriginPattern {
    Any,
    /// `host` may start with `*`: any non-empty run of characters, dots included.
    Host {
        scheme: &'static str,
        host: String,
        port: u16,
    },
}

impl OriginPattern {
    fn new(text: &str) -> Result<Self, ConfigError> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let origin = parse_origin(text).ok_or_else(|| ConfigError::CorsOrigin(text.to_owned()))?;
        Ok(OriginPattern::Host {
            scheme: origin.scheme,
            host: origin.host,
            port: origin.port,
        })
    }

    fn matches(&self, origin: &Origin) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Host { scheme, host, port } => {
                let host_matches = match host.strip_prefix('*') {
                    Some(suffix) => {
                        origin.host.len() > suffix.len() && origin.host.ends_with(suffix)
                    }
                    None => origin.host == *host,
                };
                *scheme == origin.scheme && *port == origin.port && host_matches
            }
        }
    }
}

/// What the filter makes of one request.
pub enum CorsCheck<'a> {
    /// Not cross-origin, or from an origin the route does not allow: served as it is,
    /// without CORS headers (the browser then keeps the answer from the page).
    Pass,
    /// A preflight, answered by the proxy.
    Preflight(Response<Body>),
    /// A cross-origin request from an allowed origin: its answer is marked as readable.
    Allowed(Allowance<'a>),
}

pub struct Allowance<'a> {
    cors: &'a Cors,
    origin: HeaderValue,
}

impl Allowance<'_> {
    pub fn mark(&self, response: &mut Response<Body>) {
        self.cors.mark(self.origin.clone(), response.headers_mut());
    }
}

impl Cors {
    pub fn new(config: &weft_model::config::Cors) -> Result<Self, ConfigError> {
        let joined = |items: &[String]| -> Result<Option<HeaderValue>, ConfigError> {
            if items.is_empty() {
                return Ok(None);
            }
            let list = items.join(", ");
            HeaderValue::try_from(list.as_str())
                .map(Some)
                .map_err(|_| ConfigError::HeaderValue(list))
        };
        let allowed = |items: &[String]| -> Result<Option<Allowed>, ConfigError> {
            if items.iter().any(|item| item == "*") {
                return Ok(Some(Allowed::Echo));
            }
            Ok(joined(items)?.map(Allowed::Listed))
        };
        // `*` may be sent for exposed headers only without credentials; with them it would
        // name a header called `*`.
        let expose: Vec<String> = config
            .expose_headers
            .iter()
            .filter(|name| !(config.allow_credentials && *name == "*"))
            .cloned()
            .collect();
        Ok(Cors {
            origins: config
                .allow_origins
                .iter()
                .map(|text| OriginPattern::new(text))
                .collect::<Result<_, _>>()?,
            credentials: config.allow_credentials,
            methods: allowed(&config.allow_methods)?,
            headers: allowed(&config.allow_headers)?,
            expose: joined(&expose)?,
            max_age: HeaderValue::from(config.max_age_seconds),
        })
    }

    pub fn check<B>(&self, request: &Request<B>) -> CorsCheck<'_> {
        let headers = request.headers();
        let Some(origin) = headers.get(ORIGIN) else {
            return CorsCheck::Pass;
        };
        let allowed = origin
            .to_str()
            .ok()
            .and_then(parse_origin)
            .is_some_and(|parsed| self.origins.iter().any(|p| p.matches(&parsed)));
        let requested_method = headers.get(ACCESS_CONTROL_REQUEST_METHOD);
        if request.method() == Method::OPTIONS && requested_method.is_some() {
            let mut answer = Response::new(Body::Empty);
            *answer.status_mut() = StatusCode::NO_CONTENT;
            if allowed {
                self.preflight(origin.clone(), headers, answer.headers_mut());
            }
            return CorsCheck::Preflight(answer);
        }
        if !allowed {
            return CorsCheck::Pass;
        }
        CorsCheck::Allowed(Allowance {
            cors: self,
            origin: origin.clone(),
        })
    }

    fn preflight(&self, origin: HeaderValue, request: &HeaderMap, answer: &mut HeaderMap) {
        self.mark(origin, answer);
        let echo_or_list = |allowed: &Option<Allowed>, asked: Option<&HeaderValue>| match allowed {
            Some(Allowed::Listed(list)) => Some(list.clone()),
            Some(Allowed::Echo) => asked.cloned(),
            None => None,
        };
        if let Some(methods) =
            echo_or_list(&self.methods, request.get(ACCESS_CONTROL_REQUEST_METHOD))
        {
            answer.insert(ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        if let Some(headers) =
            echo_or_list(&self.headers, request.get(ACCESS_CONTROL_REQUEST_HEADERS))
        {
            answer.insert(ACCESS_CONTROL_ALLOW_HEADERS, headers);
        }
        answer.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
    }

    /// The headers every answer to an allowed origin carries.
    fn mark(&self, origin: HeaderValue, answer: &mut HeaderMap) {
        answer.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        answer.append(VARY, HeaderValue::from_static("Origin"));
        if self.credentials {
            answer.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(expose) = &self.expose {
            answer.insert(ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::new(&weft_model::config::Cors {
            allow_origins: origins.iter().map(|o| o.to_string()).collect(),
            allow_credentials: true,
            allow_methods: vec!["GET".into(), "OPTIONS".into()],
            allow_headers: vec!["*".into()],
            expose_headers: vec!["x-a".into(), "*".into()],
            max_age_seconds: 60,
        })
        .unwrap()
    }

    fn request(method: Method, headers: &[(&str, &str)]) -> Request<()> {
        let mut request = Request::builder().method(method).uri("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap()
    }

    fn allowed(cors: &Cors, origin: &str) -> bool {
        matches!(
            cors.check(&request(Method::GET, &[("origin", origin)])),
            CorsCheck::Allowed(_)
        )
    }

    #[test]
    fn origins_match_by_scheme_host_and_port() {
        let cors = cors(&[
            "https://www.foo.com",
            "https://*.bar.com",
            "http://c.com:8080",
        ]);
        for origin in [
            "https://www.foo.com",
            "https://www.foo.com:443",
            "HTTPS://WWW.FOO.COM",
            "https://a.bar.com",
            "https://x.y.bar.com",
            "http://c.com:8080",
        ] {
            assert!(allowed(&cors, origin), "{origin} refused");
        }
        for origin in [
            "http://www.foo.com",
            "https://www.foo.com:8443",
            "https://foo.com",
            "https://bar.com",
            "https://evilbar.com",
            "https://a.bar.com.evil.net",
            "http://c.com",
            "null",
            "",
        ] {
            assert!(!allowed(&cors, origin), "{origin} allowed");
        }
        let any = self::cors(&["*"]);
        assert!(allowed(&any, "https://anything.example:1234"));
        assert!(!allowed(&any, "null"), "an opaque origin is never allowed");
    }

    #[test]
    fn a_preflight_is_answered_with_what_the_route_allows() {
        let cors = cors(&["https://*.bar.com"]);
        let asked = request(
            Method::OPTIONS,
            &[
                ("origin", "https://www.bar.com"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-1, x-2"),
            ],
        );
        let CorsCheck::Preflight(answer) = cors.check(&asked) else {
            panic!("not answered as a preflight");
        };
        assert_eq!(answer.status(), StatusCode::NO_CONTENT);
        let header = |name: &str| answer.headers().get(name).map(|v| v.to_str().unwrap());
        assert_eq!(
            header("access-control-allow-origin"),
            Some("https://www.bar.com")
        );
        assert_eq!(header("access-control-allow-methods"), Some("GET, OPTIONS"));
        assert_eq!(header("access-control-allow-headers"), Some("x-1, x-2"));
        assert_eq!(header("access-control-allow-credentials"), Some("true"));
        // `*` is dropped from the exposed headers because credentials are allowed.
        assert_eq!(header("access-control-expose-headers"), Some("x-a"));
        assert_eq!(header("access-control-max-age"), Some("60"));
        assert_eq!(header("vary"), Some("Origin"));

        let refused = request(
            Method::OPTIONS,
            &[
                ("origin", "https://foobar.com"),
                ("access-control-request-method", "GET"),
            ],
        );
        let CorsCheck::Preflight(answer) = cors.check(&refused) else {
            panic!("not answered as a preflight");
        };
        assert!(answer.headers().is_empty(), "{:?}", answer.headers());
        // A plain OPTIONS request is the app's to answer.
        let plain = request(Method::OPTIONS, &[("origin", "https://www.bar.com")]);
        assert!(matches!(cors.check(&plain), CorsCheck::Allowed(_)));
    }
}
