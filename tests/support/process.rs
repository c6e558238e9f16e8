//! Starting and owning `weft` processes.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub fn weft_bin() -> &'static str {
    env!("CARGO_BIN_EXE_weft")
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "weft-test-{tag}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(Instant::now().elapsed().as_nanos() as u64);
    h.finish() % 1_000_000
}

pub fn run_weft(args: &[&str]) -> std::process::Output {
    Command::new(weft_bin())
        .args(args)
        .output()
        .expect("running weft")
}

/// A CA and certificates for services, made with `weft cert`.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    pub fn new(dir: &Path, services: &[&str]) -> Self {
        let dir = dir.join("certs");
        let out = run_weft(&["cert", "ca", "--out", dir.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "weft cert ca: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let certs = Certs { dir };
        for service in services {
            certs.issue(service, "default", "24h");
        }
        certs
    }

    pub fn issue(&self, service: &str, namespace: &str, ttl: &str) {
        let d = self.dir.to_str().unwrap();
        let out = run_weft(&[
            "cert",
            "issue",
            "--ca-dir",
            d,
            "--service",
            service,
            "--namespace",
            namespace,
            "--ttl",
            ttl,
            "--out",
            d,
        ]);
        assert!(
            out.status.success(),
            "weft cert issue: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `--cert --key --ca` flags for a service's proxy.
    pub fn flags(&self, service: &str) -> Vec<String> {
        let p = |name: String| self.dir.join(name).to_str().unwrap().to_string();
        vec![
            "--cert".into(),
            p(format!("{service}.pem")),
            "--key".into(),
            p(format!("{service}-key.pem")),
            "--ca".into(),
            p("ca.pem".into()),
        ]
    }
}

/// Kills its process when dropped, including when a test panics during start-up.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `weft proxy`, killed on drop.
pub struct Proxy {
    pub child: ChildGuard,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    pub upstreams: Vec<SocketAddr>,
    /// With `--dns`: where it answers DNS (UDP and TCP).
    pub dns: Option<SocketAddr>,
    /// Every stderr line so far (logs).
    pub logs: Arc<Mutex<Vec<String>>>,
    /// Every stdout line so far (access log).
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// With `ProxySpec::stdout_unread`: the pipe nobody reads, kept open.
    _unread_stdout: Option<std::process::ChildStdout>,
}

/// Where a proxy gets its configuration.
pub enum ConfigSource<'a> {
    Local(&'a Path),
    ControlPlane(String),
}

pub struct ProxySpec<'a> {
    pub service: &'a str,
    pub app: SocketAddr,
    pub source: ConfigSource<'a>,
    pub certs: Option<&'a Certs>,
    pub extra: Vec<String>,
    /// Leave stdout's pipe unread, so it fills up (a stalled log shipper).
    pub stdout_unread: bool,
}

impl<'a> ProxySpec<'a> {
    /// A proxy in local mode, reading `config`.
    pub fn new(service: &'a str, app: SocketAddr, config: &'a Path) -> Self {
        Self {
            service,
            app,
            source: ConfigSource::Local(config),
            certs: None,
            extra: Vec::new(),
            stdout_unread: false,
        }
    }
    /// A proxy in mesh mode, configured by the control plane at `url`.
    pub fn mesh(service: &'a str, app: SocketAddr, url: String) -> Self {
        Self {
            service,
            app,
            source: ConfigSource::ControlPlane(url),
            certs: None,
            extra: Vec::new(),
            stdout_unread: false,
        }
    }
    pub fn tls(mut self, certs: &'a Certs) -> Self {
        self.certs = Some(certs);
        self
    }
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }
    pub fn stdout_unread(mut self) -> Self {
        self.stdout_unread = true;
        self
    }
    pub fn start(self) -> Proxy {
        Proxy::start(self)
    }

    /// Runs the proxy until it exits, which it must within 15 s (a refusal at start):
    /// its exit status and log.
    pub fn run_to_exit(&self) -> (std::process::ExitStatus, String) {
        let mut process = LoggedChild::spawn(&self.args());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = process.child.0.try_wait() {
                // The log reader ends (and drops its sender) at the log's end.
                while process.lines.recv_timeout(Duration::from_secs(5)).is_ok() {}
                return (status, process.logs.lock().unwrap().join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "the proxy kept running; logs:\n{}",
                process.logs.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The `weft proxy` command line, for a test that runs it its own way.
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "proxy".into(),
            "--service".into(),
            self.service.into(),
            "--app".into(),
            self.app.to_string(),
            "--inbound".into(),
            "127.0.0.1:0".into(),
            "--outbound".into(),
            "127.0.0.1:0".into(),
            "--admin".into(),
            "127.0.0.1:0".into(),
            "--log".into(),
            "info".into(),
        ];
        match &self.source {
            ConfigSource::Local(path) => {
                args.extend(["--local".into(), path.to_str().unwrap().into()])
            }
            ConfigSource::ControlPlane(url) => args.extend(["--control-plane".into(), url.clone()]),
        }
        if let Some(certs) = self.certs {
            args.extend(certs.flags(self.service));
        }
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// Pulls `key=value` out of a tracing text line.
fn field<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let start = line.find(&format!("{key}="))? + key.len() + 1;
    let rest = &line[start..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// A `weft` process whose stderr (logs) and stdout lines are collected as they come.
pub struct LoggedChild {
    pub child: ChildGuard,
    pub logs: Arc<Mutex<Vec<String>>>,
    pub stdout: Arc<Mutex<Vec<String>>>,
    lines: mpsc::Receiver<String>,
    unread_stdout: Option<std::process::ChildStdout>,
}

fn collect_lines(
    pipe: impl std::io::Read + Send + 'static,
    sink: Arc<Mutex<Vec<String>>>,
    tx: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(line.clone());
            if let Some(tx) = &tx {
                let _ = tx.send(line);
            }
        }
    });
}

impl LoggedChild {
    pub fn spawn(args: &[String]) -> LoggedChild {
        Self::spawn_with(args, true)
    }

    /// With `read_stdout` false, stdout's pipe is kept open but never read.
    pub fn spawn_with(args: &[String], read_stdout: bool) -> LoggedChild {
        let mut command = Command::new(weft_bin());
        command.args(args);
        Self::spawn_command(command, read_stdout)
    }

    /// `command` (a `weft` run some other way, such as in a network namespace).
    pub fn spawn_command(mut command: Command, read_stdout: bool) -> LoggedChild {
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting weft");
        let mut child = ChildGuard(child);
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        collect_lines(child.0.stderr.take().unwrap(), logs.clone(), Some(tx));
        let pipe = child.0.stdout.take().unwrap();
        let unread_stdout = if read_stdout {
            collect_lines(pipe, stdout.clone(), None);
            None
        } else {
            Some(pipe)
        };
        LoggedChild {
            child,
            logs,
            stdout,
            lines,
            unread_stdout,
        }
    }

    /// The logs once a line contains `text` (or after 20 s, for the assertion to show).
    pub fn logs_once(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let logs = self.logs.lock().map(|l| l.join("\n")).unwrap_or_default();
            if logs.contains(text) || Instant::now() > deadline {
                return logs;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Reads `listening listener=NAME addr=ADDR` log lines until `enough` says so.
    pub fn listeners(
        &self,
        enough: impl Fn(&[(String, SocketAddr)]) -> bool,
    ) -> Vec<(String, SocketAddr)> {
        let mut found = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !enough(&found) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                let logs = self.logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                panic!("weft did not start listening; logs:\n{logs}");
            };
            if line.contains("listening") {
                if let (Some(which), Some(addr)) = (field(&line, "listener"), field(&line, "addr"))
                {
                    found.push((which.to_string(), addr.parse().unwrap()));
                }
            }
        }
        found
    }
}

impl Proxy {
    fn start(spec: ProxySpec) -> Proxy {
        let args = spec.args();
        let expected_upstreams = args.iter().filter(|a| *a == "--upstream").count();
        let process = LoggedChild::spawn_with(&args, !spec.stdout_unread);
        let proxy = Proxy::listening(process, expected_upstreams);
        proxy.wait_ready();
        proxy
    }

    /// A started proxy, once its logs have named its listeners.
    pub fn listening(mut process: LoggedChild, expected_upstreams: usize) -> Proxy {
        let found = process.listeners(|found| {
            let named = |name: &str| found.iter().any(|(n, _)| n == name);
            let upstreams = found.iter().filter(|(n, _)| n == "upstream").count();
            named("inbound")
                && named("outbound")
                && named("admin")
                && upstreams >= expected_upstreams
        });
        let named = |name: &str| found.iter().find(|(n, _)| n == name).unwrap().1;
        Proxy {
            inbound: named("inbound"),
            outbound: named("outbound"),
            admin: named("admin"),
            upstreams: found
                .iter()
                .filter(|(n, _)| n == "upstream")
                .map(|(_, a)| *a)
                .collect(),
            // Bound before the inbound listener, so already among `found`.
            dns: found.iter().find(|(n, _)| n == "dns").map(|(_, a)| *a),
            _unread_stdout: process.unread_stdout.take(),
            logs: process.logs,
            stdout: process.stdout,
            child: process.child,
        }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if admin_get(self.admin, "/ready").map(|(s, _)| s) == Some(200) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "proxy never became ready; logs:\n{}",
            self.logs.lock().unwrap().join("\n")
        );
    }

    pub fn metrics(&self) -> String {
        admin_get(self.admin, "/metrics")
            .expect("scraping /metrics")
            .1
    }

    /// The process's resident memory now, in KiB (`VmRSS`).
    pub fn resident_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.0.id()))
            .expect("reading the proxy's /proc status");
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc status")
    }

    /// Sum of all samples of `name` whose labels contain every `label="value"` given.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_sum(&self.metrics(), name, labels)
    }

    /// The metric once it reaches `value` (or after 5 s): a proxy may count an exchange a
    /// moment after the client has seen its end.
    pub fn metric_reaching(&self, name: &str, labels: &[(&str, &str)], value: f64) -> f64 {
        self.metric_when(name, labels, |now| now >= value)
    }

    /// The metric once `settled` holds for it (or after 5 s), for gauges that fall back
    /// when a connection the client already closed is torn down.
    pub fn metric_when(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        settled: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.metric(name, labels);
            if settled(now) || std::time::Instant::now() > deadline {
                return now;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// The access log once it holds `lines` lines (or after 5 s): the proxy writes each line
    /// as a request ends, and a thread reads the pipe, so the last lines may trail the answer.
    pub fn access_log(&self, lines: usize) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let log = self.stdout.lock().unwrap().clone();
            if log.len() >= lines || std::time::Instant::now() > deadline {
                return log;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.0.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `name.namespace` -> `field` of each service in the proxy's `/config`.
pub fn config_field(proxy: &Proxy, field: &str) -> HashMap<String, String> {
    let (_, body) = admin_get(proxy.admin, "/config").expect("reading /config");
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    let services = config["config"]["services"]
        .as_array()
        .or_else(|| config["services"].as_array())
        .unwrap_or_else(|| panic!("no services in /config: {body}"));
    services
        .iter()
        .filter_map(|s| {
            let key = format!("{}.{}", s["name"].as_str()?, s["namespace"].as_str()?);
            Some((key, s[field].as_str()?.to_string()))
        })
        .collect()
}

/// A blocking GET to an admin endpoint: (status, body).
pub fn admin_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    http_exchange(addr, "GET", path, &[], b"")
}

/// One blocking HTTP/1.1 exchange with extra headers: (status, body), or `None` if the
/// connection failed.
pub fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Writes a resource file for `--local`.
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

/// YAML for a Service whose one endpoint is a Weft proxy's inbound address.
pub fn mesh_service(name: &str, protocol: &str, endpoints: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n    - port: 80\n      protocol: {protocol}\n  endpoints:\n"
    );
    for endpoint in endpoints {
        yaml.push_str(&format!(
            "    - address: \"{endpoint}\"\n      mesh: true\n"
        ));
    }
    yaml.push_str("---\n");
    yaml
}

/// YAML for a Service outside the mesh, reached in plain text.
pub fn plain_service(name: &str, protocol: &str, endpoints: &[SocketAddr]) -> String {
    let mut yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n    - port: 80\n      protocol: {protocol}\n  endpoints:\n"
    );
    for endpoint in endpoints {
        yaml.push_str(&format!("    - address: \"{endpoint}\"\n"));
    }
    yaml.push_str("---\n");
    yaml
}

/// Waits until `ready` holds, checking every 50 ms; panics naming `what` once `within`
/// has passed.
pub async fn wait_for<F, Fut>(what: &str, within: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !ready().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
