//! Connections to endpoints.
//!
//! A Weft peer (an endpoint with an identity) is reached over mutual TLS: HTTP requests are
//! multiplexed over HTTP/2 connections to the peer (ALPN `h2`), HTTP/1 upgrades get their
//! own HTTP/1.1 connection (ALPN `http/1.1`), and opaque TCP gets its own stream (ALPN
//! `weft-tcp`). Without TLS configured (plain local mode) the same shapes run over plain
//! TCP. A plain endpoint outside the mesh is spoken to in HTTP/1.1 from a pool, or HTTP/2
//! when the service says so, over TLS the proxy starts when the Service asks for it (TLS
//! origination). An endpoint written as a host name is resolved at each connect (answers
//! are cached, see `crate::resolve`), and its addresses are tried in turn.
//!
//! One HTTP/2 connection carries up to `STREAMS_PER_CONNECTION` requests at once; past that
//! a second one opens, and so on up to `CONNECTIONS_PER_PEER`. So hundreds of long polls,
//! streams or slow uploads to one instance never queue the next request behind them. Flow
//! control is sized so that a stalled stream costs only itself: each stream may hold
//! `STREAM_WINDOW` unread, and a connection's window is that times the streams it carries,
//! so a client that stops reading its responses can never use up the window others need.

use crate::body::Body;
use crate::io::{tune, BoxIo};
use crate::resilience::{LimitExceeded, Limits, RequestPermit};
use crate::resolve::{HostResolver, ResolveError};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use weft_identity::{IdentityError, SpiffeId, TlsIdentity};
use weft_model::Address;

/// Requests in flight on one HTTP/2 connection before another is opened (a Weft peer
/// allows 200; most servers at least 100).
pub const STREAMS_PER_CONNECTION: usize = 100;
/// HTTP/2 connections to one endpoint at most. Past `STREAMS_PER_CONNECTION` times this,
/// requests queue on the least busy connection (counted as saturation).
pub const CONNECTIONS_PER_PEER: usize = 8;
/// Unread bytes one stream may hold (receive window).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// A connection's receive window: every stream it carries may be stalled at once.
pub const CONNECTION_WINDOW: u32 = STREAM_WINDOW * STREAMS_PER_CONNECTION as u32;

/// A pooled HTTP/1.1 connection idle this long may be closed by its server as a request
/// reaches it: an idempotent request sent on it is copied, to be sent again if so.
const SERVER_MAY_HAVE_CLOSED: Duration = Duration::from_millis(100);
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
pub const ALPN_TCP: &[u8] = b"weft-tcp";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("resolving {0} failed: {1}")]
    Resolve(Address, ResolveError),
    #[error("connecting to {0} failed: {1}")]
    Connect(Address, std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimeout(Address),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(Address, std::io::Error),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(Address, hyper::Error),
    #[error("request to {0} failed: {1}")]
    Request(Address, hyper::Error),
    #[error("{}", .0.as_str())]
    Overloaded(LimitExceeded),
}

impl UpstreamError {
    /// The status a client gets for it: 503 when no connection was made (the endpoint is
    /// unavailable), 502 when the exchange broke after the request was sent.
    pub fn status(&self) -> http::StatusCode {
        if self.is_connect_failure() {
            http::StatusCode::SERVICE_UNAVAILABLE
        } else {
            http::StatusCode::BAD_GATEWAY
        }
    }

    /// No connection was made, so the request never reached the endpoint.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Resolve(..)
                | UpstreamError::Connect(..)
                | UpstreamError::ConnectTimeout(..)
                | UpstreamError::Tls(..)
                | UpstreamError::Handshake(..)
        )
    }
}

/// How a destination's connections are managed (from its TrafficPolicy).
pub struct ConnectionPolicy {
    pub limits: Arc<Limits>,
    pub connect_timeout: Duration,
    /// Pooled HTTP/1 connections unused for longer are closed rather than reused.
    pub idle_timeout: Duration,
    /// Counts requests that found every HTTP/2 connection to an endpoint full.
    pub saturated: crate::metrics::LazyCounter,
}

/// How HTTP is spoken to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// HTTP/2 (over TLS to a peer proxy, or prior knowledge in plain text).
    Http2,
    Http1,
}

