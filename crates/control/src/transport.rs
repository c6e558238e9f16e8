//! The gRPC port's connections. With a CA, the port speaks TLS with the control plane's own
//! certificate (client certificates optional, so a proxy can ask for its first one with a
//! join token), and plain text is refused: a plain-text caller proves nothing, so it could
//! register as any service. `weft control --dev-plaintext-proxies` accepts plain text from
//! loopback, for development only (`weft check` warns while it is on). The first byte tells
//! TLS and plain text apart.

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

/// Who is on the other end of a gRPC connection: in every request's extensions.
#[derive(Clone, Debug)]
pub struct ProxyPeer {
    pub remote: SocketAddr,
    pub tls: bool,
    /// The SPIFFE id of the certificate the client presented, if it presented one.
    pub identity: Option<SpiffeId>,
    /// The SHA-256 of that certificate's DER, to match against revocations.
    pub certificate_sha256: Option<String>,
}

/// Which plain-text connections the port accepts once it speaks TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Plaintext {
    /// None: every proxy proves who it is with TLS.
    #[default]
    Refused,
    /// From this host, unauthenticated: development only.
    DevLoopback,
}

pub enum Conn {
    Plain(TcpStream, ProxyPeer),
    Tls(Box<TlsStream<TcpStream>>, ProxyPeer),
}

impl Connected for Conn {
    type ConnectInfo = ProxyPeer;

    fn connect_info(&self) -> ProxyPeer {
        match self {
            Conn::Plain(_, peer) | Conn::Tls(_, peer) => peer.clone(),
        }
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

/// The connections `listener` accepts, each sorted out (and its handshake done) on a task
/// of its own, so a slow client holds up no one. With `tls` the port speaks TLS as the
/// module says, taking plain text as the [`Plaintext`] says; without, plain text only, from
/// anywhere (tests and benchmarks of the discovery protocol alone).
pub fn incoming(
    listener: TcpListener,
    tls: Option<(Arc<TlsIdentity>, Plaintext)>,
) -> impl Stream<Item = Result<Conn, io::Error>> {
    let acceptor = tls.map(|(identity, plaintext)| {
        let config = identity.server_config_client_optional(&[b"h2"]);
        (tokio_rustls::TlsAcceptor::from(config), identity, plaintext)
    });
    let (ready, queue) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (stream, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!(%error, "cannot accept a gRPC connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if ready.is_closed() {
                return;
            }
            let _ = stream.set_nodelay(true);
            let (ready, acceptor) = (ready.clone(), acceptor.clone());
            tokio::spawn(async move {
                if let Some(conn) = sort_out(stream, remote, acceptor).await {
                    let _ = ready.send(Ok(conn)).await;
                }
            });
        }
    });
    futures_util::stream::unfold(queue, |mut queue| async move {
        queue.recv().await.map(|conn| (conn, queue))
    })
}

async fn sort_out(
    stream: TcpStream,
    remote: SocketAddr,
    acceptor: Option<(tokio_rustls::TlsAcceptor, Arc<TlsIdentity>, Plaintext)>,
) -> Option<Conn> {
    let Some((acceptor, serving, plaintext)) = acceptor else {
        let peer = ProxyPeer {
            remote,
            tls: false,
            identity: None,
            certificate_sha256: None,
        };
        return Some(Conn::Plain(stream, peer));
    };
    let mut first = [0u8; 1];
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) => {}
        _ => return None,
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        let allowed = plaintext == Plaintext::DevLoopback && remote.ip().is_loopback();
        if !allowed {
            tracing::warn!(%remote, "refused a plain-text connection on the gRPC port: proxies connect with https:// and --control-plane-ca");
            return None;
        }
        let peer = ProxyPeer {
            remote,
            tls: false,
            identity: None,
            certificate_sha256: None,
        };
        return Some(Conn::Plain(stream, peer));
    }
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(error)) => {
            tracing::info!(%remote, %error, "refused a TLS connection on the gRPC port");
            return None;
        }
        Err(_) => return None,
    };
    let session = tls.get_ref().1;
    // A resumed session skipped the certificate checks: apply revocation now.
    if let Some(reason) = serving.refused_peer(session) {
        tracing::warn!(%remote, %reason, "refused a TLS connection on the gRPC port");
        return None;
    }
    let identity = weft_identity::peer_identity(session);
    let certificate_sha256 = session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| weft_identity::fingerprint(leaf));
    let peer = ProxyPeer {
        remote,
        tls: true,
        identity,
        certificate_sha256,
    };
    Some(Conn::Tls(Box::new(tls), peer))
}
