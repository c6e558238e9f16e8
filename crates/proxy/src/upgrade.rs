//! HTTP/1.1 upgrades (WebSocket) and CONNECT: the request goes upstream on a connection of
//! its own; once the upstream agrees to switch, the two upgraded streams are joined.
//!
//! A tunnel is held to every limit a request is: it keeps its place among the listener's
//! connections (so the cap counts it and a graceful stop waits for it), its circuit-breaker
//! permits (requests in flight, the upstream connection) for its whole life, and it ends
//! after `--tcp-idle-timeout` without a byte either way. An inbound tunnel is also closed
//! when a config applied later no longer allows the request that opened it.

use crate::body::Body;
use crate::connections::Active;
use crate::http::{prepare_upgrade, synthetic};
use crate::outbound::Served;
use crate::proxy::Proxy;
use crate::resilience::RequestPermit;
use crate::splice::splice;
use crate::state::Backend;
use crate::upstream::{ConnectionPolicy, EndpointPool};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// Resolves, with the reason, when the tunnel must close before either end closes it.
pub type Stop = Pin<Box<dyn Future<Output = &'static str> + Send>>;

/// What a tunnel holds until it ends: its place among the connections of the listener the
/// client came in on, and (outbound) the circuit breaker's request slot.
pub struct Hold {
    _connection: Active,
    _request: Option<RequestPermit>,
}

impl Hold {
    pub fn new(connection: Active, request: Option<RequestPermit>) -> Self {
        Self {
            _connection: connection,
            _request: request,
        }
    }
}

/// Outbound: to an endpoint of `backend`.
pub async fn forward(
    proxy: &Arc<Proxy>,
    backend: &Arc<Backend>,
    request: Request<Body>,
    served: &mut Served,
    hold: Hold,
) -> Response<Body> {
    let Some(endpoint) = backend.balancer.pick(Some(request.headers())) else {
        return synthetic(StatusCode::SERVICE_UNAVAILABLE, "no endpoints available");
    };
    served.upstream = Some(endpoint.address.clone());
    let idle = proxy.options.limits.tcp_idle_timeout;
    let never = Box::pin(std::future::pending());
    send(
        &endpoint.pool,
        request,
        &backend.connections,
        hold,
        idle,
        never,
    )
    .await
}

/// Sends the upgrade request through `pool` and, if the answer switches protocols, joins the
/// client's upgraded stream with the upstream's in a task of its own.
pub async fn send(
    pool: &EndpointPool,
    mut request: Request<Body>,
    policy: &ConnectionPolicy,
    hold: Hold,
    idle: Duration,
    stop: Stop,
) -> Response<Body> {
    let is_connect = request.method() == Method::CONNECT;
    let downstream = hyper::upgrade::on(&mut request);
    prepare_upgrade(&mut request);
    let (mut response, upstream_permit) = match pool.send_upgrade(request, policy).await {
        Ok(sent) => sent,
        Err(error) => return synthetic(error.status(), &error.to_string()),
    };
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (is_connect && response.status().is_success());
    if switched {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            let _held = (hold, upstream_permit);
            match tokio::join!(downstream, upstream) {
                (Ok(down), Ok(up)) => {
                    let spliced =
                        splice(&mut TokioIo::new(down), &mut TokioIo::new(up), idle, stop).await;
                    if let Err(error) = spliced.ended {
                        tracing::debug!(%error, "tunnel ended");
                    }
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "upgrade did not complete")
                }
            }
        });
    }
    response.map(Body::from)
}