/// How an endpoint's connections are secured.
pub enum Security {
    /// Plain TCP: the local app, or a service outside the mesh.
    Plain,
    /// Mutual TLS with a Weft peer: our identity and the id the peer must present.
    Mesh(Arc<TlsIdentity>, SpiffeId),
    /// TLS the proxy starts to a server outside the mesh.
    Origin(OriginTls),
    /// TLS the proxy should start but cannot (no CA store on this host, a CA certificate
    /// that does not parse): every connection fails with this reason, and only this
    /// endpoint is affected.
    OriginUnavailable(String),
}

/// Client configs for one endpoint, one per ALPN, built once per endpoint so session
/// resumption (kept inside each client config) works across connections.
struct AlpnConfigs {
    h2: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
    tcp: Arc<rustls::ClientConfig>,
}

impl AlpnConfigs {
    fn for_alpn(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        match alpn {
            ALPN_H2 => self.h2.clone(),
            ALPN_HTTP1 => self.http1.clone(),
            _ => self.tcp.clone(),
        }
    }
}

/// TLS to a server outside the mesh: checked against web PKI roots and a name.
pub struct OriginTls {
    configs: AlpnConfigs,
    server_name: ServerName<'static>,
}

impl OriginTls {
    /// For an endpoint whose certificate must name `server_name`, verified against
    /// `ca_pem` or, when `None`, the host's CA store. Opaque TCP offers no ALPN (the
    /// server's protocol is its own); HTTP offers the one it will speak.
    pub fn new(server_name: &str, ca_pem: Option<&str>) -> Result<Self, IdentityError> {
        let label = Path::new("the endpoint's tls.caCertificates");
        let config = |alpn: &[&[u8]]| weft_identity::origination_client_config(ca_pem, label, alpn);
        let server_name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            IdentityError::InvalidTrustAnchor {
                path: label.to_owned(),
                detail: format!("server name {server_name:?}: {e}"),
            }
        })?;
        Ok(Self {
            configs: AlpnConfigs {
                h2: config(&[ALPN_H2])?,
                http1: config(&[ALPN_HTTP1])?,
                tcp: config(&[])?,
            },
            server_name,
        })
    }
}

/// The TLS an endpoint pool speaks.
enum PoolTls {
    Mesh {
        identity: Arc<TlsIdentity>,
        configs: AlpnConfigs,
    },
    Origin(OriginTls),
    Unavailable(String),
}

/// One HTTP/2 connection and the requests in flight on it.
struct H2Connection {
    sender: http2::SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

/// A request's place on an HTTP/2 connection, given back when its response has been read
/// to the end (or dropped): a streaming answer holds its stream for as long as it streams.
#[derive(Debug)]
pub struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a response body holds of the connection it arrived on, until it has been read to
/// the end (or dropped).
#[derive(Debug)]
pub enum ConnectionHold {
    /// A place on a multiplexed HTTP/2 connection.
    Stream { _slot: StreamSlot },
    /// A pooled HTTP/1.1 connection, which carries the next request once this answer is read.
    Http1 { _lease: Http1Lease },
}

/// An HTTP/1.1 connection out of its pool for one exchange. When the response body is done
/// the connection is usually ready at once (hyper's connection task has read the end before
/// the body reports it) and goes straight back; a connection not ready yet is waited for
/// by a task, and one that closes is let go. Returning it on the body's drop saves a task
/// per request, which waiting from the start would cost.
pub struct Http1Lease {
    pool: Arc<EndpointPool>,
    sender: Option<http1::SendRequest<Body>>,
}

impl std::fmt::Debug for Http1Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http1Lease")
            .field("address", &self.pool.address)
            .finish()
    }
}

impl Drop for Http1Lease {
    fn drop(&mut self) {
        let Some(mut sender) = self.sender.take() else {
            return;
        };
        if sender.is_ready() {
            self.pool.return_idle(sender);
            return;
        }
        // Without a runtime (shutting down) the connection is simply closed.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let pool = self.pool.clone();
            runtime.spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.return_idle(sender);
                }
            });
        }
    }
}

pub struct EndpointPool {
    address: Address,
    /// Resolves `address` when it is a host name.
    resolver: Option<Arc<HostResolver>>,
    tls: Option<PoolTls>,
    h2: Mutex<Vec<H2Connection>>,
    h2_connecting: tokio::sync::Mutex<()>,
    idle_http1: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    http1_returned: Notify,
}

