//! One `weft proxy` child process per workload: started, watched, and always stopped.
//!
//! A sidecar's `tokio::process::Child` is made with `kill_on_drop`, so dropping a
//! [`Sidecar`] (an early return, a cancelled start, a panic unwinding) kills the process;
//! [`shutdown`] is the orderly way, SIGTERM first so each proxy drains.

use crate::http_client::HttpClient;
use crate::pods::{Pod, APP_PORT};
use crate::proxy_log::{self, LogLine};
use crate::topology::{Workload, NAMESPACE};
use crate::DemoError;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A loaded machine can be slow to start six processes at once.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the proxies get to drain after SIGTERM before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// Log lines kept per sidecar, to explain a failure.
const LOG_TAIL: usize = 20;

/// In a pod, the sidecar runs as this user (Istio's choice), which capture never takes; the
/// app, as another (the demo's), is captured.
pub const PROXY_UID: u32 = 1337;
/// A pod's sidecar's listeners: each pod has its own ports, so they are fixed, the
/// documented defaults.
const POD_INBOUND_PORT: u16 = 7143;
const POD_OUTBOUND_PORT: u16 = 7140;
const POD_ADMIN_PORT: u16 = 7901;
const POD_DNS_PORT: u16 = 7153;

/// The addresses a sidecar's listeners got from the OS.
#[derive(Clone, Copy)]
pub struct SidecarAddrs {
    /// Where the mesh reaches the workload, over mutual TLS.
    pub inbound: SocketAddr,
    /// Where the workload's app sends requests into the mesh.
    pub outbound: SocketAddr,
    /// `/metrics`, `/ready`, `/config`, `/certs`.
    pub admin: SocketAddr,
}

pub struct SidecarSpec<'a> {
    pub workload: Workload,
    pub app: SocketAddr,
    /// The control plane's gRPC URL (`--control-plane`).
    pub control_plane: &'a str,
    /// Its roots (`--control-plane-ca`).
    pub control_plane_ca: &'a Path,
    /// This sidecar's single-use join token (`--token-file`).
    pub token_file: &'a Path,
    /// Where it runs: on the host, or in the app's pod with capture.
    pub pod: Option<&'a Pod>,
}

/// The last lines a sidecar logged.
#[derive(Clone, Default)]
struct LogTail(Arc<Mutex<VecDeque<String>>>);

impl LogTail {
    fn push(&self, line: String) {
        let mut lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lines.len() == LOG_TAIL {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    fn text(&self) -> String {
        let lines = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let text: Vec<String> = lines.iter().map(|line| format!("  {line}")).collect();
        if text.is_empty() {
            "  (nothing)".to_owned()
        } else {
            text.join("\n")
        }
    }
}

/// A sidecar process that has been spawned but may not be listening yet.
pub struct StartingSidecar {
    workload: Workload,
    /// Where other pods reach its inbound listener, for a sidecar in a pod.
    pod_inbound: Option<SocketAddr>,
    child: Child,
    log: LogTail,
    listening: mpsc::UnboundedReceiver<(String, SocketAddr)>,
}

/// A running sidecar whose listeners are bound.
pub struct Sidecar {
    pub workload: Workload,
    pub addrs: SidecarAddrs,
    pub pid: u32,
    child: Child,
    log: LogTail,
}

/// Starts `weft proxy` for one workload. `show_logs` is shared by all sidecars: once it is
/// set, their warnings, errors and config changes are shown on the demo's stderr.
pub fn spawn(
    weft_bin: &Path,
    spec: &SidecarSpec<'_>,
    show_logs: Arc<AtomicBool>,
) -> Result<StartingSidecar, DemoError> {
    let service = spec.workload.service();
    let mut command = match spec.pod {
        None => Command::new(weft_bin),
        Some(pod) => {
            let mut command = in_pod(pod);
            let user = PROXY_UID.to_string();
            command
                .args([
                    "setpriv",
                    "--reuid",
                    &user,
                    "--regid",
                    &user,
                    "--clear-groups",
                    "--",
                ])
                .arg(weft_bin);
            command
        }
    };
    let mut child = command
        .args(proxy_args(spec))
        // RUST_LOG would override --log and could hide the lines read below.
        .env_remove("RUST_LOG")
        // The proxy exits when this pipe closes, so even a SIGKILLed demo leaves no sidecar.
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| DemoError::Spawn {
            bin: weft_bin.to_owned(),
            service,
            source,
        })?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let log = LogTail::default();
    let (found, listening) = mpsc::unbounded_channel();
    let tail = log.clone();
    // Reads to the end even after startup: a sidecar blocks once its stderr pipe fills.
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(raw)) = lines.next_line().await {
            let parsed = proxy_log::parse(&raw);
            if let Some((listener, addr)) = parsed.as_ref().and_then(LogLine::listening) {
                let _ = found.send((listener.to_owned(), addr));
            }
            let line = parsed.as_ref().map_or(raw, ToString::to_string);
            if show_logs.load(Ordering::Relaxed) && parsed.as_ref().is_none_or(LogLine::is_notable)
            {
                eprintln!("[{service}] {line}");
            }
            tail.push(line);
        }
    });
    Ok(StartingSidecar {
        workload: spec.workload,
        pod_inbound: spec.pod.map(pod_inbound),
        child,
        log,
        listening,
    })
}

