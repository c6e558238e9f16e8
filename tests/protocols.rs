//! Every protocol through a client proxy -> mTLS -> server proxy pair: gRPC (tonic client
//! and server), opaque TCP, a server-speaks-first protocol, and WebSocket.

mod support;
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts `server` (for `service`, in front of `app`) and a client proxy that can reach it,
/// both configured from one file whose Service entry uses `protocol`.
fn mesh_pair(
    dir: &TempDir,
    certs: &Certs,
    service: &str,
    protocol: &str,
    app: SocketAddr,
    client_flags: &[&str],
) -> (Proxy, Proxy) {
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service(service, protocol, &[]),
    );
    let server = ProxySpec::new(service, app, &config).tls(certs).start();
    std::fs::write(&config, mesh_service(service, protocol, &[server.inbound])).unwrap();
    let mut spec = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).tls(certs);
    for flag in client_flags {
        spec = spec.arg(*flag);
    }
    (server, spec.start())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_calls_and_errors_pass_through() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = TempDir::new("grpc");
    let certs = Certs::new(dir.path(), &["client", "catalog"]);
    let app = grpc_health_app("catalog").await;

    let (server, client) = mesh_pair(&dir, &certs, "catalog", "grpc", app, &[]);
    let mut grpc = HealthClient::new(grpc_channel(client.outbound, "catalog").await);
    // Well past h2's per-connection allowance of 100 empty DATA frames: a proxy that
    // forwarded each call's empty frame would have the peer close the connection.
    for _ in 0..300 {
        let reply = grpc
            .check(HealthCheckRequest {
                service: "catalog".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
    }
    let missing = grpc
        .check(HealthCheckRequest {
            service: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        server.metric_reaching(
            "weft_http_requests_total",
            &[("direction", "inbound"), ("source", "client.default")],
            301.0
        ),
        301.0
    );
}

async fn echo_roundtrip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let (mut r, mut w) = stream.split();
    let write = async {
        w.write_all(payload).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    tokio::join!(write, read).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_tcp_crosses_the_hop_intact() {
    let dir = TempDir::new("tcp");
    let certs = Certs::new(dir.path(), &["client", "store"]);
    let (echo, _task) = tcp_echo().await;
    let (server, client) = mesh_pair(
        &dir,
        &certs,
        "store",
        "tcp",
        echo,
        &["--upstream", "store=127.0.0.1:0"],
    );
    let payload: Vec<u8> = (0..4 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let back = echo_roundtrip(client.upstreams[0], &payload).await;
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "bytes changed in transit");
    let bytes = server.metric_reaching(
        "weft_tcp_bytes_total",
        &[("direction", "inbound"), ("source", "client.default")],
        2.0 * payload.len() as f64,
    );
    assert_eq!(bytes, 2.0 * payload.len() as f64);
    assert_eq!(
        server.metric_when("weft_tcp_connections_open", &[], |open| open == 0.0),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_does_not_hang() {
    let dir = TempDir::new("ssf");
    let certs = Certs::new(dir.path(), &["client", "mail"]);
    let (smtp, _task) = server_speaks_first("220 mail ready\r\n").await;
    // `auto`: the proxy must notice the client is waiting and fall back to opaque TCP.
    let (_server, client) = mesh_pair(
        &dir,
        &certs,
        "mail",
        "auto",
        smtp,
        &["--upstream", "mail=127.0.0.1:0"],
    );
    let mut stream = TcpStream::connect(client.upstreams[0]).await.unwrap();
    let mut greeting = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut greeting))
        .await
        .expect("the greeting arrived")
        .unwrap();
    assert_eq!(&greeting, b"220 mail ready\r\n");
    stream.write_all(b"helo\r\n").await.unwrap();
    let mut reply = [0u8; 6];
    stream.read_exact(&mut reply).await.unwrap();
    assert_eq!(&reply, b"HELO\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_passes_through() {
    use tokio_tungstenite::tungstenite::Message;
    let dir = TempDir::new("ws");
    let certs = Certs::new(dir.path(), &["client", "chat"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(stream).await.unwrap();
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text()
                        && ws
                            .send(Message::text(format!(
                                "echo: {}",
                                message.to_text().unwrap()
                            )))
                            .await
                            .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    let (_server, client) = mesh_pair(&dir, &certs, "chat", "http", app, &[]);
    let tcp = TcpStream::connect(client.outbound).await.unwrap();
    let (mut ws, response) = tokio_tungstenite::client_async("ws://chat/socket", tcp)
        .await
        .unwrap();
    assert_eq!(response.status(), 101);
    for i in 0..10 {
        ws.send(Message::text(format!("hi {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.to_text().unwrap(), format!("echo: hi {i}"));
    }
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retries_on_listed_status_codes() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tonic::codegen::Service;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = TempDir::new("grpc-retry");
    let certs = Certs::new(dir.path(), &["client", "catalog"]);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("catalog", tonic_health::ServingStatus::Serving)
        .await;
    // Every other call fails at once with UNAVAILABLE (a trailers-only answer), like a
    // server shedding load; the others reach the real health service.
    let calls = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (health, seen) = (health.clone(), seen.clone());
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let mut health = health.clone();
                    let n = seen.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n % 2 == 0 {
                            return Ok::<_, std::convert::Infallible>(
                                tonic::Status::unavailable("shedding").into_http(),
                            );
                        }
                        Ok(health.call(req.map(tonic::body::Body::new)).await.unwrap())
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("catalog", "grpc", &[]),
    );
    let server = ProxySpec::new("catalog", app, &config).tls(&certs).start();
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: catalog}
spec:
  parentRefs: [{group: "", kind: Service, name: catalog}]
  rules:
    - matches:
        - method: {service: grpc.health.v1.Health}
      retry: {attempts: 2, grpcCodes: [UNAVAILABLE], backoff: 1ms}
      backendRefs: [{name: catalog}]
"#;
    std::fs::write(
        &config,
        format!(
            "{}{route}",
            mesh_service("catalog", "grpc", &[server.inbound])
        ),
    )
    .unwrap();
    let client = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config)
        .tls(&certs)
        .start();
    let mut grpc = HealthClient::new(grpc_channel(client.outbound, "catalog").await);
    for i in 0..150 {
        let reply = grpc
            .check(HealthCheckRequest {
                service: "catalog".into(),
            })
            .await;
        assert!(reply.is_ok(), "call {i}: {reply:?}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        300,
        "each call took two tries"
    );
    assert_eq!(
        client.metric("weft_retries_total", &[("destination", "catalog.default")]),
        150.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_tunnels_pass_through() {
    let dir = TempDir::new("connect");
    let certs = Certs::new(dir.path(), &["client", "tunnel"]);
    let backend = HttpBackend::start("tunnel").await;
    let (_server, client) = mesh_pair(&dir, &certs, "tunnel", "http", backend.addr, &[]);
    let mut stream = TcpStream::connect(client.outbound).await.unwrap();
    stream
        .write_all(b"CONNECT tunnel:443 HTTP/1.1\r\nHost: tunnel:443\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for message in [&b"ping"[..], b"through the tunnel"] {
        stream.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, message);
    }
}
