//! A request body that can be sent more than once, for retries.
//!
//! The first try streams the client's body through as it arrives and keeps a copy; a retry
//! replays the copy and then carries on with whatever the client has not sent yet. Nothing
//! waits for the whole body first, so streaming gRPC calls are not delayed. Past the size
//! limit the copy is dropped and the request can no longer be retried.

use crate::client_body::{BoxError, ClientBody};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

struct Shared {
    source: ClientBody,
    frames: Vec<Bytes>,
    buffered: usize,
    limit: usize,
    /// More than `limit` was read: no copy, no retry.
    overflowed: bool,
    ended: bool,
    trailers: Option<HeaderMap>,
}

/// One try's view of the shared body.
pub struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// Frames of the copy this try has sent.
    cursor: usize,
    trailers_sent: bool,
    hint: SizeHint,
}

impl std::fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("cursor", &self.cursor)
            .finish()
    }
}

impl ReplayBody {
    pub fn new(source: ClientBody, limit: usize) -> Self {
        let hint = source.size_hint();
        let shared = Shared {
            source,
            frames: Vec::new(),
            buffered: 0,
            limit,
            overflowed: false,
            ended: false,
            trailers: None,
        };
        Self {
            shared: Arc::new(Mutex::new(shared)),
            cursor: 0,
            trailers_sent: false,
            hint,
        }
    }

    /// A fresh try from the start, or `None` if the body already outgrew the copy.
    pub fn replay(&self) -> Option<Self> {
        self.is_replayable().then(|| Self {
            shared: self.shared.clone(),
            cursor: 0,
            trailers_sent: false,
            hint: self.hint,
        })
    }

    /// False once the body outgrew the copy: a try made earlier must not be sent then.
    pub fn is_replayable(&self) -> bool {
        !self
            .shared
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .overflowed
    }
}

impl http_body::Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let mut shared = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        if !shared.overflowed && this.cursor < shared.frames.len() {
            let frame = shared.frames[this.cursor].clone();
            this.cursor += 1;
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if shared.ended {
            if this.trailers_sent {
                return Poll::Ready(None);
            }
            this.trailers_sent = true;
            return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }
        // Empty DATA frames never come out of a `ClientBody`.
        match shared.source.poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                shared.ended = true;
                this.trailers_sent = true;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if !shared.overflowed {
                        shared.buffered += data.len();
                        if shared.buffered > shared.limit {
                            shared.overflowed = true;
                            shared.frames = Vec::new();
                        } else {
                            shared.frames.push(data.clone());
                            this.cursor = shared.frames.len();
                        }
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    shared.trailers = Some(trailers.clone());
                    shared.ended = true;
                    this.trailers_sent = true;
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    /// True as soon as nothing is left for this try, so the last DATA frame carries
    /// END_STREAM (instead of an extra empty frame after it).
    fn is_end_stream(&self) -> bool {
        let shared = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let copy_sent = shared.overflowed || self.cursor >= shared.frames.len();
        let source_done = shared.ended || shared.source.is_end_stream();
        let trailers_pending = shared.trailers.is_some() && !self.trailers_sent;
        source_done && copy_sent && !trailers_pending
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}
