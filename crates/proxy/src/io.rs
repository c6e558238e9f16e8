//! Connection plumbing shared by every listener: a boxed stream type so each hyper
//! connection is compiled once whatever sits underneath (TCP, TLS, bytes already read by
//! protocol detection), and the socket options every connection gets.

use bytes::{Buf, Bytes};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxIo = Box<dyn Io>;

/// A stream whose reads go through `R` (which may answer from bytes of its own, or note
/// what arrived) and whose writes go straight to the stream inside.
pub struct ReadThrough<T, R> {
    inner: T,
    reader: R,
}

/// How a [`ReadThrough`] stream reads.
pub trait ReadHook {
    fn poll_read_from<T: AsyncRead + Unpin>(
        &mut self,
        inner: &mut T,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>>;
}

impl<T, R> ReadThrough<T, R> {
    pub fn with(inner: T, reader: R) -> Self {
        Self { inner, reader }
    }
}

/// A stream that first replays bytes already read from it (during protocol detection).
pub type Rewind<T> = ReadThrough<T, Replay>;

pub struct Replay(Bytes);

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Self::with(inner, Replay(prefix))
    }
}

impl ReadHook for Replay {
    fn poll_read_from<T: AsyncRead + Unpin>(
        &mut self,
        inner: &mut T,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.0.is_empty() {
            let n = self.0.len().min(buf.remaining());
            buf.put_slice(&self.0[..n]);
            self.0.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(inner).poll_read(cx, buf)
    }
}

impl<T: AsyncRead + Unpin, R: ReadHook + Unpin> AsyncRead for ReadThrough<T, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.reader.poll_read_from(&mut this.inner, cx, buf)
    }
}

impl<T: AsyncWrite + Unpin, R: Unpin> AsyncWrite for ReadThrough<T, R> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Every proxied socket: no Nagle delay (requests are small and latency-bound), and
/// keepalive so dead peers behind NATs are eventually noticed.
pub fn tune(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let sock = socket2::SockRef::from(stream);
    let _ = sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new().with_time(std::time::Duration::from_secs(60)),
    );
}
