//! Small real servers the proxies forward to.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 + HTTP/2 (prior knowledge) server. Paths:
/// `/` answers its name; `/status/N` answers N; `/flaky` fails every other request with 503;
/// `/echo` answers the request line and headers; `/slow/MS` waits first; `/body` echoes the
/// body; `/bytes/N` answers N bytes. `fail_all` makes every answer a 500; `delay_ms` delays
/// every answer.
pub struct HttpBackend {
    pub addr: SocketAddr,
    pub name: String,
    pub requests: Arc<AtomicU64>,
    pub fail_all: Arc<AtomicBool>,
    pub delay_ms: Arc<AtomicU64>,
    /// Connections accepted so far.
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    /// Set when the backend runs on a thread and runtime of its own (`start_isolated`).
    own_thread: Option<OwnThread>,
}

/// A backend's own OS thread: stopped (and its runtime with every task dropped) on drop.
struct OwnThread {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for OwnThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpBackend {
    /// Like a killed process: the listener and every open connection go away.
    fn drop(&mut self) {
        self.task.abort();
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }
}

struct State {
    name: String,
    requests: Arc<AtomicU64>,
    flaky: AtomicU64,
    fail_all: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

impl HttpBackend {
    pub async fn start(name: &str) -> Self {
        Self::start_at(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// On an OS thread and a runtime of its own, so that its latency is its own: a test that
    /// compares identical instances must not measure how its own runtime happens to schedule
    /// them beside the load it generates (a latency-aware balancer rightly follows that).
    pub async fn start_isolated(name: &str) -> Self {
        let (ready, started) = tokio::sync::oneshot::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let name = name.to_string();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let _ = ready.send(Self::start(&name).await);
                let _ = stopped.await;
            });
        });
        let mut backend = started.await.expect("the backend's thread started it");
        backend.own_thread = Some(OwnThread {
            stop: Some(stop),
            thread: Some(thread),
        });
        backend
    }

    /// On a given address: how a test brings an app back where it was.
    pub async fn start_at(name: &str, addr: SocketAddr) -> Self {
        Self::serve(name, addr, None).await
    }

    /// Over TLS with `config` (a server outside the mesh, reached by TLS origination).
    pub async fn start_tls(
        name: &str,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
    ) -> Self {
        Self::serve(name, addr, Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn serve(name: &str, addr: SocketAddr, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let fail_all = Arc::new(AtomicBool::new(false));
        let delay_ms = Arc::new(AtomicU64::new(0));
        let state = Arc::new(State {
            name: name.to_string(),
            requests: requests.clone(),
            flaky: AtomicU64::new(0),
            fail_all: fail_all.clone(),
            delay_ms: delay_ms.clone(),
        });
        let connections = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tracked = connections.clone();
        let accepted = Arc::new(AtomicU64::new(0));
        let counted = accepted.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let tls = tls.clone();
                let connection = tokio::spawn(async move {
                    let svc = service_fn(move |req| handle(state.clone(), req));
                    let server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => {
                            server
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await
                        }
                        Some(tls) => match tls.accept(stream).await {
                            Ok(stream) => {
                                server
                                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                    .await
                            }
                            Err(_) => Ok(()),
                        },
                    };
                });
                let mut open = tracked.lock().unwrap();
                open.retain(|c: &tokio::task::AbortHandle| !c.is_finished());
                open.push(connection.abort_handle());
            }
        });
        HttpBackend {
            addr,
            name: name.to_string(),
            requests,
            fail_all,
            delay_ms,
            accepted,
            task,
            connections,
            own_thread: None,
        }
    }

    pub fn count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn connections_accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
}

fn reply(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    response
}

async fn handle(
    state: Arc<State>,
    mut request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if request.method() == hyper::Method::CONNECT {
        // A tunnel: agree, then echo whatever comes through it.
        let tunnel = hyper::upgrade::on(&mut request);
        tokio::spawn(async move {
            if let Ok(upgraded) = tunnel.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                let _ = tokio::io::copy(&mut r, &mut w).await;
            }
        });
        return Ok(reply(200, ""));
    }
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.fail_all.load(Ordering::SeqCst) {
        return Ok(reply(500, format!("{} is failing", state.name)));
    }
    let path = request.uri().path().to_string();
    let mut response = if let Some(code) = path.strip_prefix("/status/") {
        reply(code.parse().unwrap_or(400), state.name.clone())
    } else if path == "/flaky" {
        let n = state.flaky.fetch_add(1, Ordering::SeqCst);
        if n.is_multiple_of(2) {
            reply(503, "flaky failure")
        } else {
            reply(200, state.name.clone())
        }
    } else if path == "/echo" || path.starts_with("/echo/") {
        let mut text = format!(
            "{} {} {:?}\n",
            request.method(),
            request.uri(),
            request.version()
        );
        for (name, value) in request.headers() {
            text.push_str(&format!("{}: {}\n", name, value.to_str().unwrap_or("?")));
        }
        reply(200, text)
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
        reply(200, state.name.clone())
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        reply(200, vec![b'x'; n.parse().unwrap_or(0)])
    } else if path == "/body" {
        let body = request
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        reply(200, body)
    } else {
        reply(200, state.name.clone())
    };
    response
        .headers_mut()
        .insert("x-backend", state.name.parse().unwrap());
    Ok(response)
}

/// Echoes every byte back.
pub async fn tcp_echo() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, task)
}

/// Greets first, like SMTP or MySQL, then echoes lines back upper-cased.
pub async fn server_speaks_first(
    greeting: &'static str,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                if stream.write_all(greeting.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0
                        || stream
                            .write_all(&buf[..n].to_ascii_uppercase())
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, task)
}

/// A real gRPC app: tonic's health service reporting `serving` as SERVING (any other name
/// answers NOT_FOUND). Its address.
pub async fn grpc_health_app(serving: &str) -> SocketAddr {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status(serving, tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    app
}

/// A gRPC channel to `service` through a proxy's outbound listener.
pub async fn grpc_channel(outbound: SocketAddr, service: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{outbound}"))
        .unwrap()
        .origin(format!("http://{service}").parse().unwrap())
        .connect()
        .await
        .unwrap()
}
