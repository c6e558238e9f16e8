//! What the demo prints once the mesh is up: where everything is, and what to try.

use crate::sidecar::SidecarAddrs;
use crate::topology::{Workload, SPLIT};
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub struct WorkloadInfo {
    pub workload: Workload,
    pub app: SocketAddr,
    pub sidecar: SidecarAddrs,
    /// The sidecar's process id, so anyone can check it is gone after the demo.
    pub pid: u32,
}

pub struct Guide {
    pub workloads: Vec<WorkloadInfo>,
    pub mesh_file: PathBuf,
    /// The outbound listener curl can use to reach the frontend through the mesh.
    pub entry: SocketAddr,
    pub rps: u32,
    pub duration: Option<Duration>,
}

impl fmt::Display for Guide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Weft demo: {} workloads on loopback, each with its own sidecar (weft proxy);\n\
             sidecars talk to each other over mutual TLS.\n",
            self.workloads.len()
        )?;
        let row = |f: &mut fmt::Formatter<'_>, cells: [&str; 6]| {
            let [name, app, inbound, outbound, admin, pid] = cells;
            writeln!(
                f,
                "  {name:<11} {app:<16} {inbound:<16} {outbound:<16} {admin:<24} {pid}"
            )
        };
        row(
            f,
            [
                "WORKLOAD",
                "APP",
                "INBOUND (mTLS)",
                "OUTBOUND",
                "ADMIN",
                "PID",
            ],
        )?;
        for info in &self.workloads {
            row(
                f,
                [
                    info.workload.service(),
                    &info.app.to_string(),
                    &info.sidecar.inbound.to_string(),
                    &info.sidecar.outbound.to_string(),
                    &format!("http://{}", info.sidecar.admin),
                    &info.pid.to_string(),
                ],
            )?;
        }
        writeln!(f, "\nThe frontend, through the mesh:")?;
        writeln!(f, "  curl -H 'Host: frontend' http://{}/", self.entry)?;
        if let Some(frontend) = self
            .workloads
            .iter()
            .find(|info| info.workload == Workload::Frontend)
        {
            writeln!(
                f,
                "\nEach sidecar's admin URL serves /metrics, /config, /ready and /certs, e.g.:"
            )?;
            writeln!(f, "  curl http://{}/metrics", frontend.sidecar.admin)?;
            writeln!(f, "  curl http://{}/config", frontend.sidecar.admin)?;
        }
        let split: Vec<String> = SPLIT
            .iter()
            .map(|(name, weight)| format!("{weight}% to {name}"))
            .collect();
        writeln!(
            f,
            "\nloadgen sends {} requests/s to frontend; reviews traffic goes {}.",
            self.rps,
            split.join(", ")
        )?;
        writeln!(
            f,
            "Change the split live: edit the reviews-split route in\n  {}\n\
             and save; every sidecar reloads it within a second.\n",
            self.mesh_file.display()
        )?;
        match self.duration {
            Some(duration) => writeln!(
                f,
                "Running for {duration:?} (Ctrl-C stops sooner), then a summary."
            ),
            None => writeln!(f, "Press Ctrl-C to stop and see a summary."),
        }
    }
}
