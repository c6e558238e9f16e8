//! Accepting connections and deciding how to serve each one.
//!
//! Every listener caps its open connections (making room by closing idle ones, see
//! `connections.rs`), sniffs the protocol, and serves HTTP with the limits that protect it
//! from hostile clients (header size and count, header read timeout, idle timeout). Every
//! refusal is counted in `weft_rejected_total`.

use crate::body::ServedBody;
use crate::capture;
use crate::connections::{AtCapacity, HeardStream, Tracked, Tracker};
use crate::detect::{detect, Detected};
use crate::drain::Drain;
use crate::inbound::{self, Caller};
use crate::io::{tune, BoxIo, Rewind};
use crate::metrics::Direction;
use crate::options::ServerLimits;
use crate::outbound;
use crate::proxy::Proxy;
use crate::state::service_key;
use crate::tcp;
use crate::upstream::{CONNECTION_WINDOW, STREAM_WINDOW};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use weft_model::config::{OutboundTrafficPolicy, Protocol};

/// Which side of the proxy a listener is.
#[derive(Clone)]
pub enum Role {
    Inbound,
    Outbound,
    /// An upstream binding: everything accepted goes to one service.
    Bound {
        service: String,
        namespace: String,
    },
}

pub async fn accept_loop(proxy: Arc<Proxy>, listener: TcpListener, role: Role, mut drain: Drain) {
    let tracker = Tracker::new(proxy.options.limits.max_connections);
    let direction = match role {
        Role::Inbound => Direction::Inbound,
        _ => Direction::Outbound,
    };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = drain.signaled() => return,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(tracked) = admit(&tracker, &drain).await else {
            proxy.metrics.reject(direction, "max_connections");
            drop(stream);
            continue;
        };
        if tracked.1 {
            proxy.metrics.reject(direction, "idle_closed_at_capacity");
        }
        let tracked = tracked.0;
        tune(&stream);
        let task = Connection {
            proxy: proxy.clone(),
            drain: drain.clone(),
            tracked,
        };
        let role = role.clone();
        tokio::spawn(async move {
            match role {
                Role::Inbound => task.inbound(stream).await,
                Role::Outbound => task.outbound(stream, None).await,
                Role::Bound { service, namespace } => {
                    task.outbound(stream, Some(service_key(&service, &namespace)))
                        .await
                }
            }
        });
    }
}

/// A place for a new connection, if there is one or an idle connection can make one.
/// Connections already asked to close go away as soon as their tasks run: in a burst, the
/// accept loop lets them run before it gives up on a newcomer.
async fn admit(tracker: &Arc<Tracker>, drain: &Drain) -> Option<(Arc<Tracked>, bool)> {
    for _ in 0..3 {
        match tracker.admit(drain.clone()) {
            Ok(admitted) => return Some(admitted),
            Err(AtCapacity::Busy) => return None,
            Err(AtCapacity::Closing) => tokio::task::yield_now().await,
        }
    }
    None
}

struct Connection {
    proxy: Arc<Proxy>,
    drain: Drain,
    /// Its place among the listener's connections, held until the connection (and any
    /// tunnel made from it) ends.
    tracked: Arc<Tracked>,
}

/// Why a connection is closed for idleness.
enum Idle {
    /// No request in flight for `--idle-timeout`.
    Quiet,
    /// No request began within `--header-read-timeout` of the start (an HTTP/2 client
    /// trickling its first HEADERS, or sending nothing after the preface), or an HTTP/1.1
    /// request head was not whole within it of its first byte (slowloris).
    HeadTimedOut,
}

