//! Request mirroring (the Gateway API's `RequestMirror`): a copy of a request sent to
//! another service, fire and forget. Copies are bounded: at most [`MIRRORS_IN_FLIGHT`] at
//! once per proxy and [`MIRROR_TIMEOUT`] each; beyond that they are dropped and counted, so
//! a slow or dead mirror target can never pile up tasks, buffers and connections, and it
//! never slows the real request.

use crate::body::Body;
use crate::http::prepare_upstream;
use crate::metrics::Direction;
use crate::outbound::{copy_request, http_mode, REPLAY_LIMIT};
use crate::proxy::Proxy;
use crate::state::Backend;
use http::Request;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::time::Duration;

/// Mirror copies in flight at once, per proxy.
pub const MIRRORS_IN_FLIGHT: usize = 256;
/// A mirror copy not answered in this time is abandoned and counted.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends each mirror its share of copies of `request`, and hands the request back to be
/// sent for real. Mirrors get their own copy of a small body, taken before the body
/// becomes replayable: a mirror must never read from the stream the real request uses.
pub async fn send_copies(
    proxy: &Arc<Proxy>,
    mirrors: &[(Arc<Backend>, f64)],
    request: Request<Body>,
) -> Request<Body> {
    let request = buffer_if_small(request).await;
    for (mirror, percent) in mirrors {
        if fastrand::f64() * 100.0 >= *percent {
            continue;
        }
        let Some(copy) = copy_request(&request) else {
            continue;
        };
        match proxy.mirrors.clone().try_acquire_owned() {
            Ok(slot) => {
                let (proxy, mirror) = (proxy.clone(), mirror.clone());
                tokio::spawn(async move {
                    let sent = send_mirror(mirror, copy);
                    if tokio::time::timeout(MIRROR_TIMEOUT, sent).await.is_err() {
                        proxy.metrics.reject(Direction::Outbound, "mirror_timeout");
                    }
                    drop(slot);
                });
            }
            Err(_) => proxy.metrics.reject(Direction::Outbound, "mirror_dropped"),
        }
    }
    request
}

/// Reads a small, complete body into memory so it can be sent more than once. Streams and
/// large bodies are left alone (and are then neither retried nor mirrored).
async fn buffer_if_small(request: Request<Body>) -> Request<Body> {
    let hint = http_body::Body::size_hint(request.body());
    if http_body::Body::is_end_stream(request.body()) {
        return request.map(|_| Body::Empty);
    }
    if hint.upper().is_none_or(|upper| upper > REPLAY_LIMIT as u64) {
        return request;
    }
    let (parts, body) = request.into_parts();
    match body.collect().await {
        Ok(collected) => Request::from_parts(parts, Body::full(collected.to_bytes())),
        // The client went away mid-body; forward nothing useful but let the try fail normally.
        Err(_) => Request::from_parts(parts, Body::Empty),
    }
}

async fn send_mirror(backend: Arc<Backend>, mut request: Request<Body>) {
    let Some(endpoint) = backend.balancer.pick(Some(request.headers())) else {
        return;
    };
    let mode = http_mode(backend.protocol, endpoint.identity.is_some(), &request);
    prepare_upstream(&mut request, mode);
    if let Ok(response) = endpoint
        .pool
        .send(mode, request, &backend.connections)
        .await
    {
        // Drain so the connection can be reused; the answer itself is ignored.
        let _ = response.into_body().collect().await;
    }
}
