//! The REST API's port: plain HTTP (every call carries a bearer token) and HTTPS on the same
//! port, told apart by the first byte, so an operator can also call it with a client
//! certificate from the mesh CA. Who connected travels to the handlers as
//! `ConnectInfo<Peer>`.

use crate::transport::{accept_failed, Conn, Peer, Plaintext, PortCap, SortOut, TlsPort};
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use std::io;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use weft_identity::TlsIdentity;

/// Accepts in [`axum::serve::Listener::accept`] itself, so the port closes the moment the
/// server drops the listener; handshakes run on tasks of their own.
pub struct ApiListener {
    listener: TcpListener,
    sort: SortOut,
    ready: mpsc::Sender<Conn>,
    queue: mpsc::Receiver<Conn>,
}

impl ApiListener {
    /// `tls`: the control plane's certificate, when it has one; plain HTTP only without.
    pub fn new(listener: TcpListener, tls: Option<Arc<TlsIdentity>>, cap: PortCap) -> ApiListener {
        let port = tls.map(|identity| TlsPort {
            identity,
            plaintext: Plaintext::Anywhere,
            alpn: &[b"http/1.1"],
            name: "api",
        });
        let (ready, queue) = mpsc::channel(64);
        ApiListener {
            listener,
            sort: SortOut::new(port, cap),
            ready,
            queue,
        }
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = Conn;
    type Addr = Peer;

    async fn accept(&mut self) -> (Conn, Peer) {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, remote)) => self.sort.spawn(stream, remote, self.ready.clone()),
                    Err(error) => accept_failed(error).await,
                },
                Some(conn) = self.queue.recv() => {
                    let peer = conn.peer().clone();
                    return (conn, peer);
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            remote: self.listener.local_addr()?,
            tls: false,
            identity: None,
            certificate_sha256: None,
        })
    }
}

impl Connected<IncomingStream<'_, ApiListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, ApiListener>) -> Peer {
        stream.remote_addr().clone()
    }
}
