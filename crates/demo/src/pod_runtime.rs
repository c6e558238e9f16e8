//! A runtime whose threads live in a pod's network namespace, so an app run on it binds and
//! connects there, as if it were a process of its own in that pod.
//!
//! `setns` moves only the calling thread: the runtime is a current-thread one on a thread
//! that entered the namespace, and its blocking pool's threads (where `getaddrinfo` runs)
//! enter it too as they start. A socket keeps the namespace it was made in, so anything
//! spawned on [`PodRuntime::handle`] is in the pod.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// How long blocking work (a name being resolved) may hold up a pod's stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

pub struct PodRuntime {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl PodRuntime {
    /// Starts the runtime in the network namespace at `netns` (`/run/netns/NAME`).
    pub fn start(name: &str, netns: &Path) -> io::Result<PodRuntime> {
        let namespace = Arc::new(File::open(netns)?);
        let (started, handle) = std::sync::mpsc::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("pod-{name}"))
            .spawn(move || {
                let runtime = enter(&namespace).and_then(|()| {
                    let blocking = namespace.clone();
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .on_thread_start(move || {
                            if let Err(error) = enter(&blocking) {
                                // Then a name resolved here is looked up on the host: the
                                // app's call fails, and this says why.
                                tracing::error!(%error, "a pod's blocking thread cannot enter its network namespace");
                            }
                        })
                        .build()
                });
                let runtime = match runtime {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = started.send(Err(error));
                        return;
                    }
                };
                let _ = started.send(Ok(runtime.handle().clone()));
                runtime.block_on(async {
                    let _ = stopped.await;
                });
                runtime.shutdown_timeout(STOP_TIMEOUT);
            })?;
        let handle = handle
            .recv()
            .map_err(|_| io::Error::other("the pod's thread ended before its runtime started"))??;
        Ok(PodRuntime {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Spawn here (or `enter` it) to run in the pod.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Stops what runs here and waits for the thread to end.
    pub async fn stop(mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for PodRuntime {
    fn drop(&mut self) {
        // Without `stop` (an early return): the thread ends by itself, unjoined.
        self.stop.take();
    }
}

fn enter(namespace: &File) -> io::Result<()> {
    rustix::thread::move_into_link_name_space(
        namespace.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .map_err(io::Error::from)
}
