//! The inbound path: who is calling on a new connection (mutual TLS and the peer's SPIFFE
//! identity, or plain text where allowed), and each request from the mesh to the local app.

use crate::access_log::{Exchange, RequestLog};
use crate::authorization;
use crate::body::Body;
use crate::client_body::{self, ClientFault};
use crate::connections::Active;
use crate::connections::Tracked;
use crate::detect::Detected;
use crate::http::{
    host_conflict, hosts_disagree, is_upgrade, prepare_upstream, strip_hop_by_hop, synthetic,
    DRAINING_HEADER,
};
use crate::io::{BoxIo, Rewind};
use crate::metrics::{Direction, RequestMetrics};
use crate::outbound::is_grpc;
use crate::proxy::Proxy;
use crate::upgrade;
use crate::upstream::HttpMode;
use crate::upstream::{ALPN_H2, ALPN_HTTP1};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use weft_identity::{peer_identity, SpiffeId};
use weft_model::authz;
use weft_model::config::Protocol;

/// Who is calling on this connection, resolved once per connection.
pub struct Caller {
    /// `service.namespace` from the peer's SPIFFE id, or `unknown` in plain text.
    pub source: Arc<str>,
    /// The SPIFFE id mutual TLS proved; `None` in plain text.
    pub identity: Option<PeerIdentity>,
    pub metrics: Arc<RequestMetrics>,
}

pub struct PeerIdentity {
    /// The whole id, as policies match it.
    uri: Box<str>,
    id: SpiffeId,
}

impl Caller {
    /// The SPIFFE id mutual TLS proved, or empty in plain text.
    pub fn identity_uri(&self) -> &str {
        self.identity.as_ref().map_or("", |peer| &peer.uri)
    }

    /// The caller as authorization judges it.
    pub fn authz(&self) -> authz::Caller<'_> {
        match &self.identity {
            Some(peer) => authz::Caller::Mesh {
                identity: &peer.uri,
                namespace: peer.id.namespace(),
                service: peer.id.service(),
            },
            None => authz::Caller::Unauthenticated,
        }
    }
}

/// A new inbound connection, once it is known who is calling.
pub struct Peer {
    pub detected: Detected,
    pub io: BoxIo,
    pub caller: Arc<Caller>,
    /// Forward as TCP without serving HTTP (the app's port is opaque).
    pub opaque: bool,
}

/// Who is calling on a new inbound connection whose first bytes were `prefix`: the peer
/// proxy's identity after mutual TLS (revocation applied to resumed sessions too), or
/// `unknown`/`plaintext` where plain text is allowed. `None` when the connection is refused
/// (counted) or is asked to close first.
pub async fn identify(
    proxy: &Proxy,
    stream: TcpStream,
    detected: Detected,
    prefix: Bytes,
    app_is_opaque: bool,
    tracked: &Tracked,
) -> Option<Peer> {
    let Some(acceptor) = proxy.tls_acceptor.clone() else {
        let caller = Arc::new(Caller {
            source: Arc::from("unknown"),
            identity: None,
            metrics: proxy.inbound_metrics(&Arc::from("unknown")),
        });
        let io: BoxIo = Box::new(Rewind::new(prefix, stream));
        return Some(Peer {
            detected,
            io,
            caller,
            opaque: app_is_opaque,
        });
    };
    if detected != Detected::Tls {
        // With an identity, plaintext is refused unless the mesh is in permissive mode
        // (migration), where it is served but labelled so it stands out in metrics.
        if proxy.snapshot().config.mtls_mode.is_strict() {
            proxy.metrics.reject(Direction::Inbound, "plaintext");
            return None;
        }
        let source: Arc<str> = Arc::from("plaintext");
        let caller = Arc::new(Caller {
            metrics: proxy.inbound_metrics(&source),
            identity: None,
            source,
        });
        let io: BoxIo = Box::new(Rewind::new(prefix, stream));
        return Some(Peer {
            detected,
            io,
            caller,
            opaque: app_is_opaque,
        });
    }
    // Boxed, like every stage past detection: a connection costs little until it is
    // doing something.
    let handshake = Box::pin(acceptor.accept(Rewind::new(prefix, stream)));
    let handshake = tokio::time::timeout(proxy.options.limits.header_read_timeout, handshake);
    let tls = match tokio::select! {
        done = handshake => done,
        _ = tracked.asked_to_close() => return None,
    } {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::debug!(%error, "inbound TLS handshake failed");
            proxy.metrics.reject(Direction::Inbound, "tls_handshake");
            return None;
        }
        Err(_) => {
            proxy
                .metrics
                .reject(Direction::Inbound, "tls_handshake_timeout");
            return None;
        }
    };
    let (_, session) = tls.get_ref();
    // A resumed session skipped the certificate checks: apply revocation now.
    if let Some(reason) = proxy.tls.as_ref().and_then(|id| id.refused_peer(session)) {
        tracing::debug!(%reason, "refused a resumed inbound session");
        proxy.metrics.reject(Direction::Inbound, "revoked_peer");
        return None;
    }
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let Some(id) = peer_identity(session) else {
        proxy.metrics.reject(Direction::Inbound, "no_peer_identity");
        return None;
    };
    let source: Arc<str> = Arc::from(format!("{}.{}", id.service(), id.namespace()));
    let caller = Arc::new(Caller {
        metrics: proxy.inbound_metrics(&source),
        identity: Some(PeerIdentity {
            uri: id.to_string().into(),
            id,
        }),
        source,
    });
    let io: BoxIo = Box::new(tls);
    let detected = match alpn.as_deref() {
        Some(ALPN_H2) => Detected::Http2,
        Some(ALPN_HTTP1) => Detected::Http1,
        _ => Detected::Opaque,
    };
    Some(Peer {
        detected,
        io,
        caller,
        opaque: false,
    })
}

