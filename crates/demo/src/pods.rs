//! `weft demo --transparent`'s network: a network namespace per workload ("pod"), all on one
//! bridge, and a link from the host to that bridge so the control plane (in this process, on
//! the host) and the demo's scrapes reach the pods.
//!
//! ```text
//! host ns: wdPID 10.251.0.1 ──veth── hub ns: bridge ──veth── pod ns: eth0 10.251.0.1N
//! ```
//!
//! The bridge lives in a namespace of its own so nothing on the host (a firewall's FORWARD
//! policy, `br_netfilter`) filters the pods' traffic, and deleting the namespaces removes
//! every link. A demo killed before it could clean up leaves namespaces named after its pid;
//! the next one removes them.

use crate::topology::Workload;
use crate::DemoError;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use tokio::process::Command;

/// The host's address on the pods' network; the control plane listens there for them.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 251, 0, 1);
const PREFIX_LEN: u8 = 24;
/// Where each pod's app listens (on every address of the pod, as a real app would).
pub const APP_PORT: u16 = 9080;
/// The first pod's address; the others follow.
const FIRST_POD_HOST: u8 = 10;
const NAME_PREFIX: &str = "weft-demo-";

pub struct Pod {
    pub workload: Workload,
    /// The namespace's name: `ip netns exec NAME ...` runs a command in the pod.
    pub netns: String,
    pub ip: Ipv4Addr,
}

impl Pod {
    /// The namespace's file, for `setns`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.netns)
    }
}

/// The namespaces made for the pods; [`PodNetwork::remove`] (or dropping it) deletes them.
pub struct PodNetwork {
    pub pods: Vec<Pod>,
    hub: String,
    /// The host's end of its link to the bridge.
    host_link: String,
    removed: bool,
}

impl PodNetwork {
    pub async fn create(workloads: &[Workload]) -> Result<PodNetwork, DemoError> {
        if !rustix::process::geteuid().is_root() {
            return Err(DemoError::Network(
                "--transparent makes network namespaces and installs iptables rules, which \
                 needs root: run it with sudo"
                    .to_owned(),
            ));
        }
        sweep_stale().await?;
        let in_use = ip(&format!("-4 -o addr show to {HOST_IP}/{PREFIX_LEN}")).await?;
        if !in_use.trim().is_empty() {
            return Err(DemoError::Network(format!(
                "the pods' network {HOST_IP}/{PREFIX_LEN} is already used on this host:\n{in_use}"
            )));
        }
        let pid = std::process::id();
        let hub = format!("{NAME_PREFIX}{pid}-hub");
        let host_link = host_link(pid);
        let mut network = PodNetwork {
            pods: Vec::new(),
            hub: hub.clone(),
            host_link: host_link.clone(),
            removed: false,
        };
        // From here on, dropping `network` deletes whatever was made.
        ip(&format!("netns add {hub}")).await?;
        ip(&format!("-n {hub} link set lo up")).await?;
        ip(&format!("-n {hub} link add br0 type bridge")).await?;
        ip(&format!("-n {hub} link set br0 up")).await?;
        ip(&format!(
            "link add {host_link} type veth peer name host netns {hub}"
        ))
        .await?;
        ip(&format!("-n {hub} link set host master br0 up")).await?;
        let host_address = format!("{HOST_IP}/{PREFIX_LEN}");
        ip(&format!("addr add {host_address} dev {host_link}")).await?;
        ip(&format!("link set {host_link} up")).await?;
        for (index, workload) in workloads.iter().enumerate() {
            let netns = format!("{NAME_PREFIX}{pid}-{}", workload.service());
            ip(&format!("netns add {netns}")).await?;
            let pod_ip = Ipv4Addr::new(10, 251, 0, FIRST_POD_HOST + index as u8);
            network.pods.push(Pod {
                workload: *workload,
                netns: netns.clone(),
                ip: pod_ip,
            });
            let bridge_port = format!("p{index}");
            ip(&format!(
                "-n {hub} link add {bridge_port} type veth peer name eth0 netns {netns}"
            ))
            .await?;
            ip(&format!("-n {hub} link set {bridge_port} master br0 up")).await?;
            ip(&format!("-n {netns} link set lo up")).await?;
            ip(&format!(
                "-n {netns} addr add {pod_ip}/{PREFIX_LEN} dev eth0"
            ))
            .await?;
            ip(&format!("-n {netns} link set eth0 up")).await?;
            // Service virtual IPs are off this network: without a route, connecting to one
            // fails before capture can take it.
            ip(&format!("-n {netns} route add default via {HOST_IP}")).await?;
        }
        Ok(network)
    }

    pub fn pod(&self, workload: Workload) -> &Pod {
        self.pods
            .iter()
            .find(|pod| pod.workload == workload)
            .expect("every workload has a pod")
    }

    /// Deletes the host's link and the namespaces, and with them every link and rule made
    /// in them.
    pub async fn remove(mut self) {
        self.removed = true;
        for deletion in self.deletions() {
            if let Err(error) = ip(&deletion).await {
                tracing::warn!(%error, "removing the demo's network");
            }
        }
    }

    /// The `ip` commands that delete what was made. The host's link first: a namespace's
    /// devices go when the kernel gets round to freeing it, which can be after the demo has
    /// exited; that link is on the host, so it goes now.
    fn deletions(&self) -> Vec<String> {
        let mut deletions = vec![format!("link del {}", self.host_link)];
        let namespaces = self.pods.iter().map(|pod| &pod.netns).chain([&self.hub]);
        deletions.extend(namespaces.map(|netns| format!("netns del {netns}")));
        deletions
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // An early return: no runtime to wait on here, so the deletion blocks.
        for deletion in self.deletions() {
            let _ = std::process::Command::new("ip")
                .args(deletion.split(' '))
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Deletes the namespaces of demos whose process is gone; refuses to start next to a
/// running one, whose network this one's would clash with.
async fn sweep_stale() -> Result<(), DemoError> {
    let listed = ip("netns list").await?;
    for name in listed
        .lines()
        .filter_map(|line| line.split_whitespace().next())
    {
        let Some(pid) = name
            .strip_prefix(NAME_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        // A pid the OS has given to another program since is not a demo.
        let command = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&command).contains("demo") {
            return Err(DemoError::Network(format!(
                "another `weft demo --transparent` (pid {pid}) is running, and its pods use the \
                 same network; stop it first"
            )));
        }
        let _ = ip(&format!("link del {}", host_link(pid))).await;
        ip(&format!("netns del {name}")).await?;
    }
    Ok(())
}

/// The host's end of the link to the bridge of the demo with this pid.
fn host_link(pid: u32) -> String {
    format!("wd{pid}")
}

/// Runs `ip` with these arguments (separated by spaces; no name here has one); its output,
/// or what went wrong.
async fn ip(args: &str) -> Result<String, DemoError> {
    let output = Command::new("ip")
        .args(args.split(' '))
        .output()
        .await
        .map_err(|error| {
            DemoError::Network(format!(
                "cannot run `ip` ({error}): install iproute2 (apt-get install iproute2)"
            ))
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(DemoError::Network(format!(
        "`ip {args}` failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
