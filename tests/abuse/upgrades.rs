//! Upgrades and tunnels: no way around L7 or the limits.

use super::*;

/// A server that takes up an h2c upgrade when asked (answers 101), else answers 200.
async fn h2c_willing_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if stream.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let answer: &[u8] = if head.contains("upgrade: h2c") {
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
                } else {
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                };
                let _ = stream.write_all(answer).await;
                let mut rest = Vec::new();
                let _ = stream.read_to_end(&mut rest).await;
            });
        }
    });
    addr
}

fn upgrade_request(protocol: &str) -> hyper::Request<http_body_util::Full<bytes::Bytes>> {
    hyper::Request::builder()
        .uri("/")
        .header("host", "app")
        .header("connection", "Upgrade, HTTP2-Settings")
        .header("upgrade", protocol)
        .header("http2-settings", "AAMAAABkAARAAAAAAAIAAAAA")
        .body(Default::default())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_pass_the_rate_limit_and_h2c_is_served_as_http1() {
    let dir = TempDir::new("h2c");
    let app = h2c_willing_server().await;
    let limit = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: app}
spec:
  targetRef: {kind: Service, name: app}
  rateLimit: {requestsPerSecond: 0.001, burst: 3}
"#;
    let proxy = local_proxy(&dir, app, limit, &[]);
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let mut c = Http1Client::connect(proxy.inbound).await;
        statuses.push(c.send(upgrade_request("h2c")).await.unwrap().status);
    }
    // No tunnel: each is an HTTP/1.1 request, answered, counted and limited.
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
    let mut c = Http1Client::connect(proxy.inbound).await;
    let websocket = c.send(upgrade_request("websocket")).await.unwrap();
    assert_eq!(websocket.status, 429, "a WebSocket upgrade is limited too");
    let metrics = proxy.metrics();
    let counted = |status: &str| {
        metric_sum(
            &metrics,
            "weft_http_requests_total",
            &[("direction", "inbound"), ("status_code", status)],
        )
    };
    assert_eq!((counted("200"), counted("429")), (3.0, 3.0), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_hold_their_limits_for_life_and_drain_waits_for_them() {
    let dir = TempDir::new("tunnels");
    let backend = HttpBackend::start("app").await;
    let limits = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: app}
spec:
  targetRef: {kind: Service, name: app}
  connectionLimits: {maxRequests: 2}
"#;
    let mut proxy = local_proxy(
        &dir,
        backend.addr,
        limits,
        &["--max-connections", "3", "--drain-timeout", "20s"],
    );
    let mut first = connect_tunnel(proxy.outbound, "app:443").await;
    let mut second = connect_tunnel(proxy.outbound, "app:443").await;
    // Both request slots are the tunnels'.
    let mut c = Http1Client::connect(proxy.outbound).await;
    let refused = c.get("app", "/").await.unwrap();
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("x-weft-overloaded"), Some("max-requests"));
    // At the connection cap, the idle connection makes room; the tunnels keep their place.
    let mut next = Http1Client::connect(proxy.outbound).await;
    assert_eq!(next.get("app", "/").await.unwrap().status, 503);
    assert_eq!(
        proxy.metric_reaching(
            "weft_rejected_total",
            &[("reason", "idle_closed_at_capacity")],
            1.0
        ),
        1.0
    );
    assert!(echoes(&mut first).await && echoes(&mut second).await);

    // A graceful stop waits for the tunnels, which keep working, and ends once they close.
    proxy.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(echoes(&mut first).await, "a tunnel was cut by the drain");
    assert!(proxy.wait_exit(Duration::from_millis(200)).is_none());
    drop(first);
    drop(second);
    let started = Instant::now();
    assert!(proxy.wait_exit(Duration::from_secs(15)).is_some());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "drain waited out its deadline"
    );
}
