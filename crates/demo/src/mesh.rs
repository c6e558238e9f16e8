//! The sample mesh as a whole: started in order, watched while it runs, stopped in order.
//!
//! ```text
//! start: temp dir -> [--transparent: a network namespace per workload]
//!        -> control plane (in process, with its CA) -> apply the resources
//!        -> a join token per sidecar -> bind app ports [in the pods, and install capture]
//!        -> spawn sidecars (--control-plane, certificates issued to them)
//!        -> learn their addresses -> apps serve
//!        -> every sidecar registered, healthy and in sync -> load starts
//! run:   scrape /metrics every second (the last scrape survives a sidecar that exits on
//!        Ctrl-C) and watch that no sidecar died
//! stop:  load stops -> final scrape -> summary -> SIGTERM, then SIGKILL, to sidecars
//!        -> apps stop -> control plane stops -> [pods' namespaces deleted] -> temp dir removed
//! ```

use crate::apps::{self, AppServer, Outbound};
use crate::control::ControlPlaneHandle;
use crate::guide::{Guide, WorkloadInfo};
use crate::http_client::HttpClient;
use crate::loadgen::LoadGenerator;
use crate::pod_runtime::PodRuntime;
use crate::pods::{self, PodNetwork, APP_PORT};
use crate::sidecar::{self, Sidecar, SidecarSpec};
use crate::signals::StopSignal;
use crate::summary::Summary;
use crate::topology::{self, Workload, NAMESPACE};
use crate::workdir::WorkDir;
use crate::{DemoError, DemoOptions};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::time::Instant;

/// A sidecar's app passes its first health check within about two seconds; the control
/// plane then pushes the new endpoints within milliseconds.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(20);
/// The control plane's data directory, inside the demo's.
const CONTROL_DIR: &str = "control";
const SCRAPE_EVERY: Duration = Duration::from_secs(1);
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(1);

pub struct SampleMesh {
    // Fields drop in this order, which is the order things must stop in if `stop` never
    // runs: load, sidecars (killed on drop), apps and their pods' runtimes, the control
    // plane, the pods' network, then the directory they used.
    loadgen: Option<LoadGenerator>,
    sidecars: Vec<Sidecar>,
    /// Each app's address, with the server that stops when dropped.
    apps: Vec<(SocketAddr, AppServer)>,
    /// With `--transparent`, the runtime each pod's app runs on.
    runtimes: Vec<PodRuntime>,
    control: Option<ControlPlaneHandle>,
    network: Option<PodNetwork>,
    workdir: WorkDir,
    /// How to send a request into the mesh by hand, as a command line.
    entry: String,
    client: HttpClient,
    /// The last `/metrics` text of each sidecar, by position in `sidecars`.
    scrapes: Vec<Option<String>>,
    traffic_started: Instant,
}

