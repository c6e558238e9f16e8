//! The one body type that flows through the proxy.
//!
//! An enum instead of a boxed trait object: a streamed body from a peer passes through with no
//! allocation, and buffered bodies (for retries and mirroring) or synthetic answers use the
//! same type, so every hyper connection is instantiated once.

use crate::client_body::{BoxError, ClientBody};
use crate::connections::Active;
use crate::replay::ReplayBody;
use crate::traffic::EdgeStat;
use crate::upstream::ConnectionHold;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

#[derive(Debug, Default)]
pub enum Body {
    #[default]
    Empty,
    Full(Option<Bytes>),
    /// An upstream's response, passed through.
    Streaming(Incoming),
    /// An upstream's response, holding its place on the connection it came on.
    Held {
        body: Incoming,
        _connection: ConnectionHold,
    },
    /// A client's request, checked for faults as it streams (see `client_body.rs`).
    Client(ClientBody),
    /// A retryable request's body (see `replay.rs`).
    Replay(ReplayBody),
    /// A gRPC answer whose trailers are read for its status (see `grpc_outcome.rs`).
    GrpcOutcome {
        body: Box<Body>,
        stat: Arc<EdgeStat>,
    },
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        if bytes.is_empty() {
            Body::Empty
        } else {
            Body::Full(Some(bytes))
        }
    }

    /// A copy of a buffered or replayable body; `None` for a plain stream, which can only be
    /// read once.
    pub fn try_clone(&self) -> Option<Self> {
        match self {
            Body::Empty => Some(Body::Empty),
            Body::Full(bytes) => Some(Body::Full(bytes.clone())),
            Body::Replay(replay) => replay.replay().map(Body::Replay),
            Body::Streaming(_) | Body::Held { .. } | Body::Client(_) | Body::GrpcOutcome { .. } => {
                None
            }
        }
    }

    /// Whether a copy made by `try_clone` can still be sent (see `ReplayBody`).
    pub fn is_replayable(&self) -> bool {
        match self {
            Body::Replay(replay) => replay.is_replayable(),
            Body::Streaming(_) | Body::Held { .. } | Body::Client(_) | Body::GrpcOutcome { .. } => {
                false
            }
            Body::Empty | Body::Full(_) => true,
        }
    }
}

impl From<Incoming> for Body {
    fn from(body: Incoming) -> Self {
        Body::Streaming(body)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Body::Empty => Poll::Ready(None),
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Streaming(incoming) | Body::Held { body: incoming, .. } => loop {
                // Empty DATA frames carry nothing and count against the peer's h2 limit.
                match Pin::new(&mut *incoming).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame)))
                        if frame.data_ref().is_some_and(Bytes::is_empty) => {}
                    polled => return polled.map_err(BoxError::from),
                }
            },
            Body::Client(client) => client.poll_frame(cx),
            Body::Replay(replay) => Pin::new(replay).poll_frame(cx),
            Body::GrpcOutcome { body, stat } => {
                let polled = Pin::new(&mut **body).poll_frame(cx);
                if let Poll::Ready(Some(Ok(frame))) = &polled {
                    if let Some(trailers) = frame.trailers_ref() {
                        crate::grpc_outcome::trailers(trailers, stat);
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Full(bytes) => bytes.is_none(),
            Body::Streaming(incoming) | Body::Held { body: incoming, .. } => {
                incoming.is_end_stream()
            }
            Body::Client(client) => client.is_end_stream(),
            Body::Replay(replay) => replay.is_end_stream(),
            Body::GrpcOutcome { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Empty => SizeHint::with_exact(0),
            Body::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Streaming(incoming) | Body::Held { body: incoming, .. } => incoming.size_hint(),
            Body::Client(client) => client.size_hint(),
            Body::Replay(replay) => replay.size_hint(),
            Body::GrpcOutcome { body, .. } => body.size_hint(),
        }
    }
}

/// A response on its way to a client of one of the proxy's listeners. It keeps the
/// connection counted as busy until the last byte is sent, so a connection streaming a long
/// answer is never taken for idle (see `connections.rs`).
pub struct ServedBody {
    body: Body,
    _active: Active,
}

impl ServedBody {
    pub fn new(body: Body, active: Active) -> Self {
        Self {
            body,
            _active: active,
        }
    }
}

impl http_body::Body for ServedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
