//! The proxy's DNS server (`--dns`): an unmodified app that looks up `reviews` gets the
//! service's virtual IP, which capture then sends through the mesh; every other name is
//! relayed to the namespace's own resolvers. UDP and TCP, as resolvers are asked.

mod answer;
mod relay;

use crate::options::DnsOptions;
use crate::proxy::Proxy;
use answer::Decision;
use relay::Relay;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// TCP clients served at once (resolvers use TCP only for answers too long for UDP).
const MAX_TCP_CLIENTS: usize = 64;
/// A TCP client with no query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A TCP query must arrive whole within this time once its length has.
const TCP_QUERY_READ: Duration = Duration::from_secs(5);
/// The largest query taken over UDP (EDNS allows clients up to 4096).
const MAX_UDP_QUERY: usize = 4096;

/// The DNS sockets, bound with the other listeners so a port in use fails start-up.
pub struct DnsListeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
    zone: Option<String>,
}

impl DnsListeners {
    /// Binds `options.listen` (UDP and TCP) and, with `ipv6_twin`, the same port on the
    /// IPv6 loopback, where capture sends IPv6 DNS.
    pub async fn bind(options: &DnsOptions, ipv6_twin: bool) -> io::Result<DnsListeners> {
        let tcp = crate::listen(options.listen)?;
        let local = tcp.local_addr()?;
        let udp = UdpSocket::bind(local).await?;
        let mut listeners = DnsListeners {
            udp: vec![udp],
            tcp: vec![tcp],
            zone: options.zone.clone(),
        };
        tracing::info!(listener = "dns", addr = %local, "listening (UDP and TCP)");
        if !local.ip().is_loopback() {
            tracing::warn!(addr = %local, "the DNS listener is not on loopback: anyone who can reach it gets answers and has names relayed for them (an open resolver); capture only needs 127.0.0.1");
        }
        if let Some(twin) = ipv6_twin.then(|| crate::ipv6_twin_addr(local)).flatten() {
            listeners.tcp.push(crate::listen_ipv6_only(twin)?);
            listeners.udp.push(udp_ipv6_only(twin)?);
            tracing::info!(listener = "dns-ipv6", addr = %twin, "listening for captured DNS");
        }
        Ok(listeners)
    }
}

