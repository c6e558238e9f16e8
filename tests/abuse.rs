//! The data path under abuse and at its limits: each attack runs beside a well-behaved
//! client, which must keep being served.

mod support;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `web` (client) calls `api` (server, in front of an HTTP backend) over mutual TLS.
struct Pair {
    _dir: TempDir,
    _backend: HttpBackend,
    server: Proxy,
    client: Proxy,
}

async fn pair(client_flags: &[&str]) -> Pair {
    let dir = TempDir::new("abuse");
    let certs = Certs::new(dir.path(), &["web", "api"]);
    let backend = HttpBackend::start("api-backend").await;
    let config = write_config(dir.path(), "mesh.yaml", &plain_service("api", "http", &[]));
    let server = ProxySpec::new("api", backend.addr, &config)
        .tls(&certs)
        .start();
    std::fs::write(&config, mesh_service("api", "http", &[server.inbound])).unwrap();
    let mut spec = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config).tls(&certs);
    for flag in client_flags {
        spec = spec.arg(*flag);
    }
    let client = spec.start();
    Pair {
        _dir: dir,
        _backend: backend,
        server,
        client,
    }
}

/// Reads what the proxy answers until it closes the connection (or `within` passes).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A well-behaved client's requests while something else goes on: (failures, slowest).
async fn good_client(addr: std::net::SocketAddr, host: &str, requests: usize) -> (usize, Duration) {
    let mut c = Http1Client::connect(addr).await;
    let mut failures = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..requests {
        let started = Instant::now();
        // A request held up past 10 s counts as failed (and the test goes on to say so).
        match tokio::time::timeout(Duration::from_secs(10), c.get(host, "/")).await {
            Ok(Ok(answer)) if answer.status == 200 => {}
            _ => failures += 1,
        }
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (failures, slowest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_the_clients_400() {
    let p = pair(&[]).await;
    let mut stream = TcpStream::connect(p.client.outbound).await.unwrap();
    stream
        .write_all(
            b"POST /body HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert!(answer.contains("malformed request body"), "{answer:?}");
    assert_eq!(
        p.client
            .metric_reaching("weft_rejected_total", &[("reason", "bad_request")], 1.0),
        1.0
    );
    // The client's fault, not the destination's: no 5xx is counted against `api`.
    let metrics = p.client.metrics();
    let server_errors: f64 = (500..600)
        .map(|code| {
            metric_sum(
                &metrics,
                "weft_http_requests_total",
                &[
                    ("destination", "api.default"),
                    ("status_code", &code.to_string()),
                ],
            )
        })
        .sum();
    assert_eq!(server_errors, 0.0, "{metrics}");
    assert_eq!(
        metric_sum(
            &metrics,
            "weft_http_requests_total",
            &[("destination", "api.default"), ("status_code", "400")]
        ),
        1.0,
        "{metrics}"
    );
    // And the pair still serves.
    let mut good = Http1Client::connect(p.client.outbound).await;
    assert_eq!(good.get("api", "/").await.unwrap().status, 200);
    drop(p.server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_sent_a_byte_at_a_time_are_cut_while_others_are_served() {
    let p = pair(&[
        "--header-read-timeout",
        "1s",
        "--min-request-body-rate",
        "100",
    ])
    .await;
    let addr = p.client.outbound;
    let mut trickles = Vec::new();
    for _ in 0..50 {
        trickles.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream
                .write_all(b"POST /body HTTP/1.1\r\nHost: api\r\nContent-Length: 100000\r\n\r\n")
                .await
                .unwrap();
            let started = Instant::now();
            // Ten bytes a second, a tenth of the minimum: cut once the second of grace and
            // what the bytes earned are used up.
            while started.elapsed() < Duration::from_secs(20) {
                if stream.write_all(b"x").await.is_err() {
                    break;
                }
                let mut byte = [0u8; 1];
                match tokio::time::timeout(Duration::from_millis(100), stream.peek(&mut byte)).await
                {
                    Ok(_) => break,
                    Err(_) => continue,
                }
            }
            let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
            (answer, started.elapsed())
        }));
    }
    let (failures, slowest) = good_client(addr, "api", 100).await;
    assert_eq!(failures, 0);
    assert!(
        slowest < Duration::from_secs(2),
        "a good request took {slowest:?}"
    );
    for trickle in trickles {
        let (answer, took) = trickle.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
        assert!(took < Duration::from_secs(10), "cut after {took:?}");
    }
    assert_eq!(
        p.client.metric_reaching(
            "weft_rejected_total",
            &[("reason", "request_body_too_slow")],
            50.0
        ),
        50.0
    );
}

/// A proxy in local mode in front of `app` (the backend given), with `yaml` added.
fn local_proxy(dir: &TempDir, app: std::net::SocketAddr, yaml: &str, flags: &[&str]) -> Proxy {
    let mut text = plain_service("app", "http", &[app]);
    text.push_str(yaml);
    let config = write_config(dir.path(), "mesh.yaml", &text);
    let mut spec = ProxySpec::new("app", app, &config);
    for flag in flags {
        spec = spec.arg(*flag);
    }
    spec.start()
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const H2_SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
/// The start of a HEADERS block on stream 1 (`:method GET`, `:scheme http`, `:path /`),
/// without END_HEADERS: the rest would come in CONTINUATION frames.
const H2_HEADERS_BEGUN: &[u8] = &[0, 0, 3, 1, 0, 0, 0, 0, 1, 0x82, 0x86, 0x84];

/// Whether the proxy closes `stream` within `within`, whatever it sends first.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_that_never_finish_a_request_are_cut_while_others_are_served() {
    let dir = TempDir::new("h2-trickle");
    let backend = HttpBackend::start("app").await;
    let proxy = local_proxy(&dir, backend.addr, "", &["--header-read-timeout", "1s"]);
    let mut trickles = Vec::new();
    for i in 0..40 {
        let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
        stream.write_all(H2_PREFACE).await.unwrap();
        stream.write_all(H2_SETTINGS).await.unwrap();
        // Half of them begin a header block and never end it; half send nothing more.
        if i % 2 == 0 {
            stream.write_all(H2_HEADERS_BEGUN).await.unwrap();
        }
        trickles.push(stream);
    }
    let mut good = Http2Client::connect(proxy.outbound).await;
    for _ in 0..20 {
        assert_eq!(good.get("app", "/").await.unwrap().status, 200);
    }
    for stream in &mut trickles {
        assert!(
            closed_within(stream, Duration::from_secs(10)).await,
            "an HTTP/2 connection without a request stayed open"
        );
    }
    assert_eq!(
        proxy.metric_reaching(
            "weft_rejected_total",
            &[("reason", "header_read_timeout")],
            40.0
        ),
        40.0
    );
    // The good connection, which did send requests, is still open.
    assert_eq!(good.get("app", "/").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_connections_does_not_lock_a_good_client_out() {
    let dir = TempDir::new("flood");
    let backend = HttpBackend::start("app").await;
    let proxy = local_proxy(&dir, backend.addr, "", &["--max-connections", "500"]);
    // Idle HTTP/2 connections (preface, then nothing) from a flooder that keeps three times
    // the cap open and reopens them as they close, beside a good client that opens a new
    // connection for every request. Each new connection then lives as long as it takes the
    // flood to turn the cap over once (well over the good client's few milliseconds).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooder = {
        let (stop, addr) = (stop.clone(), proxy.outbound);
        tokio::spawn(async move {
            let mut open = std::collections::VecDeque::new();
            let mut opened = 0u32;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(mut stream) = TcpStream::connect(addr).await {
                    let _ = stream.write_all(H2_PREFACE).await;
                    let _ = stream.write_all(H2_SETTINGS).await;
                    open.push_back(stream);
                    opened += 1;
                }
                if open.len() > 1500 {
                    open.pop_front();
                }
                if opened.is_multiple_of(50) {
                    tokio::task::yield_now().await;
                }
            }
            opened
        })
    };
    while proxy.metric(
        "weft_rejected_total",
        &[("reason", "idle_closed_at_capacity")],
    ) < 100.0
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut failures = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = Instant::now();
        let mut c = Http1Client::connect(proxy.outbound).await;
        match c.get("app", "/").await {
            Ok(answer) if answer.status == 200 => {}
            other => {
                eprintln!("good request failed: {:?}", other.map(|a| a.status));
                failures += 1
            }
        }
        slowest = slowest.max(started.elapsed());
    }
    let refusals: Vec<String> = proxy
        .metrics()
        .lines()
        .filter(|l| l.starts_with("weft_rejected"))
        .map(String::from)
        .collect();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let opened = flooder.await.unwrap();
    assert_eq!(failures, 0, "the good client was locked out: {refusals:?}");
    assert!(
        slowest < Duration::from_secs(2),
        "a good request took {slowest:?}"
    );
    assert!(opened > 1000, "the flood opened {opened} connections");
}

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

/// Opens a CONNECT tunnel through the proxy's outbound listener to the `app` backend.
async fn tunnel(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"CONNECT app:443 HTTP/1.1\r\nHost: app:443\r\n\r\n")
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
    stream
}

async fn echoes(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && &back == b"ping"
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
    let mut first = tunnel(proxy.outbound).await;
    let mut second = tunnel(proxy.outbound).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tcp_connection_ends_after_the_idle_timeout() {
    let dir = TempDir::new("tcp-idle");
    let (echo, _task) = tcp_echo().await;
    let mut text = plain_service("store", "tcp", &[echo]);
    text.push_str(&plain_service("app", "http", &[]));
    let config = write_config(dir.path(), "mesh.yaml", &text);
    let proxy = ProxySpec::new("app", "127.0.0.1:9".parse().unwrap(), &config)
        .arg("--upstream")
        .arg("store=127.0.0.1:0")
        .arg("--tcp-idle-timeout")
        .arg("1s")
        .start();
    let mut stream = TcpStream::connect(proxy.upstreams[0]).await.unwrap();
    assert!(echoes(&mut stream).await);
    let started = Instant::now();
    assert!(closed_within(&mut stream, Duration::from_secs(10)).await);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed too soon"
    );
    assert_eq!(
        proxy.metric_when(
            "weft_tcp_connections_open",
            &[("direction", "outbound")],
            |open| open == 0.0
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_two_hosts_is_refused() {
    let dir = TempDir::new("hosts");
    let app = HttpBackend::start("app").await;
    let admin = HttpBackend::start("admin").await;
    let mut text = plain_service("app", "http", &[app.addr]);
    text.push_str(&plain_service("admin", "http", &[admin.addr]));
    let config = write_config(dir.path(), "mesh.yaml", &text);
    let proxy = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config).start();

    // HTTP/1.1: routed by the absolute-form target, read by the upstream from `Host`.
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream
        .write_all(b"GET http://app/echo HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");

    // HTTP/2: `:authority` and `host`.
    let mut h2 = Http2Client::connect(proxy.outbound).await;
    let request = hyper::Request::builder()
        .uri("http://app/echo")
        .header("host", "admin")
        .body(Default::default())
        .unwrap();
    assert_eq!(h2.send(request).await.unwrap().status, 400);

    // Agreeing names, with or without a port, are served.
    let mut c = Http1Client::connect(proxy.outbound).await;
    assert_eq!(c.get("app:8080", "/").await.unwrap().status, 200);
    let mut stream = TcpStream::connect(proxy.outbound).await.unwrap();
    stream
        .write_all(b"GET http://APP:80/ HTTP/1.1\r\nHost: app\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    assert_eq!(admin.count(), 0, "nothing reached the other service");
    assert_eq!(app.count(), 2);
    assert_eq!(
        proxy.metric_reaching("weft_rejected_total", &[("reason", "host_mismatch")], 2.0),
        2.0
    );
}

/// Accepts connections and never answers.
async fn silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = stream.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mirror_target_costs_a_bounded_number_of_copies() {
    let dir = TempDir::new("mirror");
    let orders = HttpBackend::start("orders").await;
    let shadow = silent_server().await;
    let mut text = plain_service("orders", "http", &[orders.addr]);
    text.push_str(&plain_service("shadow", "http", &[shadow]));
    text.push_str(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: mirror}
spec:
  parentRefs: [{group: "", kind: Service, name: orders}]
  rules:
    - filters:
        - type: RequestMirror
          requestMirror: {backendRef: {name: shadow}, percent: 100}
      backendRefs: [{name: orders}]
"#,
    );
    let config = write_config(dir.path(), "mesh.yaml", &text);
    let proxy = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config).start();
    let mut c = Http1Client::connect(proxy.outbound).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..300 {
        let started = Instant::now();
        assert_eq!(c.get("orders", "/").await.unwrap().status, 200);
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(2),
        "a request took {slowest:?}"
    );
    // 256 copies wait on the dead target; the other 44 were never sent.
    assert_eq!(
        proxy.metric_reaching("weft_rejected_total", &[("reason", "mirror_dropped")], 44.0),
        44.0
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while proxy.metric("weft_rejected_total", &[("reason", "mirror_timeout")]) < 256.0
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        proxy.metric("weft_rejected_total", &[("reason", "mirror_timeout")]),
        256.0
    );
    // Their slots are free again: the next copy is sent.
    assert_eq!(c.get("orders", "/").await.unwrap().status, 200);
    assert_eq!(
        proxy.metric("weft_rejected_total", &[("reason", "mirror_dropped")]),
        44.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_access_log_reader_costs_lines_not_requests() {
    let dir = TempDir::new("log-stall");
    let backend = HttpBackend::start("app").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("app", "http", &[backend.addr]),
    );
    // Nobody reads the proxy's stdout: the pipe fills after a few hundred lines.
    let proxy = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config)
        .arg("--access-log")
        .stdout_unread()
        .start();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let addr = proxy.outbound;
        workers.push(tokio::spawn(async move {
            let mut c = Http1Client::connect(addr).await;
            let mut slowest = Duration::ZERO;
            for _ in 0..5_000 {
                let started = Instant::now();
                assert_eq!(c.get("app", "/").await.unwrap().status, 200);
                slowest = slowest.max(started.elapsed());
            }
            slowest
        }));
    }
    for worker in workers {
        let slowest = worker.await.unwrap();
        assert!(
            slowest < Duration::from_secs(2),
            "a request took {slowest:?}"
        );
    }
    // 20,000 lines: the queue (16,384) and the pipe took some, the rest were counted.
    let dropped = proxy.metric("weft_access_log_dropped_total", &[]);
    assert!(dropped > 1_000.0, "{dropped} lines dropped");
    assert!(dropped < 20_000.0, "{dropped} lines dropped");
}

/// Requests from a good client on a connection of its own: (failures, slowest).
async fn short_requests(addr: std::net::SocketAddr, host: &str, n: usize) -> (usize, Duration) {
    good_client(addr, host, n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundreds_of_long_requests_to_one_instance_do_not_hold_up_short_ones() {
    let p = pair(&[]).await;
    // 250 long polls at once from the app, more than one HTTP/2 connection may carry.
    let mut long = Vec::new();
    let mut app = Http2Client::connect(p.client.outbound).await;
    for _ in 0..250 {
        let mut c = app.clone();
        long.push(tokio::spawn(async move {
            c.get("api", "/slow/3000").await.map(|a| a.status)
        }));
    }
    while p._backend.count() < 250 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (failures, slowest) = short_requests(p.client.outbound, "api", 20).await;
    assert_eq!(failures, 0);
    assert!(
        slowest < Duration::from_secs(1),
        "a short request took {slowest:?}"
    );
    for request in long {
        assert_eq!(request.await.unwrap().unwrap(), 200);
    }
    assert_eq!(app.get("api", "/").await.unwrap().status, 200);
    assert_eq!(
        p.client.metric(
            "weft_upstream_connections_saturated_total",
            &[("destination", "api.default")]
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stalls_only_its_own_responses() {
    let p = pair(&[]).await;
    // One HTTP/2 connection asks for two dozen 1 MiB answers and reads none of them.
    let stream = TcpStream::connect(p.client.outbound).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut unread = Vec::new();
    for _ in 0..24 {
        let request = hyper::Request::builder()
            .uri("http://api/bytes/1048576")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        sender.ready().await.unwrap();
        unread.push(sender.send_request(request).await.unwrap());
    }
    // Everyone else's requests to the same instance go through as usual.
    let (failures, slowest) = short_requests(p.client.outbound, "api", 20).await;
    assert_eq!(failures, 0);
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?}"
    );
    let mut big = Http1Client::connect(p.client.outbound).await;
    let answer = big.get("api", "/bytes/1048576").await.unwrap();
    assert_eq!(answer.body.len(), 1 << 20);
    drop(unread);
}