pub async fn serve(
    proxy: Arc<Proxy>,
    caller: Arc<Caller>,
    mut request: Request<Incoming>,
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
    let tapped = crate::tap::Tapped::of(&proxy.taps, &request);
    let tracer = proxy.tracer.load_full();
    let traced = tracer.as_deref().and_then(|tracer| {
        let hop = tracer.begin(request.headers_mut())?;
        Some((
            hop,
            (request.method().clone(), request.uri().path().to_owned()),
        ))
    });
    // A tunnel has no next request to judge: it is judged again on each config applied
    // from now on.
    let applied = is_upgrade(&request).then(|| proxy.config_applied.subscribe());
    // Judged first: a caller that may not call must not use up the rate limit of those
    // that may. Upgrades are judged here too, before any tunnel exists.
    let verdict = authorization::judge_request(&proxy, &snapshot, &caller, &request);
    let limited = verdict.allowed
        && own
            .and_then(|s| s.backend.rate_limit.as_ref())
            .is_some_and(|limiter| !limiter.try_acquire());
    let response = if !verdict.allowed {
        caller.metrics.traffic().denied();
        verdict.denied_response(is_grpc(&request))
    } else if limited {
        proxy.metrics.reject(Direction::Inbound, "rate_limited");
        let mut response = synthetic(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
        response.headers_mut().insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
        response
    } else {
        let protocol = own.map_or(Protocol::Auto, |s| s.backend.protocol);
        let revoked = applied.map(|applied| revocation(&proxy, &caller, &request, applied));
        let (request, verdict) = client_body::checked(request, proxy.options.limits.body_pace());
        let response = forward_to_app(&proxy, protocol, request, active, revoked).await;
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
    let response = crate::grpc_outcome::watch(response, caller.metrics.traffic());
    if let Some((writer, log)) = log {
        let exchange = Exchange {
            direction: "inbound",
            source: &caller.source,
            destination: &proxy.local_label,
            route: None,
            upstream: Some(proxy.options.app.into()),
            retries: 0,
            duration: elapsed,
            authz: Some(&verdict),
        };
        log.write(writer, exchange, &response);
    }
    if let (Some(tracer), Some((hop, (method, path)))) = (tracer.as_deref(), traced) {
        use crate::trace::{int, text};
        let attributes = vec![
            text("http.request.method", method.as_str()),
            text("url.path", path),
            text("url.scheme", "http"),
            int("http.response.status_code", i64::from(status)),
            text("weft.source", &*caller.source),
            text("weft.authz.decision", verdict.decision),
            text("weft.authz.policy", &*verdict.policy),
        ];
        tracer.end(hop, false, attributes, method.to_string(), status);
    }
    if let Some(tapped) = tapped {
        let source = match caller.identity_uri() {
            "" => &*caller.source,
            identity => identity,
        };
        proxy.taps.offer(&crate::tap::Exchange {
            inbound: true,
            source,
            destination: &proxy.local_label,
            method: tapped.method.as_str(),
            path: &tapped.path,
            status,
            latency_micros: crate::tap::micros(elapsed),
            route: "",
            authz: Some((verdict.decision, &verdict.policy)),
            upstream: Some(proxy.options.app.into()),
        });
    }
    response
}

/// What closes the tunnel `request` opens when a config applied after `applied` was
/// subscribed no longer allows it: the request is kept (method, URI, headers) to be judged
/// again.
fn revocation<B>(
    proxy: &Arc<Proxy>,
    caller: &Arc<Caller>,
    request: &Request<B>,
    applied: tokio::sync::watch::Receiver<u64>,
) -> upgrade::Stop {
    let mut judged = Request::new(());
    *judged.method_mut() = request.method().clone();
    *judged.uri_mut() = request.uri().clone();
    *judged.headers_mut() = request.headers().clone();
    let (proxy, caller) = (proxy.clone(), caller.clone());
    Box::pin(async move {
        authorization::until_revoked(&proxy, applied, |snapshot| {
            authorization::request_still_allowed(&proxy, snapshot, &caller, &judged)
        })
        .await
    })
}

async fn forward_to_app(
    proxy: &Proxy,
    protocol: Protocol,
    mut request: Request<Body>,
    active: Active,
    revoked: Option<upgrade::Stop>,
) -> Response<Body> {
    if is_upgrade(&request) {
        let hold = upgrade::Hold::new(active, None);
        let idle = proxy.options.limits.tcp_idle_timeout;
        let stop = revoked.unwrap_or_else(|| Box::pin(std::future::pending()));
        // Boxed: rare, and larger than the common path's future.
        return Box::pin(upgrade::send(
            &proxy.app,
            request,
            &proxy.app_connections,
            hold,
            idle,
            stop,
        ))
        .await;
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
