//! What a proxy is told at start-up (the `weft proxy` flags, parsed by the binary).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct ProxyOptions {
    pub service: String,
    pub namespace: String,
    /// The local application the inbound side forwards to.
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub outbound: SocketAddr,
    pub admin: SocketAddr,
    /// `--local FILE`: resources read from a file (or directory) and watched for changes.
    pub local: Option<PathBuf>,
    /// `--control-plane URL`: configuration pushed by `weft control` (exclusive with `local`).
    pub control_plane: Option<ControlPlaneOptions>,
    pub tls: Option<TlsFiles>,
    pub upstreams: Vec<UpstreamBinding>,
    /// Ports of the app that are never sniffed (server-speaks-first protocols).
    pub opaque_ports: Vec<u16>,
    pub access_log: bool,
    /// `--trace-collector`: export spans of sampled traces over OTLP.
    pub tracing: Option<crate::trace::TraceOptions>,
    /// Drain and exit when standard input closes (the supervisor holding it went away).
    pub exit_on_stdin_close: bool,
    pub limits: ServerLimits,
    /// `--capture`: the app's traffic comes to the listeners by capture rules.
    pub capture: Option<Capture>,
    /// `--dns`: answer service names with their virtual IPs.
    pub dns: Option<DnsOptions>,
    /// `--dns-upstream`: the resolvers the proxy asks, for the names its DNS relays and the
    /// host names of endpoints outside the mesh; `/etc/resolv.conf`'s when empty.
    pub resolvers: Vec<SocketAddr>,
}

/// Where the proxy answers DNS, and where names outside the mesh go.
#[derive(Clone, Debug)]
pub struct DnsOptions {
    /// UDP and TCP, e.g. `127.0.0.1:7153`.
    pub listen: SocketAddr,
    /// A zone answered besides `cluster.local` and the trust domain
    /// (`NAME.NAMESPACE.svc.ZONE`).
    pub zone: Option<String>,
}

/// How the app's traffic is captured, when it is.
#[derive(Clone, Debug)]
pub enum Capture {
    /// Rules installed by someone else (`weft capture install`, run before the proxy).
    Preinstalled,
    /// Rules this proxy installs when it starts and removes when it exits.
    Iptables(Box<crate::capture::Plan>),
    /// eBPF programs this proxy attaches to the workload's cgroup (v2) when it starts send
    /// the app's outbound TCP to the outbound listener; the plan's rules, installed under
    /// them, capture inbound, UDP DNS and what the programs do not take. Held while the
    /// proxy runs.
    Ebpf {
        cgroup: std::path::PathBuf,
        plan: Box<crate::capture::Plan>,
    },
    /// eBPF where it can be attached (a cgroup is given, the kernel and the privileges
    /// allow, no outbound exclusion is asked for), else iptables, saying why.
    Auto {
        cgroup: Option<std::path::PathBuf>,
        plan: Box<crate::capture::Plan>,
    },
}

/// How this proxy registers with the control plane.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// `https://HOST:PORT` (or `http://` on this host) of the control plane's gRPC server.
    pub url: String,
    /// From `--token-file`: proves, once, which service this proxy may act as.
    pub token: Option<JoinToken>,
    /// `--control-plane-ca`: the roots an `https://` control plane is checked by until the
    /// proxy has a certificate.
    pub ca: Option<PathBuf>,
    /// Where other proxies reach this one, if not the inbound listener's own address.
    pub advertise: Option<SocketAddr>,
    /// This workload's labels (such as `version`), which routes and balancers can select on.
    pub labels: BTreeMap<String, String>,
    pub zone: Option<String>,
}

/// A secret: shown as `JoinToken(..)` so it never reaches a log through `Debug`.
#[derive(Clone)]
pub struct JoinToken(pub String);

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(..)")
    }
}

#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A local listener bound to one service, for TCP and for apps that cannot set `Host`.
#[derive(Clone, Debug)]
pub struct UpstreamBinding {
    pub service: String,
    pub namespace: String,
    pub listen: SocketAddr,
}

/// Protection against misbehaving clients.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Connections accepted at once per listener; more are closed at once and counted.
    pub max_connections: usize,
    /// A client must finish sending request headers within this time of their first byte
    /// (slowloris); a new connection must begin its first request within it.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight for this long is closed (gracefully).
    pub idle_timeout: Duration,
    /// Opaque TCP connections and upgraded tunnels end after this long without a byte.
    pub tcp_idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// How long to wait for a client's first bytes before treating it as opaque TCP.
    pub detect_timeout: Duration,
    /// On SIGTERM, how long in-flight requests get to finish.
    pub drain_timeout: Duration,
    /// Bytes per second a request body must arrive at once `header_read_timeout` of waiting
    /// for it is used up (0: unchecked). gRPC streams are exempt.
    pub min_request_body_rate: u32,
}

impl ServerLimits {
    pub fn body_pace(&self) -> crate::client_body::BodyPace {
        crate::client_body::BodyPace {
            min_rate: self.min_request_body_rate,
            grace: self.header_read_timeout,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            tcp_idle_timeout: Duration::from_secs(3600),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            detect_timeout: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(15),
            min_request_body_rate: 1024,
        }
    }
}

#[cfg(any(test, fuzzing))]
impl ProxyOptions {
    /// A local-mode proxy for `app` with every default, for tests and fuzz targets.
    pub(crate) fn minimal(app: SocketAddr) -> ProxyOptions {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        ProxyOptions {
            service: "test".to_owned(),
            namespace: "default".to_owned(),
            app,
            inbound: any,
            outbound: any,
            admin: any,
            local: None,
            control_plane: None,
            tls: None,
            upstreams: Vec::new(),
            opaque_ports: Vec::new(),
            access_log: false,
            tracing: None,
            exit_on_stdin_close: false,
            limits: ServerLimits::default(),
            capture: None,
            dns: None,
            resolvers: Vec::new(),
        }
    }
}
