//! HTTP message plumbing shared by inbound and outbound: reshaping a request for the
//! protocol spoken upstream, hop-by-hop headers, and the proxy's own answers.

use crate::body::Body;
use crate::metrics::Direction;
use crate::upstream::HttpMode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};

/// Set on every answer the proxy makes itself, saying why.
pub const ERROR_HEADER: &str = "x-weft-error";
/// Set on 503s from circuit breaking, naming the limit that tripped.
pub const OVERLOADED_HEADER: &str = "x-weft-overloaded";
/// Set by a peer proxy on its answers while it stops gracefully: callers stop choosing it
/// (the answer itself is served as usual). Never passed on to an app.
pub const DRAINING_HEADER: &str = "x-weft-draining";

const HOP_BY_HOP_COUNT: usize = 6;
/// `connection` first and `te` last: `strip_hop_by_hop` reads them by position.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// A response made by the proxy, with the reason in a header and the body.
pub fn synthetic(status: StatusCode, reason: &str) -> Response<Body> {
    let mut response = Response::new(Body::full(format!("{reason}\n")));
    *response.status_mut() = status;
    if let Ok(value) = HeaderValue::try_from(reason) {
        response.headers_mut().insert(ERROR_HEADER, value);
    }
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// A copy of a request that may be sent again if its connection closes before answering:
/// an idempotent method (RFC 9110, 9.2.2) and no body.
pub fn copy_if_idempotent(request: &Request<Body>) -> Option<Request<Body>> {
    use http::Method;
    use hyper::body::Body as _;
    let idempotent = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    (idempotent && request.body().is_end_stream()).then(|| copy_with_body(request, Body::Empty))
}

/// `request`'s method, target, version and headers with `body`.
pub fn copy_with_body(request: &Request<Body>, body: Body) -> Request<Body> {
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// Removes headers that describe one connection and must not be forwarded, including the
/// ones the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Runs on every request and response: most carry none of these or only `connection`,
    // so look once and remove only what is there (each removal hashes the name).
    let mut present = [false; HOP_BY_HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return;
    }
    let [connection, .., te] = present;
    if connection {
        // Usually `keep-alive`: names the fixed list removes anyway are passed over without
        // parsing them as header names or allocating (for nginx's `Connection: keep-alive`
        // that cost about 1,000 instructions a response).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                !HOP_BY_HOP
                    .iter()
                    .any(|fixed| fixed.as_str().eq_ignore_ascii_case(name))
            })
            .filter_map(|name| HeaderName::try_from(name).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    let keeps_trailers = te
        && headers
            .get(header::TE)
            .is_some_and(|te| te.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if keeps_trailers {
        // gRPC needs `te: trailers` end to end.
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// An HTTP/1.1 request asking to switch protocols (WebSocket) or to tunnel (CONNECT).
///
/// `Upgrade: h2c` alone is not one: the request is served as the HTTP/1.1 request it also
/// is (RFC 9113 drops h2c upgrades; RFC 9110 lets a server ignore `Upgrade`), so the
/// HTTP/2 that would follow never bypasses the proxy's routing, limits and metrics.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    if request.version() != Version::HTTP_11 {
        return false;
    }
    request.method() == http::Method::CONNECT
        || request
            .headers()
            .get_all(header::UPGRADE)
            .iter()
            .flat_map(|value| value.as_bytes().split(|b| *b == b','))
            .any(|protocol| !protocol.trim_ascii().eq_ignore_ascii_case(b"h2c"))
}

/// The authority a request is addressed to: the URI's, else the `Host` header.
pub fn authority<B>(request: &Request<B>) -> Option<&str> {
    request
        .uri()
        .authority()
        .map(Authority::as_str)
        .or_else(|| {
            request
                .headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
}

/// Whether the request names two different hosts: an HTTP/1.1 absolute-form target and a
/// `Host` header, or HTTP/2's `:authority` and a `host` header, that disagree. The proxy
/// routes by the first and the upstream would read the second, so such a request could
/// reach a service under another's name: it is refused (RFC 9113 §8.3.1 calls it
/// malformed). Ports are not compared: routing ignores them.
pub fn hosts_disagree<B>(request: &Request<B>) -> bool {
    let Some(target) = request.uri().authority() else {
        return false;
    };
    let Some(host) = request.headers().get(header::HOST) else {
        return false;
    };
    let host_part = |authority: &str| -> String {
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
            _ => authority,
        };
        host.to_ascii_lowercase()
    };
    match host.to_str() {
        Ok(host) => host_part(host) != host_part(target.as_str()),
        Err(_) => true,
    }
}

/// The answer to a request whose hosts disagree (see `hosts_disagree`), counted.
pub fn host_conflict(proxy: &crate::proxy::Proxy, direction: Direction) -> Response<Body> {
    proxy.metrics.reject(direction, "host_mismatch");
    synthetic(
        StatusCode::BAD_REQUEST,
        "the request target and the Host header name different hosts",
    )
}

/// Puts a request in the form the upstream protocol wants: absolute URI for HTTP/2
/// (`:scheme`, `:authority`), origin form plus `Host` for HTTP/1.1.
pub fn prepare_upstream(request: &mut Request<Body>, mode: HttpMode) {
    strip_hop_by_hop(request.headers_mut());
    match mode {
        HttpMode::Http2 => {
            let authority = authority(request).and_then(|a| Authority::try_from(a).ok());
            let path_and_query = request.uri().path_and_query().cloned();
            *request.version_mut() = Version::HTTP_2;
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = authority.or_else(|| Some(Authority::from_static("localhost")));
            parts.path_and_query =
                path_and_query.or_else(|| Some("/".parse().expect("valid path")));
            if let Ok(uri) = Uri::from_parts(parts) {
                *request.uri_mut() = uri;
            }
            request.headers_mut().remove(header::HOST);
        }
        HttpMode::Http1 => {
            *request.version_mut() = Version::HTTP_11;
            // Most requests came as HTTP/1.1 with a Host and an origin-form target and need
            // nothing more; parsing both again cost 800 instructions a request (callgrind).
            // An HTTP/2 request or an absolute-form target is rewritten.
            if !request.headers().contains_key(header::HOST) {
                let host = authority(request).and_then(|a| HeaderValue::try_from(a).ok());
                if let Some(host) = host {
                    request.headers_mut().insert(header::HOST, host);
                }
            }
            let uri = request.uri();
            if uri.scheme().is_some() || uri.authority().is_some() {
                let path = uri
                    .path_and_query()
                    .filter(|pq| !pq.as_str().is_empty())
                    .cloned();
                *request.uri_mut() = path.map_or_else(|| Uri::from_static("/"), Uri::from);
            }
        }
    }
}

/// Prepares an upgrade request: keeps `Connection`/`Upgrade`, origin-form URI.
pub fn prepare_upgrade(request: &mut Request<Body>) {
    *request.version_mut() = Version::HTTP_11;
    if request.method() != http::Method::CONNECT {
        if let Some(pq) = request.uri().path_and_query().cloned() {
            if let Ok(uri) = Uri::try_from(pq.as_str()) {
                *request.uri_mut() = uri;
            }
        }
    }
    for name in ["keep-alive", "proxy-connection", "http2-settings"] {
        request.headers_mut().remove(name);
    }
    // Offered beside another protocol, h2c is withdrawn: only that other one may follow.
    let offered: Vec<&[u8]> = request
        .headers()
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|protocol| !protocol.eq_ignore_ascii_case(b"h2c"))
        .collect();
    if let Ok(value) = HeaderValue::from_bytes(&offered.join(&b", "[..])) {
        if !offered.is_empty() {
            request.headers_mut().insert(header::UPGRADE, value);
        }
    }
}

/// `traceparent`'s trace id (W3C Trace Context), for the access log.
pub fn trace_id(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let _version = parts.next()?;
    parts.next().filter(|id| id.len() == 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        strip_hop_by_hop(&mut headers);
        assert!(headers.get("x-secret").is_none());
        assert!(headers.get(header::CONNECTION).is_none());
        assert!(headers.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(headers.get(header::TE).unwrap(), "trailers");
        assert_eq!(headers.get("x-kept").unwrap(), "1");
    }

    #[test]
    fn strips_what_connection_names_and_leaves_plain_messages_alone() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, x-named"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-named", HeaderValue::from_static("1"));
        headers.insert(header::TE, HeaderValue::from_static("gzip"));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert_eq!(headers.get(header::CONTENT_LENGTH).unwrap(), "3");

        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        plain.append("x-many", HeaderValue::from_static("1"));
        plain.append("x-many", HeaderValue::from_static("2"));
        let before = plain.clone();
        strip_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn http1_request_becomes_http2_and_back() {
        let to_reviews = |target: &str| {
            Request::builder()
                .uri(target)
                .header(header::HOST, "reviews:9080")
                .body(Body::Empty)
                .unwrap()
        };
        let mut request = to_reviews("/a?b=c");
        prepare_upstream(&mut request, HttpMode::Http2);
        assert_eq!(request.uri(), "http://reviews:9080/a?b=c");
        assert!(request.headers().get(header::HOST).is_none());
        prepare_upstream(&mut request, HttpMode::Http1);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.headers().get(header::HOST).unwrap(), "reviews:9080");

        // An absolute-form target becomes origin-form; its Host is kept (they agree, or the
        // request was refused before it got here).
        let mut absolute = to_reviews("http://reviews:9080");
        prepare_upstream(&mut absolute, HttpMode::Http1);
        assert_eq!(absolute.uri(), "/");
        assert_eq!(absolute.headers()[header::HOST], "reviews:9080");
    }

    #[test]
    fn h2c_is_not_an_upgrade_and_is_withdrawn_beside_another() {
        let request = |upgrade: &str| {
            Request::builder()
                .header(header::UPGRADE, upgrade)
                .header(header::CONNECTION, "Upgrade, HTTP2-Settings")
                .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
                .body(Body::Empty)
                .unwrap()
        };
        assert!(!is_upgrade(&request("h2c")));
        assert!(!is_upgrade(&request(" H2C ")));
        assert!(is_upgrade(&request("websocket")));
        let mut both = request("h2c, websocket");
        assert!(is_upgrade(&both));
        prepare_upgrade(&mut both);
        assert_eq!(both.headers()[header::UPGRADE], "websocket");
        assert!(both.headers().get("http2-settings").is_none());

        // Served as a plain request: the upgrade headers do not travel on.
        let mut plain = request("h2c");
        prepare_upstream(&mut plain, HttpMode::Http1);
        assert!(plain.headers().get(header::UPGRADE).is_none());
        assert!(plain.headers().get("http2-settings").is_none());
    }

    #[test]
    fn hosts_must_agree_on_the_host_but_not_the_port() {
        let request = |uri: &str, host: Option<&str>| {
            let mut builder = Request::builder().uri(uri);
            if let Some(host) = host {
                builder = builder.header(header::HOST, host);
            }
            builder.body(()).unwrap()
        };
        assert!(hosts_disagree(&request("http://reviews/", Some("ratings"))));
        assert!(hosts_disagree(&request(
            "http://reviews:9080/",
            Some("admin:9080")
        )));
        assert!(!hosts_disagree(&request(
            "http://Reviews:9080/",
            Some("reviews")
        )));
        assert!(!hosts_disagree(&request("http://reviews/", None)));
        assert!(!hosts_disagree(&request("/", Some("anything"))));
        assert!(!hosts_disagree(&request("http://[::1]:80/", Some("[::1]"))));
    }

    #[test]
    fn reads_trace_id() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(trace_id(&headers), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
    }
}