/// `ip netns exec NETNS`, to which the command to run there is added.
fn in_pod(pod: &Pod) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &pod.netns]);
    command
}

/// `weft capture install` in the pod: the app's outbound TCP and DNS go to its sidecar, and
/// TCP to its port through the sidecar's inbound listener.
pub async fn install_capture(weft_bin: &Path, pod: &Pod) -> Result<(), DemoError> {
    let user = PROXY_UID.to_string();
    let output = in_pod(pod)
        .arg(weft_bin)
        .args([
            "capture",
            "install",
            "--proxy-uid",
            &user,
            "--proxy-gid",
            &user,
        ])
        .args(["--inbound-ports", &APP_PORT.to_string()])
        .args(["--inbound-port", &POD_INBOUND_PORT.to_string()])
        .args(["--outbound-port", &POD_OUTBOUND_PORT.to_string()])
        .args(["--dns-port", &POD_DNS_PORT.to_string()])
        .output()
        .await;
    match output {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(DemoError::Network(format!(
            "installing capture in {}: {}",
            pod.netns,
            String::from_utf8_lossy(&output.stderr).trim()
        ))),
        Err(error) => Err(DemoError::Network(format!(
            "cannot run `ip netns exec` to install capture in {}: {error}",
            pod.netns
        ))),
    }
}

fn pod_inbound(pod: &Pod) -> SocketAddr {
    SocketAddr::from((pod.ip, POD_INBOUND_PORT))
}

