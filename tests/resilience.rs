//! Resilience observed in behaviour: retries, retry budget, outlier ejection and return,
//! circuit breaking, rate limiting, fault injection and timeouts.

mod support;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::*;

/// A client proxy in front of plain backends; `yaml` adds routes and policies.
async fn client_proxy(dir: &TempDir, services: &[(&str, &[&HttpBackend])], yaml: &str) -> Proxy {
    let mut text = String::new();
    for (name, backends) in services {
        let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
        text.push_str(&plain_service(name, "http", &addrs));
    }
    text.push_str(yaml);
    let config = write_config(dir.path(), "mesh.yaml", &text);
    ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_make_a_flaky_backend_look_healthy() {
    let dir = TempDir::new("retry");
    let backend = HttpBackend::start("flaky").await;
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry}
spec:
  parentRefs: [{group: "", kind: Service, name: flaky}]
  rules:
    - retry:
        attempts: 2
        codes: [503]
        backoff: 1ms
      backendRefs: [{name: flaky}]
"#;
    let proxy = client_proxy(&dir, &[("flaky", &[&backend])], route).await;
    let mut c = Http1Client::connect(proxy.outbound).await;
    for i in 0..100 {
        let answer = c.get("flaky", "/flaky").await.unwrap();
        assert_eq!(answer.status, 200, "request {i}");
    }
    // Every other try fails, so the backend saw about 200 tries for 100 requests.
    assert!(backend.count() >= 190, "{}", backend.count());
    assert!(proxy.metric("weft_retries_total", &[("destination", "flaky.default")]) >= 90.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_caps_retries_against_a_dead_backend() {
    let dir = TempDir::new("budget");
    let backend = HttpBackend::start("dead").await;
    backend.fail_all.store(true, Ordering::SeqCst);
    let yaml = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: retry}
spec:
  parentRefs: [{group: "", kind: Service, name: dead}]
  rules:
    - retry: {attempts: 3, codes: [500], backoff: 1ms}
      backendRefs: [{name: dead}]
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: dead}
spec:
  targetRef: {kind: Service, name: dead}
  retryBudget: {ratio: 0.1, minRetriesPerSecond: 1, window: 10s}
"#;
    let proxy = client_proxy(&dir, &[("dead", &[&backend])], yaml).await;
    let mut c = Http1Client::connect(proxy.outbound).await;
    for _ in 0..300 {
        assert_eq!(c.get("dead", "/").await.unwrap().status, 500);
    }
    let retries = proxy.metric("weft_retries_total", &[("destination", "dead.default")]);
    // Without a budget: 900 retries. With it: 10 % of 300 plus a floor of 1/s over 10 s.
    assert!(retries <= 45.0, "{retries} retries");
    assert!(
        retries >= 20.0,
        "the budget should still allow some: {retries}"
    );
    assert!(backend.count() <= 345);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_endpoint_is_ejected_and_returns() {
    let dir = TempDir::new("outlier");
    let good = HttpBackend::start("good").await;
    let bad = HttpBackend::start("bad").await;
    bad.fail_all.store(true, Ordering::SeqCst);
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: pool}
spec:
  targetRef: {kind: Service, name: pool}
  loadBalancer: {type: RoundRobin}
  outlierDetection:
    consecutive5xx: 3
    baseEjectionTime: 1s
    maxEjectionPercent: 50
"#;
    let proxy = client_proxy(&dir, &[("pool", &[&good, &bad])], yaml).await;
    let mut c = Http1Client::connect(proxy.outbound).await;
    let mut failures = 0;
    for _ in 0..200 {
        if c.get("pool", "/").await.unwrap().status != 200 {
            failures += 1;
        }
    }
    assert_eq!(failures, 3, "three consecutive 5xx eject; nothing after");
    assert_eq!(bad.count(), 3);
    assert_eq!(
        proxy.metric(
            "weft_outlier_ejections_total",
            &[("destination", "pool.default")]
        ),
        1.0
    );

    bad.fail_all.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..20 {
        assert_eq!(c.get("pool", "/").await.unwrap().status, 200);
    }
    assert!(
        bad.count() >= 10,
        "the endpoint is back in rotation: {}",
        bad.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_answers_503_with_the_reason() {
    let dir = TempDir::new("limits");
    let backend = HttpBackend::start("slow").await;
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: slow}
spec:
  targetRef: {kind: Service, name: slow}
  connectionLimits: {maxRequests: 2}
"#;
    let proxy = client_proxy(&dir, &[("slow", &[&backend])], yaml).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let addr = proxy.outbound;
        tasks.push(tokio::spawn(async move {
            let mut c = Http1Client::connect(addr).await;
            c.get("slow", "/slow/400").await.unwrap()
        }));
    }
    let mut ok = 0;
    let mut refused = 0;
    for task in tasks {
        let answer = task.await.unwrap();
        match answer.status {
            200 => ok += 1,
            503 => {
                assert_eq!(answer.header("x-weft-overloaded"), Some("max-requests"));
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(refused, 4);
    assert_eq!(
        proxy.metric("weft_rejected_total", &[("reason", "circuit_max_requests")]),
        4.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_rate_limit_answers_429() {
    let dir = TempDir::new("ratelimit");
    let backend = HttpBackend::start("api").await;
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: api}
spec:
  targetRef: {kind: Service, name: api}
  rateLimit: {requestsPerSecond: 1, burst: 5}
"#;
    let mut text = plain_service("api", "http", &[]);
    text.push_str(yaml);
    let config = write_config(dir.path(), "mesh.yaml", &text);
    let proxy = ProxySpec::new("api", backend.addr, &config).start();
    let mut c = Http1Client::connect(proxy.inbound).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(c.get("api", "/").await.unwrap().status);
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert!((5..=6).contains(&ok), "{statuses:?}");
    assert_eq!(ok + limited, 20, "{statuses:?}");
    assert_eq!(backend.count() as usize, ok);
    assert_eq!(
        proxy.metric("weft_rejected_total", &[("reason", "rate_limited")]),
        limited as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_injection_aborts_the_configured_share() {
    let dir = TempDir::new("fault");
    let backend = HttpBackend::start("target").await;
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: target}
spec:
  targetRef: {kind: Service, name: target}
  fault:
    abort: {percent: 30, status: 503}
"#;
    let proxy = client_proxy(&dir, &[("target", &[&backend])], yaml).await;
    let mut c = Http1Client::connect(proxy.outbound).await;
    let mut aborted = 0;
    for _ in 0..1000 {
        let answer = c.get("target", "/").await.unwrap();
        if answer.status == 503 {
            assert_eq!(answer.header("x-weft-error"), Some("fault injected"));
            aborted += 1;
        }
    }
    // 30 % of 1000; binomial sd ~14.5, so +-60 is over 4 sd.
    assert!((240..=360).contains(&aborted), "{aborted} aborted");
    assert_eq!(backend.count(), 1000 - aborted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_answers_504() {
    let dir = TempDir::new("timeout");
    let backend = HttpBackend::start("slow").await;
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: slow}
spec:
  parentRefs: [{group: "", kind: Service, name: slow}]
  rules:
    - timeouts: {request: 200ms}
      backendRefs: [{name: slow}]
"#;
    let proxy = client_proxy(&dir, &[("slow", &[&backend])], route).await;
    let mut c = Http1Client::connect(proxy.outbound).await;
    let started = std::time::Instant::now();
    let answer = c.get("slow", "/slow/2000").await.unwrap();
    assert_eq!(answer.status, 504);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(c.get("slow", "/slow/10").await.unwrap().status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_pending_limits_queue_one_and_refuse_the_rest() {
    let dir = TempDir::new("pending");
    let backend = HttpBackend::start("narrow").await;
    let yaml = r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: narrow}
spec:
  targetRef: {kind: Service, name: narrow}
  connectTimeout: 2s
  connectionLimits: {maxConnections: 1, maxPendingRequests: 1}
"#;
    let proxy = client_proxy(&dir, &[("narrow", &[&backend])], yaml).await;
    let mut tasks = Vec::new();
    for i in 0..3 {
        let addr = proxy.outbound;
        tasks.push(tokio::spawn(async move {
            // Staggered so the first surely holds the one connection.
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            let mut c = Http1Client::connect(addr).await;
            c.get("narrow", "/slow/400").await.unwrap()
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        let answer = task.await.unwrap();
        if answer.status == 503 {
            assert_eq!(
                answer.header("x-weft-overloaded"),
                Some("max-pending-requests")
            );
        }
        statuses.push(answer.status);
    }
    statuses.sort();
    // One on the connection, one queued for it (then served), one refused.
    assert_eq!(statuses, vec![200, 200, 503]);
    assert_eq!(
        proxy.metric(
            "weft_rejected_total",
            &[("reason", "circuit_max_pending_requests")]
        ),
        1.0
    );
}

/// A push that only moves endpoints keeps a tripped rate limit and circuit breaker tripped;
/// a push that changes the policy starts it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resilience_state_survives_config_pushes() {
    let dir = TempDir::new("carry");
    let app = HttpBackend::start("api").await;
    let slow = HttpBackend::start("slow").await;
    let spare = HttpBackend::start("spare").await;
    let config = |slow_endpoints: &[std::net::SocketAddr], burst: u32| {
        let mut text = plain_service("api", "http", &[]);
        text.push_str(&plain_service("slow", "http", slow_endpoints));
        text.push_str(&format!(
            r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: api}}
spec:
  targetRef: {{kind: Service, name: api}}
  rateLimit: {{requestsPerSecond: 0.001, burst: {burst}}}
---
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {{name: slow}}
spec:
  targetRef: {{kind: Service, name: slow}}
  connectionLimits: {{maxRequests: 1}}
"#
        ));
        write_config(dir.path(), "mesh.yaml", &text)
    };
    let path = config(&[slow.addr], 2);
    let proxy = ProxySpec::new("api", app.addr, &path).start();
    let reloads = |n: f64| {
        let seen = proxy.metric_reaching("weft_config_reloads_total", &[("result", "ok")], n);
        assert_eq!(seen, n, "configuration reloads");
    };
    reloads(1.0);

    let mut inbound = Http1Client::connect(proxy.inbound).await;
    assert_eq!(inbound.get("api", "/").await.unwrap().status, 200);
    assert_eq!(inbound.get("api", "/").await.unwrap().status, 200);
    assert_eq!(inbound.get("api", "/").await.unwrap().status, 429);
    // One slow request holds the only request slot to `slow`.
    let outbound = proxy.outbound;
    let held = tokio::spawn(async move {
        let mut c = Http1Client::connect(outbound).await;
        c.get("slow", "/slow/4000").await.unwrap().status
    });
    while slow.count() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut c = Http1Client::connect(proxy.outbound).await;
    assert_eq!(c.get("slow", "/").await.unwrap().status, 503);

    // The endpoint flaps: pushed twice with the policies unchanged.
    for (round, endpoints) in [vec![slow.addr, spare.addr], vec![slow.addr]]
        .iter()
        .enumerate()
    {
        config(endpoints, 2);
        reloads(2.0 + round as f64);
        assert_eq!(
            inbound.get("api", "/").await.unwrap().status,
            429,
            "rate limit after push {round}"
        );
        let answer = c.get("slow", "/").await.unwrap();
        assert_eq!(answer.status, 503, "circuit breaker after push {round}");
        assert_eq!(answer.header("x-weft-overloaded"), Some("max-requests"));
    }
    assert_eq!(app.count(), 2);
    assert_eq!(spare.count(), 0);

    // A changed policy is a new bucket.
    config(&[slow.addr], 3);
    reloads(4.0);
    assert_eq!(inbound.get("api", "/").await.unwrap().status, 200);
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(c.get("slow", "/").await.unwrap().status, 200);
}

/// The proxy keeps its HTTP/1.1 connections to an endpoint and sends the next request on
/// one that is free: sequential requests reach the app over one connection, also after a
/// client left in the middle of an answer (its connection is waited for or let go, and the
/// pool goes on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_connections_are_reused_also_after_a_client_leaves_mid_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new("pool");
    let backend = HttpBackend::start("pooled").await;
    let proxy = client_proxy(&dir, &[("pooled", &[&backend])], "").await;
    let mut c = Http1Client::connect(proxy.outbound).await;
    for _ in 0..30 {
        assert_eq!(c.get("pooled", "/").await.unwrap().status, 200);
    }
    assert_eq!(
        backend.connections_accepted(),
        1,
        "one connection for 30 requests"
    );

    // A client that reads the head of an 8 MB answer and leaves.
    let mut leaver = tokio::net::TcpStream::connect(proxy.outbound)
        .await
        .unwrap();
    leaver
        .write_all(b"GET /bytes/8000000 HTTP/1.1\r\nhost: pooled\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    let read = leaver.read(&mut head).await.unwrap();
    assert!(
        head[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        &head[..read]
    );
    drop(leaver);

    for _ in 0..30 {
        assert_eq!(c.get("pooled", "/").await.unwrap().status, 200);
    }
    // The abandoned answer's connection may be closed; the others are reused.
    let accepted = backend.connections_accepted();
    assert!(accepted <= 2, "{accepted} connections for 61 requests");
}

/// An app that answers the first request on each connection, then reads the next one and
/// closes the connection without answering: what a server does when its keep-alive timeout
/// ends just as a request arrives (Node.js, gunicorn, uvicorn close idle connections after
/// 2 to 5 seconds). Returns its address and the request lines it read.
async fn closing_app() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                for answered in [true, false] {
                    // A whole request: its head, and the body its Content-Length gives.
                    let mut got = Vec::new();
                    let mut chunk = [0u8; 1024];
                    let complete = loop {
                        let text = String::from_utf8_lossy(&got).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let l = l.to_ascii_lowercase();
                                    let v = l.strip_prefix("content-length:")?;
                                    v.trim().parse::<usize>().ok()
                                })
                                .unwrap_or(0);
                            if got.len() >= end + 4 + length {
                                break Some(text);
                            }
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break None,
                            Ok(n) => got.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let Some(request) = complete else { return };
                    let line = request.lines().next().unwrap_or_default().to_owned();
                    log.lock().unwrap().push(line);
                    if !answered {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A kept-alive connection the app closes as a request arrives does not fail the request
/// when it can be sent again: an idempotent request without a body goes on a new
/// connection; a POST is not sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_app_closes_as_a_request_arrives_costs_no_idempotent_request() {
    let dir = TempDir::new("closing-app");
    let (app, seen) = closing_app().await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("closer", "http", &[app]),
    );
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();
    let mut c = Http1Client::connect(proxy.outbound).await;
    assert_eq!(c.get("closer", "/first").await.unwrap().status, 200);
    // Long enough idle for the pool to expect the app may close it (100 ms).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = c.get("closer", "/again").await.unwrap();
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "GET /first HTTP/1.1",
            "GET /again HTTP/1.1",
            "GET /again HTTP/1.1"
        ],
        "the closed connection read it, a new one answered it"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    let post = c
        .send(
            request("POST", "closer", "/post", &[])
                .map(|_| http_body_util::Full::new(bytes::Bytes::from_static(b"hi"))),
        )
        .await
        .unwrap();
    assert_eq!(post.status, 502, "{}", post.body);
    let posts = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|line| line.starts_with("POST"))
        .count();
    assert_eq!(posts, 1, "a POST is never sent twice");
}
