//! Hostile and broken clients are refused and counted while well-behaved clients keep
//! being served.

mod support;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn setup(flags: &[&str]) -> (TempDir, HttpBackend, Proxy) {
    let dir = TempDir::new("hostile");
    let backend = HttpBackend::start("app").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("app", "http", &[backend.addr]),
    );
    let mut spec = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config);
    for flag in flags {
        spec = spec.arg(*flag);
    }
    let proxy = spec.start();
    (dir, backend, proxy)
}

/// Sends raw bytes and reads whatever comes back until the proxy closes (or 5 s pass).
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_too_many_headers_get_431() {
    let (_dir, _backend, proxy) =
        setup(&["--max-header-bytes", "16384", "--max-headers", "50"]).await;
    let mut good = Http1Client::connect(proxy.outbound).await;
    assert_eq!(good.get("app", "/").await.unwrap().status, 200);

    let huge = format!(
        "GET / HTTP/1.1\r\nHost: app\r\nx-big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = raw_exchange(proxy.outbound, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    let mut many = String::from("GET / HTTP/1.1\r\nHost: app\r\n");
    for i in 0..80 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let answer = raw_exchange(proxy.outbound, many.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");

    assert_eq!(
        good.get("app", "/").await.unwrap().status,
        200,
        "others are still served"
    );
    assert_eq!(
        proxy.metric_reaching(
            "weft_rejected_total",
            &[("reason", "header_too_large")],
            2.0
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_is_cut_off_while_others_are_served() {
    let (_dir, _backend, proxy) = setup(&["--header-read-timeout", "1s"]).await;
    let mut slow = TcpStream::connect(proxy.outbound).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: app\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let trickle = async {
        for i in 0..20 {
            if slow
                .write_all(format!("x-{i}: y\r\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let serve_others = async {
        let mut good = Http1Client::connect(proxy.outbound).await;
        for _ in 0..20 {
            assert_eq!(good.get("app", "/").await.unwrap().status, 200);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::join!(trickle, serve_others);
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "the slow client should have been cut off"
    );
    assert_eq!(
        proxy.metric_reaching(
            "weft_rejected_total",
            &[("reason", "header_read_timeout")],
            1.0
        ),
        1.0
    );
}

/// At the cap an idle connection makes room for a new one; connections with requests in
/// flight keep their place, and only when all are busy is a new one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_makes_room_from_idle_connections_and_refuses_when_all_are_busy() {
    let (_dir, backend, proxy) = setup(&["--max-connections", "3"]).await;
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut c = Http1Client::connect(proxy.outbound).await;
        assert_eq!(c.get("app", "/").await.unwrap().status, 200);
        idle.push(c);
    }
    // Three busy connections, each let in by closing an idle one.
    let mut busy = Vec::new();
    for i in 0..3u64 {
        let addr = proxy.outbound;
        busy.push(tokio::spawn(async move {
            let mut c = Http1Client::connect(addr).await;
            c.get("app", "/slow/2000").await.unwrap().status
        }));
        while backend.count() < 4 + i {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(
        proxy.metric_reaching(
            "weft_rejected_total",
            &[("reason", "idle_closed_at_capacity")],
            3.0
        ),
        3.0
    );
    for c in &mut idle {
        assert!(
            c.get("app", "/").await.is_err(),
            "an idle connection made room"
        );
    }
    let answer = raw_exchange(proxy.outbound, b"GET / HTTP/1.1\r\nHost: app\r\n\r\n").await;
    assert!(
        answer.is_empty(),
        "with every connection busy a new one is closed unanswered: {answer:?}"
    );
    assert_eq!(
        proxy.metric_reaching("weft_rejected_total", &[("reason", "max_connections")], 1.0),
        1.0
    );
    for task in busy {
        assert_eq!(task.await.unwrap(), 200, "busy connections were never cut");
    }
    let mut again = Http1Client::connect(proxy.outbound).await;
    assert_eq!(again.get("app", "/").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_malformed_http_are_refused() {
    let (_dir, _backend, proxy) = setup(&[]).await;
    let garbage: Vec<u8> = (0..200u32).map(|i| (i * 7919 % 256) as u8).collect();
    assert!(raw_exchange(proxy.outbound, &garbage).await.is_empty());
    let answer = raw_exchange(
        proxy.outbound,
        b"GET / HTTP/1.1\r\nHost app-missing-colon\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    assert_eq!(
        proxy.metric_reaching("weft_rejected_total", &[("reason", "not_http")], 1.0),
        1.0
    );
    assert_eq!(
        proxy.metric_reaching("weft_rejected_total", &[("reason", "bad_request")], 1.0),
        1.0
    );
    let mut good = Http1Client::connect(proxy.outbound).await;
    assert_eq!(good.get("app", "/").await.unwrap().status, 200);
}
