//! Starting and owning `weft control`, and driving it with the client commands.

use super::process::{weft_bin, ChildGuard};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub struct ControlPlane {
    pub child: ChildGuard,
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    pub logs: Arc<Mutex<Vec<String>>>,
}

fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

impl ControlPlane {
    /// Starts `weft control` on `data_dir`; `grpc` pins the proxies' address (so a restart
    /// can come back where the proxies expect it), or `None` for a port from the OS.
    pub fn start(data_dir: &Path, grpc: Option<SocketAddr>) -> ControlPlane {
        let grpc_arg = grpc.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let mut child = ChildGuard(
            Command::new(weft_bin())
                .args(["control", "--data-dir", data_dir.to_str().unwrap()])
                .args([
                    "--api-addr",
                    "127.0.0.1:0",
                    "--grpc-addr",
                    &grpc_arg,
                    "--log",
                    "info",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("starting weft control"),
        );
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.0.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let mut found: HashMap<String, SocketAddr> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(found.contains_key("api") && found.contains_key("grpc")) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("weft control did not start; logs:\n{logs}");
            };
            if line.contains("listening") {
                if let (Some(which), Some(addr)) = (field(&line, "listener"), field(&line, "addr"))
                {
                    found.insert(which.to_string(), addr.parse().unwrap());
                }
            }
        }
        ControlPlane {
            child,
            api: found["api"],
            grpc: found["grpc"],
            data_dir: data_dir.to_path_buf(),
            logs,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
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
