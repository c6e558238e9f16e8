//! The control plane's ports and their connections. With a CA, a port speaks TLS with the
//! control plane's own certificate (client certificates optional: a proxy asks for its first
//! one with a join token, and an operator may call the REST API with one), and takes plain
//! text as its [`Plaintext`] says: the gRPC port refuses it (a plain-text caller proves
//! nothing, so it could register as any service; `weft control --dev-plaintext-proxies`
//! accepts it from loopback, for development only, and `weft check` warns while it is on),
//! the REST API takes it from anywhere (every call carries its credential). The first byte
//! tells TLS and plain text apart.

use futures_util::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use weft_identity::{SpiffeId, TlsIdentity};

/// A client that has not started or finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Connections open at once on the gRPC port: one per proxy, so room for a large mesh.
pub const GRPC_CONNECTIONS: usize = 20_000;
/// Connections open at once on the REST API port (operators, tools, dashboards).
pub const API_CONNECTIONS: usize = 1_024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    port: &'static str,
}

/// Connections each port refused for being at its cap, for `GET /metrics`.
#[derive(Clone, Default)]
pub struct ConnectionRefusals(Family<PortLabels, Counter>);

impl ConnectionRefusals {
    /// Adds the counter to the registry `GET /metrics` serves.
    pub fn register(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "weft_control_connections_refused",
            "Connections a control-plane port closed at once because it had its maximum open",
            self.0.clone(),
        );
    }
}

/// The cap on one port's open connections (held by each `Conn` until it closes).
#[derive(Clone)]
pub struct PortCap {
    name: &'static str,
    slots: Arc<Semaphore>,
    refused: ConnectionRefusals,
}

impl PortCap {
    pub fn new(name: &'static str, max: usize, refused: ConnectionRefusals) -> PortCap {
        PortCap {
            name,
            slots: Arc::new(Semaphore::new(max)),
            refused,
        }
    }
}

/// Who is on the other end of a connection: in every request's extensions.
#[derive(Clone, Debug)]
pub struct Peer {
    pub remote: SocketAddr,
    pub tls: bool,
    /// The SPIFFE id of the certificate the client presented, if it presented one.
    pub identity: Option<SpiffeId>,
    /// The SHA-256 of that certificate's DER, to match against revocations.
    pub certificate_sha256: Option<String>,
}

impl Peer {
    fn plain(remote: SocketAddr) -> Peer {
        Peer {
            remote,
            tls: false,
            identity: None,
            certificate_sha256: None,
        }
    }
}

/// Which plain-text connections a port accepts besides TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Plaintext {
    /// None: every proxy proves who it is with TLS.
    #[default]
    Refused,
    /// From this host, unauthenticated: development only.
    DevLoopback,
    /// From anywhere: the REST API, where every call carries its own credential.
    Anywhere,
}

/// How a port speaks TLS.
pub struct TlsPort {
    /// The control plane's own certificate (and the revocations it enforces).
    pub identity: Arc<TlsIdentity>,
    pub plaintext: Plaintext,
    /// The protocols offered in ALPN.
    pub alpn: &'static [&'static [u8]],
    /// The port's name, in logs.
    pub name: &'static str,
}

/// An accepted connection, holding its place under its port's cap until it closes.
pub struct Conn {
    stream: ConnIo,
    peer: Peer,
    _slot: OwnedSemaphorePermit,
}

enum ConnIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn plain(stream: TcpStream, remote: SocketAddr, slot: OwnedSemaphorePermit) -> Conn {
        Conn {
            stream: ConnIo::Plain(stream),
            peer: Peer::plain(remote),
            _slot: slot,
        }
    }

    pub fn peer(&self) -> &Peer {
        &self.peer
    }
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer().clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            ConnIo::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            ConnIo::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            ConnIo::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            ConnIo::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            ConnIo::Plain(stream) => Pin::new(stream).poll_flush(cx),
            ConnIo::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            ConnIo::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            ConnIo::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a port sorts out the connections it accepts: TLS (with its handshake) or plain text,
/// as its [`TlsPort`] says. Cheap to clone.
#[derive(Clone)]
pub struct SortOut {
    acceptor: Option<Arc<Acceptor>>,
    cap: PortCap,
}

impl SortOut {
    /// With `tls` the port speaks TLS as the module says; without, plain text only, from
    /// anywhere (tests and benchmarks of the discovery protocol alone).
    pub fn new(tls: Option<TlsPort>, cap: PortCap) -> SortOut {
        let acceptor = tls.map(|port| {
            let config = port.identity.server_config_client_optional(port.alpn);
            Arc::new(Acceptor {
                tls: tokio_rustls::TlsAcceptor::from(config),
                port,
            })
        });
        SortOut { acceptor, cap }
    }