impl Connection {
    async fn outbound(self, mut stream: TcpStream, bound: Option<String>) {
        let proxy = self.proxy.clone();
        let mut bound_service = bound
            .as_ref()
            .and_then(|key| proxy.snapshot().by_key(&proxy, key));
        if bound.is_some() && bound_service.is_none() {
            tracing::warn!(
                service = bound.as_deref().unwrap_or(""),
                "upstream binding names a service that is not in the configuration"
            );
            proxy.metrics.reject(Direction::Outbound, "unknown_service");
            return;
        }
        // A connection redirected here by capture rules goes to the service at the address
        // the app called, as if it came to that service's binding. Without capture the
        // lookup (two system calls a connection) is not made at all.
        let captured = match (&bound, &proxy.options.capture, proxy.ebpf.get()) {
            // What eBPF does not take (IPv6, processes outside its cgroup) the rules do.
            (None, Some(_), Some(ebpf)) => ebpf
                .original_destination(&stream)
                .or_else(|| capture::original_destination(&stream)),
            (None, Some(_), None) => capture::original_destination(&stream),
            _ => None,
        };
        if let Some(destination) = captured {
            bound_service = proxy.snapshot().by_destination(&proxy, destination);
            if bound_service.is_none() {
                if proxy.snapshot().config.outbound_traffic_policy
                    == OutboundTrafficPolicy::RegistryOnly
                {
                    tracing::info!(%destination, "refused a connection to an address outside the mesh (outboundTrafficPolicy: registry-only)");
                    proxy.metrics.reject(Direction::Outbound, "registry_only");
                    return;
                }
                let _active = self.tracked.begin();
                Box::pin(tcp::forward_external(proxy, destination, Box::new(stream))).await;
                return;
            }
        }
        let port = match captured {
            Some(destination) => Some(destination.port()),
            None => stream.local_addr().ok().map(|a| a.port()),
        };
        // A bound port is never sniffed when its service is TCP or its port is listed in
        // --opaque-ports (server-speaks-first protocols would otherwise wait out detection).
        let opaque = bound_service.as_ref().is_some_and(|s| {
            s.backend.protocol == Protocol::Tcp
                || port.is_some_and(|port| proxy.options.opaque_ports.contains(&port))
        });
        let (detected, prefix) = if opaque {
            (Detected::Opaque, bytes::Bytes::new())
        } else {
            match self.detect(&mut stream).await {
                Some(found) => found,
                None => return,
            }
        };
        let io: BoxIo = Box::new(Rewind::new(prefix, stream));
        match (detected, bound_service) {
            (Detected::Http1 | Detected::Http2, bound) => {
                let tracked = self.tracked.clone();
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let active = tracked.begin();
                    let answering = active.also();
                    let (proxy, bound) = (proxy.clone(), bound.clone());
                    async move {
                        let served = outbound::serve(proxy, bound, req, active).await;
                        Ok::<_, Infallible>(served.map(|b| ServedBody::new(b, answering)))
                    }
                });
                Box::pin(self.serve_http(detected, io, svc, Direction::Outbound)).await;
            }
            (_, Some(service)) => {
                let _active = self.tracked.begin();
                Box::pin(tcp::forward_outbound(proxy, service.backend.clone(), io)).await
            }
            (_, None) => {
                // Without a Host header there is no way to know where this was going.
                proxy.metrics.reject(Direction::Outbound, "not_http");
            }
        }
    }

    async fn inbound(self, mut stream: TcpStream) {
        let proxy = self.proxy.clone();
        let app_is_opaque = {
            let snapshot = proxy.snapshot();
            proxy
                .options
                .opaque_ports
                .contains(&proxy.options.app.port())
                || snapshot
                    .own()
                    .is_some_and(|s| s.backend.protocol == Protocol::Tcp)
        };
        let (detected, prefix) = if app_is_opaque && proxy.tls.is_none() {
            (Detected::Opaque, bytes::Bytes::new())
        } else {
            match self.detect(&mut stream).await {
                Some(found) => found,
                None => return,
            }
        };
        let Some(peer) = inbound::identify(
            &proxy,
            stream,
            detected,
            prefix,
            app_is_opaque,
            &self.tracked,
        )
        .await
        else {
            return;
        };
        Box::pin(self.serve_inbound(peer.detected, peer.io, peer.caller, peer.opaque)).await;
    }

    async fn serve_inbound(self, detected: Detected, io: BoxIo, caller: Arc<Caller>, opaque: bool) {
        let proxy = self.proxy.clone();
        match detected {
            Detected::Http1 | Detected::Http2 if !opaque => {
                let tracked = self.tracked.clone();
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    let active = tracked.begin();
                    let answering = active.also();
                    let (proxy, caller) = (proxy.clone(), caller.clone());
                    async move {
                        let served = inbound::serve(proxy, caller, req, active).await;
                        Ok::<_, Infallible>(served.map(|b| ServedBody::new(b, answering)))
                    }
                });
                Box::pin(self.serve_http(detected, io, svc, Direction::Inbound)).await;
            }
            _ => {
                let _active = self.tracked.begin();
                Box::pin(tcp::forward_inbound(proxy, caller, io)).await
            }
        }
    }

    /// Sniffs the protocol; `None` when the connection failed or was asked to close first.
    async fn detect(&self, stream: &mut TcpStream) -> Option<(Detected, bytes::Bytes)> {
        tokio::select! {
            found = detect(stream, self.proxy.options.limits.detect_timeout) => found.ok(),
            _ = self.tracked.asked_to_close() => None,
        }
    }

    async fn serve_http<S>(mut self, detected: Detected, io: BoxIo, svc: S, direction: Direction)
    where
        S: hyper::service::HttpService<Incoming, ResBody = ServedBody> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits: &ServerLimits = &self.proxy.options.limits;
        let tracked = self.tracked.clone();
        let http1 = detected != Detected::Http2;
        let idle = idle_watch(&tracked, limits, http1);
        tokio::pin!(idle);
        let outcome = if !http1 {
            let io = TokioIo::new(io);
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(limits.max_header_bytes as u32)
                .initial_stream_window_size(STREAM_WINDOW)
                .initial_connection_window_size(CONNECTION_WINDOW)
                .keep_alive_interval(std::time::Duration::from_secs(30));
            let connection = pin!(builder.serve_connection(io, svc));
            drive(
                connection,
                |c| c.graceful_shutdown(),
                &mut self.drain,
                &tracked,
                idle,
            )
            .await
        } else {
            // The head timeout is the idle watch's: hyper's own arms a timer for every
            // request, and runs while a kept-alive connection waits for its next request,
            // so it closed every connection idle for `--header-read-timeout`, counted as
            // an attack, long before `--idle-timeout`.
            let io = TokioIo::new(HeardStream::new(io, tracked.clone()));
            let mut builder = http1::Builder::new();
            builder
                .header_read_timeout(None)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers);
            let connection = pin!(builder.serve_connection(io, svc).with_upgrades());
            drive(
                connection,
                |c| c.graceful_shutdown(),
                &mut self.drain,
                &tracked,
                idle,
            )
            .await
        };
        let error = match outcome {
            Driven::Ended(Ok(())) | Driven::Dropped => return,
            Driven::HeadTimedOut => {
                self.proxy.metrics.reject(direction, "header_read_timeout");
                return;
            }
            Driven::Ended(Err(error)) => error,
        };
        let reason = if error.is_parse_too_large() {
            "header_too_large"
        } else if error.is_timeout() {
            "header_read_timeout"
        } else if error.is_parse() {
            "bad_request"
        } else {
            tracing::debug!(%error, "connection ended with an error");
            return;
        };
        self.proxy.metrics.reject(direction, reason);
    }
}

