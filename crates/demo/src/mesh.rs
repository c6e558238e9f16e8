//! The sample mesh as a whole: started in order, watched while it runs, stopped in order.
//!
//! ```text
//! start: temp dir + CA -> bind app ports -> spawn sidecars (mesh file without endpoints)
//!        -> learn their addresses -> ready -> full mesh file -> every sidecar reloaded
//!        -> apps serve -> load starts
//! run:   scrape /metrics every second (the last scrape survives a sidecar that exits on
//!        Ctrl-C) and watch that no sidecar died
//! stop:  load stops -> final scrape -> summary -> SIGTERM, then SIGKILL, to sidecars
//!        -> apps stop -> temp dir removed
//! ```

use crate::apps::{self, AppServer, Outbound, SampleApp};
use crate::certs::DemoCa;
use crate::guide::{Guide, WorkloadInfo};
use crate::http_client::HttpClient;
use crate::loadgen::LoadGenerator;
use crate::sidecar::{self, Sidecar, SidecarSpec};
use crate::signals::StopSignal;
use crate::summary::Summary;
use crate::topology::{self, Workload};
use crate::workdir::WorkDir;
use crate::{DemoError, DemoOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

const MESH_FILE: &str = "mesh.yaml";
/// Sidecars poll the mesh file every half second.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// If a sidecar has not reloaded by then, the file is written again: one that took its
/// first look at the file only after the rewrite would otherwise never notice it.
const RELOAD_NUDGE: Duration = Duration::from_secs(2);
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct SampleMesh {
    // Fields drop in this order, which is the order things must stop in if `stop` never
    // runs: load, sidecars (killed on drop), apps, then the directory they used.
    loadgen: Option<LoadGenerator>,
    sidecars: Vec<Sidecar>,
    /// Each app's address, with the server that stops when dropped.
    apps: Vec<(SocketAddr, AppServer)>,
    /// Only held so it is removed last.
    _workdir: WorkDir,
    mesh_file: PathBuf,
    /// Where requests enter the mesh: the load generator's sidecar's outbound listener.
    entry: SocketAddr,
    client: HttpClient,
    /// The last `/metrics` text of each sidecar, by position in `sidecars`.
    scrapes: Vec<Option<String>>,
    traffic_started: Instant,
}

impl SampleMesh {
    pub async fn start(options: &DemoOptions) -> Result<Self, DemoError> {
        let workdir = WorkDir::create()?;
        let ca = DemoCa::create(&workdir)?;
        let mesh_file = workdir.write(MESH_FILE, &topology::mesh_file(&[]))?;
        let show_logs = Arc::new(AtomicBool::new(false));

        let mut listeners = Vec::new();
        let mut starting = Vec::new();
        for workload in Workload::ALL {
            let (listener, app) = apps::bind(workload).await?;
            let certs = ca.issue(&workdir, workload.service())?;
            let spec = SidecarSpec {
                workload,
                app,
                certs: &certs,
                mesh_file: &mesh_file,
            };
            starting.push(sidecar::spawn(&options.weft_bin, &spec, show_logs.clone())?);
            listeners.push((listener, app));
        }
        let mut sidecars = Vec::new();
        for sidecar in starting {
            sidecars.push(sidecar.listening().await?);
        }
        let client = HttpClient::default();
        for sidecar in &sidecars {
            sidecar.wait_ready(&client).await?;
        }
        apply_full_mesh_file(&workdir, &sidecars, &client).await?;

        let apps = sidecars
            .iter()
            .zip(listeners)
            .map(|(sidecar, (listener, addr))| {
                let outbound = Outbound {
                    client: client.clone(),
                    sidecar: sidecar.addrs.outbound,
                };
                let server = apps::serve(listener, SampleApp::new(sidecar.workload, outbound));
                (addr, server)
            })
            .collect();
        let entry = sidecars
            .iter()
            .find(|sidecar| sidecar.workload == Workload::Loadgen)
            .map(|sidecar| sidecar.addrs.outbound)
            .expect("Workload::ALL includes the load generator");
        let loadgen = LoadGenerator::start(client.clone(), entry, options.rps);
        // From here on, what the sidecars log is news to the user (an edit of the file).
        show_logs.store(true, Ordering::Relaxed);
        let scrapes = vec![None; sidecars.len()];
        Ok(SampleMesh {
            loadgen: Some(loadgen),
            sidecars,
            apps,
            _workdir: workdir,
            mesh_file,
            entry,
            client,
            scrapes,
            traffic_started: Instant::now(),
        })
    }

    pub fn guide(&self, options: &DemoOptions) -> Guide {
        let workloads = self
            .sidecars
            .iter()
            .zip(&self.apps)
            .map(|(sidecar, (app, _))| WorkloadInfo {
                workload: sidecar.workload,
                app: *app,
                sidecar: sidecar.addrs,
                pid: sidecar.pid,
            })
            .collect();
        Guide {
            workloads,
            mesh_file: self.mesh_file.clone(),
            entry: self.entry,
            rps: options.rps,
            duration: options.duration,
        }
    }

    /// Runs until a stop signal or the end of `duration`. Fails if a sidecar dies.
    pub async fn run_until_stopped(
        &mut self,
        stop: &mut StopSignal,
        duration: Option<Duration>,
    ) -> Result<(), DemoError> {
        let deadline = duration.map(|duration| self.traffic_started + duration);
        let mut ticks = tokio::time::interval(SCRAPE_EVERY);
        loop {
            let timer = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = stop.received() => return Ok(()),
                () = timer => return Ok(()),
                _ = ticks.tick() => {
                    self.scrape().await;
                    if let Some(error) = self.dead_sidecar() {
                        // Ctrl-C in a terminal reaches the sidecars too (they share the
                        // demo's process group) and one may exit just before the demo
                        // handles its own signal: that is a stop, not a failure.
                        let signalled = tokio::time::timeout(Duration::from_millis(500), stop.received()).await;
                        return if signalled.is_ok() { Ok(()) } else { Err(error) };
                    }
                }
            }
        }
    }

    fn dead_sidecar(&mut self) -> Option<DemoError> {
        self.sidecars.iter_mut().find_map(|sidecar| {
            let status = sidecar.exit_status()?;
            Some(sidecar.failed(format!("exited unexpectedly ({status})")))
        })
    }

    /// Keeps each sidecar's latest `/metrics`; one that does not answer keeps its last.
    async fn scrape(&mut self) {
        for (sidecar, last) in self.sidecars.iter().zip(&mut self.scrapes) {
            if let Ok(Some(text)) =
                tokio::time::timeout(SCRAPE_TIMEOUT, sidecar.metrics(&self.client)).await
            {
                *last = Some(text);
            }
        }
    }

    /// Stops everything in order and returns what the sidecars measured.
    pub async fn stop(mut self) -> Summary {
        let traffic_for = self.traffic_started.elapsed();
        if let Some(loadgen) = self.loadgen.take() {
            loadgen.stop().await;
        }
        self.scrape().await;
        let summary = Summary::from_scrapes(
            self.scrapes.iter().flatten().map(String::as_str),
            traffic_for,
        );
        sidecar::shutdown(std::mem::take(&mut self.sidecars)).await;
        summary
    }
}

