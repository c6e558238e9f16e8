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
use crate::http::{
    authority, host_conflict, hosts_disagree, is_upgrade, prepare_upstream, strip_hop_by_hop,
    synthetic, DRAINING_HEADER, OVERLOADED_HEADER,
};
use crate::metrics::Direction;
use crate::proxy::Proxy;
use crate::replay::ReplayBody;
use crate::resilience::LimitExceeded;
use crate::routes::{self, NoBackend, Route};
use crate::state::{Backend, ServiceRoutes};
use crate::upgrade;
use crate::upstream::{HttpMode, UpstreamError};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_model::config::{PathModifier, Protocol, Redirect, RetryOn, RetryPolicy, Rewrite};

/// Bodies up to this size are kept so a request can be retried or mirrored.
const REPLAY_LIMIT: usize = 64 * 1024;
/// Mirror copies in flight at once, per proxy; more are dropped and counted, so a slow or
/// dead mirror target can never pile up tasks, buffers and connections.
pub const MIRRORS_IN_FLIGHT: usize = 256;
/// An endpoint that said it is draining is not chosen for this long (by then the control
/// plane has taken it out of the config, or it has gone).
const DRAINING_AVOIDANCE: Duration = Duration::from_secs(30);
/// A mirror copy not answered in this time is abandoned and counted.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(5);

/// What the access log wants to know about how a request was served.
#[derive(Default)]
pub struct Served {
    pub upstream: Option<SocketAddr>,
    pub retries: u32,
}

/// Serves one request from the local app. `bound` is set for an upstream binding's listener.
pub async fn serve(
    proxy: Arc<Proxy>,
    bound: Option<Arc<ServiceRoutes>>,
    request: Request<Incoming>,
    active: Active,
) -> Response<Body> {
    let started = Instant::now();
    if hosts_disagree(&request) {
        return host_conflict(&proxy, Direction::Outbound);
    }
    let snapshot = proxy.snapshot();
    let service = match bound {
        Some(service) => Some(service),
        None => authority(&request)
            .and_then(|a| snapshot.by_host(a))
            .cloned(),
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
    if let Some((writer, log)) = log {
        let exchange = Exchange {
            direction: "outbound",
            source: &proxy.local_label,
            destination: &service.backend.label,
            route: Some(&route.name),
            upstream: served.upstream,
            retries: served.retries,
            duration: elapsed,
        };
        log.write(writer, exchange, &response);
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
        return upgrade::forward(proxy, backend, request, served, hold).await;
    }
    let _permit = permit;
    if !filters.mirrors.is_empty() {
        // Mirrors get their own copy of a small body, taken before the body becomes
        // replayable: a mirror must never read from the stream the real request is using.
        request = buffer_if_small(request).await;
        for (mirror, percent) in &filters.mirrors {
            if fastrand::f64() * 100.0 < *percent {
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
        }
    }
    if route.retry.is_some() {
        request = request.map(|body| match body {
            Body::Client(client) => Body::Replay(ReplayBody::new(client, REPLAY_LIMIT)),
            other => other,
        });
    }
    let attempts = send_with_retries(proxy, route, backend, request, served);
    let mut response = match route.timeouts.request_ms {
        Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), attempts).await {
            Ok(response) => response,
            Err(_) => synthetic(StatusCode::GATEWAY_TIMEOUT, "request timeout"),
        },
        None => attempts.await,
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

fn copy_request(request: &Request<Body>) -> Option<Request<Body>> {
    let body = request.body().try_clone()?;
    let mut copy = Request::new(body);
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.version_mut() = request.version();
    *copy.headers_mut() = request.headers().clone();
    Some(copy)
}

async fn send_mirror(backend: Arc<Backend>, mut request: Request<Body>) {
    let Some(endpoint) = backend.balancer.pick(Some(request.headers())) else {
        return;
    };
    let mode = http_mode(&backend, endpoint.identity.is_some(), &request);
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

/// HTTP/2 to Weft peers; to plain endpoints, what the service's protocol says.
pub fn http_mode<B>(backend: &Backend, meshed: bool, request: &Request<B>) -> HttpMode {
    if meshed {
        return HttpMode::Http2;
    }
    match backend.protocol {
        Protocol::Http2 | Protocol::Grpc => HttpMode::Http2,
        Protocol::Http | Protocol::Tcp => HttpMode::Http1,
        Protocol::Auto if is_grpc(request) => HttpMode::Http2,
        Protocol::Auto => HttpMode::Http1,
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
        let mode = http_mode(backend, endpoint.identity.is_some(), &request);
        prepare_upstream(&mut request, mode);
        served.upstream = Some(endpoint.address);
        let in_flight = endpoint.start();
        let send = endpoint.pool.send(mode, request, &backend.connections);
        let mut result = match per_try {
            Some(limit) => match tokio::time::timeout(limit, send).await {
                Ok(result) => result.map_err(TryError::Upstream),
                Err(_) => Err(TryError::Timeout),
            },
            None => send.await.map_err(TryError::Upstream),
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
                || grpc_status(response).is_some_and(|code| policy.grpc_codes.contains(&code))
        }
        Err(TryError::Timeout) => on(RetryOn::GatewayError) || on(RetryOn::ServerError),
        Err(TryError::Upstream(UpstreamError::Overloaded(_))) => false,
        Err(TryError::Upstream(e)) if e.is_connect_failure() => {
            on(RetryOn::ConnectFailure) || on(RetryOn::ServerError) || on(RetryOn::GatewayError)
        }
        Err(TryError::Upstream(_)) => on(RetryOn::Reset) || on(RetryOn::ServerError),
    }
}

/// gRPC errors that fail at once come as "trailers-only" responses: status in the headers.
fn grpc_status<B>(response: &Response<B>) -> Option<u32> {
    response
        .headers()
        .get("grpc-status")?
        .to_str()
        .ok()?
        .parse()
        .ok()
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

fn apply_rewrite(request: &mut Request<Body>, rewrite: &Rewrite, prefix: Option<&str>) {
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

fn redirect_response<B>(
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
