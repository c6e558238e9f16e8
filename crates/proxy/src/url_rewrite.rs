//! What a route does to a request's URL: a redirect answered by the proxy
//! (`RequestRedirect`), or a rewrite of its path and host before it is forwarded
//! (`URLRewrite`), both as the Gateway API specifies.

use crate::body::Body;
use crate::http::authority;
use http::{HeaderValue, Request, Response, StatusCode};
use weft_model::config::{PathModifier, Redirect, Rewrite};

/// The path a `ReplaceFullPath` or `ReplacePrefixMatch` modifier makes of `path`; `prefix`
/// is what the rule's PathPrefix match matched.
fn rewritten_path(path: &str, modifier: &PathModifier, prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::ReplaceFullPath(full) => full.clone(),
        PathModifier::ReplacePrefixMatch(replacement) => {
            let rest = prefix.and_then(|p| path.strip_prefix(p)).unwrap_or(path);
            let joined = format!(
                "{}/{}",
                replacement.trim_end_matches('/'),
                rest.trim_start_matches('/')
            );
            if joined.len() > 1 && !rest.is_empty() {
                joined
            } else {
                let trimmed = joined.trim_end_matches('/');
                if trimmed.is_empty() {
                    "/".to_string()
                } else {
                    trimmed.to_string()
                }
            }
        }
    }
}

fn with_query(path: String, query: Option<&str>) -> String {
    match query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// Rewrites `request`'s path (keeping its query) and host, as `URLRewrite` says.
pub fn apply_rewrite(request: &mut Request<Body>, rewrite: &Rewrite, prefix: Option<&str>) {
    if let Some(modifier) = &rewrite.path {
        let path = rewritten_path(request.uri().path(), modifier, prefix);
        let target = with_query(path, request.uri().query());
        let mut parts = request.uri().clone().into_parts();
        if let Ok(pq) = target.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = http::Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
        }
    }
    if let Some(hostname) = &rewrite.hostname {
        if let Ok(value) = HeaderValue::try_from(hostname.as_str()) {
            request.headers_mut().insert(http::header::HOST, value);
            let mut parts = request.uri().clone().into_parts();
            if parts.authority.is_some() {
                parts.authority = hostname.parse().ok();
                if let Ok(uri) = http::Uri::from_parts(parts) {
                    *request.uri_mut() = uri;
                }
            }
        }
    }
}

/// The redirect a `RequestRedirect` answers `request` with.
pub fn redirect_response<B>(
    request: &Request<B>,
    redirect: &Redirect,
    prefix: Option<&str>,
) -> Response<Body> {
    // Gateway API: an unset scheme keeps the request's; an unset port is the scheme's
    // well-known port when the scheme was set, else the port the request was sent to.
    let scheme = redirect
        .scheme
        .as_deref()
        .unwrap_or_else(|| request.uri().scheme_str().unwrap_or("http"));
    let original = authority(request).unwrap_or("");
    let (original_host, original_port) = match original.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => (host, port.parse().ok()),
        _ => (original, None),
    };
    let host = redirect.hostname.as_deref().unwrap_or(original_host);
    let port = redirect.port.or(if redirect.scheme.is_some() {
        None
    } else {
        original_port
    });
    let port = match (port, scheme) {
        (Some(80), "http") | (Some(443), "https") | (None, _) => String::new(),
        (Some(port), _) => format!(":{port}"),
    };
    let path = match &redirect.path {
        Some(modifier) => rewritten_path(request.uri().path(), modifier, prefix),
        None => request.uri().path().to_string(),
    };
    let location = format!(
        "{scheme}://{host}{port}{}",
        with_query(path, request.uri().query())
    );
    let status = StatusCode::from_u16(redirect.status_code).unwrap_or(StatusCode::FOUND);
    let mut response = Response::new(Body::Empty);
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::try_from(location) {
        response.headers_mut().insert(http::header::LOCATION, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites_follow_gateway_api_examples() {
        let replace = |r: &str| PathModifier::ReplacePrefixMatch(r.to_string());
        assert_eq!(
            rewritten_path("/foo/bar", &replace("/xyz"), Some("/foo")),
            "/xyz/bar"
        );
        assert_eq!(
            rewritten_path("/foo", &replace("/xyz"), Some("/foo")),
            "/xyz"
        );
        assert_eq!(
            rewritten_path("/foo/bar", &replace("/"), Some("/foo")),
            "/bar"
        );
        assert_eq!(rewritten_path("/foo", &replace("/"), Some("/foo")), "/");
        assert_eq!(
            rewritten_path("/foo/bar", &replace("/xyz/"), Some("/foo")),
            "/xyz/bar"
        );
        let full = PathModifier::ReplaceFullPath("/new".to_string());
        assert_eq!(rewritten_path("/anything/here", &full, None), "/new");
    }

    #[test]
    fn redirects_keep_or_drop_the_port_as_gateway_api_says() {
        let request = Request::builder()
            .uri("/a?x=1")
            .header(http::header::HOST, "web:8080")
            .body(())
            .unwrap();
        let location = |redirect: Redirect| {
            let response = redirect_response(&request, &redirect, None);
            response.headers()[http::header::LOCATION]
                .to_str()
                .unwrap()
                .to_string()
        };
        let base = Redirect {
            scheme: None,
            hostname: None,
            path: None,
            port: None,
            status_code: 302,
        };
        let host_only = Redirect {
            hostname: Some("new.example".into()),
            ..base.clone()
        };
        assert_eq!(location(host_only), "http://new.example:8080/a?x=1");
        let https = Redirect {
            scheme: Some("https".into()),
            ..base.clone()
        };
        assert_eq!(location(https), "https://web/a?x=1");
        let port = Redirect {
            port: Some(9000),
            ..base.clone()
        };
        assert_eq!(location(port), "http://web:9000/a?x=1");
        let http_80 = Redirect {
            scheme: Some("http".into()),
            port: Some(80),
            ..base
        };
        assert_eq!(location(http_80), "http://web/a?x=1");
    }
}
