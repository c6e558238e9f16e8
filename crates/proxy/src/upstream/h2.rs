//! HTTP/2 to an endpoint: requests multiplexed over a few connections.
//!
//! One connection carries up to `STREAMS_PER_CONNECTION` requests at once; past that a
//! second one opens, and so on up to `CONNECTIONS_PER_PEER`. So hundreds of long polls,
//! streams or slow uploads to one instance never queue the next request behind them. Flow
//! control is sized so that a stalled stream costs only itself: each stream may hold
//! `STREAM_WINDOW` unread, and a connection's window is that times the streams it carries,
//! so a client that stops reading its responses can never use up the window others need.

use super::{ConnectionHold, ConnectionPolicy, EndpointPool, UpstreamError, ALPN_H2};
use crate::body::Body;
use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests in flight on one HTTP/2 connection before another is opened (a Weft peer
/// allows 200; most servers at least 100).
const STREAMS_PER_CONNECTION: usize = 100;
/// HTTP/2 connections to one endpoint at most. Past `STREAMS_PER_CONNECTION` times this,
/// requests queue on the least busy connection (counted as saturation).
const CONNECTIONS_PER_PEER: usize = 8;
/// Unread bytes one stream may hold (receive window).
pub const STREAM_WINDOW: u32 = 256 * 1024;
/// A connection's receive window: every stream it carries may be stalled at once.
pub const CONNECTION_WINDOW: u32 = STREAM_WINDOW * STREAMS_PER_CONNECTION as u32;

/// One HTTP/2 connection and the requests in flight on it.
pub(super) struct H2Connection {
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

impl EndpointPool {
    pub(super) async fn send_h2(
        &self,
        request: Request<Body>,
        policy: &ConnectionPolicy,
    ) -> Result<Response<Body>, UpstreamError> {
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

    /// A connection with room for one more request, opened if none has and the bound
    /// allows, and the request's place on it.
    pub(super) async fn h2_sender(
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
    pub(super) async fn open_h2(
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
    pub(super) fn take_h2_stream(
        &self,
        over_limit: bool,
    ) -> Option<(http2::SendRequest<Body>, StreamSlot)> {
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

    pub(super) fn h2_open(&self) -> usize {
        let mut open = self.h2.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|c| !c.sender.is_closed());
        open.len()
    }
}