impl EndpointPool {
    /// `resolver` is needed when `address` is a host name.
    pub fn new(address: Address, security: Security, resolver: Option<Arc<HostResolver>>) -> Self {
        let tls = match security {
            Security::Plain => None,
            Security::Mesh(identity, expected) => Some(PoolTls::Mesh {
                configs: AlpnConfigs {
                    h2: identity.client_config(&expected, &[ALPN_H2]),
                    http1: identity.client_config(&expected, &[ALPN_HTTP1]),
                    tcp: identity.client_config(&expected, &[ALPN_TCP]),
                },
                identity,
            }),
            Security::Origin(origin) => Some(PoolTls::Origin(origin)),
            Security::OriginUnavailable(reason) => Some(PoolTls::Unavailable(reason)),
        };
        Self {
            address,
            resolver,
            tls,
            h2: Mutex::new(Vec::new()),
            h2_connecting: tokio::sync::Mutex::new(()),
            idle_http1: Mutex::new(Vec::new()),
            http1_returned: Notify::new(),
        }
    }

    async fn connect(&self, alpn: &[u8], timeout: Duration) -> Result<BoxIo, UpstreamError> {
        let tls_error = |e| UpstreamError::Tls(self.address.clone(), e);
        let unusable = |reason: &str| tls_error(std::io::Error::other(reason.to_owned()));
        // Not even a TCP connection: the handshake could not be made.
        if let Some(PoolTls::Unavailable(reason)) = &self.tls {
            return Err(unusable(reason));
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let (tcp, peer) = self.connect_tcp_stream(deadline).await?;
        tune(&tcp);
        let (connector, name) = match &self.tls {
            None => return Ok(Box::new(tcp)),
            // The name is not verified (the peer's SPIFFE id is); it keys session resumption.
            Some(PoolTls::Mesh { configs, .. }) => (
                configs.for_alpn(alpn),
                ServerName::IpAddress(peer.ip().into()),
            ),
            Some(PoolTls::Origin(origin)) => {
                (origin.configs.for_alpn(alpn), origin.server_name.clone())
            }
            Some(PoolTls::Unavailable(reason)) => return Err(unusable(reason)),
        };
        let connector = tokio_rustls::TlsConnector::from(connector);
        let stream = match tokio::time::timeout_at(deadline, connector.connect(name, tcp)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(tls_error(e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout(self.address.clone())),
        };
        // A resumed session skipped the certificate checks: apply revocation now.
        if let Some(PoolTls::Mesh { identity, .. }) = &self.tls {
            if let Some(reason) = identity.refused_peer(stream.get_ref().1) {
                let denied = std::io::Error::new(std::io::ErrorKind::PermissionDenied, reason);
                return Err(tls_error(denied));
            }
        }
        Ok(Box::new(stream))
    }

    /// A TCP connection to the endpoint by `deadline`: to its address, or to the first of
    /// its host name's addresses that accepts.
    async fn connect_tcp_stream(
        &self,
        deadline: tokio::time::Instant,
    ) -> Result<(TcpStream, SocketAddr), UpstreamError> {
        let timed_out = || UpstreamError::ConnectTimeout(self.address.clone());
        let connect = |candidate: SocketAddr| async move {
            match tokio::time::timeout_at(deadline, TcpStream::connect(candidate)).await {
                Ok(Ok(tcp)) => Ok((tcp, candidate)),
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(None),
            }
        };
        let failed = |error: Option<std::io::Error>| match error {
            Some(e) => UpstreamError::Connect(self.address.clone(), e),
            None => timed_out(),
        };
        let (host, port) = match &self.address {
            Address::Ip(addr) => return connect(*addr).await.map_err(failed),
            Address::Dns { host, port } => (host, *port),
        };
        let resolver = self.resolver.as_ref().ok_or_else(|| {
            UpstreamError::Resolve(self.address.clone(), ResolveError::NoResolver)
        })?;
        let found = tokio::time::timeout_at(deadline, resolver.resolve(host))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| UpstreamError::Resolve(self.address.clone(), e))?;
        let mut last = None;
        for ip in found {
            match connect(SocketAddr::new(ip, port)).await {
                Ok(connected) => return Ok(connected),
                // Out of time: no other address would fare better.
                Err(None) => return Err(timed_out()),
                Err(error) => last = error,
            }
        }
        Err(failed(last))
    }

    /// Opens a stream for opaque TCP.
    pub async fn connect_tcp(&self, timeout: Duration) -> Result<BoxIo, UpstreamError> {
        self.connect(ALPN_TCP, timeout).await
    }

    /// Sends one request. `request` must already be in the shape `mode` needs
    /// (see `crate::http::prepare_upstream`).
    pub async fn send(
        self: &Arc<Self>,
        mode: HttpMode,
        request: Request<Body>,
        policy: &ConnectionPolicy,
    ) -> Result<Response<Body>, UpstreamError> {
        match mode {
            HttpMode::Http2 => {
                let (mut sender, slot) = self.h2_sender(policy).await?;
                let response = sender
                    .send_request(request)
                    .await
                    .map_err(|e| UpstreamError::Request(self.address.clone(), e))?;
                Ok(response.map(|body| Body::Held {
                    body,
                    _connection: ConnectionHold::Stream { _slot: slot },
                }))
            }
            HttpMode::Http1 => self.send_http1(request, policy).await,
        }
    }

    /// A connection with room for one more request, opened if none has and the bound
    /// allows, and the request's place on it.
    async fn h2_sender(
        &self,
        policy: &ConnectionPolicy,
    ) -> Result<(http2::SendRequest<Body>, StreamSlot), UpstreamError> {
        if let Some(found) = self.take_h2_stream(false) {
            return Ok(found);
        }
        // Boxed for the reason `send_http1` boxes its new connections.
        Box::pin(self.open_h2(policy)).await
    }

    /// A new connection, unless another request opened one with room while this one
    /// waited its turn to connect.
    async fn open_h2(
        &self,
        policy: &ConnectionPolicy,
    ) -> Result<(http2::SendRequest<Body>, StreamSlot), UpstreamError> {
        let limits = &policy.limits;
        let _pending = limits.start_pending().map_err(UpstreamError::Overloaded)?;
        // Whoever holds this lock connects; the rest wait, then take a place on it.
        let _connecting = self.h2_connecting.lock().await;
        if let Some(found) = self.take_h2_stream(false) {
            return Ok(found);
        }
        if self.h2_open() >= CONNECTIONS_PER_PEER {
            policy.saturated.inc();
            if let Some(found) = self.take_h2_stream(true) {
                return Ok(found);
            }
        }
        let connection_permit = limits
            .open_connection()
            .map_err(UpstreamError::Overloaded)?;
        let io = self.connect(ALPN_H2, policy.connect_timeout).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Handshake(self.address.clone(), e))?;
        let address = self.address.clone();
        tokio::spawn(async move {
            let _connection_permit = connection_permit;
            if let Err(error) = connection.await {
                tracing::debug!(%address, %error, "HTTP/2 connection to peer ended");
            }
        });
        let streams = Arc::new(AtomicUsize::new(1));
        let slot = StreamSlot(streams.clone());
        self.h2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(H2Connection {
                sender: sender.clone(),
                streams,
            });
        Ok((sender, slot))
    }