/// Writes the mesh file with every sidecar's inbound address, and waits until each sidecar
/// runs it: until its `/config` version is no longer the one it started with.
async fn apply_full_mesh_file(
    workdir: &WorkDir,
    sidecars: &[Sidecar],
    client: &HttpClient,
) -> Result<(), DemoError> {
    let mut first_versions = Vec::new();
    for sidecar in sidecars {
        first_versions.push(sidecar.config_version(client).await);
    }
    let endpoints: Vec<(&str, SocketAddr)> = sidecars
        .iter()
        .map(|sidecar| (sidecar.workload.service(), sidecar.addrs.inbound))
        .collect();
    let full = topology::mesh_file(&endpoints);
    workdir.write(MESH_FILE, &full)?;
    let started = Instant::now();
    let mut nudged = false;
    let mut waiting: Vec<(&Sidecar, Option<String>)> =
        sidecars.iter().zip(first_versions).collect();
    while !waiting.is_empty() {
        let mut still_waiting = Vec::new();
        for (sidecar, first) in waiting {
            let now = sidecar.config_version(client).await;
            if now.is_none() || now == first {
                still_waiting.push((sidecar, first));
            }
        }
        waiting = still_waiting;
        if let Some((sidecar, _)) = waiting.first() {
            if started.elapsed() > RELOAD_TIMEOUT {
                return Err(sidecar.failed(format!(
                    "did not load the full mesh file within {RELOAD_TIMEOUT:?}"
                )));
            }
            if !nudged && started.elapsed() > RELOAD_NUDGE {
                workdir.write(MESH_FILE, &full)?;
                nudged = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
