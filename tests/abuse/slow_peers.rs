//! Slow and idle peers: bodies and HTTP/2 requests that never finish, idle floods, silent
//! TCP.

use super::*;

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
