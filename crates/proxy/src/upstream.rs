//! Connections to endpoints.
//!
//! A Weft peer (an endpoint with an identity) is reached over mutual TLS: HTTP requests share
//! one multiplexed HTTP/2 connection per peer (ALPN `h2`), HTTP/1 upgrades get their own
//! HTTP/1.1 connection (ALPN `http/1.1`), and opaque TCP gets its own stream (ALPN
//! `weft-tcp`). Without TLS configured (plain local mode) the same shapes run over plain
//! TCP. A plain endpoint outside the mesh is spoken to in HTTP/1.1 from a pool, or HTTP/2
//! when the service says so.

use crate::body::Body;
use crate::io::{tune, BoxIo};
use crate::resilience::{LimitExceeded, Limits, RequestPermit};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use weft_identity::{SpiffeId, TlsIdentity};

pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP1: &[u8] = b"http/1.1";
pub const ALPN_TCP: &[u8] = b"weft-tcp";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connecting to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("connecting to {0} timed out")]
    ConnectTimeout(SocketAddr),
    #[error("TLS handshake with {0} failed: {1}")]
    Tls(SocketAddr, std::io::Error),
    #[error("HTTP handshake with {0} failed: {1}")]
    Handshake(SocketAddr, hyper::Error),
    #[error("request to {0} failed: {1}")]
    Request(SocketAddr, hyper::Error),
    #[error("{}", .0.as_str())]
    Overloaded(LimitExceeded),
}

impl UpstreamError {
    /// No connection was made, so the request never reached the endpoint.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Connect(..)
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
}

/// How HTTP is spoken to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMode {
    /// HTTP/2 (over TLS to a peer proxy, or prior knowledge in plain text).
    Http2,
    Http1,
}

/// TLS settings for reaching one peer, built once per endpoint so session resumption
/// (kept inside each client config) works across connections.
struct PeerTls {
    identity: Arc<TlsIdentity>,
    h2: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
    tcp: Arc<rustls::ClientConfig>,
}

pub struct EndpointPool {
    address: SocketAddr,
    tls: Option<PeerTls>,
    h2: Mutex<Option<http2::SendRequest<Body>>>,
    h2_connecting: tokio::sync::Mutex<()>,
    idle_http1: Mutex<Vec<(http1::SendRequest<Body>, Instant)>>,
    http1_returned: Notify,
}

impl EndpointPool {
    /// `tls` is `(our identity, the peer's expected id)` for a meshed peer when mTLS is on.
    pub fn new(address: SocketAddr, tls: Option<(Arc<TlsIdentity>, SpiffeId)>) -> Self {
        Self {
            address,
            tls: tls.map(|(identity, expected)| PeerTls {
                h2: identity.client_config(&expected, &[ALPN_H2]),
                http1: identity.client_config(&expected, &[ALPN_HTTP1]),
                tcp: identity.client_config(&expected, &[ALPN_TCP]),
                identity,
            }),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            idle_http1: Mutex::new(Vec::new()),
            http1_returned: Notify::new(),
        }
    }

    async fn connect(&self, alpn: &[u8], timeout: Duration) -> Result<BoxIo, UpstreamError> {
        let addr = self.address;
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => return Err(UpstreamError::Connect(addr, e)),
            Err(_) => return Err(UpstreamError::ConnectTimeout(addr)),
        };
        tune(&tcp);
        let Some(tls) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let config = match alpn {
            ALPN_H2 => tls.h2.clone(),
            ALPN_HTTP1 => tls.http1.clone(),
            _ => tls.tcp.clone(),
        };
        // The name is not verified (the peer's SPIFFE id is); it keys session resumption.
        let name = ServerName::IpAddress(addr.ip().into());
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
            // A resumed session skipped the certificate checks: apply revocation now.
            Ok(Ok(stream)) => match tls.identity.refused_peer(stream.get_ref().1) {
                None => Ok(Box::new(stream)),
                Some(reason) => Err(UpstreamError::Tls(
                    addr,
                    std::io::Error::new(std::io::ErrorKind::PermissionDenied, reason),
                )),
            },
            Ok(Err(e)) => Err(UpstreamError::Tls(addr, e)),
            Err(_) => Err(UpstreamError::ConnectTimeout(addr)),
        }
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
    ) -> Result<Response<Incoming>, UpstreamError> {
        match mode {
            HttpMode::Http2 => {
                let mut sender = self
                    .h2_sender(&policy.limits, policy.connect_timeout)
                    .await?;
                sender
                    .send_request(request)
                    .await
                    .map_err(|e| UpstreamError::Request(self.address, e))
            }
            HttpMode::Http1 => self.send_http1(request, policy).await,
        }
    }

    async fn h2_sender(
        &self,
        limits: &Limits,
        timeout: Duration,
    ) -> Result<http2::SendRequest<Body>, UpstreamError> {
        if let Some(sender) = self.ready_h2() {
            return Ok(sender);
        }
        let _pending = limits.start_pending().map_err(UpstreamError::Overloaded)?;
        // One connection per peer: whoever holds this lock connects, the rest wait for it.
        let _connecting = self.h2_connecting.lock().await;
        if let Some(sender) = self.ready_h2() {
            return Ok(sender);
        }
        let connection_permit = limits
            .open_connection()
            .map_err(UpstreamError::Overloaded)?;
        let io = self.connect(ALPN_H2, timeout).await?;
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(4 << 20)
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| UpstreamError::Handshake(self.address, e))?;
        let address = self.address;
        tokio::spawn(async move {
            let _connection_permit = connection_permit;
            if let Err(error) = connection.await {
                tracing::debug!(%address, %error, "HTTP/2 connection to peer ended");
            }
        });
        *self.h2.lock().unwrap_or_else(|e| e.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    fn ready_h2(&self) -> Option<http2::SendRequest<Body>> {
        let slot = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    fn take_idle_http1(&self, idle_timeout: Duration) -> Option<http1::SendRequest<Body>> {
        let mut idle = self.idle_http1.lock().unwrap_or_else(|e| e.into_inner());
        // Most recently used first; anything idle too long is dropped (which closes it).
        while let Some((sender, since)) = idle.pop() {
            if sender.is_ready() && since.elapsed() < idle_timeout {
                return Some(sender);
            }
        }
        None
    }

    async fn send_http1(
        self: &Arc<Self>,
        request: Request<Body>,
        policy: &ConnectionPolicy,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let mut sender = match self.take_idle_http1(policy.idle_timeout) {
            Some(sender) => sender,
            None => self.new_http1(policy).await?,
        };
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| UpstreamError::Request(self.address, e))?;
        self.return_when_ready(sender);
        Ok(response)
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
                    if let Some(sender) = self.take_idle_http1(policy.idle_timeout) {
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
            .map_err(|e| UpstreamError::Handshake(self.address, e))?;
        let address = self.address;
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

    /// Once the response body is consumed the connection can carry another request.
    fn return_when_ready(self: &Arc<Self>, mut sender: http1::SendRequest<Body>) {
        let pool = self.clone();
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = pool.idle_http1.lock().unwrap_or_else(|e| e.into_inner());
                idle.push((sender, Instant::now()));
                drop(idle);
                pool.http1_returned.notify_one();
            }
        });
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
            .map_err(|e| UpstreamError::Request(self.address, e))?;
        Ok((response, permit))
    }
}
