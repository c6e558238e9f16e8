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
        match c.get(host, "/").await {
            Ok(answer) if answer.status == 200 => {}
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
