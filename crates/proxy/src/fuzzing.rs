//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing`: the
//! parsing the proxy does itself, reached with arbitrary bytes. Each must return (or fail
//! with an error value) for every input; a panic or a hang is a bug.

use crate::options::ProxyOptions;
use crate::proxy::Proxy;
use crate::upstream::HttpMode;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use weft_api::v1::control_message;

/// Protocol detection on the first bytes of a connection.
pub fn detect(bytes: &[u8]) {
    // Every prefix, as the bytes arrive in pieces.
    for end in 0..=bytes.len().min(64) {
        let _ = crate::detect::classify(&bytes[..end]);
    }
}

/// The header handling the proxy does itself (hop-by-hop stripping, authority, upgrades,
/// trace ids, rewriting for the next hop) on a request made of `bytes`: a first line
/// `METHOD URI`, then `name: value` lines.
pub fn headers(bytes: &[u8]) {
    let mut lines = bytes.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    let mut words = first.splitn(2, |b| *b == b' ');
    let method = http::Method::from_bytes(words.next().unwrap_or(b"GET")).unwrap_or_default();
    let Ok(uri) = http::Uri::try_from(words.next().unwrap_or(b"/")) else {
        return;
    };
    let mut headers = HeaderMap::new();
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }
    for mode in [HttpMode::Http1, HttpMode::Http2] {
        let mut request = Request::new(crate::body::Body::Empty);
        *request.method_mut() = method.clone();
        *request.uri_mut() = uri.clone();
        *request.headers_mut() = headers.clone();
        let _ = crate::http::authority(&request);
        let _ = crate::http::is_upgrade(&request);
        let _ = crate::http::trace_id(request.headers());
        crate::http::prepare_upstream(&mut request, mode);
        crate::http::strip_hop_by_hop(request.headers_mut());
        if crate::http::is_upgrade(&request) {
            crate::http::prepare_upgrade(&mut request);
        }
    }
}

/// Whole messages the control plane pushed (full configs and endpoints updates), taken in
/// order by a fresh proxy: each decoded, checked and, when good, put in force.
pub fn pushed(messages: Vec<control_message::Message>) {
    let proxy = Proxy::new(options(), None);
    for message in messages {
        let _ = crate::control_client::answer(&proxy, message);
    }
}

fn options() -> ProxyOptions {
    ProxyOptions::minimal(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
}
