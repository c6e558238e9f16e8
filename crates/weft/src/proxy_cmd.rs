//! `weft proxy`: flags to `ProxyOptions`, and the runtime it runs on.

use crate::capture_cmd::Exclusions;
use crate::stop_signal;
use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weft_proxy::capture::{InboundPorts, Plan};
use weft_proxy::{
    Capture, ControlPlaneOptions, DnsOptions, JoinToken, ProxyOptions, ServerLimits, TlsFiles,
    UpstreamBinding,
};

#[derive(Args)]
#[command(
    after_help = "Example (with a control plane; the proxy gets its certificate with the token):\n  \
    weft proxy --service web --app 127.0.0.1:8080 --control-plane https://10.0.0.5:7443 \\\n    \
    --control-plane-ca ca.pem --token-file web.token\n\n\
    Example (local mode, no control plane):\n  \
    weft proxy --service web --app 127.0.0.1:8080 --local mesh.yaml \\\n    \
    --cert web.pem --key web-key.pem --ca ca.pem\n\n\
    The app sends requests to the outbound listener with the target service as Host\n\
    (e.g. `curl -H 'Host: reviews' http://127.0.0.1:7140/`); the mesh reaches the app\n\
    through the inbound listener."
)]
pub struct ProxyArgs {
    /// The service this workload belongs to.
    #[arg(long)]
    service: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// The local application the inbound listener forwards to.
    #[arg(long, default_value = "127.0.0.1:8080")]
    app: SocketAddr,
    /// Where the mesh reaches this workload (mutual TLS when --cert is given).
    #[arg(long, default_value = "0.0.0.0:7143")]
    inbound: SocketAddr,
    /// Where the local app sends requests into the mesh (route by Host).
    #[arg(long, default_value = "127.0.0.1:7140")]
    outbound: SocketAddr,
    /// Admin server: /metrics, /ready, /live, /config, /certs.
    #[arg(long, default_value = "127.0.0.1:7901")]
    admin: SocketAddr,
    /// Run without a control plane: read resources (Service with static endpoints,
    /// HTTPRoute, GRPCRoute, TrafficPolicy) from this YAML file or directory, and reload
    /// it when it changes (or on SIGHUP).
    #[arg(long, value_name = "FILE")]
    local: Option<PathBuf>,
    /// Get configuration from a control plane (`weft control`'s gRPC address): register
    /// this workload, receive config live, report the app's health. Keeps serving the last
    /// config while the control plane is away.
    #[arg(long, value_name = "URL", conflicts_with = "local")]
    control_plane: Option<String>,
    /// File holding the join token for the control plane.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    token_file: Option<PathBuf>,
    /// The roots an https:// control plane is checked against until this proxy has its own
    /// certificate: the output of `weft ca show --pem`.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    control_plane_ca: Option<PathBuf>,
    /// The address other proxies use to reach this one (default: the inbound listener's
    /// address; 127.0.0.1 with its port when it listens on every interface).
    #[arg(long, value_name = "ADDR", requires = "control_plane")]
    advertise: Option<SocketAddr>,
    /// A label of this workload, e.g. `--label version=v2`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label, requires = "control_plane")]
    label: Vec<(String, String)>,
    /// The zone (failure domain) this workload runs in.
    #[arg(long, requires = "control_plane")]
    zone: Option<String>,
    /// This workload's certificate (PEM, may include the chain). Turns on mutual TLS:
    /// inbound then refuses plaintext.
    #[arg(long, requires_all = ["key", "ca"])]
    cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Trust bundle: the CA certificate(s) peers must chain to (PEM).
    #[arg(long, requires = "cert")]
    ca: Option<PathBuf>,
    /// Bind a local port to one service, for TCP and for apps that cannot set Host:
    /// `SERVICE[.NAMESPACE]=ADDR`, e.g. `--upstream db=127.0.0.1:5432`. Repeatable.
    #[arg(long, value_name = "SERVICE=ADDR", value_parser = parse_upstream)]
    upstream: Vec<UpstreamBinding>,
    /// App ports never sniffed for a protocol (server-speaks-first protocols such as MySQL
    /// or SMTP), comma-separated.
    #[arg(long, value_delimiter = ',')]
    opaque_ports: Vec<u16>,
    /// Write one JSON line per request or TCP connection to stdout.
    #[arg(long)]
    access_log: bool,
    /// Export a span per request for sampled traces to this OTLP/gRPC collector
    /// (`http://HOST:4317`). W3C `traceparent` is continued, or started here.
    #[arg(long, value_name = "URL")]
    trace_collector: Option<String>,
    /// The share of traces started here that are recorded, 0-100 (a trace that arrives with
    /// a `traceparent` keeps the decision it carries).
    #[arg(long, default_value_t = 1.0, value_name = "PERCENT", value_parser = parse_percent)]
    trace_sample_percent: f64,
    /// Drain and exit when standard input closes. A supervisor that starts proxies with a
    /// pipe on their stdin (as `weft demo` does) then never leaves one behind, even if it
    /// is killed with SIGKILL.
    #[arg(long)]
    exit_on_stdin_close: bool,
    /// Worker threads for the data path. One is the right size for most sidecars.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Connections accepted at once per listener; more are refused and counted.
    #[arg(long, default_value_t = 10_000)]
    max_connections: usize,
    /// Clients must send complete request headers within this time of their first byte
    /// (slowloris defence), and a new connection must begin its first request within it.
    /// A kept-alive connection waiting for its next request is timed by --idle-timeout.
    #[arg(long, default_value = "10s", value_parser = crate::duration_flag::parse)]
    header_read_timeout: Duration,
    /// A client connection with no request in flight for this long is closed gracefully
    /// (HTTP/2 GOAWAY; HTTP/1.1 close between requests).
    #[arg(long, default_value = "5m", value_parser = crate::duration_flag::parse)]
    idle_timeout: Duration,
    /// Opaque TCP connections and WebSocket/CONNECT tunnels end after this long without a
    /// byte in either direction.
    #[arg(long, default_value = "1h", value_parser = crate::duration_flag::parse)]
    tcp_idle_timeout: Duration,
    /// Largest request head accepted, in bytes; larger gets 431.
    #[arg(long, default_value_t = 64 * 1024)]
    max_header_bytes: usize,
    /// Most request headers accepted; more gets 431.
    #[arg(long, default_value_t = 100)]
    max_headers: usize,
    /// How long to wait for a client's first bytes before treating it as opaque TCP.
    #[arg(long, default_value = "500ms", value_parser = crate::duration_flag::parse)]
    detect_timeout: Duration,
    /// On SIGTERM: stop accepting, and give in-flight requests this long to finish.
    #[arg(long, default_value = "15s", value_parser = crate::duration_flag::parse)]
    drain_timeout: Duration,
    /// Bytes per second a request body must keep up once it has kept the proxy waiting for
    /// --header-read-timeout in all; slower bodies are cut with 408. 0 turns the check off.
    /// gRPC streams are never checked.
    #[arg(long, default_value_t = 1024)]
    min_request_body_rate: u32,
    /// Transparent capture, so the app needs no change: its outbound TCP comes to the
    /// outbound listener and goes to the service at the address it called (or out as
    /// plain TCP when no service has it), and TCP to its ports comes through the inbound
    /// listener. `iptables`: install the rules in this network namespace at start (needs
    /// root or CAP_NET_ADMIN; this proxy's own uid is never captured, so run the app as
    /// another user) and remove them on exit. `preinstalled`: `weft capture install` did.
    /// `ebpf`: attach eBPF programs to --capture-cgroup (needs root or CAP_BPF and
    /// CAP_NET_ADMIN): the app's outbound TCP (IPv4 and IPv6) is sent to the outbound
    /// listener by the kernel, without NAT; the iptables rules are installed under them (inbound, DNS, what
    /// eBPF does not take, and failing closed if this proxy dies).
    /// `auto`: `ebpf` where it can be attached, else `iptables` (the log says why).
    #[arg(long, value_enum, default_value_t = CaptureMode::Off, help_heading = "Transparent capture")]
    capture: CaptureMode,
    /// With --capture ebpf or auto: the cgroup (v2) directory the app's processes are in, e.g.
    /// /sys/fs/cgroup/unified/shop-web. Every connect from it (but this proxy's uid) is
    /// captured. Start this proxy in the same cgroup too, and the hops between it and the
    /// app skip the TCP/IP stack (eBPF passes the bytes socket to socket).
    #[arg(long, value_name = "DIR", help_heading = "Transparent capture")]
    capture_cgroup: Option<std::path::PathBuf>,
    #[command(flatten, next_help_heading = "Transparent capture")]
    capture_exclusions: Exclusions,
    /// Answer DNS here (UDP and TCP): service names (`reviews`, `reviews.NS`,
    /// `reviews.NS.svc.cluster.local`, or in the trust domain or --dns-zone) get their
    /// virtual IP, every other name is relayed to --dns-upstream. With --capture iptables
    /// the app's DNS queries are sent here. Off unless given; e.g. 127.0.0.1:7153.
    #[arg(long, value_name = "ADDR", help_heading = "Transparent capture")]
    dns: Option<SocketAddr>,
    /// Resolvers the proxy asks (IP:PORT, comma-separated): for names outside the mesh
    /// that --dns relays, and for the host names of endpoints outside the mesh
    /// (`address: api.example.com:443`). [default: the nameservers of /etc/resolv.conf]
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "ADDRS",
        help_heading = "Transparent capture"
    )]
    dns_upstream: Vec<SocketAddr>,
    /// A DNS zone service names are answered in besides cluster.local and the trust
    /// domain: NAME.NS.svc.ZONE.
    #[arg(long, value_name = "ZONE", help_heading = "Transparent capture")]
    dns_zone: Option<String>,
}