impl SampleMesh {
    pub async fn start(options: &DemoOptions) -> Result<Self, DemoError> {
        let workdir = WorkDir::create()?;
        let client = HttpClient::default();
        let network = match options.transparent {
            true => Some(PodNetwork::create(&Workload::ALL).await?),
            false => None,
        };
        // The pods reach the host on their network; sidecars on the host, on loopback.
        let grpc_ip = match network {
            Some(_) => pods::HOST_IP.into(),
            None => Ipv4Addr::LOCALHOST.into(),
        };
        let control = ControlPlaneHandle::start(&workdir.path().join(CONTROL_DIR), grpc_ip).await?;
        control.apply(&topology::resources()).await?;
        let control_url = control.grpc_url();
        // Sidecars in pods run as another user, which must read its files and the binary.
        let (weft_bin, sidecar_user) = match network {
            Some(_) => (
                workdir.share_with_sidecars(&options.weft_bin)?,
                Some(sidecar::PROXY_UID),
            ),
            None => (options.weft_bin.clone(), None),
        };
        let trust_bundle = control.trust_bundle().await?;
        let control_ca = workdir.write("control-plane-ca.pem", &trust_bundle, sidecar_user)?;
        let show_logs = Arc::new(AtomicBool::new(false));

        let mut listeners = Vec::new();
        let mut runtimes = Vec::new();
        let mut starting = Vec::new();
        for workload in Workload::ALL {
            let pod = network.as_ref().map(|network| network.pod(workload));
            let (listener, app, in_pod) = match pod {
                None => {
                    let (listener, app) =
                        apps::bind(workload, (Ipv4Addr::LOCALHOST, 0).into()).await?;
                    (listener, app, None)
                }
                Some(pod) => {
                    let runtime = PodRuntime::start(workload.service(), &pod.netns_path())
                        .map_err(|source| DemoError::App {
                            app: workload.service(),
                            source,
                        })?;
                    let handle = runtime.handle().clone();
                    runtimes.push(runtime);
                    let bound = handle.spawn(apps::bind(
                        workload,
                        (Ipv4Addr::UNSPECIFIED, APP_PORT).into(),
                    ));
                    let (listener, _) = bound.await.map_err(|error| DemoError::App {
                        app: workload.service(),
                        source: std::io::Error::other(error),
                    })??;
                    sidecar::install_capture(&weft_bin, pod).await?;
                    // The sidecar delivers to the app on the pod's loopback.
                    (
                        listener,
                        (Ipv4Addr::LOCALHOST, APP_PORT).into(),
                        Some(handle),
                    )
                }
            };
            let token = control.join_token(workload.service()).await?;
            let token_file = workdir.write(
                &format!("{}.token", workload.service()),
                &token,
                sidecar_user,
            )?;
            let spec = SidecarSpec {
                workload,
                app,
                control_plane: &control_url,
                control_plane_ca: &control_ca,
                token_file: &token_file,
                pod,
            };
            starting.push(sidecar::spawn(&weft_bin, &spec, show_logs.clone())?);
            listeners.push((listener, app, in_pod));
        }
        let mut sidecars = Vec::new();
        for sidecar in starting {
            sidecars.push(sidecar.listening().await?);
        }
        // The apps serve from here on, so their sidecars' health checks pass. In a pod, an
        // app runs on the pod's runtime and calls services by name.
        let mut apps = Vec::new();
        let mut loadgen = None;
        for (sidecar, (listener, addr, in_pod)) in sidecars.iter().zip(listeners) {
            let _entered = in_pod.as_ref().map(Handle::enter);
            let outbound = app_outbound(&client, sidecar, in_pod.is_some());
            let shown = match &network {
                Some(network) => (network.pod(sidecar.workload).ip, APP_PORT).into(),
                None => addr,
            };
            apps.push((shown, apps::start(sidecar.workload, listener, outbound)));
            if sidecar.workload == Workload::Loadgen {
                // The load generator is the loadgen app's traffic: it starts once every
                // sidecar is registered, on the app's runtime.
                let mesh = app_outbound(&client, sidecar, in_pod.is_some());
                loadgen = Some((mesh, in_pod.clone(), sidecar.addrs.outbound));
            }
        }
        for sidecar in &sidecars {
            sidecar.wait_ready(&client).await?;
        }
        wait_until_registered(&control, &mut sidecars).await?;

        let (loadgen_mesh, in_pod, loadgen_sidecar) =
            loadgen.expect("Workload::ALL includes the load generator");
        let entry = match &network {
            Some(network) => format!(
                "ip netns exec {} curl http://frontend.{NAMESPACE}/",
                network.pod(Workload::Loadgen).netns
            ),
            None => format!("curl -H 'Host: frontend' http://{loadgen_sidecar}/"),
        };
        let loadgen = {
            let _entered = in_pod.as_ref().map(Handle::enter);
            LoadGenerator::start(loadgen_mesh, options.rps)
        };
        // From here on, what the sidecars log is news to the user (an applied change).
        show_logs.store(true, Ordering::Relaxed);
        let scrapes = vec![None; sidecars.len()];
        Ok(SampleMesh {
            loadgen: Some(loadgen),
            sidecars,
            apps,
            runtimes,
            control: Some(control),
            network,
            workdir,
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
        let api = self
            .control
            .as_ref()
            .map(ControlPlaneHandle::api_url)
            .unwrap_or_default();
        // The control plane wrote it before it served: the demo has called the API since.
        let token = std::fs::read_to_string(
            self.workdir
                .path()
                .join(CONTROL_DIR)
                .join(weft_control::access::ADMIN_TOKEN_FILE),
        )
        .unwrap_or_default();
        Guide {
            workloads,
            dashboard: format!("{api}/#token={}", token.trim()),
            api,
            workdir: self.workdir.path().to_owned(),
            control_data_dir: self.workdir.path().join(CONTROL_DIR),
            entry: self.entry.clone(),
            pods: self.network.as_ref().map(|network| {
                network
                    .pods
                    .iter()
                    .map(|pod| format!("{} {}", pod.netns, pod.ip))
                    .collect()
            }),
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
                    if let Some(error) = dead_sidecar(&mut self.sidecars) {
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
        self.apps.clear();
        for runtime in std::mem::take(&mut self.runtimes) {
            runtime.stop().await;
        }
        if let Some(control) = self.control.take() {
            control.stop().await;
        }
        if let Some(network) = self.network.take() {
            network.remove().await;
        }
        summary
    }
}

/// How `sidecar`'s app reaches the mesh: explicitly on the host, by name in a pod (with a
/// client of its own there, so its connections are made, and pooled, in the pod). Call it on
/// the runtime the app runs on.
fn app_outbound(client: &HttpClient, sidecar: &Sidecar, in_pod: bool) -> Outbound {
    if in_pod {
        Outbound::ByName {
            client: HttpClient::default(),
        }
    } else {
        Outbound::Sidecar {
            client: client.clone(),
            sidecar: sidecar.addrs.outbound,
        }
    }
}

fn dead_sidecar(sidecars: &mut [Sidecar]) -> Option<DemoError> {
    sidecars.iter_mut().find_map(|sidecar| {
        let status = sidecar.exit_status()?;
        Some(sidecar.failed(format!("exited unexpectedly ({status})")))
    })
}

/// Waits until the control plane lists every sidecar as healthy and running the latest
/// config, twice in a row (a registration that has just turned healthy is compiled into a
/// new config a moment later), so the first requests already find every endpoint.
async fn wait_until_registered(
    control: &ControlPlaneHandle,
    sidecars: &mut [Sidecar],
) -> Result<(), DemoError> {
    let deadline = Instant::now() + REGISTER_TIMEOUT;
    let mut settled_on: Option<String> = None;
    loop {
        if let Some(error) = dead_sidecar(sidecars) {
            return Err(error);
        }
        let proxies = control.proxies().await.unwrap_or_default();
        let waiting_for: Vec<&Sidecar> = sidecars
            .iter()
            .filter(|sidecar| !proxies.iter().any(|p| is_ready(p, sidecar)))
            .collect();
        let mut versions = proxies
            .iter()
            .filter_map(|p| p.get("ackedVersion")?.as_str());
        let version = versions.next().map(str::to_owned);
        let one_version = version.is_some() && versions.all(|v| Some(v) == version.as_deref());
        if waiting_for.is_empty() && one_version {
            if settled_on.is_some() && settled_on == version {
                return Ok(());
            }
            settled_on = version;
        } else {
            settled_on = None;
        }
        if Instant::now() > deadline {
            return Err(match waiting_for.first() {
                Some(sidecar) => sidecar.failed(format!(
                    "was not registered with the control plane (healthy and in sync) within \
                     {REGISTER_TIMEOUT:?}"
                )),
                None => DemoError::ControlPlane(format!(
                    "its proxies did not settle on one config within {REGISTER_TIMEOUT:?}"
                )),
            });
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Whether `proxy` (an entry of `GET /api/v1/proxies`) is `sidecar`, healthy and in sync.
fn is_ready(proxy: &serde_json::Value, sidecar: &Sidecar) -> bool {
    let text = |field: &str| proxy.get(field).and_then(serde_json::Value::as_str);
    let flag = |field: &str| proxy.get(field).and_then(serde_json::Value::as_bool);
    text("service") == Some(sidecar.workload.service())
        && text("namespace") == Some(NAMESPACE)
        && text("inboundAddress") == Some(&sidecar.addrs.inbound.to_string())
        && flag("healthy") == Some(true)
        && flag("inSync") == Some(true)
}
