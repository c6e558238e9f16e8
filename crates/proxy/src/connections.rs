//! The open connections of one listener: the cap, who gives way when it is reached, and
//! which connections count as idle.
//!
//! At the cap a new connection is not simply refused: if an open connection has no request
//! in flight, the one that has waited longest is asked to close (one that never sent a
//! request goes first) and the new one takes its place. A flood of idle connections (bare
//! TCP, HTTP/2 prefaces, kept-alive connections nobody uses) therefore cannot lock a
//! well-behaved client out; only connections that are doing work hold their place. A
//! connection asked to close finishes what it has started (HTTP/2 GOAWAY, HTTP/1.1 close
//! after the current response), so making room never fails a request.

use crate::drain::Drain;
use crate::io::{ReadHook, ReadThrough};
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::Notify;

/// Connections asked to close may still be finishing; this many may be over the cap.
const CLOSING_SLACK: usize = 64;
/// How many of the oldest connections are looked at to find one to close.
const SCAN: usize = 32;
/// `in_flight` of a connection that was asked to close.
const CLOSING: u32 = 1 << 31;

pub struct Tracker {
    limit: usize,
    open: AtomicUsize,
    /// Oldest first. Weak: a connection's end drops it; dead entries are swept lazily.
    queue: Mutex<VecDeque<Weak<Tracked>>>,
}

/// One open connection. Dropping the last handle frees its place.
pub struct Tracked {
    tracker: Arc<Tracker>,
    /// Requests (and tunnels, and TCP streams) in flight; `CLOSING` bit once asked to close.
    in_flight: AtomicU32,
    /// Requests begun, so an idle check can tell whether anything happened since the last.
    begun: AtomicU32,
    /// `begun + 1` as it was when bytes last arrived with nothing in flight: those bytes
    /// start the next request's head, which must be whole within `--header-read-timeout`.
    /// 0 until then.
    head_heard: AtomicU32,
    close: Notify,
    /// Graceful shutdown waits for every connection, tunnels included, until its deadline.
    _drain: Drain,
}

/// Held while a request, tunnel or TCP stream is in flight on a connection.
pub struct Active(Arc<Tracked>);

/// Why a connection was neither admitted nor made room for.
#[derive(Debug, PartialEq, Eq)]
pub enum AtCapacity {
    /// Every connection has work in flight.
    Busy,
    /// The connections already asked to close have not gone yet: let them run, then retry.
    Closing,
}

