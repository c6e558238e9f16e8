//! Queries for names outside the mesh, relayed byte for byte to the namespace's own
//! resolvers (what `/etc/resolv.conf` named before capture sent its DNS to the proxy).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::timeout;

/// How long one upstream has to answer before the next is asked (glibc's resolver waits
/// 5 s in all by default, so two tries fit).
const ATTEMPT: Duration = Duration::from_secs(2);
/// Upstreams asked per query at most (resolv.conf allows three).
const MAX_ATTEMPTS: usize = 3;
/// Queries relayed at once; beyond it a query gets SERVFAIL at once, so a flood of lookups
/// can't hold an unbounded number of sockets and tasks.
pub const MAX_IN_FLIGHT: usize = 256;
/// The largest UDP answer taken from an upstream (the EDNS sizes clients ask for are at
/// most 4096; a longer datagram would be cut by the kernel, and is refused instead).
const MAX_UDP_ANSWER: usize = 4096;

pub struct Relay {
    upstreams: Vec<SocketAddr>,
    in_flight: Arc<Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("no upstream resolver is configured (none in /etc/resolv.conf; set --dns-upstream)")]
    NoUpstream,
    #[error("no upstream resolver answered in time ({0} asked)")]
    TimedOut(usize),
    #[error("upstream resolver {0}: {1}")]
    Io(SocketAddr, io::Error),
    #[error("upstream resolver {0} sent an answer that does not fit ({1} bytes or more)")]
    TooLong(SocketAddr, usize),
}

impl Relay {
    pub fn new(upstreams: Vec<SocketAddr>) -> Self {
        Self {
            upstreams,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }

    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// A place among the queries relayed at once, if one is free.
    pub fn permit(&self) -> Option<OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Relays `query` over UDP, asking each upstream in turn until one answers it.
    pub async fn udp(&self, query: &[u8]) -> Result<Vec<u8>, RelayError> {
        self.each_upstream(|upstream| udp_exchange(upstream, query))
            .await
    }

    /// Relays `query` over TCP (a client that got a truncated answer asks again this way).
    pub async fn tcp(&self, query: &[u8]) -> Result<Vec<u8>, RelayError> {
        self.each_upstream(|upstream| tcp_exchange(upstream, query))
            .await
    }

    async fn each_upstream<F, Fut>(&self, exchange: F) -> Result<Vec<u8>, RelayError>
    where
        F: Fn(SocketAddr) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, RelayError>>,
    {
        let mut last = RelayError::NoUpstream;
        let mut asked = 0;
        for &upstream in self.upstreams.iter().take(MAX_ATTEMPTS) {
            asked += 1;
            match timeout(ATTEMPT, exchange(upstream)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(error)) => last = error,
                Err(_) => last = RelayError::TimedOut(asked),
            }
        }
        Err(last)
    }
}

/// One query over a connected UDP socket of its own (a fresh random source port, and the
/// kernel drops datagrams from anyone but the upstream); only an answer with the query's
/// id is taken.
async fn udp_exchange(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>, RelayError> {
    let io = |e| RelayError::Io(upstream, e);
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(upstream).await.map_err(io)?;
    socket.send(query).await.map_err(io)?;
    let mut answer = vec![0; MAX_UDP_ANSWER + 1];
    loop {
        let len = socket.recv(&mut answer).await.map_err(io)?;
        if len > MAX_UDP_ANSWER {
            return Err(RelayError::TooLong(upstream, len));
        }
        if len >= 2 && answer[..2] == query[..2] {
            answer.truncate(len);
            return Ok(answer);
        }
    }
}

/// One query over a new TCP connection, length-prefixed (RFC 1035 4.2.2).
async fn tcp_exchange(upstream: SocketAddr, query: &[u8]) -> Result<Vec<u8>, RelayError> {
    let io = |e| RelayError::Io(upstream, e);
    let mut stream = TcpStream::connect(upstream).await.map_err(io)?;
    let framed = super::tcp_frame(query).ok_or(RelayError::TooLong(upstream, query.len()))?;
    stream.write_all(&framed).await.map_err(io)?;
    let len = stream.read_u16().await.map_err(io)?;
    let mut answer = vec![0; usize::from(len)];
    stream.read_exact(&mut answer).await.map_err(io)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_answer_with_another_id_or_from_another_address_is_not_taken() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::new(vec![upstream.local_addr().unwrap()]);
        let query = [0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let serve = async {
            let mut buf = [0; 64];
            let (len, client) = upstream.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..len], &query);
            // A spoofed answer from elsewhere, then one with the wrong id, then the real one.
            stranger
                .send_to(&[0xab, 0xcd, 0x80, 1], client)
                .await
                .unwrap();
            upstream
                .send_to(&[0x00, 0x01, 0x80, 2], client)
                .await
                .unwrap();
            upstream
                .send_to(&[0xab, 0xcd, 0x80, 3], client)
                .await
                .unwrap();
        };
        let (answer, ()) = tokio::join!(relay.udp(&query), serve);
        assert_eq!(answer.unwrap(), [0xab, 0xcd, 0x80, 3]);
    }

    #[tokio::test]
    async fn no_upstream_and_a_silent_one_are_errors_not_hangs() {
        let relay = Relay::new(Vec::new());
        assert!(matches!(
            relay.udp(&[0; 12]).await,
            Err(RelayError::NoUpstream)
        ));

        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let relay = Relay::new(vec![silent.local_addr().unwrap()]);
        tokio::time::pause();
        assert!(matches!(
            relay.udp(&[0; 12]).await,
            Err(RelayError::TimedOut(1))
        ));
    }
}
