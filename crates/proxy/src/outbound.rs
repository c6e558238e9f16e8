//! Outbound HTTP: a request from the local app, on its way into the mesh.
//!
//! ```text
//! service (Host or bound port) -> route -> CORS preflight? -> redirect? -> header/rewrite filters
//!   -> backend by weight -> fault? -> circuit breaker -> mirror copies
//!   -> [try: endpoint by balancer -> send -> classify -> retry with backoff?]
//!   -> response header filter -> metrics + access log
//! ```

use crate::access_log::{Exchange, RequestLog};
use crate::balance::Outcome;
use crate::body::Body;
use crate::client_body::{self, ClientFault};
use crate::connections::Active;
use crate::cors::CorsCheck;
use crate::grpc_outcome::grpc_status;
use crate::http::{
    authority, host_conflict, hosts_disagree, is_upgrade, prepare_upstream, strip_hop_by_hop,
    synthetic, DRAINING_HEADER, OVERLOADED_HEADER,
};
use crate::metrics::Direction;
use crate::mirror;
use crate::proxy::Proxy;
use crate::replay::ReplayBody;
use crate::resilience::LimitExceeded;
use crate::routes::{self, NoBackend, Route};
use crate::state::{Backend, ServiceRoutes};
use crate::upgrade;
use crate::upstream::{HttpMode, UpstreamError};
use crate::url_rewrite::{apply_rewrite, redirect_response};
use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_model::config::{Protocol, RetryOn, RetryPolicy};
use weft_model::Address;

/// Bodies up to this size are kept so a request can be retried or mirrored.
pub const REPLAY_LIMIT: usize = 64 * 1024;
/// An endpoint that said it is draining is not chosen for this long (by then the control
/// plane has taken it out of the config, or it has gone).
const DRAINING_AVOIDANCE: Duration = Duration::from_secs(30);

/// What the access log wants to know about how a request was served.
#[derive(Default)]
pub struct Served {
    pub upstream: Option<Address>,
    pub retries: u32,
}