    /// Sorts out one accepted connection on a task of its own (so a slow client holds up no
    /// one), sending it to `ready` if it is let in.
    pub fn spawn(&self, stream: TcpStream, remote: SocketAddr, ready: mpsc::Sender<Conn>) {
        let Ok(slot) = self.cap.slots.clone().try_acquire_owned() else {
            tracing::debug!(%remote, port = self.cap.name, "at the connection cap: closed a new connection");
            let labels = PortLabels {
                port: self.cap.name,
            };
            self.cap.refused.0.get_or_create(&labels).inc();
            return;
        };
        let _ = stream.set_nodelay(true);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            if let Some(conn) = sort_out(stream, remote, acceptor, slot).await {
                let _ = ready.send(conn).await;
            }
        });
    }
}

/// Waits out a failed accept (out of file descriptors, typically) rather than spinning.
pub async fn accept_failed(error: io::Error) {
    tracing::warn!(%error, "cannot accept a connection");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// The connections `listener` accepts, sorted out as `tls` says. The listener closes as soon
/// as the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsPort>,
    cap: PortCap,
) -> impl Stream<Item = Result<Conn, io::Error>> {
    let sort = SortOut::new(tls, cap);
    let (ready, queue) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => sort.spawn(stream, remote, ready.clone()),
                    Err(error) => accept_failed(error).await,
                },
                // Nobody takes connections any more: stop listening now.
                () = ready.closed() => return,
            }
        }
    });
    futures_util::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|conn| (Ok(conn), queue))
    })
}

/// A TLS port's acceptor and settings.
struct Acceptor {
    tls: tokio_rustls::TlsAcceptor,
    port: TlsPort,
}

/// Whether what waits on `stream` is the plain `GET /api/v1/health` a proxy sends at start
/// (`weft proxy` checks that its --control-plane URL is not the REST API).
async fn is_rest_api_probe(stream: &TcpStream) -> bool {
    const PROBE: &[u8] = b"GET /api/v1/health ";
    let mut start = [0u8; PROBE.len()];
    matches!(stream.peek(&mut start).await, Ok(n) if n == PROBE.len()) && start == PROBE
}

async fn sort_out(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<Arc<Acceptor>>,
    slot: OwnedSemaphorePermit,
) -> Option<Conn> {
    let Some(acceptor) = acceptor else {
        return Some(Conn::plain(stream, remote, slot));
    };
    let port = &acceptor.port;
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let allowed = match port.plaintext {
            Plaintext::Anywhere => true,
            Plaintext::DevLoopback => remote.ip().is_loopback(),
            Plaintext::Refused => false,
        };
        if !allowed {
            if is_rest_api_probe(&stream).await {
                // Every proxy checks at start that it was not pointed at the REST API port
                // by mistake; that is not an operator's problem.
                tracing::debug!(%remote, port = port.name, "closed a proxy's check for the REST API");
            } else {
                tracing::warn!(%remote, port = port.name, "refused a plain-text connection: proxies connect with https:// and --control-plane-ca");
            }
            return None;
        }
        return Some(Conn::plain(stream, remote, slot));
    }
    let handshake = acceptor.tls.accept(stream);
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(%remote, %error, port = port.name, "refused a TLS connection");
            return None;
        }
        Err(_) => return None,
    };
    let session = tls.get_ref().1;
    // A resumed session skipped the certificate checks: apply revocation now.
    if let Some(reason) = port.identity.refused_peer(session) {
        tracing::warn!(%remote, %reason, port = port.name, "refused a TLS connection");
        return None;
    }
    let identity = weft_identity::peer_identity(session);
    let certificate_sha256 = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| weft_identity::fingerprint(leaf));
    let peer = Peer {
        remote,
        tls: true,
        identity,
        certificate_sha256,
    };
    Some(Conn {
        stream: ConnIo::Tls(Box::new(tls)),
        peer,
        _slot: slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_port_at_its_cap_closes_new_connections_and_counts_them() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refusals = ConnectionRefusals::default();
        let incoming = incoming(listener, None, PortCap::new("test", 2, refusals.clone()));
        tokio::pin!(incoming);
        let _first = TcpStream::connect(addr).await.unwrap();
        let _second = TcpStream::connect(addr).await.unwrap();
        let held = [
            incoming.next().await.unwrap().unwrap(),
            incoming.next().await.unwrap().unwrap(),
        ];
        let mut third = TcpStream::connect(addr).await.unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(third.read(&mut byte).await.unwrap(), 0, "closed at once");
        let labels = PortLabels { port: "test" };
        assert_eq!(refusals.0.get_or_create(&labels).get(), 1);

        // A closed connection frees its place.
        drop(held);
        let _fourth = TcpStream::connect(addr).await.unwrap();
        assert!(incoming.next().await.unwrap().is_ok());
    }
}
