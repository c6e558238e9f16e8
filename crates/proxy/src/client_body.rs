//! A request body as it arrives from the client, and what went wrong with it if anything.
//!
//! Two faults are the client's, not the upstream's: a body that cannot be parsed (a
//! malformed chunked encoding, a length that does not match) and a body that arrives too
//! slowly (a byte at a time, to hold a connection and an upstream stream open). Either ends
//! the body with an error, which makes the upstream request fail; the request handler then
//! reads the `BodyVerdict` and answers 400 or 408 instead of blaming the upstream with a 502.
//!
//! The pace check counts only the time the proxy spends waiting for the client: while the
//! upstream is not reading (flow control), the body is not polled and nothing is counted.

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How slowly a request body may arrive. The first `grace` of waiting is free; after that
/// the client must have sent `min_rate` bytes per second of waiting.
#[derive(Clone, Copy, Debug)]
pub struct BodyPace {
    pub min_rate: u32,
    pub grace: Duration,
}

/// What the client did wrong with its body, if anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientFault {
    /// The body could not be read: a framing error (400).
    Malformed,
    /// The client closed or reset the request before its body ended.
    Closed,
    /// The body arrived slower than the minimum rate (408).
    TooSlow,
}

impl ClientFault {
    /// The `reason` label in `weft_rejected_total`.
    pub fn reason(self) -> &'static str {
        match self {
            ClientFault::Malformed => "bad_request",
            ClientFault::Closed => "client_closed",
            ClientFault::TooSlow => "request_body_too_slow",
        }
    }
}

impl ClientFault {
    /// The fault behind a failed request, when the request's own body caused the failure:
    /// an answer the proxy made (a 5xx with `x-weft-error`) while the body was at fault.
    pub fn behind(
        verdict: Option<&Arc<BodyVerdict>>,
        response: &http::Response<crate::body::Body>,
    ) -> Option<ClientFault> {
        let proxy_failed = response.status().is_server_error()
            && response.headers().contains_key(crate::http::ERROR_HEADER);
        proxy_failed.then(|| verdict?.fault()).flatten()
    }

    /// The client's answer: 400 for a broken body, 408 for one too slow. An HTTP/1
    /// connection closes after it (the rest of the body cannot be told from a request).
    pub fn response(self) -> http::Response<crate::body::Body> {
        use http::StatusCode;
        match self {
            ClientFault::Malformed => {
                crate::http::synthetic(StatusCode::BAD_REQUEST, "malformed request body")
            }
            ClientFault::Closed => crate::http::synthetic(
                StatusCode::BAD_REQUEST,
                "the client ended the request before its body",
            ),
            ClientFault::TooSlow => crate::http::synthetic(
                StatusCode::REQUEST_TIMEOUT,
                "request body arrived too slowly",
            ),
        }
    }
}

/// Shared between a `ClientBody` (which moves into the upstream request) and the handler.
#[derive(Default)]
pub struct BodyVerdict(AtomicU8);

impl BodyVerdict {
    pub fn fault(&self) -> Option<ClientFault> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(ClientFault::Malformed),
            2 => Some(ClientFault::Closed),
            3 => Some(ClientFault::TooSlow),
            _ => None,
        }
    }

    fn set(&self, fault: ClientFault) {
        let code = match fault {
            ClientFault::Malformed => 1,
            ClientFault::Closed => 2,
            ClientFault::TooSlow => 3,
        };
        self.0.store(code, Ordering::Release);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {0} bytes per second")]
struct TooSlow(u32);

pub struct ClientBody {
    incoming: Incoming,
    verdict: Arc<BodyVerdict>,
    /// `None` when the pace is not checked (gRPC streams, or switched off).
    pace: Option<Box<PaceState>>,
}

struct PaceState {
    pace: BodyPace,
    received: u64,
    /// Time spent waiting for the client, not counting the wait in progress.
    waited: Duration,
    waiting_since: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody").finish_non_exhaustive()
    }
}

