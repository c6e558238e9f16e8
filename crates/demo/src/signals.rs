//! What ends the demo in order (the summary printed, every sidecar stopped, the temporary
//! directory removed): the stop the binary hands it, set on SIGINT, SIGTERM or SIGHUP.

use tokio::sync::watch;

pub struct StopSignal(watch::Receiver<bool>);

impl StopSignal {
    pub fn new(stop: watch::Receiver<bool>) -> Self {
        StopSignal(stop)
    }

    /// Completes once told to stop (at once if that happened already): a stop is never
    /// lost, whenever it is waited for.
    pub async fn received(&mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            // Nobody can tell the demo to stop any more: it runs until its duration.
            std::future::pending::<()>().await;
        }
    }
}