fn udp_ipv6_only(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, None)?;
    socket.set_only_v6(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Serves every DNS socket until the process exits (DNS keeps answering while the proxy
/// drains: the app may still be finishing work that needs it).
pub fn spawn(proxy: Arc<Proxy>, listeners: DnsListeners) {
    if proxy.resolver.upstreams().is_empty() {
        tracing::warn!("no upstream resolver (none in /etc/resolv.conf and no --dns-upstream): names outside the mesh will get SERVFAIL");
    }
    let relay = Relay::new(proxy.resolver.upstreams().to_vec());
    let server = Arc::new(Server {
        proxy,
        relay,
        zone: listeners.zone,
        tcp_clients: Arc::new(Semaphore::new(MAX_TCP_CLIENTS)),
    });
    for socket in listeners.udp {
        tokio::spawn(server.clone().serve_udp(Arc::new(socket)));
    }
    for listener in listeners.tcp {
        tokio::spawn(server.clone().serve_tcp(listener));
    }
}

struct Server {
    proxy: Arc<Proxy>,
    relay: Relay,
    zone: Option<String>,
    tcp_clients: Arc<Semaphore>,
}

impl Server {
    /// Decides one message against the configuration in force.
    fn decide(&self, packet: &[u8]) -> Decision {
        let snapshot = self.proxy.snapshot();
        let mut zones = vec!["cluster.local", snapshot.config.trust_domain.as_str()];
        zones.extend(self.zone.as_deref());
        answer::decide(
            packet,
            &zones,
            |name, namespace| snapshot.virtual_ips(name, namespace),
            |host| snapshot.host_virtual_ips(host),
        )
    }

    /// A place among the relays in flight, counted in `weft_dns_relays_in_flight` while
    /// held.
    fn relay_permit(&self) -> Option<RelayPermit> {
        let permit = self.relay.permit()?;
        let in_flight = self.proxy.metrics.dns_relays_in_flight.clone();
        in_flight.inc();
        Some(RelayPermit {
            _permit: permit,
            in_flight,
        })
    }

    fn count(&self, result: &'static str) {
        self.proxy.metrics.dns_query(result);
    }

    async fn serve_udp(self: Arc<Self>, socket: Arc<UdpSocket>) {
        let mut buf = vec![0; MAX_UDP_QUERY];
        loop {
            let (len, client) = match socket.recv_from(&mut buf).await {
                Ok(received) => received,
                Err(error) => {
                    // ICMP errors for earlier answers surface here; never a reason to stop.
                    tracing::debug!(%error, "dns: receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
            let query = &buf[..len];
            match self.decide(query) {
                Decision::Ignore => self.count("ignored"),
                Decision::Answer { reply, result } => {
                    self.count(result.label());
                    let _ = socket.send_to(&reply, client).await;
                }
                Decision::Relay(request) => {
                    let Some(permit) = self.relay_permit() else {
                        self.count("overloaded");
                        let _ = socket
                            .send_to(&answer::server_failure(&request), client)
                            .await;
                        continue;
                    };
                    let (server, socket, query) = (self.clone(), socket.clone(), query.to_vec());
                    tokio::spawn(async move {
                        let reply = server.relayed(&request, server.relay.udp(&query).await);
                        let _ = socket.send_to(&reply, client).await;
                        drop(permit);
                    });
                }
            }
        }
    }

    /// The reply to send for a relayed query: the upstream's answer, or SERVFAIL.
    fn relayed(
        &self,
        request: &hickory_proto::op::Message,
        answer: Result<Vec<u8>, relay::RelayError>,
    ) -> Vec<u8> {
        match answer {
            Ok(reply) => {
                self.count("relayed");
                reply
            }
            Err(error) => {
                self.count("upstream_failed");
                tracing::debug!(%error, upstreams = ?self.relay.upstreams(), "dns: relay failed");
                answer::server_failure(request)
            }
        }
    }

    async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::debug!(%error, "dns: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.tcp_clients.clone().try_acquire_owned() else {
                self.count("overloaded");
                continue;
            };
            let server = self.clone();
            tokio::spawn(async move {
                server.serve_tcp_client(stream).await;
                drop(permit);
            });
        }
    }

    /// Length-prefixed queries, one after another, until the client closes or idles.
    async fn serve_tcp_client(&self, mut stream: TcpStream) {
        loop {
            let Ok(Ok(len)) = timeout(TCP_IDLE, stream.read_u16()).await else {
                return;
            };
            let mut query = vec![0; usize::from(len)];
            let Ok(Ok(_)) = timeout(TCP_QUERY_READ, stream.read_exact(&mut query)).await else {
                return;
            };
            let reply = match self.decide(&query) {
                Decision::Ignore => {
                    self.count("ignored");
                    return;
                }
                Decision::Answer { reply, result } => {
                    self.count(result.label());
                    reply
                }
                Decision::Relay(request) => match self.relay_permit() {
                    Some(_permit) => self.relayed(&request, self.relay.tcp(&query).await),
                    None => {
                        self.count("overloaded");
                        answer::server_failure(&request)
                    }
                },
            };
            let Some(framed) = tcp_frame(&reply) else {
                return;
            };
            // A client that stops reading its answers is let go, not waited on.
            let Ok(Ok(())) = timeout(TCP_QUERY_READ, stream.write_all(&framed)).await else {
                return;
            };
        }
    }
}

struct RelayPermit {
    _permit: tokio::sync::OwnedSemaphorePermit,
    in_flight: prometheus_client::metrics::gauge::Gauge,
}

impl Drop for RelayPermit {
    fn drop(&mut self) {
        self.in_flight.dec();
    }
}

/// A message as DNS over TCP carries it: after its length in two bytes (RFC 1035 4.2.2).
/// `None` when it is longer than that can say.
fn tcp_frame(message: &[u8]) -> Option<Vec<u8>> {
    let len = u16::try_from(message.len()).ok()?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    Some(framed)
}
