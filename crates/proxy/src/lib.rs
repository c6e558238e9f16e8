//! Weft's data plane: the sidecar proxy (`weft proxy`).
//!
//! One process per workload. The outbound listener takes the app's requests into the mesh
//! (routing, balancing, retries, circuit breaking), the inbound listener takes the mesh's
//! requests to the app (mTLS termination, rate limiting), and the admin listener serves
//! metrics and health. Configuration arrives as a `ProxyConfig` and is swapped in
//! atomically; connections never notice.

mod access_log;
mod address_index;
mod admin;
mod authorization;
mod balance;
mod body;
pub mod capture;
mod client_body;
mod config_error;
mod connections;
mod control_client;
mod cors;
mod detect;
mod dns;
mod drain;
#[cfg(fuzzing)]
pub mod fuzzing;
mod grpc_outcome;
mod http;
mod inbound;
mod io;
mod listener;
mod local;
mod metrics;
mod mirror;
mod observed;
mod options;
mod outbound;
mod proxy;
mod replay;
mod resilience;
mod resolve;
mod routes;
mod splice;
mod state;
mod tap;
mod tcp;
pub mod trace;
mod traffic;
mod upgrade;
mod upstream;
mod url_rewrite;

pub use options::{
    Capture, ControlPlaneOptions, DnsOptions, JoinToken, ProxyOptions, ServerLimits, TlsFiles,
    UpstreamBinding,
};

