//! The control plane's ports and their connections. With a CA, a port speaks TLS with the
//! control plane's own certificate (client certificates optional: a proxy asks for its first
//! one with a join token, and an operator may call the REST API with one), and takes plain
//! text as its [`Plaintext`] says: the gRPC port refuses it (a plain-text caller proves
//! nothing, so it could register as any service; `weft control --dev-plaintext-proxies`
//! accepts it from loopback, for development only, and `weft check` warns while it is on),
//! the REST API takes it from anywhere (every call carries its credential). The first byte
//! tells TLS and plain text apart.

use futures_util::Stream;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use weft_identity::{SpiffeId, TlsIdentity};

/// A client that has not started or finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of every TLS connection (a handshake record).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

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

pub enum Conn {
    Plain(TcpStream, Peer),
    Tls(Box<TlsStream<TcpStream>>, Peer),
}

impl Conn {
    pub fn peer(&self) -> &Peer {
        match self {
            Conn::Plain(_, peer) | Conn::Tls(_, peer) => peer,
        }
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
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_read(cx, buf),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_write(cx, buf),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_flush(cx),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(stream, _) => Pin::new(stream).poll_shutdown(cx),
            Conn::Tls(stream, _) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How a port sorts out the connections it accepts: TLS (with its handshake) or plain text,
/// as its [`TlsPort`] says. Cheap to clone.
#[derive(Clone)]
pub struct SortOut {
    acceptor: Option<Arc<Acceptor>>,
}

impl SortOut {
    /// With `tls` the port speaks TLS as the module says; without, plain text only, from
    /// anywhere (tests and benchmarks of the discovery protocol alone).
    pub fn new(tls: Option<TlsPort>) -> SortOut {
        let acceptor = tls.map(|port| {
            let config = port.identity.server_config_client_optional(port.alpn);
            Arc::new(Acceptor {
                tls: tokio_rustls::TlsAcceptor::from(config),
                port,
            })
        });
        SortOut { acceptor }
    }

    /// Sorts out one accepted connection on a task of its own (so a slow client holds up no
    /// one), sending it to `ready` if it is let in.
    pub fn spawn(&self, stream: TcpStream, remote: SocketAddr, ready: mpsc::Sender<Conn>) {
        let _ = stream.set_nodelay(true);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            if let Some(conn) = sort_out(stream, remote, acceptor).await {
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
) -> impl Stream<Item = Result<Conn, io::Error>> {
    let sort = SortOut::new(tls);
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

async fn sort_out(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<Arc<Acceptor>>,
) -> Option<Conn> {
    let Some(acceptor) = acceptor else {
        return Some(Conn::Plain(stream, Peer::plain(remote)));
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
            tracing::warn!(%remote, port = port.name, "refused a plain-text connection: proxies connect with https:// and --control-plane-ca");
            return None;
        }
        return Some(Conn::Plain(stream, Peer::plain(remote)));
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
    Some(Conn::Tls(Box::new(tls), peer))
}
