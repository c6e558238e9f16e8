//! Starting and owning `weft control`, and driving it with the client commands.

use super::process::{http_exchange, weft_bin, ChildGuard, LoggedChild, ProxySpec};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The admin API token a control plane writes into `data_dir` as it starts.
pub fn admin_token(data_dir: &Path) -> String {
    let path = data_dir.join("admin.token");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(token) = std::fs::read_to_string(&path) {
            if !token.trim().is_empty() {
                return token.trim().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no admin token in {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct ControlPlane {
    pub child: ChildGuard,
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub data_dir: PathBuf,
    /// The admin API token from `data_dir`.
    pub token: String,
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl ControlPlane {
    /// Starts `weft control` on `data_dir`; `grpc` pins the proxies' address (so a restart
    /// can come back where the proxies expect it), or `None` for a port from the OS.
    pub fn start(data_dir: &Path, grpc: Option<SocketAddr>) -> ControlPlane {
        Self::start_with(data_dir, grpc, &[])
    }

    /// [`Self::start`] with more flags for `weft control`.
    pub fn start_with(data_dir: &Path, grpc: Option<SocketAddr>, extra: &[&str]) -> ControlPlane {
        let grpc_arg = grpc.map_or("127.0.0.1:0".to_string(), |a| a.to_string());
        let mut args: Vec<String> = [
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
        args.extend(extra.iter().map(|arg| arg.to_string()));
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
            token: admin_token(data_dir),
            logs,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// The gRPC port in plain text: refused unless started with `--dev-plaintext-proxies`.
    pub fn plaintext_grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
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

    /// A single-use join token for `service`, in a file of its own beside the data
    /// directory.
    pub fn join_token(&self, service: &str) -> PathBuf {
        let out = self.weft(&["token", "create", "--service", service]);
        assert!(
            out.status.success(),
            "weft token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = String::from_utf8(out.stdout).unwrap();
        let token = token.trim();
        let path = self
            .data_dir
            .parent()
            .unwrap()
            .join(format!("{service}-{}.token", &token[..12]));
        std::fs::write(&path, token).unwrap();
        path
    }

    /// A proxy for `service` joining as real ones do: over TLS, checking the control plane
    /// against its CA, with a single-use join token of its own.
    pub fn proxy<'a>(&self, service: &'a str, app: SocketAddr) -> ProxySpec<'a> {
        let token = self.join_token(service);
        self.proxy_with_token(service, app, &token)
    }

    /// [`Self::proxy`] with a given join token file.
    pub fn proxy_with_token<'a>(
        &self,
        service: &'a str,
        app: SocketAddr,
        token: &Path,
    ) -> ProxySpec<'a> {
        let ca = self.ca_file(self.data_dir.parent().unwrap());
        ProxySpec::mesh(service, app, self.tls_grpc_url())
            .arg("--control-plane-ca")
            .arg(ca.to_str().unwrap())
            .arg("--token-file")
            .arg(token.to_str().unwrap())
    }

    /// An authenticated call to the REST API: (status, body).
    pub fn api_call(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let bearer = format!("Bearer {}", self.token);
        http_exchange(
            self.api,
            method,
            path,
            &[
                ("Authorization", &bearer),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
        .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// Runs a client command (`apply`, `get`, ...) against this control plane, finding
    /// its admin token in the data directory as an operator's `weft` does.
    pub fn weft(&self, args: &[&str]) -> Output {
        self.weft_command(args)
            .output()
            .expect("running a weft client command")
    }

    /// `weft ARGS` against this control plane, as the admin, to run as the test likes.
    pub fn weft_command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(weft_bin());
        command
            .args(args)
            .args(["--api", &self.url()])
            .arg("--data-dir")
            .arg(&self.data_dir);
        command
    }

    /// `weft apply -f -` with `yaml` on stdin; panics with the output if it fails.
    pub fn apply(&self, yaml: &str) -> String {
        let out = self.try_apply(yaml);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "weft apply failed:\n{text}");
        text
    }

    /// `weft apply -f -` with `yaml` on stdin, whatever comes of it.
    pub fn try_apply(&self, yaml: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(weft_bin())
            .args(["apply", "-f", "-", "--api", &self.url()])
            .arg("--data-dir")
            .arg(&self.data_dir)
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
        child.wait_with_output().unwrap()
    }

    /// Waits until the log has a line containing `text`; panics with the log if none comes.
    pub fn wait_for_log(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self
                .logs
                .lock()
                .unwrap()
                .iter()
                .any(|line| line.contains(text))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?}:\n{}",
                self.logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, no cleanup.
    pub fn kill9(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}