use control_client::ControlClient;
use listener::Role;
use proxy::Proxy;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot listen on {addr} ({what}); pick another address with {flag}")]
    Bind {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("loading the TLS identity")]
    Identity(#[from] weft_identity::IdentityError),
    #[error("the certificate is for {identity}, but this proxy runs as --service {service} --namespace {namespace}; issue a certificate for this service")]
    WrongIdentity {
        identity: String,
        service: String,
        namespace: String,
    },
    #[error(transparent)]
    Config(#[from] config_error::ConfigError),
    #[error("--control-plane {url}: {reason}")]
    ControlPlane { url: String, reason: String },
    #[error("no configuration source: give --control-plane URL (a running `weft control`) or --local FILE")]
    NoConfigSource,
    #[error("starting the admin server")]
    Admin(#[source] std::io::Error),
    #[error("installing the capture rules: {0}")]
    Capture(#[from] capture::CaptureError),
    #[error("attaching the eBPF capture: {0}")]
    EbpfCapture(#[from] capture::EbpfCaptureError),
}

/// While draining, callers count as gone once no request has come in for this long.
const CALLERS_GONE: Duration = Duration::from_secs(1);

/// Connections the kernel queues for a listener before it accepts them. The usual default
/// (128) overflows in a burst of new connections, and the clients then wait out SYN retries.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The IPv6 loopback or wildcard address at the port `local` has on the IPv4 one: where
/// capture rules send what IPv6 brings. `None` when `local` is another address (IPv6
/// already, or one interface's).
fn ipv6_twin_addr(local: SocketAddr) -> Option<SocketAddr> {
    let SocketAddr::V4(local) = local else {
        return None;
    };
    let ip = match *local.ip() {
        std::net::Ipv4Addr::LOCALHOST => std::net::Ipv6Addr::LOCALHOST,
        std::net::Ipv4Addr::UNSPECIFIED => std::net::Ipv6Addr::UNSPECIFIED,
        _ => return None,
    };
    Some(SocketAddr::from((ip, local.port())))
}

/// A TCP listener on an IPv6 address that leaves the port's IPv4 side to another.
fn listen_ipv6_only(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::STREAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG as i32)?;
    TcpListener::from_std(socket.into())
}

/// The IPv6 twin of `listener` (see `ipv6_twin_addr`), where capture rules send
/// redirected IPv6 connections.
fn ipv6_twin(
    listener: &TcpListener,
    flag: &'static str,
) -> Result<Option<TcpListener>, ProxyError> {
    let Some(addr) = listener.local_addr().ok().and_then(ipv6_twin_addr) else {
        return Ok(None);
    };
    let twin = listen_ipv6_only(addr).map_err(|source| ProxyError::Bind {
        what: "IPv6 capture",
        flag,
        addr,
        source,
    })?;
    let name = format!("{}-ipv6", flag.trim_start_matches("--"));
    tracing::info!(listener = %name, %addr, "listening for captured traffic");
    Ok(Some(twin))
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, ProxyError> {
    let listener = listen(addr).map_err(|source| ProxyError::Bind {
        what,
        flag,
        addr,
        source,
    })?;
    let local = listener.local_addr().map_err(|source| ProxyError::Bind {
        what,
        flag,
        addr,
        source,
    })?;
    tracing::info!(listener = what, addr = %local, "listening");
    Ok(listener)
}

/// Attaches eBPF capture for `plan`'s proxy to `cgroup`.
fn attach_ebpf(
    cgroup: &std::path::Path,
    plan: &capture::Plan,
) -> Result<capture::EbpfCapture, capture::EbpfCaptureError> {
    let attached = capture::EbpfCapture::attach(cgroup, plan)?;
    tracing::info!(cgroup = %cgroup.display(), proxy_uid = plan.proxy_uid, "eBPF capture attached (connect4, connect6, sockops, sk_msg)");
    Ok(attached)
}

/// The rules that go with eBPF capture: inbound and UDP DNS, and outbound for what the
/// programs do not take (processes outside the cgroup). A connect the programs sent
/// to the outbound listener is on loopback, which the rules leave alone; and when the
/// proxy dies and its programs go with it, the rules still send the app's connections to
/// the dead listener: capture fails closed, as in iptables mode.
fn install_with_ebpf(plan: &capture::Plan) -> Result<(), ProxyError> {
    let added = capture::install(plan)?;
    tracing::info!(
        rules = added.len(),
        "capture rules installed (iptables, under eBPF)"
    );
    Ok(())
}

/// Runs the proxy until `stop` turns true (the binary sets it on SIGTERM or SIGINT), then
/// drains.
pub async fn run(options: ProxyOptions, stop: watch::Receiver<bool>) -> Result<(), ProxyError> {
    let source = ConfigSource::of(&options)?;
    if let ConfigSource::ControlPlane(client) = &source {
        client
            .check_not_rest_api()
            .await
            .map_err(|reason| ProxyError::ControlPlane {
                url: options
                    .control_plane
                    .as_ref()
                    .map(|c| c.url.clone())
                    .unwrap_or_default(),
                reason,
            })?;
    }
    // Listeners first: a port in use must fail here, before a single-use join token is
    // spent on a certificate this process could never serve with.
    let listeners = Listeners::bind(&options).await?;
    let tls = match (&options.tls, &source) {
        (Some(files), _) => Some(Arc::new(weft_identity::TlsIdentity::from_files(
            &files.cert,
            &files.key,
            &files.ca,
        )?)),
        // No certificate files but a join token: the control plane issues one, before any
        // listener serves, and renews it at half-life (below).
        (None, ConfigSource::ControlPlane(client)) if client.has_token() => {
            let issue = client.issue_identity(&options.service, &options.namespace);
            let identity = tokio::select! {
                identity = issue => identity.map_err(|reason| ProxyError::ControlPlane {
                    url: options.control_plane.as_ref().map(|c| c.url.clone()).unwrap_or_default(),
                    reason,
                })?,
                () = stopped(stop.clone()) => {
                    tracing::info!("stopped before a certificate was issued");
                    return Ok(());
                }
            };
            Some(Arc::new(identity))
        }
        _ => None,
    };
    if let (Some(identity), ConfigSource::ControlPlane(client)) = (&tls, &source) {
        client.set_identity(identity.clone());
    }
    if let Some(identity) = &tls {
        let id = identity.id();
        if id.service() != options.service || id.namespace() != options.namespace {
            return Err(ProxyError::WrongIdentity {
                identity: id.to_string(),
                service: options.service.clone(),
                namespace: options.namespace.clone(),
            });
        }
        tracing::info!(
            identity = %id,
            key_exchange = ?identity.key_exchange_groups(),
            fips = identity.fips(),
            "mutual TLS enabled"
        );
    }
    let proxy = Arc::new(Proxy::new(options, tls));
    if let ConfigSource::Local(path) = &source {
        local::load(&proxy, path)?;
    }
    let Listeners {
        admin,
        inbound,
        inbound_addr,
        outbound,
        bound,
        twins,
        dns,
    } = listeners;
    // The rules go in once every listener is bound (the kernel queues what they capture
    // until the accept loops run) and before `/ready` can say yes.
    let installed = match &proxy.options.capture {
        Some(Capture::Iptables(plan)) => {
            // A few milliseconds of iptables-restore, once, before any traffic is captured.
            let added = capture::install(plan)?;
            tracing::info!(rules = added.len(), "capture rules installed (iptables)");
            true
        }
        Some(Capture::Ebpf { cgroup, plan }) => {
            let attached = attach_ebpf(cgroup, plan)?;
            let _ = proxy.ebpf.set(attached);
            install_with_ebpf(plan)?;
            true
        }
        Some(Capture::Auto { cgroup, plan }) => {
            let attached = match cgroup {
                Some(cgroup) => attach_ebpf(cgroup, plan).map_err(|e| e.to_string()),
                None => Err("no --capture-cgroup".to_owned()),
            };
            match attached {
                Ok(attached) => {
                    let _ = proxy.ebpf.set(attached);
                    install_with_ebpf(plan)?;
                }
                Err(reason) => {
                    tracing::warn!(%reason, "eBPF capture not available; capturing with iptables");
                    let added = capture::install(plan)?;
                    tracing::info!(rules = added.len(), "capture rules installed (iptables)");
                }
            }
            true
        }
        _ => false,
    };
    if let Some(dns) = dns {
        dns::spawn(proxy.clone(), dns);
    }
    let admin_addr = admin.local_addr().ok();
    admin::spawn(proxy.clone(), admin).map_err(ProxyError::Admin)?;

    let drain = drain::DrainSignal::new();
    tokio::spawn(listener::accept_loop(
        proxy.clone(),
        inbound,
        Role::Inbound,
        drain.watch(),
    ));
    tokio::spawn(listener::accept_loop(
        proxy.clone(),
        outbound,
        Role::Outbound,
        drain.watch(),
    ));
    for (listener, role) in bound.into_iter().chain(twins) {
        tokio::spawn(listener::accept_loop(
            proxy.clone(),
            listener,
            role,
            drain.watch(),
        ));
    }
    if let Some(identity) = &proxy.tls {
        proxy.metrics.certificate_expiry(identity.not_after());
    }
    let watcher = match source {
        ConfigSource::Local(path) => tokio::spawn(local::watch(proxy.clone(), path)),
        // Listeners are up before the first config arrives; until then `/ready` says no.
        ConfigSource::ControlPlane(client) => {
            if let (Some(identity), true) = (&proxy.tls, proxy.options.tls.is_none()) {
                let (client, identity, proxy) = (client.clone(), identity.clone(), proxy.clone());
                tokio::spawn(async move { client.keep_renewed(proxy, identity).await });
            }
            tokio::spawn(client.run(proxy.clone(), inbound_addr, admin_addr))
        }
    };

    tokio::select! {
        () = stopped(stop.clone()) => {}
        _ = stdin_closed(), if proxy.options.exit_on_stdin_close => {
            tracing::info!("standard input closed: the supervisor is gone");
        }
    }
    let deadline = proxy.options.limits.drain_timeout;
    let started = tokio::time::Instant::now();
    // Announce first: `/ready` fails, the control plane hears we are gone (the stream ends)
    // and takes our endpoint out, and every answer tells its calling proxy to move away.
    // Listeners stay open until callers have gone quiet, so nobody meets a closed port.
    tracing::info!(?deadline, "draining: telling callers to move away");
    proxy.start_draining();
    watcher.abort();
    let announce = deadline / 2;
    while proxy.quiet_for() < CALLERS_GONE && started.elapsed() < announce {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::info!(
        quiet = ?proxy.quiet_for(),
        "no new connections; finishing in-flight requests"
    );
    if drain
        .drain(deadline.saturating_sub(started.elapsed()))
        .await
    {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain deadline passed with connections still open; exiting");
    }
    // After the drain nothing else runs: blocking this thread for the last lines is fine.
    // The rules stay until now, so no connection made while draining bypasses the mesh.
    if installed {
        match capture::remove() {
            Ok(removed) => tracing::info!(rules = removed.len(), "capture rules removed"),
            Err(error) => {
                tracing::error!(%error, "removing the capture rules failed; run `weft capture remove`")
            }
        }
    }
    if let Some(log) = &proxy.access_log {
        if !log.flush(Duration::from_secs(2)) {
            tracing::warn!("the access log's last lines could not be written within 2s");
        }
    }
    Ok(())
}

/// Every listener a proxy serves, bound before anything else happens.
struct Listeners {
    admin: std::net::TcpListener,
    inbound: TcpListener,
    inbound_addr: std::net::SocketAddr,
    outbound: TcpListener,
    bound: Vec<(TcpListener, Role)>,
    /// With capture: the IPv6 listeners redirected IPv6 connections arrive at.
    twins: Vec<(TcpListener, Role)>,
    /// With `--dns`.
    dns: Option<dns::DnsListeners>,
}

impl Listeners {
    async fn bind(options: &ProxyOptions) -> Result<Listeners, ProxyError> {
        let admin =
            std::net::TcpListener::bind(options.admin).map_err(|source| ProxyError::Bind {
                what: "admin",
                flag: "--admin",
                addr: options.admin,
                source,
            })?;
        tracing::info!(listener = "admin", addr = %admin.local_addr().map_err(ProxyError::Admin)?, "listening");
        let ipv6_capture =
            options.capture.is_some() && std::path::Path::new("/proc/net/if_inet6").exists();
        let dns = match &options.dns {
            Some(dns) => Some(dns::DnsListeners::bind(dns, ipv6_capture).await.map_err(
                |source| ProxyError::Bind {
                    what: "DNS",
                    flag: "--dns",
                    addr: dns.listen,
                    source,
                },
            )?),
            None => None,
        };
        let inbound = bind(options.inbound, "inbound", "--inbound").await?;
        let inbound_addr = inbound.local_addr().map_err(|source| ProxyError::Bind {
            what: "inbound",
            flag: "--inbound",
            addr: options.inbound,
            source,
        })?;
        let outbound = bind(options.outbound, "outbound", "--outbound").await?;
        let mut bound = Vec::new();
        for binding in &options.upstreams {
            let listener = bind(binding.listen, "upstream", "--upstream").await?;
            tracing::info!(service = %binding.service, addr = %listener.local_addr().map_err(ProxyError::Admin)?, "upstream bound");
            bound.push((
                listener,
                Role::Bound {
                    service: binding.service.clone(),
                    namespace: binding.namespace.clone(),
                },
            ));
        }
        let mut twins = Vec::new();
        if ipv6_capture {
            for (listener, role, flag) in [
                (&inbound, Role::Inbound, "--inbound"),
                (&outbound, Role::Outbound, "--outbound"),
            ] {
                if let Some(twin) = ipv6_twin(listener, flag)? {
                    twins.push((twin, role));
                }
            }
        }
        Ok(Listeners {
            admin,
            inbound,
            inbound_addr,
            outbound,
            bound,
            twins,
            dns,
        })
    }
}

/// Where configuration comes from.
enum ConfigSource {
    Local(PathBuf),
    // Boxed: the client's endpoint settings dwarf a path.
    ControlPlane(Box<ControlClient>),
}

impl ConfigSource {
    fn of(options: &ProxyOptions) -> Result<Self, ProxyError> {
        match (&options.local, &options.control_plane) {
            (Some(path), _) => Ok(Self::Local(path.clone())),
            (None, Some(control)) => {
                let failed = |reason: String| ProxyError::ControlPlane {
                    url: control.url.clone(),
                    reason,
                };
                if control.url.starts_with("https://")
                    && control.ca.is_none()
                    && options.tls.is_none()
                {
                    return Err(failed(
                        "an https:// control plane is checked against its roots: pass \
                         --control-plane-ca FILE (the output of `weft ca show --pem`)"
                            .to_owned(),
                    ));
                }
                // Without a certificate or a join token the control plane refuses to
                // register the proxy (unless it runs with --dev-plaintext-proxies and this
                // is plain text): say so now rather than retry forever.
                if control.token.is_none() && options.tls.is_none() {
                    if control.url.starts_with("https://") {
                        return Err(failed(
                            "a proxy proves its identity to the control plane: pass \
                             --token-file FILE (from `weft token create --service NAME`), or \
                             --cert/--key/--ca"
                                .to_owned(),
                        ));
                    }
                    tracing::warn!(url = %control.url, "plain http:// with no certificate or join token registers only with a control plane started with --dev-plaintext-proxies; otherwise use https://, --control-plane-ca and --token-file");
                }
                ControlClient::new(control)
                    .map(|client| Self::ControlPlane(Box::new(client)))
                    .map_err(failed)
            }
            (None, None) => Err(ProxyError::NoConfigSource),
        }
    }
}

/// Resolves when standard input reaches end of file.
async fn stdin_closed() {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 256];
    while matches!(stdin.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Resolves once `stop` turns true, or once nothing can turn it any more.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
