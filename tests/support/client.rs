//! Real HTTP clients (hyper's HTTP/1.1 and HTTP/2 connections) for driving proxies.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::{HeaderMap, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpStream;

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// One keep-alive HTTP/1.1 connection.
pub struct Http1Client {
    sender: http1::SendRequest<Full<Bytes>>,
}

impl Http1Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connecting");
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Self { sender }
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&mut self, host: &str, path: &str) -> Result<Answer, hyper::Error> {
        self.send(request("GET", host, path, &[])).await
    }
}

pub fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

/// One HTTP/2 prior-knowledge connection (how gRPC clients talk).
#[derive(Clone)]
pub struct Http2Client {
    sender: http2::SendRequest<Full<Bytes>>,
}

impl Http2Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connecting");
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        Self { sender }
    }

    pub async fn get(&mut self, authority: &str, path: &str) -> Result<Answer, hyper::Error> {
        let request = Request::builder()
            .uri(format!("http://{authority}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        self.send(request).await
    }

    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, hyper::Error> {
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// GETs to `host` from 4 keep-alive connections until `stop`, as fast as they are answered;
/// returns (requests, non-200s).
pub fn steady_load(
    addr: SocketAddr,
    host: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    load_from_four_connections(addr, host, None, stop)
}

/// Like `steady_load`, at about `per_second` requests a second in all: a load that leaves
/// the machine idle between requests, as a service's usual traffic does.
pub fn steady_load_at_rate(
    addr: SocketAddr,
    host: &'static str,
    per_second: u32,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    let each = std::time::Duration::from_secs(4) / per_second;
    load_from_four_connections(addr, host, Some(each), stop)
}

fn load_from_four_connections(
    addr: SocketAddr,
    host: &'static str,
    each: Option<std::time::Duration>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let done = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            workers.push(tokio::spawn(async move {
                let mut c = Http1Client::connect(addr).await;
                let mut ticks = each.map(|each| {
                    let mut ticks = tokio::time::interval(each);
                    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    ticks
                });
                while !stop.load(Ordering::SeqCst) {
                    if let Some(ticks) = ticks.as_mut() {
                        ticks.tick().await;
                    }
                    match c.get(host, "/").await {
                        Ok(a) if a.status == 200 => {}
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        for w in workers {
            w.await.unwrap();
        }
        (done.load(Ordering::SeqCst), failed.load(Ordering::SeqCst))
    })
}

/// A light, steady trickle until `stop`, for views that need fresh samples: 20 GETs to
/// `host` at `{path}0` to `{path}19` on a new connection, then `pause`, and again.
pub fn paced_load(
    addr: SocketAddr,
    host: &'static str,
    path: &'static str,
    pause: std::time::Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::SeqCst) {
            let mut client = Http1Client::connect(addr).await;
            for i in 0..20 {
                let _ = client.get(host, &format!("{path}{i}")).await;
            }
            tokio::time::sleep(pause).await;
        }
    })
}

/// A CONNECT tunnel to `authority` (`service:port`) through the proxy listening at
/// `outbound`, once it answered 200: what is written to it reaches the app.
pub async fn connect_tunnel(outbound: SocketAddr, authority: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(outbound).await.unwrap();
    let head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        answer.push(byte[0]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    stream
}
