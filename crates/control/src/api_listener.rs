//! The REST API's port: plain HTTP (every call carries a bearer token) and HTTPS on the same
//! port, told apart by the first byte, so an operator can also call it with a client
//! certificate from the mesh CA. Who connected travels to the handlers as
//! `ConnectInfo<Peer>`.

use crate::transport::{incoming, Conn, Peer, Plaintext, TlsPort};
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use weft_identity::TlsIdentity;

pub struct ApiListener {
    connections: BoxStream<'static, io::Result<Conn>>,
    local: SocketAddr,
}

impl ApiListener {
    /// `tls`: the control plane's certificate, when it has one; plain HTTP only without.
    pub fn new(listener: TcpListener, tls: Option<Arc<TlsIdentity>>) -> io::Result<ApiListener> {
        let local = listener.local_addr()?;
        let port = tls.map(|identity| TlsPort {
            identity,
            plaintext: Plaintext::Anywhere,
            alpn: &[b"http/1.1"],
            name: "api",
        });
        Ok(ApiListener {
            connections: incoming(listener, port).boxed(),
            local,
        })
    }
}

impl axum::serve::Listener for ApiListener {
    type Io = Conn;
    type Addr = Peer;

    async fn accept(&mut self) -> (Conn, Peer) {
        loop {
            match self.connections.next().await {
                Some(Ok(conn)) => {
                    let peer = conn.peer().clone();
                    return (conn, peer);
                }
                Some(Err(_)) => continue,
                // The accepting task is gone: no connection will come again.
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            remote: self.local,
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