/// What `--capture` and its flags ask for.
fn capture_options(args: &ProxyArgs) -> anyhow::Result<Option<Capture>> {
    if args.capture_cgroup.is_some()
        && !matches!(args.capture, CaptureMode::Ebpf | CaptureMode::Auto)
    {
        anyhow::bail!(
            "--capture-cgroup is for --capture ebpf or auto (the cgroup the programs attach to)"
        );
    }
    let mode = match args.capture {
        CaptureMode::Off => return Ok(None),
        CaptureMode::Preinstalled => return Ok(Some(Capture::Preinstalled)),
        CaptureMode::Iptables => "iptables",
        CaptureMode::Ebpf => "ebpf",
        CaptureMode::Auto => "auto",
    };
    // eBPF capture still leaves inbound and DNS to rules, so every mode needs them.
    if args.outbound.port() == 0 || args.inbound.port() == 0 {
        anyhow::bail!("--capture {mode} needs fixed --outbound and --inbound ports (not 0): captured traffic is sent to them");
    }
    if args.dns.is_some_and(|dns| dns.port() == 0) {
        anyhow::bail!("--capture {mode} needs a fixed --dns port (not 0): DNS is sent to it");
    }
    let plan = Box::new(Plan {
        dns_port: args.dns.map(|dns| dns.port()),
        ..args.capture_exclusions.clone().plan(
            (
                rustix::process::getuid().as_raw(),
                Some(rustix::process::getgid().as_raw()),
            ),
            (args.outbound.port(), args.inbound.port()),
            InboundPorts::Only(vec![args.app.port()]),
        )
    });
    let cgroup = args.capture_cgroup.clone();
    Ok(Some(match args.capture {
        CaptureMode::Ebpf => {
            let Some(cgroup) = cgroup else {
                anyhow::bail!("--capture ebpf needs --capture-cgroup: the cgroup (v2) directory the app runs in, e.g. /sys/fs/cgroup/unified/shop-web");
            };
            Capture::Ebpf { cgroup, plan }
        }
        CaptureMode::Auto => Capture::Auto { cgroup, plan },
        _ => Capture::Iptables(plan),
    }))
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CaptureMode {
    Off,
    Iptables,
    Preinstalled,
    Ebpf,
    Auto,
}

fn parse_upstream(value: &str) -> Result<UpstreamBinding, String> {
    let (target, addr) = value
        .split_once('=')
        .ok_or("expected SERVICE=ADDR, e.g. db=127.0.0.1:5432")?;
    let listen: SocketAddr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address (e.g. 127.0.0.1:5432): {e}"))?;
    let (service, namespace) = target.split_once('.').unwrap_or((target, "default"));
    if service.is_empty() {
        return Err("the service name is empty".into());
    }
    Ok(UpstreamBinding {
        service: service.to_string(),
        namespace: namespace.to_string(),
        listen,
    })
}

fn parse_label(value: &str) -> Result<(String, String), String> {
    match value.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err("expected KEY=VALUE, e.g. version=v2".into()),
    }
}

