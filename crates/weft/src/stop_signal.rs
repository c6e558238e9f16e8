//! The signals that stop a long-running command. The binary installs them, once per
//! process; the proxy, the control plane and the demo are handed the receiver and never
//! touch signals themselves, so each has one way to stop, whoever asks (a signal here, a
//! test or the demo's own supervisor elsewhere).

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// SIGTERM (a supervisor) and SIGINT (Ctrl-C): what stops `weft proxy` and `weft control`.
/// A proxy in local mode takes SIGHUP as "reload", so it is not here.
pub const TERMINATE_OR_INTERRUPT: &[(SignalKind, &str)] = &[
    (SignalKind::terminate(), "SIGTERM"),
    (SignalKind::interrupt(), "SIGINT"),
];

/// The demo also stops on SIGHUP: a closed terminal sends it, and its default action would
/// end the demo without stopping its sidecars.
pub const TERMINATE_INTERRUPT_OR_HANGUP: &[(SignalKind, &str)] = &[
    (SignalKind::terminate(), "SIGTERM"),
    (SignalKind::interrupt(), "SIGINT"),
    (SignalKind::hangup(), "SIGHUP"),
];

/// Installs handlers for `signals` (from then on they no longer end the process) and
/// returns a receiver that turns true at the first of them. Must run inside the runtime.
pub fn install(signals: &[(SignalKind, &'static str)]) -> std::io::Result<watch::Receiver<bool>> {
    let mut handlers = Vec::with_capacity(signals.len());
    for &(kind, name) in signals {
        handlers.push((signal(kind)?, name));
    }
    let (stop, stopped) = watch::channel(false);
    let stop = std::sync::Arc::new(stop);
    for (mut handler, name) in handlers {
        let stop = stop.clone();
        tokio::spawn(async move {
            handler.recv().await;
            if !stop.send_replace(true) {
                tracing::info!(signal = name, "stopping");
            }
            // Holding the sender: receivers keep seeing `true`, never a closed channel.
            std::future::pending::<()>().await;
        });
    }
    Ok(stopped)
}