fn proxy_args(spec: &SidecarSpec<'_>) -> Vec<OsString> {
    let (inbound, outbound, admin) = match spec.pod {
        None => (
            "127.0.0.1:0".to_owned(),
            "127.0.0.1:0".to_owned(),
            "127.0.0.1:0".to_owned(),
        ),
        Some(pod) => (
            format!("0.0.0.0:{POD_INBOUND_PORT}"),
            format!("127.0.0.1:{POD_OUTBOUND_PORT}"),
            // On the pod's address, for the demo's scrapes from the host.
            format!("{}:{POD_ADMIN_PORT}", pod.ip),
        ),
    };
    let mut args: Vec<OsString> = [
        "--log",
        "info",
        "--log-json",
        "proxy",
        "--service",
        spec.workload.service(),
        "--namespace",
        NAMESPACE,
        "--inbound",
        inbound.as_str(),
        "--outbound",
        outbound.as_str(),
        "--admin",
        admin.as_str(),
        "--threads",
        "1",
        // Nothing long-lived runs through the demo; don't keep Ctrl-C waiting.
        "--drain-timeout",
        "2s",
        "--exit-on-stdin-close",
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    args.push("--app".into());
    args.push(spec.app.to_string().into());
    if let Some(pod) = spec.pod {
        for arg in [
            "--capture",
            "preinstalled",
            "--dns",
            format!("127.0.0.1:{POD_DNS_PORT}").as_str(),
            // Other pods reach it here.
            "--advertise",
            pod_inbound(pod).to_string().as_str(),
        ] {
            args.push(arg.into());
        }
    }
    // Registers the workload; the control plane makes it an endpoint once its app is up.
    args.push("--control-plane".into());
    args.push(spec.control_plane.into());
    // The sidecar makes its own key and gets its certificate from the control plane's CA
    // with the token, over TLS checked against the CA; it renews it by itself.
    for (flag, path) in [
        ("--control-plane-ca", spec.control_plane_ca),
        ("--token-file", spec.token_file),
    ] {
        args.push(flag.into());
        args.push(path.into());
    }
    args
}

impl StartingSidecar {
    /// Waits for the proxy to log where its three listeners are.
    pub async fn listening(mut self) -> Result<Sidecar, DemoError> {
        let deadline = Instant::now() + START_TIMEOUT;
        let (mut inbound, mut outbound, mut admin) = (None, None, None);
        let addrs = loop {
            if let (Some(inbound), Some(outbound), Some(admin)) = (inbound, outbound, admin) {
                break SidecarAddrs {
                    inbound,
                    outbound,
                    admin,
                };
            }
            match tokio::time::timeout_at(deadline, self.listening.recv()).await {
                Ok(Some((listener, addr))) => match listener.as_str() {
                    "inbound" => inbound = Some(addr),
                    "outbound" => outbound = Some(addr),
                    "admin" => admin = Some(addr),
                    _ => {}
                },
                Ok(None) => {
                    // Its stderr closed: the process is exiting.
                    let status =
                        tokio::time::timeout(Duration::from_secs(1), self.child.wait()).await;
                    let problem = match status {
                        Ok(Ok(status)) => format!("exited ({status}) before it was listening"),
                        _ => "closed its log before it was listening".to_owned(),
                    };
                    return Err(self.failed(problem));
                }
                Err(_) => {
                    return Err(self.failed(format!("was not listening after {START_TIMEOUT:?}")));
                }
            }
        };
        let pid = self
            .child
            .id()
            .ok_or_else(|| self.failed("exited just after starting".to_owned()))?;
        Ok(Sidecar {
            workload: self.workload,
            addrs: match self.pod_inbound {
                // It listens on every address of the pod; it is reached (and registered) at this one.
                Some(inbound) => SidecarAddrs { inbound, ..addrs },
                None => addrs,
            },
            pid,
            child: self.child,
            log: self.log,
        })
    }

    fn failed(&self, problem: String) -> DemoError {
        DemoError::Sidecar {
            service: self.workload.service(),
            problem,
            log: self.log.text(),
        }
    }
}

impl Sidecar {
    pub fn failed(&self, problem: String) -> DemoError {
        DemoError::Sidecar {
            service: self.workload.service(),
            problem,
            log: self.log.text(),
        }
    }

    /// GET an admin path; the body when the sidecar answers 200.
    async fn admin(&self, client: &HttpClient, path: &str) -> Option<String> {
        let reply = client.get(self.addrs.admin, "admin", path).await.ok()?;
        reply
            .status
            .is_success()
            .then(|| String::from_utf8_lossy(&reply.body).into_owned())
    }

    pub async fn wait_ready(&self, client: &HttpClient) -> Result<(), DemoError> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.admin(client, "/ready").await.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.failed(format!("was not ready after {START_TIMEOUT:?}")))
    }

    pub async fn metrics(&self, client: &HttpClient) -> Option<String> {
        self.admin(client, "/metrics").await
    }

    /// How the process ended, if it has.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// Stops every sidecar: SIGTERM to each so it drains, then SIGKILL for any still running
/// after [`STOP_TIMEOUT`].
pub async fn shutdown(sidecars: Vec<Sidecar>) {
    for sidecar in &sidecars {
        // `id()` is `None` once the child has been reaped, so a recycled pid is never hit.
        let pid = sidecar
            .child
            .id()
            .and_then(|pid| rustix::process::Pid::from_raw(pid.try_into().ok()?));
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    for mut sidecar in sidecars {
        if tokio::time::timeout_at(deadline, sidecar.child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                service = sidecar.workload.service(),
                "sidecar did not stop in time; killing it"
            );
            let _ = sidecar.child.kill().await;
        }
    }
}
