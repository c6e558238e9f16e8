//! HTTP/1.1 to an endpoint: a pool of kept-alive connections, one request on each at a
//! time, and a connection of its own for each upgrade.

use super::{ConnectionHold, ConnectionPolicy, EndpointPool, UpstreamError, ALPN_HTTP1};
use crate::body::Body;
use crate::resilience::{LimitExceeded, RequestPermit};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A pooled HTTP/1.1 connection idle this long may be closed by its server as a request
/// reaches it: an idempotent request sent on it is copied, to be sent again if so.
const SERVER_MAY_HAVE_CLOSED: Duration = Duration::from_millis(100);

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

impl EndpointPool {
    /// An idle connection, and how long it has been idle.
    pub(super) fn take_idle_http1(
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

    pub(super) async fn send_http1(
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
    pub(super) fn leased(
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
    pub(super) async fn send_on_new(
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
    pub(super) async fn new_http1(
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
    pub(super) async fn open_http1(
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
    pub(super) fn return_idle(&self, sender: http1::SendRequest<Body>) {
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
