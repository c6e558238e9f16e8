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

/// The TCP connections from this host to `port` that are established, by socket inode
/// (IPv4; /proc/net/tcp).
fn established_to(port: u16) -> Vec<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = u16::from_str_radix(fields[2].rsplit(':').next()?, 16).ok()?;
            let established = fields[3] == "01";
            (established && remote_port == port).then(|| fields[9].parse().ok())?
        })
        .collect()
}

/// Reads one whole HTTP/1.1 answer with a `Content-Length` from `stream`.
async fn read_answer(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("an answer with a Content-Length");
            if got.len() >= end + 4 + length {
                return text;
            }
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "closed before the answer was whole: {text:?}");
        got.extend_from_slice(&chunk[..n]);
    }
}

/// A kept-alive HTTP/1.1 connection may wait for its next request until `--idle-timeout`,
/// both the app's connection to its proxy and the pooled one between the proxies: the
/// header read timeout runs from a request's first byte, and waiting is not counted as an
/// attack. A next request whose head trickles in is still cut after the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_alive_connections_wait_past_the_header_read_timeout_but_a_slow_next_head_is_cut() {
    let timeout = ["--header-read-timeout", "1s"];
    let p = pair_with(&timeout, &timeout).await;
    let mut app = Http1Client::connect(p.client.outbound).await;
    assert_eq!(app.get("api", "/").await.unwrap().status, 200);
    let pooled = established_to(p.server.inbound.port());
    assert!(!pooled.is_empty(), "no connection between the proxies");

    // Three times the head timeout (whose checks end it by 1.25 times), far from the idle one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.get("api", "/").await.unwrap().status,
        200,
        "same connection"
    );
    let still = established_to(p.server.inbound.port());
    assert!(
        pooled.iter().all(|socket| still.contains(socket)),
        "the pooled connection between the proxies was closed: {pooled:?} then {still:?}"
    );
    for proxy in [&p.client, &p.server] {
        let rejected = proxy.metric("weft_rejected_total", &[("reason", "header_read_timeout")]);
        assert_eq!(rejected, 0.0, "waiting between requests was counted");
    }

    // One request served, then the next one's head a header at a time.
    let mut slow = TcpStream::connect(p.client.outbound).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
        .await
        .unwrap();
    assert!(read_answer(&mut slow).await.starts_with("HTTP/1.1 200"));
    slow.write_all(b"GET / HTTP/1.1\r\nHost: api\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut i = 0;
    let cut = loop {
        if slow
            .write_all(format!("x-{i}: y\r\n").as_bytes())
            .await
            .is_err()
        {
            break started.elapsed();
        }
        i += 1;
        let mut sink = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut sink)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break started.elapsed(),
            Ok(Ok(_)) => panic!("an answer to a head that never ended"),
            Err(_) => assert!(started.elapsed() < Duration::from_secs(10), "never cut"),
        }
    };
    assert!(
        cut >= Duration::from_secs(1),
        "cut after {cut:?}, before its timeout"
    );
    assert_eq!(
        p.client.metric_reaching(
            "weft_rejected_total",
            &[("reason", "header_read_timeout")],
            1.0
        ),
        1.0
    );
    assert_eq!(app.get("api", "/").await.unwrap().status, 200);
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
