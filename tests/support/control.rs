//! Starting and owning `weft control`, and driving it with the client commands.

use super::process::{weft_bin, ChildGuard, LoggedChild};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

pub struct ControlPlane {
    pub child: ChildGuard,
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ControlPlane {
    /// Starts `weft control` on `data_dir`; `grpc` pins the proxies' address (so a restart
    /// can come back where the proxies expect it), or `None` for a port from the OS.
    pub fn start(data_dir: &Path, grpc: Option<SocketAddr>) -> ControlPlane {
        let grpc_arg = grpc.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let args: Vec<String> = [
            "control",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--api-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            &grpc_arg,
            "--log",
            "info",
        ]
        .map(String::from)
        .to_vec();
        let process = LoggedChild::spawn(&args);
        let found = process.listeners(|found| {
            ["api", "grpc"]
                .iter()
                .all(|name| found.iter().any(|(n, _)| n == name))
        });
        let named = |name: &str| found.iter().find(|(n, _)| n == name).unwrap().1;
        let (child, logs) = (process.child, process.logs);
        ControlPlane {
            child,
            api: named("api"),
            grpc: named("grpc"),
            data_dir: data_dir.to_path_buf(),
            logs,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The gRPC port over TLS: proxies then need `--control-plane-ca` (see `ca_file`).
    pub fn tls_grpc_url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// Writes the control plane's trust bundle (`weft ca show --pem`) into `dir`.
    pub fn ca_file(&self, dir: &Path) -> PathBuf {
        let out = self.weft(&["ca", "show", "--pem"]);
        assert!(
            out.status.success(),
            "weft ca show --pem: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = dir.join("control-plane-ca.pem");
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Runs a client command (`apply`, `get`, ...) against this control plane.
    pub fn weft(&self, args: &[&str]) -> Output {
        Command::new(weft_bin())
            .args(args)
            .args(["--api", &self.url()])
            .output()
            .expect("running a weft client command")
    }

    /// `weft apply -f -` with `yaml` on stdin; panics with the output if it fails.
    pub fn apply(&self, yaml: &str) -> String {
        use std::io::Write;
        let mut child = Command::new(weft_bin())
            .args(["apply", "-f", "-", "--api", &self.url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "weft apply failed:\n{text}");
        text
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}
