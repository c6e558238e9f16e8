//! The signals that end the demo in order: the summary printed, every sidecar stopped, the
//! temporary directory removed.

use crate::DemoError;
use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct StopSignal {
    interrupt: Signal,
    terminate: Signal,
    /// A closed terminal sends SIGHUP, whose default action would end the demo without
    /// stopping its sidecars.
    hangup: Signal,
}

impl StopSignal {
    /// Installs the handlers; from then on these signals no longer kill the process.
    pub fn install() -> Result<Self, DemoError> {
        let install = |kind| signal(kind).map_err(DemoError::Signals);
        Ok(StopSignal {
            interrupt: install(SignalKind::interrupt())?,
            terminate: install(SignalKind::terminate())?,
            hangup: install(SignalKind::hangup())?,
        })
    }

    /// Completes when any of them arrives. Cancel-safe: a signal is never lost.
    pub async fn received(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}
