//! Protocol detection: read the first bytes a client sends and decide how to serve it.
//!
//! Server-speaks-first protocols (MySQL, SMTP, ...) send nothing until the server greets
//! them, so detection gives up after a short timeout and treats the connection as opaque
//! TCP; the bytes read so far are replayed either way.

use bytes::{Bytes, BytesMut};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Enough to see the HTTP/2 preface or an HTTP/1 request line's method.
const DETECT_BYTES: usize = H2_PREFACE.len();
const HTTP1_METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Opaque,
}

/// Reads up to a few bytes and classifies them. Returns the bytes read, to be replayed.
pub async fn detect<R: AsyncRead + Unpin>(
    io: &mut R,
    timeout: Duration,
) -> std::io::Result<(Detected, Bytes)> {
    let mut buf = BytesMut::with_capacity(DETECT_BYTES);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = classify(&buf) {
            return Ok((found, buf.freeze()));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Ok(Ok(0)) => return Ok((Detected::Opaque, buf.freeze())),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_elapsed) => return Ok((Detected::Opaque, buf.freeze())),
        }
    }
}

/// `None` while more bytes could still change the answer.
pub(crate) fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(if buf.len() >= 2 && buf[1] != 0x03 {
            Detected::Opaque
        } else {
            Detected::Tls
        });
    }
    let prefix_of = |pattern: &[u8]| {
        let n = buf.len().min(pattern.len());
        buf[..n] == pattern[..n]
    };
    if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
        return Some(Detected::Http2);
    }
    if HTTP1_METHODS
        .iter()
        .any(|m| buf.len() >= m.len() && buf.starts_with(m))
    {
        return Some(Detected::Http1);
    }
    let could_still_match = prefix_of(H2_PREFACE) || HTTP1_METHODS.iter().any(|m| prefix_of(m));
    if could_still_match && buf.len() < DETECT_BYTES {
        None
    } else {
        Some(Detected::Opaque)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_complete_prefixes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"POST /x HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x00\x00\x0a5.7.0"), Some(Detected::Opaque));
        assert_eq!(
            classify(b"hello world, this is not http"),
            Some(Detected::Opaque)
        );
    }

    #[test]
    fn waits_on_ambiguous_prefixes() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(b"P"), None);
    }

    #[test]
    fn every_prefix_of_a_known_protocol_is_never_misread() {
        let request = b"PATCH /a HTTP/1.1\r\nHost: x\r\n\r\n";
        for n in 1..request.len() {
            assert!(
                matches!(classify(&request[..n]), None | Some(Detected::Http1)),
                "{n}"
            );
        }
        for n in 1..H2_PREFACE.len() {
            assert!(
                matches!(classify(&H2_PREFACE[..n]), None | Some(Detected::Http2)),
                "{n}"
            );
        }
    }

    #[tokio::test]
    async fn silent_peer_is_opaque_after_timeout() {
        let (mut client, _server) = tokio::io::duplex(64);
        let (found, bytes) = detect(&mut client, Duration::from_millis(20))
            .await
            .unwrap();
        assert_eq!(found, Detected::Opaque);
        assert!(bytes.is_empty());
    }

    #[tokio::test]
    async fn split_request_line_is_http1() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            server.write_all(b"GE").await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            server.write_all(b"T / HTTP/1.1\r\n").await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let (found, bytes) = detect(&mut client, Duration::from_secs(2)).await.unwrap();
        assert_eq!(found, Detected::Http1);
        assert!(bytes.starts_with(b"GET "));
    }
}
