//! HTTP/1.1 upgrades (WebSocket) and CONNECT: the request goes upstream on a connection of
//! its own; once the upstream agrees to switch, the two upgraded streams are joined.

use crate::body::Body;
use crate::http::{prepare_upgrade, synthetic};
use crate::outbound::Served;
use crate::proxy::Proxy;

use crate::state::Backend;
use crate::upstream::{ConnectionPolicy, EndpointPool};
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;

/// Outbound: to an endpoint of `backend`.
pub async fn forward(
    _proxy: &Arc<Proxy>,
    backend: &Arc<Backend>,
    request: Request<Body>,
    served: &mut Served,
) -> Response<Body> {
    let Some(endpoint) = backend.balancer.pick(Some(request.headers())) else {
        return synthetic(StatusCode::SERVICE_UNAVAILABLE, "no endpoints available");
    };
    served.upstream = Some(endpoint.address);
    send(&endpoint.pool, request, &backend.connections).await
}

/// Sends the upgrade request through `pool` and, if the answer switches protocols, joins the
/// client's upgraded stream with the upstream's in a task of its own.
pub async fn send(
    pool: &EndpointPool,
    mut request: Request<Body>,
    policy: &ConnectionPolicy,
) -> Response<Body> {
    let is_connect = request.method() == Method::CONNECT;
    let downstream = hyper::upgrade::on(&mut request);
    prepare_upgrade(&mut request);
    let mut response = match pool.send_upgrade(request, policy).await {
        Ok(response) => response,
        Err(error) => {
            let status = if error.is_connect_failure() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            };
            return synthetic(status, &error.to_string());
        }
    };
    let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS
        || (is_connect && response.status().is_success());
    if switched {
        let upstream = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::join!(downstream, upstream) {
                (Ok(down), Ok(up)) => {
                    let _ = tokio::io::copy_bidirectional(
                        &mut TokioIo::new(down),
                        &mut TokioIo::new(up),
                    )
                    .await;
                }
                (Err(error), _) | (_, Err(error)) => {
                    tracing::debug!(%error, "upgrade did not complete")
                }
            }
        });
    }
    response.map(Body::from)
}