/// How a served connection's driving ended.
enum Driven {
    Ended(hyper::Result<()>),
    /// Asked to make room before it ever began a request: dropped at once.
    Dropped,
    /// A request head did not arrive in time (`Idle::HeadTimedOut`): dropped at once.
    HeadTimedOut,
}

/// Drives an HTTP/1.1 or HTTP/2 connection until it ends, shutting it down gracefully on
/// drain, when asked to make room for another, or when idle.
async fn drive<C: Future<Output = hyper::Result<()>>>(
    mut connection: Pin<&mut C>,
    graceful_shutdown: fn(Pin<&mut C>),
    drain: &mut Drain,
    tracked: &Tracked,
    idle: Pin<&mut impl Future<Output = Idle>>,
) -> Driven {
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = drain.signaled() => {
            graceful_shutdown(connection.as_mut());
            connection.await
        }
        _ = tracked.asked_to_close() => {
            if !tracked.ever_active() {
                return Driven::Dropped;
            }
            graceful_shutdown(connection.as_mut());
            close_within_grace(connection).await
        }
        ended = idle => {
            if let Idle::HeadTimedOut = ended {
                return Driven::HeadTimedOut;
            }
            graceful_shutdown(connection.as_mut());
            close_within_grace(connection).await
        }
    };
    Driven::Ended(result)
}

/// How long an idle connection asked to close may take to say goodbye (an HTTP/2 GOAWAY
/// waits for the client's PING acknowledgement, which a hostile client never sends).
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Waits for a connection told to shut down gracefully, for at most `CLOSE_GRACE`; an idle
/// connection has nothing in flight to lose.
async fn close_within_grace<F: Future<Output = hyper::Result<()>>>(
    connection: Pin<&mut F>,
) -> hyper::Result<()> {
    tokio::time::timeout(CLOSE_GRACE, connection)
        .await
        .unwrap_or(Ok(()))
}

