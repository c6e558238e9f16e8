//! Accepting connections and deciding how to serve each one.
//!
//! Every listener caps its open connections, sniffs the protocol, and serves HTTP with the
//! limits that protect it from hostile clients (header size and count, header read
//! timeout). Every refusal is counted in `weft_rejected_total`.

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
use crate::upstream::{ALPN_H2, ALPN_HTTP1};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_identity::peer_identity;
use weft_model::config::Protocol;

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
    let limit = Arc::new(Semaphore::new(proxy.options.limits.max_connections));
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
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            proxy.metrics.reject(direction, "max_connections");
            drop(stream);
            continue;
        };
        tune(&stream);
        let task = Connection {
            proxy: proxy.clone(),
            drain: drain.clone(),
            _permit: permit,
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

struct Connection {
    proxy: Arc<Proxy>,
    drain: Drain,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn outbound(self, mut stream: TcpStream, bound: Option<String>) {
        let proxy = self.proxy.clone();
        let bound_service = bound
            .as_ref()
            .and_then(|key| proxy.snapshot().by_key(key).cloned());
        if bound.is_some() && bound_service.is_none() {
            tracing::warn!(
                service = bound.as_deref().unwrap_or(""),
                "upstream binding names a service that is not in the configuration"
            );
            proxy.metrics.reject(Direction::Outbound, "unknown_service");
            return;
        }
        // A bound port is never sniffed when its service is TCP or its port is listed in
        // --opaque-ports (server-speaks-first protocols would otherwise wait out detection).
        let opaque = bound_service.as_ref().is_some_and(|s| {
            s.backend.protocol == Protocol::Tcp
                || stream
                    .local_addr()
                    .is_ok_and(|a| proxy.options.opaque_ports.contains(&a.port()))
        });
        let (detected, prefix) = if opaque {
            (Detected::Opaque, bytes::Bytes::new())
        } else {
            match detect(&mut stream, proxy.options.limits.detect_timeout).await {
                Ok(found) => found,
                Err(_) => return,
            }
        };
        let io: BoxIo = Box::new(Rewind::new(prefix, stream));
        match (detected, bound_service) {
            (Detected::Http1 | Detected::Http2, bound) => {
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    outbound::serve(proxy.clone(), bound.clone(), req)
                });
                self.serve_http(detected, io, svc, Direction::Outbound)
                    .await;
            }
            (_, Some(service)) => tcp::forward_outbound(proxy, service.backend.clone(), io).await,
            (_, None) => {
                // Without a Host header there is no way to know where this was going.
                proxy.metrics.reject(Direction::Outbound, "not_http");
            }
        }
    }

    async fn inbound(self, mut stream: TcpStream) {
        let proxy = self.proxy.clone();
        let limits = &proxy.options.limits;
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
            match detect(&mut stream, limits.detect_timeout).await {
                Ok(found) => found,
                Err(_) => return,
            }
        };
        let Some(acceptor) = proxy.tls_acceptor.clone() else {
            let caller = Arc::new(Caller {
                source: Arc::from("unknown"),
                metrics: proxy.inbound_metrics(&Arc::from("unknown")),
            });
            let io: BoxIo = Box::new(Rewind::new(prefix, stream));
            return self
                .serve_inbound(detected, io, caller, app_is_opaque)
                .await;
        };
        if detected != Detected::Tls {
            // With an identity, plaintext is refused unless the mesh is in permissive mode
            // (migration), where it is served but labelled so it stands out in metrics.
            if proxy.snapshot().config.mtls_mode.is_strict() {
                proxy.metrics.reject(Direction::Inbound, "plaintext");
                return;
            }
            let source: Arc<str> = Arc::from("plaintext");
            let caller = Arc::new(Caller {
                metrics: proxy.inbound_metrics(&source),
                source,
            });
            let io: BoxIo = Box::new(Rewind::new(prefix, stream));
            return self
                .serve_inbound(detected, io, caller, app_is_opaque)
                .await;
        }
        let handshake = acceptor.accept(Rewind::new(prefix, stream));
        let tls = match tokio::time::timeout(limits.header_read_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                tracing::debug!(%error, "inbound TLS handshake failed");
                proxy.metrics.reject(Direction::Inbound, "tls_handshake");
                return;
            }
            Err(_) => {
                proxy
                    .metrics
                    .reject(Direction::Inbound, "tls_handshake_timeout");
                return;
            }
        };
        let (_, session) = tls.get_ref();
        // A resumed session skipped the certificate checks: apply revocation now.
        if let Some(reason) = proxy.tls.as_ref().and_then(|id| id.refused_peer(session)) {
            tracing::debug!(%reason, "refused a resumed inbound session");
            proxy.metrics.reject(Direction::Inbound, "revoked_peer");
            return;
        }
        let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
        let source: Arc<str> = match peer_identity(session) {
            Some(id) => Arc::from(format!("{}.{}", id.service(), id.namespace())),
            None => {
                proxy.metrics.reject(Direction::Inbound, "no_peer_identity");
                return;
            }
        };
        let caller = Arc::new(Caller {
            metrics: proxy.inbound_metrics(&source),
            source,
        });
        let io: BoxIo = Box::new(tls);
        let detected = match alpn.as_deref() {
            Some(ALPN_H2) => Detected::Http2,
            Some(ALPN_HTTP1) => Detected::Http1,
            _ => Detected::Opaque,
        };
        self.serve_inbound(detected, io, caller, false).await;
    }

    async fn serve_inbound(self, detected: Detected, io: BoxIo, caller: Arc<Caller>, opaque: bool) {
        let proxy = self.proxy.clone();
        match detected {
            Detected::Http1 | Detected::Http2 if !opaque => {
                let svc = service_fn(move |req: hyper::Request<Incoming>| {
                    inbound::serve(proxy.clone(), caller.clone(), req)
                });
                self.serve_http(detected, io, svc, Direction::Inbound).await;
            }
            _ => tcp::forward_inbound(proxy, caller.source.clone(), io).await,
        }
    }

    async fn serve_http<S>(mut self, detected: Detected, io: BoxIo, svc: S, direction: Direction)
    where
        S: hyper::service::HttpService<Incoming, ResBody = crate::body::Body> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let limits: &ServerLimits = &self.proxy.options.limits;
        let io = TokioIo::new(io);
        let result = if detected == Detected::Http2 {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(limits.max_header_bytes as u32)
                .initial_stream_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .keep_alive_interval(std::time::Duration::from_secs(30));
            let connection = builder.serve_connection(io, svc);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => result,
                _ = self.drain.signaled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        } else {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes.max(8192))
                .max_headers(limits.max_headers);
            let connection = builder.serve_connection(io, svc).with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => result,
                _ = self.drain.signaled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        };
        if let Err(error) = result {
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
}