impl Tracker {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit.max(1),
            open: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
        })
    }

    /// Admits a new connection, closing an idle one to make room at the cap. `Ok(true)`
    /// when an idle connection was asked to close for it.
    pub fn admit(self: &Arc<Self>, drain: Drain) -> Result<(Arc<Tracked>, bool), AtCapacity> {
        let open = self.open.fetch_add(1, Ordering::AcqRel);
        let evicted = if open < self.limit {
            false
        } else if open >= self.limit + CLOSING_SLACK {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(AtCapacity::Closing);
        } else if self.close_an_idle_one() {
            true
        } else {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(AtCapacity::Busy);
        };
        let tracked = Arc::new(Tracked {
            tracker: self.clone(),
            in_flight: AtomicU32::new(0),
            begun: AtomicU32::new(0),
            head_heard: AtomicU32::new(0),
            close: Notify::new(),
            _drain: drain,
        });
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= 2 * self.limit + CLOSING_SLACK {
            queue.retain(|entry| entry.strong_count() > 0);
        }
        queue.push_back(Arc::downgrade(&tracked));
        Ok((tracked, evicted))
    }

    fn close_an_idle_one(&self) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // The oldest few, each with whether it is idle, read once.
        let mut looked_at: Vec<(Arc<Tracked>, bool)> = Vec::with_capacity(SCAN);
        while looked_at.len() < SCAN {
            let Some(entry) = queue.pop_front() else {
                break;
            };
            // Ended connections leave here; so do ones already asked to close.
            if let Some(tracked) = entry.upgrade() {
                let in_flight = tracked.in_flight.load(Ordering::Acquire);
                if in_flight & CLOSING == 0 {
                    looked_at.push((tracked, in_flight == 0));
                }
            }
        }
        // Never-active connections first, then the longest-open idle one. The swap fails
        // if a request began on it meanwhile; then nobody is closed this time.
        let victim = looked_at
            .iter()
            .position(|(t, idle)| *idle && t.begun.load(Ordering::Acquire) == 0)
            .or_else(|| looked_at.iter().position(|(_, idle)| *idle))
            .filter(|&i| {
                let tracked = &looked_at[i].0;
                tracked
                    .in_flight
                    .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            });
        if let Some(i) = victim {
            let (tracked, _) = looked_at.remove(i);
            tracked.close.notify_one();
        }
        // Idle ones keep their place; busy ones go to the back, so the next scan sees others.
        for (tracked, idle) in looked_at.iter().rev() {
            if *idle {
                queue.push_front(Arc::downgrade(tracked));
            }
        }
        for (tracked, idle) in &looked_at {
            if !*idle {
                queue.push_back(Arc::downgrade(tracked));
            }
        }
        victim.is_some()
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Tracked {
    /// A request (or tunnel, or TCP stream) starts on this connection.
    pub fn begin(self: &Arc<Self>) -> Active {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.begun.fetch_add(1, Ordering::Relaxed);
        Active(self.clone())
    }

    /// Whether a request was ever begun on this connection.
    pub fn ever_active(&self) -> bool {
        self.begun.load(Ordering::Relaxed) > 0
    }

    /// Resolves once this connection has been asked to close to make room.
    pub async fn asked_to_close(&self) {
        self.close.notified().await;
    }

    /// Requests begun so far, and whether one is in flight now.
    pub fn activity(&self) -> (u32, bool) {
        let in_flight = self.in_flight.load(Ordering::Acquire) & !CLOSING;
        (self.begun.load(Ordering::Relaxed), in_flight > 0)
    }

    /// Bytes arrived from the client ([`HeardStream`]). With nothing in flight they are the
    /// start of the next request.
    fn heard(&self) {
        if self.in_flight.load(Ordering::Acquire) & !CLOSING == 0 {
            let next = self.begun.load(Ordering::Relaxed).wrapping_add(1);
            self.head_heard.store(next, Ordering::Relaxed);
        }
    }

    /// Whether a request has started to arrive and has not begun yet: its head is still
    /// incomplete.
    pub fn head_pending(&self) -> bool {
        let (begun, busy) = self.activity();
        !busy && self.head_heard.load(Ordering::Relaxed) == begun.wrapping_add(1)
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.tracker.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Active {
    /// One more hold on the same connection (a request's answer outlives its handler).
    pub fn also(&self) -> Active {
        self.0.in_flight.fetch_add(1, Ordering::AcqRel);
        Active(self.0.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A client's stream that tells its connection when bytes arrive, so the connection's
/// watch can time each request head without a timer per request (see `head_pending`).
pub type HeardStream<T> = ReadThrough<T, Heard>;

pub struct Heard(Arc<Tracked>);

impl<T> HeardStream<T> {
    pub fn new(inner: T, tracked: Arc<Tracked>) -> Self {
        Self::with(inner, Heard(tracked))
    }
}

impl ReadHook for Heard {
    fn poll_read_from<T: AsyncRead + Unpin>(
        &mut self,
        inner: &mut T,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.0.heard();
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::DrainSignal;

    fn admit(tracker: &Arc<Tracker>) -> Result<(Arc<Tracked>, bool), AtCapacity> {
        tracker.admit(DrainSignal::new().watch())
    }

    #[test]
    fn at_the_cap_an_idle_connection_makes_room_and_a_busy_one_does_not() {
        let tracker = Tracker::new(2);
        let (busy, _) = admit(&tracker).unwrap();
        let _request = busy.begin();
        let (idle, _) = admit(&tracker).unwrap();
        let (newcomer, evicted) = admit(&tracker).unwrap();
        assert!(evicted);
        // The idle one was asked to close; the busy one was not.
        assert_eq!(idle.in_flight.load(Ordering::Acquire), CLOSING);
        assert_eq!(busy.in_flight.load(Ordering::Acquire), 1);
        drop(idle);
        assert_eq!(tracker.open(), 2);

        // Now both are busy: the next one is refused.
        let _working = newcomer.begin();
        assert!(admit(&tracker).is_err());
        assert_eq!(tracker.open(), 2);
    }

    #[test]
    fn never_active_connections_go_before_idle_ones_that_served() {
        let tracker = Tracker::new(2);
        let (served, _) = admit(&tracker).unwrap();
        drop(served.begin());
        let (silent, _) = admit(&tracker).unwrap();
        let (_newcomer, evicted) = admit(&tracker).unwrap();
        assert!(evicted);
        assert_eq!(silent.in_flight.load(Ordering::Acquire), CLOSING);
        assert_eq!(served.in_flight.load(Ordering::Acquire), 0);
    }

    #[test]
    fn bytes_with_nothing_in_flight_start_a_head_until_a_request_begins() {
        let tracker = Tracker::new(2);
        let (tracked, _) = admit(&tracker).unwrap();
        assert!(!tracked.head_pending());
        tracked.heard();
        assert!(tracked.head_pending(), "the first request's head arriving");
        let request = tracked.begin();
        assert!(!tracked.head_pending());
        tracked.heard();
        drop(request);
        assert!(
            !tracked.head_pending(),
            "bytes read in flight (a body) start no head: the connection is only waiting"
        );
        tracked.heard();
        assert!(tracked.head_pending(), "the next request's head arriving");
    }

    #[test]
    fn a_flood_of_idle_connections_never_grows_past_the_cap_and_its_slack() {
        let tracker = Tracker::new(100);
        let mut held = Vec::new();
        for _ in 0..10_000 {
            if let Ok((tracked, _)) = admit(&tracker) {
                held.push(tracked);
            }
            // Connections asked to close go away, as their tasks would.
            held.retain(|t| t.in_flight.load(Ordering::Acquire) & CLOSING == 0);
            assert!(tracker.open() <= 100 + CLOSING_SLACK);
        }
        assert_eq!(tracker.open(), 100);
        assert!(tracker.queue.lock().unwrap().len() <= 2 * 100 + CLOSING_SLACK + 1);
    }
}
