//! What the demo prints once the mesh is up: where everything is, and what to try.

use crate::sidecar::SidecarAddrs;
use crate::topology::{self, Workload, OTHER_SPLIT, SPLIT};
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
    /// The control plane's REST API, for `weft ... --api`.
    pub api: String,
    /// The dashboard, with the admin token in the address's fragment (never sent to the
    /// server; the page takes it and removes it from the address).
    pub dashboard: String,
    /// The demo's temporary directory (certificates, the control plane's store).
    pub workdir: PathBuf,
    /// The control plane's data directory: `weft` reads the admin API token there.
    pub control_data_dir: PathBuf,
    /// A command that sends a request to the frontend through the mesh.
    pub entry: String,
    /// With `--transparent`: each pod's network namespace and address.
    pub pods: Option<Vec<String>>,
    pub rps: u32,
    pub duration: Option<Duration>,
}

impl fmt::Display for Guide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.pods {
            None => writeln!(
                f,
                "Weft demo: a control plane and {} workloads on loopback, each with its own sidecar\n\
                 (weft proxy) that gets its config from the control plane, and its certificate from\n\
                 the control plane's CA with a join token; sidecars talk to each other over mutual TLS.\n",
                self.workloads.len()
            )?,
            Some(pods) => {
                writeln!(
                    f,
                    "Weft demo, transparent: {} workloads, each in its own network namespace with its\n\
                     sidecar (weft proxy, as user {}). The apps are unmodified: they call services by\n\
                     name (http://ratings.default/); the sidecar answers the name with the service's\n\
                     virtual IP, and capture (iptables) brings it the app's connections. Sidecars\n\
                     talk to each other over mutual TLS.\n\nPods (ip netns exec NAME ...):",
                    self.workloads.len(),
                    crate::sidecar::PROXY_UID
                )?;
                for pod in pods {
                    writeln!(f, "  {pod}")?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f, "Control plane API: {}", self.api)?;
        writeln!(f, "Dashboard:         {}", self.dashboard)?;
        writeln!(f, "Demo files:        {}\n", self.workdir.display())?;
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
        writeln!(f, "  {}", self.entry)?;
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
            writeln!(f, "  curl http://{}/certs", frontend.sidecar.admin)?;
        }
        let split: Vec<String> = SPLIT
            .iter()
            .map(|(name, weight)| format!("{weight}% to {name}"))
            .collect();
        writeln!(
            f,
            "\nloadgen sends {} requests/s to frontend, which calls catalog (gRPC) and reviews\n\
             (HTTP); reviews traffic goes {}.",
            self.rps,
            split.join(", ")
        )?;
        // Pasted as printed, these work: the export gives `weft` the API and, through the
        // data directory, its admin token; the here-document starts at the line's start,
        // so its closing EOF ends it.
        writeln!(f, "\nAsk the control plane, from another shell:")?;
        writeln!(
            f,
            "  export WEFT_API={} WEFT_DATA_DIR={}",
            self.api,
            self.control_data_dir.display()
        )?;
        writeln!(f, "  weft proxies")?;
        writeln!(f, "  weft check")?;
        writeln!(f, "  weft get httproutes")?;
        writeln!(f, "  weft get grpcroutes")?;
        writeln!(f, "  weft ca rotate      # a new root, with no outage")?;
        writeln!(f, "  weft audit log      # who changed what")?;
        writeln!(
            f,
            "\nSee the mesh (reviews-v2 is slower and fails 2 % of its requests):"
        )?;
        writeln!(
            f,
            "  weft stat           # RPS, success rate, p50/p95/p99 of every Service"
        )?;
        writeln!(f, "  weft stat svc/reviews-v2")?;
        writeln!(
            f,
            "  weft top            # the busiest edges, live (q quits)"
        )?;
        writeln!(
            f,
            "  weft tap ratings    # its requests as they happen (Ctrl-C stops)"
        )?;
        writeln!(
            f,
            "  weft diagnose       # what changed in the last seconds, and why"
        )?;
        writeln!(
            f,
            "\nCatalog answers only the frontend, ratings only the reviews (AuthorizationPolicy);\n\
             ask why a call is allowed or denied, without sending it:"
        )?;
        writeln!(
            f,
            "  weft explain --from frontend --to catalog POST /weft.demo.v1.Catalog/GetItem"
        )?;
        writeln!(f, "  weft explain --from loadgen --to ratings GET /")?;
        writeln!(
            f,
            "\nChange the split live (every sidecar has it within a second; the summary shows it):"
        )?;
        writeln!(f, "weft apply -f - <<'EOF'")?;
        write!(f, "{}", topology::split_route(&OTHER_SPLIT))?;
        writeln!(f, "EOF\n")?;
        match self.duration {
            Some(duration) => writeln!(
                f,
                "Running for {duration:?} (Ctrl-C stops sooner), then a summary."
            ),
            None => writeln!(f, "Press Ctrl-C to stop and see a summary."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the guide prints, pasted into a shell as is: the export names the API and the
    /// data directory (where `weft` finds the admin token), and the here-document ends at
    /// its `EOF` line and holds a route that loads.
    #[test]
    fn the_ready_to_paste_commands_work_when_pasted() {
        let addr: SocketAddr = "127.0.0.1:7080".parse().unwrap();
        let guide = Guide {
            workloads: vec![WorkloadInfo {
                workload: Workload::Frontend,
                app: addr,
                sidecar: SidecarAddrs {
                    inbound: addr,
                    outbound: addr,
                    admin: addr,
                },
                pid: 1,
            }],
            api: "http://127.0.0.1:7080".to_owned(),
            dashboard: "http://127.0.0.1:7080/#token=t".to_owned(),
            workdir: PathBuf::from("/tmp/weft-demo-x"),
            control_data_dir: PathBuf::from("/tmp/weft-demo-x/control"),
            entry: "curl -H 'Host: frontend' http://127.0.0.1:7140/".to_owned(),
            pods: None,
            rps: 20,
            duration: None,
        }
        .to_string();
        assert!(
            guide.contains(
                "  export WEFT_API=http://127.0.0.1:7080 WEFT_DATA_DIR=/tmp/weft-demo-x/control\n"
            ),
            "{guide}"
        );
        let start = guide
            .find("\nweft apply -f - <<'EOF'\n")
            .expect("the here-document starts a line");
        let body = &guide[start..].lines().skip(2).collect::<Vec<_>>();
        let end = body
            .iter()
            .position(|line| *line == "EOF")
            .expect("a line that is exactly EOF ends it");
        let yaml = body[..end].join("\n");
        let resources = weft_model::load_str("pasted", &yaml).expect("the route loads");
        assert_eq!(resources.len(), 1);
    }
}
