//! Inbound HTTP: a request from the mesh (or a plain client) to the local app.

use crate::access_log::{Exchange, RequestLog};
use crate::body::Body;
use crate::client_body::{self, ClientFault};
use crate::connections::Active;
use crate::http::{
    host_conflict, hosts_disagree, is_upgrade, prepare_upstream, strip_hop_by_hop, synthetic,
    DRAINING_HEADER,
};
use crate::metrics::{Direction, RequestMetrics};
use crate::outbound::is_grpc;
use crate::proxy::Proxy;
use crate::upgrade;
use crate::upstream::HttpMode;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use weft_model::config::Protocol;

/// Who is calling on this connection, resolved once per connection.
pub struct Caller {
    /// `service.namespace` from the peer's SPIFFE id, or `unknown` in plain text.
    pub source: Arc<str>,
    pub metrics: Arc<RequestMetrics>,
}

pub async fn serve(
    proxy: Arc<Proxy>,
    caller: Arc<Caller>,
    request: Request<Incoming>,
    active: Active,
) -> Response<Body> {
    let started = Instant::now();
    if hosts_disagree(&request) {
        return host_conflict(&proxy, Direction::Inbound);
    }
    let snapshot = proxy.snapshot();
    let own = snapshot.own();
    let log = proxy
        .access_log
        .as_ref()
        .map(|writer| (writer, RequestLog::capture(&request)));
    let limited = own
        .and_then(|s| s.backend.rate_limit.as_ref())
        .is_some_and(|limiter| !limiter.try_acquire());
    let response = if limited {
        proxy.metrics.reject(Direction::Inbound, "rate_limited");
        let mut response = synthetic(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        response
    } else {
        let protocol = own.map_or(Protocol::Auto, |s| s.backend.protocol);
        let (request, verdict) = client_body::checked(request, proxy.options.limits.body_pace());
        let response = forward_to_app(&proxy, protocol, request, active).await;
        match ClientFault::behind(verdict.as_ref(), &response) {
            Some(fault) => {
                proxy.metrics.reject(Direction::Inbound, fault.reason());
                fault.response()
            }
            None => response,
        }
    };
    let mut response = response;
    if proxy.is_draining() {
        // Tell the calling proxy to move away; this answer is served all the same.
        proxy.request_while_draining();
        response
            .headers_mut()
            .insert(DRAINING_HEADER, http::HeaderValue::from_static("1"));
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    caller.metrics.record(status, elapsed.as_secs_f64());
    if let Some((writer, log)) = log {
        let exchange = Exchange {
            direction: "inbound",
            source: &caller.source,
            destination: &proxy.local_label,
            route: None,
            upstream: Some(proxy.options.app),
            retries: 0,
            duration: elapsed,
        };
        log.write(writer, exchange, &response);
    }
    response
}

async fn forward_to_app(
    proxy: &Proxy,
    protocol: Protocol,
    mut request: Request<Body>,
    active: Active,
) -> Response<Body> {
    if is_upgrade(&request) {
        let hold = upgrade::Hold::new(active, None);
        let idle = proxy.options.limits.tcp_idle_timeout;
        return upgrade::send(&proxy.app, request, &proxy.app_connections, hold, idle).await;
    }
    let mode = match protocol {
        Protocol::Http2 | Protocol::Grpc => HttpMode::Http2,
        Protocol::Auto if is_grpc(&request) => HttpMode::Http2,
        _ => HttpMode::Http1,
    };
    prepare_upstream(&mut request, mode);
    match proxy.app.send(mode, request, &proxy.app_connections).await {
        Ok(mut response) => {
            strip_hop_by_hop(response.headers_mut());
            response
        }
        Err(error) => {
            tracing::debug!(%error, "request to the local app failed");
            synthetic(error.status(), &format!("local app: {error}"))
        }
    }
}