impl ClientBody {
    pub fn new(incoming: Incoming, verdict: Arc<BodyVerdict>, pace: Option<BodyPace>) -> Self {
        Self {
            incoming,
            verdict,
            pace: pace.filter(|p| p.min_rate > 0).map(|pace| {
                Box::new(PaceState {
                    pace,
                    received: 0,
                    waited: Duration::ZERO,
                    waiting_since: None,
                    timer: None,
                })
            }),
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    if let Some(pace) = &mut self.pace {
                        pace.arrived(len);
                    }
                    // Empty DATA frames carry nothing and count against the peer's h2 limit.
                    if frame.is_data() && len == 0 {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(Some(Err(error))) => {
                    let fault = if error.is_canceled() || error.is_incomplete_message() {
                        ClientFault::Closed
                    } else {
                        ClientFault::Malformed
                    };
                    self.verdict.set(fault);
                    return Poll::Ready(Some(Err(error.into())));
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    if let Some(pace) = &mut self.pace {
                        if pace.out_of_time(cx) {
                            self.verdict.set(ClientFault::TooSlow);
                            return Poll::Ready(Some(Err(TooSlow(pace.pace.min_rate).into())));
                        }
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

/// A client's request with its body checked as it streams. The verdict is `None` for a
/// request without a body (nothing can go wrong, and nothing is allocated).
pub fn checked(
    request: http::Request<Incoming>,
    pace: BodyPace,
) -> (http::Request<crate::body::Body>, Option<Arc<BodyVerdict>>) {
    if http_body::Body::is_end_stream(request.body()) {
        return (request.map(|_| crate::body::Body::Empty), None);
    }
    // gRPC streams may rightly be quiet for a long time: their pace is not checked.
    let pace = (!crate::outbound::is_grpc(&request)).then_some(pace);
    let verdict = Arc::new(BodyVerdict::default());
    let (parts, incoming) = request.into_parts();
    let body = ClientBody::new(incoming, verdict.clone(), pace);
    let request = http::Request::from_parts(parts, crate::body::Body::Client(body));
    (request, Some(verdict))
}

impl PaceState {
    fn arrived(&mut self, bytes: usize) {
        self.received += bytes as u64;
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
    }

    /// Waiting the client is allowed in all, given what it has sent so far.
    fn allowance(&self) -> Duration {
        let earned = self.received as f64 / f64::from(self.pace.min_rate);
        self.pace.grace + Duration::from_secs_f64(earned.min(1e9))
    }

    /// Called when the client has nothing for us: arms the timer for when its allowance
    /// runs out, and says whether it has.
    fn out_of_time(&mut self, cx: &mut Context<'_>) -> bool {
        let now = Instant::now();
        let since = *self.waiting_since.get_or_insert(now);
        let Some(left) = self.allowance().checked_sub(self.waited + (now - since)) else {
            return true;
        };
        let deadline = now + left;
        let timer = match &mut self.timer {
            Some(timer) => {
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                timer
            }
            None => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        timer.as_mut().poll(cx).is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pace_state(min_rate: u32, grace_ms: u64) -> PaceState {
        PaceState {
            pace: BodyPace {
                min_rate,
                grace: Duration::from_millis(grace_ms),
            },
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    #[test]
    fn the_allowance_grows_with_what_the_client_sent() {
        let mut pace = pace_state(1000, 5_000);
        assert_eq!(pace.allowance(), Duration::from_secs(5));
        pace.arrived(2_000);
        assert_eq!(pace.allowance(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickle_runs_out_of_time_and_a_steady_sender_does_not() {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut trickle = pace_state(1000, 1_000);
        for _ in 0..9 {
            assert!(!trickle.out_of_time(&mut cx));
            tokio::time::advance(Duration::from_millis(100)).await;
            trickle.arrived(1);
        }
        assert!(!trickle.out_of_time(&mut cx));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!(trickle.out_of_time(&mut cx), "1 s of grace used up");

        let mut steady = pace_state(1000, 1_000);
        for _ in 0..100 {
            assert!(!steady.out_of_time(&mut cx));
            tokio::time::advance(Duration::from_millis(100)).await;
            steady.arrived(200);
        }
    }
}
