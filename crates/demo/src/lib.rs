//! `weft demo`: a sample mesh on loopback for a first look at Weft.
//!
//! A control plane, sample apps (a frontend, a gRPC catalog, two versions of reviews,
//! ratings) and a load generator run in this process; each app gets a real `weft proxy`
//! sidecar as a child process that registers with the control plane and gets its config
//! from it over TLS, with a certificate the control plane's CA issues it for a join token,
//! so every hop is mutual TLS and measured.
//! Every port comes from the OS. When the demo ends it summarises what the sidecars
//! measured and stops every process it started.
//!
//! With `transparent`, each workload gets a network namespace of its own (a "pod"); its app
//! runs on a thread in that namespace and calls services by name, unmodified, and capture
//! (iptables, installed by `weft capture install`) takes its traffic through its sidecar.

#![forbid(unsafe_code)]

mod apps;
mod catalog;
mod control;
mod error;
mod guide;
mod http_client;
mod loadgen;
mod mesh;
mod metrics;
mod pod_runtime;
mod pods;
mod proxy_log;
mod sidecar;
mod signals;
mod summary;
mod topology;
mod workdir;

pub use error::DemoError;
pub use guide::Guide;
pub use summary::{EdgeSummary, Summary};

use mesh::SampleMesh;
use signals::StopSignal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// The `weft` binary the sidecars run as (`weft proxy ...`); the demo's own executable
    /// when run as `weft demo`.
    pub weft_bin: PathBuf,
    /// Requests per second from the load generator to the frontend.
    pub rps: u32,
    /// Stop after this long; without it, run until SIGINT, SIGTERM or SIGHUP.
    pub duration: Option<Duration>,
    /// Each workload in its own network namespace, its app unmodified and captured (root).
    pub transparent: bool,
}

/// Starts the mesh, calls `on_ready` with where everything is, runs until told to stop, and
/// returns what the sidecars measured. Every child process is stopped before it returns,
/// whether it succeeds or not.
pub async fn run(
    options: DemoOptions,
    stop: tokio::sync::watch::Receiver<bool>,
    on_ready: impl FnOnce(&Guide),
) -> Result<Summary, DemoError> {
    // Watched from the start, so a Ctrl-C during startup also stops what has started.
    let mut stop = StopSignal::new(stop);
    let mut mesh = tokio::select! {
        mesh = SampleMesh::start(&options) => mesh?,
        () = stop.received() => return Err(DemoError::Interrupted),
    };
    on_ready(&mesh.guide(&options));
    let outcome = mesh.run_until_stopped(&mut stop, options.duration).await;
    let summary = mesh.stop().await;
    outcome.map(|()| summary)
}
