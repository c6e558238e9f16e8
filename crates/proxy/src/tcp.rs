//! Opaque TCP: bytes copied both ways, counted, and logged once when the connection closes.

use crate::access_log::{self, Entry};
use crate::authorization::{self, Verdict};
use crate::balance::Outcome;
use crate::inbound::Caller;
use crate::io::{tune, BoxIo, Io};
use crate::metrics::Direction;
use crate::proxy::Proxy;
use crate::splice::splice;
use crate::state::Backend;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use weft_model::Address;

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
    let destination = (backend.label.clone(), endpoint.address.clone());
    copy_outbound(
        &proxy,
        destination,
        started,
        &mut downstream,
        &mut *upstream,
    )
    .await;
}

/// The `destination` label of traffic to addresses outside the mesh.
pub const EXTERNAL: &str = "external";

/// Outbound, captured, to an address no service has: passed through as plain TCP to where
/// the app was going, counted and logged as `destination="external"`.
pub async fn forward_external(proxy: Arc<Proxy>, destination: SocketAddr, mut downstream: BoxIo) {
    let started = Instant::now();
    let failed = (Direction::Outbound, "connect_failed", "an external address");
    let Some(mut upstream) = connect(&proxy, destination, failed).await else {
        return;
    };
    let destination = (Arc::from(EXTERNAL), destination.into());
    copy_outbound(&proxy, destination, started, &mut downstream, &mut upstream).await;
}

/// Copies an outbound connection both ways until it ends, then counts and logs it for
/// `destination` (its label, and the address it went to).
async fn copy_outbound(
    proxy: &Proxy,
    (label, address): (Arc<str>, Address),
    started: Instant,
    downstream: &mut BoxIo,
    upstream: &mut dyn Io,
) {
    let ends = Ends {
        direction: Direction::Outbound,
        source: proxy.local_label.clone(),
        destination: label,
        endpoint: Some(address),
        started,
    };
    copy(
        proxy,
        ends,
        downstream,
        upstream,
        None,
        std::future::pending(),
    )
    .await;
}

/// Inbound: from a peer (or a plain client) to the local app, if authorization allows the
/// caller a connection; closed when a config change stops allowing it.
pub async fn forward_inbound(proxy: Arc<Proxy>, caller: Arc<Caller>, mut downstream: BoxIo) {
    let started = Instant::now();
    let applied = proxy.config_applied.subscribe();
    let verdict = authorization::judge_connection(&proxy, &proxy.snapshot(), &caller);
    let ends = Ends {
        direction: Direction::Inbound,
        source: caller.source.clone(),
        destination: proxy.local_label.clone(),
        endpoint: Some(proxy.options.app.into()),
        started,
    };
    if !verdict.allowed {
        log(&proxy, &ends, (0, 0), Some("denied"), Some(&verdict));
        return;
    }
    let failed = (Direction::Inbound, "app_unreachable", "the local app");
    let Some(mut upstream) = connect(&proxy, proxy.options.app, failed).await else {
        return;
    };
    // Each config applied judges the connection again; one that no longer allows it
    // closes it.
    let revoked = authorization::until_revoked(&proxy, applied, |snapshot| {
        authorization::still_allowed(&proxy, snapshot, &caller)
    });
    copy(
        &proxy,
        ends,
        &mut downstream,
        &mut upstream,
        Some(&verdict),
        revoked,
    )
    .await;
}

/// A plain TCP connection to `address` within the connect timeout; on failure, counted as
/// `failed`'s direction and reason, and logged naming what `address` is.
async fn connect(
    proxy: &Proxy,
    address: SocketAddr,
    (direction, reason, what): (Direction, &'static str, &str),
) -> Option<TcpStream> {
    let timeout = proxy.app_connections.connect_timeout;
    let error = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Ok(Ok(stream)) => {
            tune(&stream);
            return Some(stream);
        }
        Ok(Err(error)) => error.to_string(),
        Err(_) => format!("no answer within {timeout:?}"),
    };
    tracing::warn!(%error, %address, "connecting to {what} failed");
    proxy.metrics.reject(direction, reason);
    None
}

/// Both ends of a proxied connection, as metrics and the access log name them.
struct Ends {
    direction: Direction,
    source: Arc<str>,
    destination: Arc<str>,
    endpoint: Option<Address>,
    started: Instant,
}

async fn copy<U>(
    proxy: &Proxy,
    ends: Ends,
    downstream: &mut BoxIo,
    upstream: &mut U,
    verdict: Option<&Verdict>,
    stop: impl Future<Output = &'static str>,
) where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + ?Sized,
{
    let metrics = proxy.metrics.tcp_metrics(
        ends.direction,
        ends.source.clone(),
        ends.destination.clone(),
    );
    metrics.open.inc();
    metrics.traffic.tcp_opened();
    let idle = proxy.options.limits.tcp_idle_timeout;
    let spliced = splice(downstream, upstream, idle, stop).await;
    metrics.open.dec();
    let (read, written) = (spliced.from_first, spliced.from_second);
    metrics.traffic.tcp_closed(read, written);
    let error = spliced.ended.err().map(|e| e.to_string());
    metrics.read.inc_by(read);
    metrics.written.inc_by(written);
    log(proxy, &ends, (read, written), error.as_deref(), verdict);
}

/// The connection's access-log line, written when it closes.
fn log(
    proxy: &Proxy,
    ends: &Ends,
    (read, written): (u64, u64),
    error: Option<&str>,
    verdict: Option<&Verdict>,
) {
    let Some(log) = &proxy.access_log else {
        return;
    };
    log.write(&Entry {
        time: access_log::now_rfc3339(),
        direction: ends.direction.as_str(),
        source: &ends.source,
        destination: &ends.destination,
        route: None,
        method: None,
        path: None,
        status: None,
        duration_ms: ends.started.elapsed().as_secs_f64() * 1000.0,
        upstream: ends.endpoint.clone(),
        retries: 0,
        trace_id: None,
        authz_decision: verdict.map(|v| v.decision),
        authz_policy: verdict.map(|v| &*v.policy),
        authz_rule: verdict.map(|v| v.rule),
        bytes_in: Some(read),
        bytes_out: Some(written),
        error,
    });
}