    /// A place on the least busy open connection: only below `STREAMS_PER_CONNECTION`
    /// unless `over_limit`. Closed connections are forgotten on the way.
    fn take_h2_stream(&self, over_limit: bool) -> Option<(http2::SendRequest<Body>, StreamSlot)> {
        let mut open = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|c| !c.sender.is_closed());
        let least = open
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Acquire))?;
        if !over_limit && least.streams.load(Ordering::Acquire) >= STREAMS_PER_CONNECTION {
            return None;
        }
        least.streams.fetch_add(1, Ordering::AcqRel);
        Some((least.sender.clone(), StreamSlot(least.streams.clone())))
    }

    fn h2_open(&self) -> usize {
        let mut open = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|c| !c.sender.is_closed());
        open.len()
    }

    /// An idle connection, and how long it has been idle.
    fn take_idle_http1(
        &self,
        idle_timeout: Duration,
    ) -> Option<(http1::SendRequest<Body>, Duration)> {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|e| e.into_inner());
        // Most recently used first; anything idle too long is dropped (which closes it).
        while let Some((sender, since)) = idle.pop() {
            let idle_for = since.elapsed();
            if sender.is_ready() && idle_for < idle_timeout {
                return Some((sender, idle_for));
            }
        }
        None
    }

    async fn send_http1(
        self: &Arc<Self>,
        request: Request<Body>,
        policy: &ConnectionPolicy,
    ) -> Result<Response<Body>, UpstreamError> {
        let request = match self.take_idle_http1(policy.idle_timeout) {
            Some((mut sender, idle_for)) => {
                // A server may close a kept-alive connection just as a request reaches it
                // (Node.js, gunicorn and uvicorn close them after 2 to 5 idle seconds). A
                // request it never got is given back; an idempotent one without a body is
                // sent again too, as RFC 9112 (9.3.1) allows. Copied only after an idle
                // spell, so connections in steady use copy nothing.
                let again = if idle_for >= SERVER_MAY_HAVE_CLOSED {
                    crate::http::copy_if_idempotent(&request)
                } else {
                    None
                };
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.leased(sender, response)),
                    Err(mut refused) => {
                        let closed = refused.error().is_canceled()
                            || refused.error().is_incomplete_message();
                        let Some(request) = refused.take_message().or(again.filter(|_| closed))
                        else {
                            let error = refused.into_error();
                            return Err(UpstreamError::Request(self.address.clone(), error));
                        };
                        request
                    }
                }
            }
            None => request,
        };
        // Boxed: opening a connection (TCP, TLS, the HTTP handshake) is a future many times
        // the size of sending on one, and every request's future would carry its size
        // (and copy it on each move) though few requests open a connection.
        let (sender, response) = Box::pin(self.send_on_new(request, policy)).await?;
        Ok(self.leased(sender, response))
    }

    /// The response, holding its connection until the body is read; the connection then
    /// goes back to the pool.
    fn leased(
        self: &Arc<Self>,
        sender: http1::SendRequest<Body>,
        response: Response<Incoming>,
    ) -> Response<Body> {
        let lease = Http1Lease {
            pool: self.clone(),
            sender: Some(sender),
        };
        response.map(|body| Body::Held {
            body,
            _connection: ConnectionHold::Http1 { _lease: lease },
        })
    }

    /// Sends on a connection just opened (or, at the connection limit, just returned to the
    /// pool by another request): its failure is the request's, with no second try.
    async fn send_on_new(
        &self,
        request: Request<Body>,
        policy: &ConnectionPolicy,
    ) -> Result<(http1::SendRequest<Body>, Response<Incoming>), UpstreamError> {
        let mut sender = self.new_http1(policy).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(self.address.clone(), e))?;
        Ok((sender, response))
    }

    /// A new pooled connection, or (at the connection limit) the next one returned.
    async fn new_http1(
        &self,
        policy: &ConnectionPolicy,
    ) -> Result<http1::SendRequest<Body>, UpstreamError> {
        let (limits, timeout) = (&policy.limits, policy.connect_timeout);
        match limits.open_connection() {
            Ok(permit) => self
                .open_http1(Some(permit), timeout, false)
                .await
                .map(|(s, _)| s),
            Err(_) => {
                let _pending = limits.start_pending().map_err(UpstreamError::Overloaded)?;
                let deadline = tokio::time::Instant::now() + timeout;
                loop {
                    if let Some((sender, _)) = self.take_idle_http1(policy.idle_timeout) {
                        return Ok(sender);
                    }
                    if tokio::time::timeout_at(deadline, self.http1_returned.notified())
                        .await
                        .is_err()
                    {
                        return Err(UpstreamError::Overloaded(LimitExceeded::Connections));
                    }
                }
            }
        }
    }

    /// `permit` is held by the connection's driver; an upgrade's caller holds its own, as
    /// the driver ends when the connection is handed over to the tunnel.
    async fn open_http1(
        &self,
        permit: Option<RequestPermit>,
        timeout: Duration,
        upgrades: bool,
    ) -> Result<(http1::SendRequest<Body>, tokio::task::JoinHandle<()>), UpstreamError> {
        let io = self.connect(ALPN_HTTP1, timeout).await?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Handshake(self.address.clone(), e))?;
        let address = self.address.clone();
        let driver = tokio::spawn(async move {
            let _permit = permit;
            let result = if upgrades {
                connection.with_upgrades().await
            } else {
                connection.await
            };
            if let Err(error) = result {
                tracing::debug!(%address, %error, "HTTP/1 connection ended");
            }
        });
        Ok((sender, driver))
    }

    /// A connection ready for another request joins the idle ones.
    fn return_idle(&self, sender: http1::SendRequest<Body>) {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|e| e.into_inner());
        idle.push((sender, Instant::now()));
        drop(idle);
        self.http1_returned.notify_one();
    }

    /// Sends a request that asks for an upgrade (WebSocket, CONNECT) on a connection of its
    /// own; the caller then joins the two upgraded streams, holding the connection's
    /// permit for as long as the tunnel lives.
    pub async fn send_upgrade(
        &self,
        request: Request<Body>,
        policy: &ConnectionPolicy,
    ) -> Result<(Response<Incoming>, RequestPermit), UpstreamError> {
        let permit = policy
            .limits
            .open_connection()
            .map_err(UpstreamError::Overloaded)?;
        let (mut sender, _driver) = self.open_http1(None, policy.connect_timeout, true).await?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(self.address.clone(), e))?;
        Ok((response, permit))
    }
}
