//! Connections to endpoints.
//!
//! A Weft peer (an endpoint with an identity) is reached over mutual TLS, an endpoint
//! outside the mesh in plain TCP or over TLS the proxy starts when the Service asks for it
//! (TLS origination). HTTP/1 requests go on pooled HTTP/1.1 connections (ALPN `http/1.1`),
//! HTTP/2 and gRPC ones multiplexed over HTTP/2 (ALPN `h2`, see `crate::outbound::http_mode`
//! for which is which), each upgrade on an HTTP/1.1 connection of its own, and opaque TCP
//! on a stream of its own (ALPN `weft-tcp`). Without TLS configured (plain local mode) the
//! same shapes run over plain TCP. An endpoint written as a host name is resolved at each
//! connect (answers are cached, see `crate::resolve`), and its addresses are tried in turn.
//!
//! This file holds what all of them share: the pool of one endpoint and how it connects.
//! `http1` and `h2` hold each protocol's connections.

mod h2;
mod http1;

use h2::H2Connection;
pub use h2::{StreamSlot, CONNECTION_WINDOW, STREAM_WINDOW};
pub use http1::Http1Lease;

use crate::body::Body;
use crate::io::{tune, BoxIo};
use crate::resilience::{LimitExceeded, Limits};
use crate::resolve::{HostResolver, ResolveError};
use http::{Request, Response};
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use weft_identity::{IdentityError, SpiffeId, TlsIdentity};
use weft_model::Address;

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

/// What a response body holds of the connection it arrived on, until it has been read to
/// the end (or dropped).
#[derive(Debug)]
pub enum ConnectionHold {
    /// A place on a multiplexed HTTP/2 connection.
    Stream { _slot: StreamSlot },
    /// A pooled HTTP/1.1 connection, which carries the next request once this answer is read.
    Http1 { _lease: Http1Lease },
}

pub struct EndpointPool {
    address: Address,
    /// Resolves `address` when it is a host name.
    resolver: Option<Arc<HostResolver>>,
    tls: Option<PoolTls>,
    h2: Mutex<Vec<H2Connection>>,
    h2_connecting: tokio::sync::Mutex<()>,
    idle_http1: Mutex<Vec<(hyper::client::conn::http1::SendRequest<Body>, Instant)>>,
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
            HttpMode::Http2 => self.send_h2(request, policy).await,
            HttpMode::Http1 => self.send_http1(request, policy).await,
        }
    }
}
