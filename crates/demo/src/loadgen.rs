//! The load generator: a steady stream of requests to the frontend, sent through the
//! loadgen workload's own sidecar so the first hop is measured like every other.

use crate::apps::Outbound;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

/// A slow mesh makes requests pile up; past this many in flight, ticks are skipped rather
/// than growing without bound.
const MAX_IN_FLIGHT: usize = 64;

pub struct LoadGenerator {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl LoadGenerator {
    /// Sends `rps` requests a second to the frontend, the way the loadgen workload reaches
    /// the mesh. Outcomes are not kept here: the sidecars count them. Spawns on the current
    /// runtime (a pod's, for the connections to be made in the pod).
    pub fn start(mesh: Outbound, rps: u32) -> Self {
        let (stop, mut stopped) = oneshot::channel();
        let task = tokio::spawn(async move {
            let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / rps.max(1));
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    // Also taken when the generator is dropped without `stop`.
                    _ = &mut stopped => break,
                    _ = ticks.tick() => {
                        let Ok(permit) = in_flight.clone().try_acquire_owned() else { continue };
                        let mesh = mesh.clone();
                        tokio::spawn(async move {
                            let _ = mesh.get("frontend").await;
                            drop(permit);
                        });
                    }
                }
            }
            // Let requests in flight finish, so the sidecars' counts are final.
            let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
        });
        LoadGenerator { stop, task }
    }

    /// Stops sending and waits for the requests in flight (each has a timeout).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}
