//! Everything an outsider can grow is bounded: client errors stay the client's, hosts
//! agree, mirrors, the access log, streams per peer and slow readers cost only themselves.

use super::*;

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