/// Serves one request from the local app. `bound` is set for an upstream binding's listener.
pub async fn serve(
    proxy: Arc<Proxy>,
    bound: Option<Arc<ServiceRoutes>>,
    mut request: Request<Incoming>,
    active: Active,
) -> Response<Body> {
    let started = Instant::now();
    if hosts_disagree(&request) {
        return host_conflict(&proxy, Direction::Outbound);
    }
    let snapshot = proxy.snapshot();
    let service = match bound {
        Some(service) => Some(service),
        None => authority(&request).and_then(|a| snapshot.by_host(&proxy, a)),
    };
    let Some(service) = service else {
        proxy.metrics.reject(Direction::Outbound, "unknown_service");
        let host = authority(&request).unwrap_or("(none)");
        return synthetic(
            StatusCode::NOT_FOUND,
            &format!("no service in the mesh answers to host {host:?}"),
        );
    };
    let (route, prefix) = if service.routes.is_empty() {
        (&service.default_route, None)
    } else {
        match routes::select(&service.routes, &request) {
            Some(found) => (found.route, found.matched_prefix),
            None => {
                proxy.metrics.reject(Direction::Outbound, "no_route");
                return synthetic(StatusCode::NOT_FOUND, "no route matches this request");
            }
        }
    };
    let log = proxy
        .access_log
        .as_ref()
        .map(|writer| (writer, RequestLog::capture(&request)));
    let tapped = crate::tap::Tapped::of(&proxy.taps, &request);
    let tracer = proxy.tracer.load_full();
    let traced = tracer.as_deref().and_then(|tracer| {
        let hop = tracer.begin(request.headers_mut())?;
        Some((hop, request.method().clone()))
    });
    let mut served = Served::default();
    let cors = route
        .filters()
        .cors
        .as_ref()
        .map_or(CorsCheck::Pass, |cors| cors.check(&request));
    let (request, verdict) = client_body::checked(request, proxy.options.limits.body_pace());
    let mut allowance = None;
    let mut response = match cors {
        CorsCheck::Preflight(answer) => answer,
        check => {
            if let CorsCheck::Allowed(allowed) = check {
                allowance = Some(allowed);
            }
            route_request(&proxy, route, prefix, request, &mut served, active).await
        }
    };
    if let Some(allowance) = allowance {
        allowance.mark(&mut response);
    }
    if let Some(fault) = ClientFault::behind(verdict.as_ref(), &response) {
        proxy.metrics.reject(Direction::Outbound, fault.reason());
        response = fault.response();
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    route.metrics.record(status, elapsed.as_secs_f64());
    let response = crate::grpc_outcome::watch(response, route.metrics.traffic());
    if let Some((writer, log)) = log {
        let exchange = Exchange {
            direction: "outbound",
            source: &proxy.local_label,
            destination: &service.backend.label,
            route: Some(&route.name),
            upstream: served.upstream.clone(),
            retries: served.retries,
            duration: elapsed,
            authz: None,
        };
        log.write(writer, exchange, &response);
    }
    if let (Some(tracer), Some((hop, method))) = (tracer.as_deref(), traced) {
        use crate::trace::{int, text};
        let mut attributes = vec![
            text("http.request.method", method.as_str()),
            text("server.address", &*service.backend.label),
            int("http.response.status_code", i64::from(status)),
            text("weft.route", &*route.name),
        ];
        if let Some(upstream) = &served.upstream {
            if let Some(ip) = upstream.ip() {
                attributes.push(text("network.peer.address", ip.ip().to_string()));
            }
            attributes.push(int("network.peer.port", i64::from(upstream.port())));
        }
        tracer.end(hop, true, attributes, method.to_string(), status);
    }
    if let Some(tapped) = tapped {
        proxy.taps.offer(&crate::tap::Exchange {
            inbound: false,
            source: &proxy.local_label,
            destination: &service.backend.label,
            method: tapped.method.as_str(),
            path: &tapped.path,
            status,
            latency_micros: crate::tap::micros(elapsed),
            route: &route.name,
            authz: None,
            upstream: served.upstream.clone(),
        });
    }
    response
}

async fn route_request(
    proxy: &Arc<Proxy>,
    route: &Route,
    prefix: Option<&str>,
    mut request: Request<Body>,
    served: &mut Served,
    active: Active,
) -> Response<Body> {
    let filters = route.filters();
    if let Some(redirect) = &filters.redirect {
        return redirect_response(&request, redirect, prefix);
    }
    if let Some(edits) = &filters.request_headers {
        edits.apply(request.headers_mut());
    }
    if let Some(rewrite) = &filters.rewrite {
        apply_rewrite(&mut request, rewrite, prefix);
    }
    let (backend, chosen) = match route.pick_backend() {
        Ok(picked) => picked,
        Err(NoBackend::NoWeight) => {
            return synthetic(
                StatusCode::INTERNAL_SERVER_ERROR,
                "route has no usable backend",
            )
        }
        Err(NoBackend::Missing) => {
            return synthetic(
                StatusCode::INTERNAL_SERVER_ERROR,
                "route backend names a service that does not exist",
            )
        }
    };
    if let Some(fault) = &backend.fault {
        if let Some(abort) = &fault.abort {
            if fastrand::f64() * 100.0 < abort.percent {
                let status =
                    StatusCode::from_u16(abort.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                return synthetic(status, "fault injected");
            }
        }
        if let Some(delay) = &fault.delay {
            if fastrand::f64() * 100.0 < delay.percent {
                tokio::time::sleep(Duration::from_millis(delay.delay_ms)).await;
            }
        }
    }
    if let Some(edits) = &chosen.request_headers {
        edits.apply(request.headers_mut());
    }
    let permit = match backend.connections.limits.start_request() {
        Ok(permit) => permit,
        Err(limit) => return overloaded(proxy, limit),
    };
    if is_upgrade(&request) {
        let hold = upgrade::Hold::new(active, Some(permit));
        // Boxed, as is mirroring: rare, and larger than the common path's future.
        return Box::pin(upgrade::forward(proxy, backend, request, served, hold)).await;
    }
    let _permit = permit;
    if !filters.mirrors.is_empty() {
        request = Box::pin(mirror::send_copies(proxy, &filters.mirrors, request)).await;
    }
    if route.retry.is_some() {
        request = request.map(|body| match body {
            Body::Client(client) => Body::Replay(ReplayBody::new(client, REPLAY_LIMIT)),
            other => other,
        });
    }
    // Made where it is awaited, as in `send_with_retries`.
    let mut response = match route.timeouts.request_ms {
        Some(ms) => {
            let limit = Duration::from_millis(ms);
            match tokio::time::timeout(
                limit,
                send_with_retries(proxy, route, backend, request, served),
            )
            .await
            {
                Ok(response) => response,
                Err(_) => synthetic(StatusCode::GATEWAY_TIMEOUT, "request timeout"),
            }
        }
        None => send_with_retries(proxy, route, backend, request, served).await,
    };
    for edits in [&chosen.response_headers, &filters.response_headers]
        .into_iter()
        .flatten()
    {
        edits.apply(response.headers_mut());
    }
    response
}

fn overloaded(proxy: &Proxy, limit: LimitExceeded) -> Response<Body> {
    proxy.metrics.reject(Direction::Outbound, limit.reason());
    let mut response = synthetic(StatusCode::SERVICE_UNAVAILABLE, "circuit breaker open");
    response
        .headers_mut()
        .insert(OVERLOADED_HEADER, HeaderValue::from_static(limit.as_str()));
    response
}

/// The request with a copy of its body, if the body can be copied (it is buffered).
pub fn copy_request(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    Some(crate::http::copy_with_body(request, body))
}

/// HTTP/2 where the service or the request speaks it (gRPC, HTTP/2; an HTTP/2 request to
/// a Weft peer stays multiplexed); HTTP/1.1 otherwise, to a Weft peer too, over mutual TLS
/// on pooled keep-alive connections. Framing HTTP/1 requests as HTTP/2 between the two
/// proxies cost the pair about 40 µs of CPU per request, a sixth of the whole, at 1000 RPS
/// (`bench/capture.sh`), for multiplexing that keep-alive pools do without (Istio's
/// sidecars also keep HTTP/1.1 as it came by default).
pub fn http_mode<B>(protocol: Protocol, meshed: bool, request: &Request<B>) -> HttpMode {
    match protocol {
        Protocol::Http2 | Protocol::Grpc => HttpMode::Http2,
        _ if meshed && request.version() == http::Version::HTTP_2 => HttpMode::Http2,
        Protocol::Auto if is_grpc(request) => HttpMode::Http2,
        Protocol::Http | Protocol::Tcp | Protocol::Auto => HttpMode::Http1,
    }
}

pub fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

async fn send_with_retries(
    proxy: &Arc<Proxy>,
    route: &Route,
    backend: &Arc<Backend>,
    mut request: Request<Body>,
    served: &mut Served,
) -> Response<Body> {
    if let Some(budget) = &backend.retry_budget {
        budget.record_request();
    }
    let policy = route.retry.as_ref();
    let per_try = route.timeouts.backend_request_ms.map(Duration::from_millis);
    let mut retries_done = 0;
    loop {
        let Some(endpoint) = backend.balancer.pick(Some(request.headers())) else {
            return synthetic(StatusCode::SERVICE_UNAVAILABLE, "no endpoints available");
        };
        let may_retry = policy.is_some_and(|p| retries_done < p.attempts);
        let spare = if may_retry {
            copy_request(&request)
        } else {
            None
        };
        let mode = http_mode(backend.protocol, endpoint.identity.is_some(), &request);
        prepare_upstream(&mut request, mode);
        served.upstream = Some(endpoint.address.clone());
        let in_flight = endpoint.start();
        // The send is made where it is awaited, never held in a local first: a local
        // would take its room in this future as well as the room it is awaited in.
        let pool = &endpoint.pool;
        let mut result = match per_try {
            Some(limit) => {
                match tokio::time::timeout(limit, pool.send(mode, request, &backend.connections))
                    .await
                {
                    Ok(result) => result.map_err(TryError::Upstream),
                    Err(_) => Err(TryError::Timeout),
                }
            }
            None => pool
                .send(mode, request, &backend.connections)
                .await
                .map_err(TryError::Upstream),
        };
        if let Ok(response) = &mut result {
            if response.headers_mut().remove(DRAINING_HEADER).is_some() {
                endpoint.leave_rotation(DRAINING_AVOIDANCE);
            }
        }
        let outcome = match &result {
            Ok(response) if response.status().is_server_error() => Outcome::ServerError,
            Ok(_) => Outcome::Success,
            Err(TryError::Upstream(e)) if e.is_connect_failure() => Outcome::ConnectFailure,
            Err(TryError::Upstream(UpstreamError::Overloaded(_))) => Outcome::Success,
            Err(_) => Outcome::ServerError,
        };
        match outcome {
            Outcome::Success | Outcome::ServerError if result.is_ok() => in_flight.answered(),
            // A failed try counts as a very slow answer, so P2C steers away from an
            // endpoint that refuses or resets connections even without outlier detection.
            _ => in_flight.failed(backend.connections.connect_timeout),
        }
        backend.record_outcome(proxy, &endpoint, outcome);
        let retry = match (policy, spare) {
            (Some(policy), Some(spare))
                if spare.body().is_replayable() && is_retryable(policy, &result) =>
            {
                let allowed = backend
                    .retry_budget
                    .as_ref()
                    .is_none_or(|b| b.try_withdraw());
                allowed.then_some((policy, spare))
            }
            _ => None,
        };
        match retry {
            Some((policy, spare)) => {
                retries_done += 1;
                served.retries = retries_done;
                route.retries.inc();
                route.metrics.traffic().retried();
                tokio::time::sleep(backoff(policy, retries_done)).await;
                request = spare;
            }
            None => return into_response(proxy, result),
        }
    }
}

enum TryError {
    Upstream(UpstreamError),
    Timeout,
}

fn is_retryable(policy: &RetryPolicy, result: &Result<Response<Body>, TryError>) -> bool {
    let on = |condition| policy.on.contains(&condition);
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            (on(RetryOn::ServerError) && status >= 500)
                || (on(RetryOn::GatewayError) && matches!(status, 502..=504))
                || policy.status_codes.contains(&status)
                || grpc_status(response.headers())
                    .is_some_and(|code| policy.grpc_codes.contains(&code))
        }
        Err(TryError::Timeout) => on(RetryOn::GatewayError) || on(RetryOn::ServerError),
        Err(TryError::Upstream(UpstreamError::Overloaded(_))) => false,
        Err(TryError::Upstream(e)) if e.is_connect_failure() => {
            on(RetryOn::ConnectFailure) || on(RetryOn::ServerError) || on(RetryOn::GatewayError)
        }
        Err(TryError::Upstream(_)) => on(RetryOn::Reset) || on(RetryOn::ServerError),
    }
}

