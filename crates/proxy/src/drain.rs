//! Graceful shutdown: one signal tells every listener to stop accepting and every connection
//! to finish what it is doing; the owner then waits until every connection has dropped its
//! `Drain` (the channel closes) or the deadline passes.

use std::time::Duration;
use tokio::sync::{mpsc, watch};

pub struct DrainSignal {
    signal: watch::Sender<bool>,
    done_tx: mpsc::Sender<()>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by every listener and connection task until it has finished.
#[derive(Clone)]
pub struct Drain {
    signal: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl DrainSignal {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        Self {
            signal,
            done_tx,
            done_rx,
        }
    }

    pub fn watch(&self) -> Drain {
        Drain {
            signal: self.signal.subscribe(),
            _done: self.done_tx.clone(),
        }
    }

    /// Signals and waits. Returns false if connections were still open at the deadline.
    pub async fn drain(self, deadline: Duration) -> bool {
        let Self {
            signal,
            done_tx,
            mut done_rx,
        } = self;
        let _ = signal.send(true);
        drop(done_tx);
        tokio::time::timeout(deadline, done_rx.recv()).await.is_ok()
    }
}

impl Drain {
    pub async fn signaled(&mut self) {
        let _ = self.signal.wait_for(|draining| *draining).await;
    }
}
