//! Opaque TCP: bytes copied both ways, counted, and logged once when the connection closes.

use crate::access_log::{self, Entry};
use crate::balance::Outcome;
use crate::io::{tune, BoxIo};
use crate::metrics::Direction;
use crate::proxy::Proxy;
use crate::splice::splice;
use crate::state::Backend;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;

/// Outbound: from the local app to an endpoint of `backend`.
pub async fn forward_outbound(proxy: Arc<Proxy>, backend: Arc<Backend>, mut downstream: BoxIo) {
    let started = Instant::now();
    let Some(endpoint) = backend.balancer.pick(None) else {
        proxy.metrics.reject(Direction::Outbound, "no_endpoints");
        return;
    };
    let upstream = endpoint
        .pool
        .connect_tcp(backend.connections.connect_timeout)
        .await;
    let outcome = if upstream.is_ok() {
        Outcome::Success
    } else {
        Outcome::ConnectFailure
    };
    backend.record_outcome(&proxy, &endpoint, outcome);
    let mut upstream = match upstream {
        Ok(upstream) => upstream,
        Err(error) => {
            endpoint.start().failed(backend.connections.connect_timeout);
            tracing::info!(%error, service = %backend.label, "TCP connection to endpoint failed");
            proxy.metrics.reject(Direction::Outbound, "connect_failed");
            return;
        }
    };
    let source = proxy.local_label.clone();
    copy(
        &proxy,
        Direction::Outbound,
        source,
        backend.label.clone(),
        &mut downstream,
        &mut upstream,
        started,
        Some(endpoint.address),
    )
    .await;
}

/// Inbound: from a peer (or a plain client) to the local app.
pub async fn forward_inbound(proxy: Arc<Proxy>, source: Arc<str>, mut downstream: BoxIo) {
    let started = Instant::now();
    let app = proxy.options.app;
    let mut upstream = match tokio::time::timeout(
        proxy.app_connections.connect_timeout,
        TcpStream::connect(app),
    )
    .await
    {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(%error, %app, "connecting to the local app failed");
            proxy.metrics.reject(Direction::Inbound, "app_unreachable");
            return;
        }
        Err(_) => {
            proxy.metrics.reject(Direction::Inbound, "app_unreachable");
            return;
        }
    };
    tune(&upstream);
    let destination = proxy.local_label.clone();
    copy(
        &proxy,
        Direction::Inbound,
        source,
        destination,
        &mut downstream,
        &mut upstream,
        started,
        Some(app),
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn copy<U>(
    proxy: &Proxy,
    direction: Direction,
    source: Arc<str>,
    destination: Arc<str>,
    downstream: &mut BoxIo,
    upstream: &mut U,
    started: Instant,
    endpoint: Option<std::net::SocketAddr>,
) where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let metrics = proxy
        .metrics
        .tcp_metrics(direction, source.clone(), destination.clone());
    metrics.open.inc();
    let spliced = splice(downstream, upstream, proxy.options.limits.tcp_idle_timeout).await;
    metrics.open.dec();
    let (read, written) = (spliced.from_first, spliced.from_second);
    let error = spliced.ended.err().map(|e| e.to_string());
    metrics.read.inc_by(read);
    metrics.written.inc_by(written);
    if let Some(log) = &proxy.access_log {
        log.write(&Entry {
            time: access_log::now_rfc3339(),
            direction: direction.as_str(),
            source: &source,
            destination: &destination,
            route: None,
            method: None,
            path: None,
            status: None,
            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
            upstream: endpoint,
            retries: 0,
            trace_id: None,
            authz_decision: "allow",
            authz_rule: "default",
            bytes_in: Some(read),
            bytes_out: Some(written),
            error: error.as_deref(),
        });
    }
}