/// Exponential backoff with full jitter, so synchronized clients spread out.
fn backoff(policy: &RetryPolicy, retry: u32) -> Duration {
    let exp = policy
        .backoff_base_ms
        .saturating_mul(1u64 << retry.saturating_sub(1).min(20));
    let capped = exp.min(policy.backoff_max_ms.max(policy.backoff_base_ms));
    Duration::from_millis(fastrand::u64(0..=capped))
}

fn into_response(proxy: &Proxy, result: Result<Response<Body>, TryError>) -> Response<Body> {
    match result {
        Ok(mut response) => {
            strip_hop_by_hop(response.headers_mut());
            response
        }
        Err(TryError::Timeout) => {
            synthetic(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
        }
        Err(TryError::Upstream(UpstreamError::Overloaded(limit))) => overloaded(proxy, limit),
        Err(TryError::Upstream(error)) => {
            tracing::debug!(%error, "upstream request failed");
            synthetic(error.status(), &error.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_keeps_its_version_to_a_peer_and_grpc_is_multiplexed() {
        let request = |version, content_type: &str| {
            Request::builder()
                .version(version)
                .header(http::header::CONTENT_TYPE, content_type)
                .body(())
                .unwrap()
        };
        let h1 = request(http::Version::HTTP_11, "text/plain");
        let h2 = request(http::Version::HTTP_2, "text/plain");
        let grpc = request(http::Version::HTTP_2, "application/grpc");
        for meshed in [true, false] {
            assert_eq!(http_mode(Protocol::Http, meshed, &h1), HttpMode::Http1);
            assert_eq!(http_mode(Protocol::Auto, meshed, &h1), HttpMode::Http1);
            assert_eq!(http_mode(Protocol::Grpc, meshed, &h1), HttpMode::Http2);
            assert_eq!(http_mode(Protocol::Http2, meshed, &h1), HttpMode::Http2);
            assert_eq!(http_mode(Protocol::Auto, meshed, &grpc), HttpMode::Http2);
        }
        // An HTTP/2 request stays multiplexed to a peer; a plain HTTP/1.1 server gets 1.1.
        assert_eq!(http_mode(Protocol::Http, true, &h2), HttpMode::Http2);
        assert_eq!(http_mode(Protocol::Http, false, &h2), HttpMode::Http1);
    }

    #[test]
    fn backoff_stays_within_the_cap() {
        let policy = RetryPolicy {
            attempts: 10,
            on: vec![],
            status_codes: vec![],
            grpc_codes: vec![],
            backoff_base_ms: 25,
            backoff_max_ms: 250,
        };
        for retry in 1..40 {
            assert!(backoff(&policy, retry) <= Duration::from_millis(250));
        }
    }
}