pub fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let capture = capture_options(&args)?;
    let tls = match (args.cert, args.key, args.ca) {
        (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
        _ => None,
    };
    let token = match &args.token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the join token from {}", path.display()))?;
            Some(JoinToken(text.trim().to_string()))
        }
        None => None,
    };
    let control_plane = args.control_plane.map(|url| ControlPlaneOptions {
        url,
        token,
        ca: args.control_plane_ca,
        advertise: args.advertise,
        labels: args.label.into_iter().collect::<BTreeMap<_, _>>(),
        zone: args.zone,
    });
    let options = ProxyOptions {
        service: args.service,
        namespace: args.namespace,
        app: args.app,
        inbound: args.inbound,
        outbound: args.outbound,
        admin: args.admin,
        local: args.local,
        control_plane,
        tls,
        upstreams: args.upstream,
        opaque_ports: args.opaque_ports,
        access_log: args.access_log,
        tracing: args
            .trace_collector
            .map(|collector| weft_proxy::trace::TraceOptions {
                collector,
                sample_percent: args.trace_sample_percent,
            }),
        exit_on_stdin_close: args.exit_on_stdin_close,
        limits: ServerLimits {
            max_connections: args.max_connections,
            header_read_timeout: args.header_read_timeout,
            idle_timeout: args.idle_timeout,
            tcp_idle_timeout: args.tcp_idle_timeout,
            max_header_bytes: args.max_header_bytes,
            max_headers: args.max_headers,
            detect_timeout: args.detect_timeout,
            drain_timeout: args.drain_timeout,
            min_request_body_rate: args.min_request_body_rate,
        },
        capture,
        resolvers: args.dns_upstream,
        dns: args.dns.map(|listen| DnsOptions {
            listen,
            zone: args
                .dns_zone
                .map(|zone| zone.trim_matches('.').to_ascii_lowercase()),
        }),
    };
    // One thread: the current-thread scheduler parks straight in epoll and needs no
    // work-stealing bookkeeping, which is measurably cheaper per request.
    let mut builder = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(args.threads);
        builder
    };
    let runtime = builder
        .thread_name("weft-proxy")
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let result = runtime.block_on(async {
        let stop = stop_signal::install(stop_signal::TERMINATE_OR_INTERRUPT)
            .context("installing the signal handlers")?;
        weft_proxy::run(options, stop)
            .await
            .map_err(anyhow::Error::from)
    });
    // A read of standard input (--exit-on-stdin-close) blocks a thread that dropping the
    // runtime would wait for: once drained, the process exits whatever stdin does.
    runtime.shutdown_background();
    result?;
    Ok(())
}

fn parse_percent(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(percent) if (0.0..=100.0).contains(&percent) => Ok(percent),
        _ => Err(format!(
            "{text:?} is not a percentage: use 0 to 100 (fractions allowed)"
        )),
    }
}
