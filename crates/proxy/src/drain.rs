//! Graceful shutdown: one signal tells every listener to stop accepting and every connection
//! to finish what it is doing; the owner then waits until every connection has dropped its
//! `Drain` (the channel closes) or the deadline passes.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct DrainSignal {
    // Declared first, so dropped first: the flag is up before the channel closes.
    draining: DrainingFlag,
    signal: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// The flag [`Signaled`] reads, raised before the channel wakes anyone: by
/// [`DrainSignal::drain`], or when the signal goes away unsent (the channel's closing ends
/// every wait for it too).
struct DrainingFlag(Arc<AtomicBool>);

impl DrainingFlag {
    fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl Drop for DrainingFlag {
    fn drop(&mut self) {
        self.raise();
    }
}

/// Held by every listener and connection task until it has finished.
#[derive(Clone)]
pub struct Drain {
    signal: watch::Receiver<bool>,
    /// Raised before the channel wakes anyone: see [`Signaled`].
    draining: Arc<AtomicBool>,
    _done: mpsc::Sender<()>,
}

impl DrainSignal {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            draining: DrainingFlag(Arc::new(AtomicBool::new(false))),
            signal,
            done_tx,
            done_rx,
        }
    }

    pub fn watch(&self) -> Drain {
        Drain {
            signal: self.signal.subscribe(),
            draining: self.draining.0.clone(),
            _done: self.done_tx.clone(),
        }
    }

    /// Signals and waits. Returns false if connections were still open at the deadline.
    pub async fn drain(self, deadline: Duration) -> bool {
        let Self {
            draining,
            signal,
            done_tx,
            mut done_rx,
        } = self;
        draining.raise();
        let _ = signal.send(true);
        drop(done_tx);
        tokio::time::timeout(deadline, done_rx.recv()).await.is_ok()
    }
}

impl Drain {
    /// Resolves once draining has begun (or the signal is gone).
    pub fn signaled(&mut self) -> Signaled<'_> {
        let Self {
            signal, draining, ..
        } = self;
        Signaled {
            draining,
            registered: None,
            wait: Box::pin(async move {
                let _ = signal.wait_for(|draining| *draining).await;
            }),
        }
    }
}

/// The future of [`Drain::signaled`].
///
/// A connection's `select!` polls it each time the connection's task wakes, several times
/// a request, and a poll of the channel's wait takes a lock (about 190 instructions). Once
/// that wait has registered the task, a poll by the same task reads the flag instead: the
/// flag is raised before the channel wakes the task, so the wake that matters finds it up.
pub struct Signaled<'a> {
    draining: &'a AtomicBool,
    /// The waker the channel's wait holds, once it has been polled.
    registered: Option<Waker>,
    wait: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
}

impl Future for Signaled<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.draining.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|registered| registered.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        let poll = self.wait.as_mut().poll(cx);
        if poll.is_pending() {
            self.registered = Some(cx.waker().clone());
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polled again and again by its task (as a connection's `select!` does on every wake)
    /// and then signaled: the wait still ends, and so does the drain.
    #[tokio::test]
    async fn a_wait_polled_many_times_still_sees_the_signal() {
        let signal = DrainSignal::new();
        let mut drain = signal.watch();
        let (ticked, mut ticks) = mpsc::channel(16);
        let waiter = tokio::spawn(async move {
            let signaled = drain.signaled();
            tokio::pin!(signaled);
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            loop {
                tokio::select! {
                    _ = &mut signaled => return,
                    _ = interval.tick() => { let _ = ticked.try_send(()); }
                }
            }
        });
        for _ in 0..5 {
            ticks.recv().await.expect("the waiter ticks");
        }
        assert!(
            signal.drain(Duration::from_secs(10)).await,
            "the waiter ended"
        );
        waiter.await.unwrap();
    }

    #[tokio::test]
    async fn a_signal_gone_unsent_ends_the_wait() {
        let signal = DrainSignal::new();
        let mut drain = signal.watch();
        let waiter = tokio::spawn(async move { drain.signaled().await });
        tokio::task::yield_now().await;
        drop(signal);
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("the wait ended")
            .unwrap();
    }
}