/// Resolves when a connection should close for being idle: no request began within
/// `--header-read-timeout` of its start, none was in flight for `--idle-timeout`, or (with
/// `heads`, HTTP/1.1) a request head was not whole within `--header-read-timeout` of its
/// first byte. Looks at the connection's counters now and then instead of timing every
/// request: with `heads` every quarter of the shorter timeout, otherwise once at
/// `--header-read-timeout` and then every quarter of `--idle-timeout`. Each limit is met
/// between once and 1.25 times its length, never early.
async fn idle_watch(tracked: &Tracked, limits: &ServerLimits, heads: bool) -> Idle {
    let head_timeout = limits.header_read_timeout;
    let quarter = |of: Duration| (of / 4).max(Duration::from_millis(10));
    let mut elapsed = Duration::ZERO;
    let (mut begun, mut busy) = (0, false);
    let mut quiet = Duration::ZERO;
    // How long the head now arriving has been seen arriving, from the first check that saw
    // it (so it has had at least this long).
    let mut head_seen: Option<Duration> = None;
    loop {
        let step = if heads {
            quarter(limits.idle_timeout.min(head_timeout))
        } else if elapsed < head_timeout {
            head_timeout - elapsed
        } else {
            quarter(limits.idle_timeout)
        };
        tokio::time::sleep(step).await;
        elapsed += step;
        let (now_begun, now_busy) = tracked.activity();
        if now_begun == 0 {
            if elapsed >= head_timeout {
                return Idle::HeadTimedOut;
            }
            continue;
        }
        if heads && tracked.head_pending() {
            let seen = head_seen.map_or(Duration::ZERO, |seen| seen + step);
            if seen >= head_timeout {
                return Idle::HeadTimedOut;
            }
            head_seen = Some(seen);
        } else {
            head_seen = None;
        }
        // Idle means nothing in flight and nothing begun at two checks a step apart.
        if now_begun == begun && !now_busy && !busy {
            quiet += step;
            if quiet >= limits.idle_timeout {
                return Idle::Quiet;
            }
        } else {
            quiet = Duration::ZERO;
        }
        (begun, busy) = (now_begun, now_busy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::DrainSignal;
    use crate::options::ProxyOptions;

    async fn accepted(listener: &std::net::TcpListener) -> TcpStream {
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (stream, _) = listener.accept().unwrap();
        stream.set_nonblocking(true).unwrap();
        TcpStream::from_std(stream).unwrap()
    }

    /// Every open connection is one of these tasks, so its size is what each of thousands
    /// of idle connections costs before its first byte (ztunnel asserts the same of its
    /// own). The bound has room for small changes and catches a large one.
    #[tokio::test]
    async fn a_connections_task_stays_small() {
        const BOUND: usize = 2 * 1024;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let app = listener.local_addr().unwrap();
        let proxy = Arc::new(Proxy::new(ProxyOptions::minimal(app), None));
        let drains = DrainSignal::new();
        let tracker = Tracker::new(4);
        let connection = || Connection {
            proxy: proxy.clone(),
            drain: drains.watch(),
            tracked: tracker.admit(drains.watch()).unwrap().0,
        };
        let inbound = connection().inbound(accepted(&listener).await);
        let outbound = connection().outbound(accepted(&listener).await, None);
        let sizes = (
            std::mem::size_of_val(&inbound),
            std::mem::size_of_val(&outbound),
        );
        eprintln!(
            "connection tasks: inbound {} bytes, outbound {} bytes",
            sizes.0, sizes.1
        );
        assert!(sizes.0 <= BOUND && sizes.1 <= BOUND, "{sizes:?}");
    }

    /// What a request's future weighs, known from the function alone.
    fn future_size<A, B, C, D, F: Future>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Every request in flight is one of these futures, copied whole each time it moves
    /// on its way into the connection's task, so its size is paid by every request, not
    /// only by those that take a rare path. Opening a connection, upgrades and mirroring
    /// are boxed for that reason, and no future is held in a local before it is awaited:
    /// an outbound request's future was 7.0 KB and is 4.8 KB. hyper keeps room for one
    /// such future per HTTP/1.1 connection for the connection's life, so an idle
    /// keep-alive connection pays for it too. The bound catches the old layout.
    #[test]
    fn a_requests_future_stays_small() {
        const BOUND: usize = 6 * 1024;
        let sizes = (future_size(outbound::serve), future_size(inbound::serve));
        eprintln!(
            "request futures: outbound {} bytes, inbound {} bytes",
            sizes.0, sizes.1
        );
        assert!(sizes.0 <= BOUND && sizes.1 <= BOUND, "{sizes:?}");
    }
}
