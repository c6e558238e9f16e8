//! Seeing the mesh: proxies report what they carried to `weft control`, which keeps rolling
//! windows of it, and `weft stat` shows every Service, edge and route from them. Checked
//! against traffic the test sent and counted itself.

mod support;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Services with no endpoints of their own (their proxies register), `(name, protocol)`.
fn services(list: &[(&str, &str)]) -> String {
    list.iter()
        .map(|(name, protocol)| plain_service(name, protocol, &[]))
        .collect()
}

/// web calls reviews (HTTP, through `reviews-route`) and store (opaque TCP).
fn web_reviews_store() -> String {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews-route}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews}]
  rules:
  - backendRefs: [{group: \"\", kind: Service, name: reviews}]
";
    services(&[("web", "http"), ("reviews", "http"), ("store", "tcp")]) + route
}

/// The route of reviews, as proxies name it: namespace, HTTPRoute, rule.
const ROUTE: &str = "default/reviews-route/0";

/// `weft stat ARGS -o json`, parsed.
fn stat_json(control: &ControlPlane, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["stat"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    let out = control.weft(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn row<'a>(
    view: &'a serde_json::Value,
    list: &str,
    field: &str,
    value: &str,
) -> Option<&'a serde_json::Value> {
    view[list]
        .as_array()?
        .iter()
        .find(|row| row[field].as_str() == Some(value))
}

/// The upper bound, in ms, of the latency bucket `ms` falls in.
fn bucket_bound_ms(ms: f64) -> f64 {
    let micros = (ms * 1000.0) as u64;
    let at = weft_api::latency_bucket(micros);
    weft_api::LATENCY_BUCKETS_US
        .get(at)
        .map_or(f64::INFINITY, |bound| *bound as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_shows_what_the_mesh_carried_per_service_edge_and_route() {
    let dir = TempDir::new("observability");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&web_reviews_store());
    let reviews_app = HttpBackend::start("reviews").await;
    let _reviews = control.proxy("reviews", reviews_app.addr).start();
    let (echo, _echo_task) = tcp_echo().await;
    let _store = control.proxy("store", echo).start();
    let web_app = HttpBackend::start("web").await;
    let web = control
        .proxy("web", web_app.addr)
        .arg("--upstream")
        .arg("store=127.0.0.1:0")
        .start();

    // Every request that reaches reviews is counted here, the wait for the mesh included.
    let mut reached = 0u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while reached == 0 {
        let mut first = Http1Client::connect(web.outbound).await;
        let answer = first.get("reviews", "/").await;
        if answer.is_ok_and(|a| a.status == 200 && a.body == "reviews") {
            reached += 1;
        } else {
            assert!(Instant::now() < deadline, "reviews never became reachable");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let mut client = Http1Client::connect(web.outbound).await;
    for _ in 0..15 {
        assert_eq!(client.get("reviews", "/").await.unwrap().status, 200);
    }
    for _ in 0..10 {
        assert_eq!(
            client.get("reviews", "/status/500").await.unwrap().status,
            500
        );
    }
    for _ in 0..5 {
        assert_eq!(
            client.get("reviews", "/status/404").await.unwrap().status,
            404
        );
    }
    // Slow answers, timed by the client too: the reported latency is at most the client's.
    let mut seen = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        assert_eq!(client.get("reviews", "/slow/35").await.unwrap().status, 200);
        seen.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let total = reached + 15 + 10 + 5 + 20;
    // One TCP connection through store, left open.
    let mut tcp = TcpStream::connect(web.upstreams[0]).await.unwrap();
    tcp.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    tcp.read_exact(&mut back).await.unwrap();

    // Each proxy reports every 5 s: wait until the called side and the calling side have.
    let mut view = serde_json::Value::Null;
    wait_for(
        "every request in the stats",
        Duration::from_secs(30),
        || {
            view = stat_json(&control, &[]);
            let routes = stat_json(&control, &["routes"]);
            let counted = row(&view, "services", "name", "reviews.default")
                .and_then(|r| r["requests"].as_u64());
            let routed =
                row(&routes, "routes", "route", ROUTE).and_then(|r| r["requests"].as_u64());
            let open =
                row(&view, "services", "name", "store.default").and_then(|r| r["tcpOpen"].as_u64());
            async move { counted == Some(total) && routed == Some(total) && open == Some(1) }
        },
    )
    .await;
    let reviews = row(&view, "services", "name", "reviews.default").unwrap();
    assert_eq!(reviews["serverErrors"], 10);
    assert_eq!(reviews["clientErrors"], 5);
    let success = reviews["successRate"].as_f64().unwrap();
    assert!(
        (success - (total - 10) as f64 / total as f64).abs() < 1e-9,
        "{success}"
    );
    assert_eq!(reviews["mtlsShare"], 1.0);
    assert!(reviews["rps"].as_f64().unwrap() > 0.0);

    // Edges and routes agree with the same traffic.
    let edges = stat_json(&control, &["edges"]);
    let edge = edges["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "web.default" && e["destination"] == "reviews.default")
        .unwrap_or_else(|| panic!("{edges}"));
    assert_eq!(edge["requests"].as_u64(), Some(total));
    let routes = stat_json(&control, &["routes"]);
    let route = row(&routes, "routes", "route", ROUTE).unwrap_or_else(|| panic!("{routes}"));
    assert_eq!(route["destination"], "reviews.default");
    assert_eq!(route["requests"].as_u64(), Some(total));
    let store_edge = row(&edges, "edges", "destination", "store.default").unwrap();
    assert_eq!(
        (
            store_edge["tcpOpened"].as_u64(),
            store_edge["tcpOpen"].as_u64()
        ),
        (Some(1), Some(1))
    );

    // The slow answers set the tail: the p95 lies between the app's 35 ms and the bucket
    // of the slowest answer the client saw.
    let p95 = reviews["p95Ms"].as_f64().unwrap();
    let slowest = seen.iter().copied().fold(0.0, f64::max);
    assert!(
        p95 >= 30.0 && p95 <= bucket_bound_ms(slowest),
        "p95 {p95}, client saw up to {slowest}"
    );

    // One Service, in a table: its row, its edges, its routes.
    let out = control.weft(&["stat", "svc/reviews"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "SERVICES:",
        "EDGES:",
        "ROUTES:",
        "web.default",
        ROUTE,
        "100.00%",
    ] {
        assert!(
            table.contains(expected),
            "{expected} missing from:\n{table}"
        );
    }
    let out = control.weft(&["stat", "-o", "wide", "--window", "10m"]);
    let wide = String::from_utf8_lossy(&out.stdout);
    assert!(
        wide.contains("5XX") && wide.contains("reviews.default"),
        "{wide}"
    );
    let out = control.weft(&["stat", "svc/nosuch"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no traffic of nosuch.default"));
    let out = control.weft(&["stat", "--window", "2m"]);
    assert!(!out.status.success());
}

const DETAILS_DENY_WEB: &str = "apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: details-lockdown}
spec:
  targetRef: {kind: Service, name: details}
  action: DENY
  rules: [{from: [{services: [web]}]}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_names_a_slow_version_a_failing_service_and_new_denials() {
    let dir = TempDir::new("diagnose");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&services(&[
        ("web", "http"),
        ("reviews", "http"),
        ("ratings", "http"),
        ("details", "http"),
    ]));
    let apps = [
        HttpBackend::start("reviews").await,
        HttpBackend::start("ratings").await,
        HttpBackend::start("details").await,
    ];
    let _proxies: Vec<Proxy> = ["reviews", "ratings", "details"]
        .iter()
        .zip(&apps)
        .map(|(name, app)| control.proxy(name, app.addr).start())
        .collect();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();

    // web calls all three, round and round, until the test ends.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, outbound) = (stop.clone(), web.outbound);
        tokio::spawn(async move {
            let mut client = Http1Client::connect(outbound).await;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for service in ["reviews", "ratings", "details"] {
                    if client.get(service, "/").await.is_err() {
                        client = Http1Client::connect(outbound).await;
                    }
                }
            }
        })
    };
    // A past to compare with: traffic older than the 20 s diagnose looks at, and nothing
    // standing out in it.
    let started = Instant::now();
    wait_for("a healthy past", Duration::from_secs(90), || {
        let view = stat_json(&control, &[]);
        let all_served = ["reviews.default", "ratings.default", "details.default"]
            .iter()
            .all(|name| {
                row(&view, "services", "name", name)
                    .is_some_and(|r| r["requests"].as_u64() >= Some(20) && r["successRate"] == 1.0)
            });
        let old_enough = started.elapsed() > Duration::from_secs(25);
        async move { all_served && old_enough }
    })
    .await;
    let calm = control.weft(&["diagnose"]);
    assert!(
        calm.status.success()
            && String::from_utf8_lossy(&calm.stdout).contains("nothing stands out"),
        "{}{}",
        String::from_utf8_lossy(&calm.stdout),
        String::from_utf8_lossy(&calm.stderr)
    );

    // Three incidents at once.
    apps[0]
        .delay_ms
        .store(150, std::sync::atomic::Ordering::SeqCst);
    apps[1]
        .fail_all
        .store(true, std::sync::atomic::Ordering::SeqCst);
    control.apply(DETAILS_DENY_WEB);

    let mut findings = serde_json::Value::Null;
    wait_for(
        "diagnose to name all three",
        Duration::from_secs(90),
        || {
            let out = control.weft(&["diagnose", "--json"]);
            findings = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let has = |service: &str, said: &str| {
                findings.as_array().is_some_and(|all| {
                    all.iter().any(|f| {
                        f["service"] == service
                            && f["summary"].as_str().is_some_and(|s| s.contains(said))
                    })
                })
            };
            let named = has("reviews.default", "p99 latency rose")
                && (has("ratings.default", "success rate fell")
                    || has("ratings.default", "out of rotation"))
                && has("details.default", "authorization denials rose");
            async move { named }
        },
    )
    .await;
    // Failing first: an error outranks a warning.
    assert_eq!(findings[0]["severity"], "error", "{findings:#}");
    assert_eq!(findings[0]["service"], "ratings.default", "{findings:#}");
    let out = control.weft(&["diagnose", "reviews"]);
    assert!(
        out.status.success(),
        "a slow service is a warning, not a failure"
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("1. ! web.default → reviews.default: p99 latency rose"),
        "{said}"
    );
    assert!(!said.contains("ratings"), "{said}");
    let out = control.weft(&["diagnose"]);
    assert!(!out.status.success());
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
}

/// JSON lines from a running `weft tap`, as they come.
struct TapLines {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl TapLines {
    fn start(control: &ControlPlane, args: &[&str]) -> TapLines {
        let mut all = vec!["tap"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let mut child = control
            .weft_command(&all)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(serde_json::from_str(&line).unwrap()).is_err() {
                    break;
                }
            }
        });
        TapLines { child, lines }
    }

    /// The next `n` requests (within 20 s).
    fn next(&self, n: usize) -> Vec<serde_json::Value> {
        (0..n)
            .map(|_| {
                self.lines
                    .recv_timeout(Duration::from_secs(20))
                    .expect("a tapped request")
            })
            .collect()
    }
}

impl Drop for TapLines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_streams_matching_requests_within_its_rate_and_stops_with_its_client() {
    let dir = TempDir::new("tap");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&web_reviews_store());
    let reviews_app = HttpBackend::start("reviews").await;
    let reviews = control.proxy("reviews", reviews_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    wait_for("reviews reachable", Duration::from_secs(30), || async {
        let mut client = Http1Client::connect(web.outbound).await;
        client
            .get("reviews", "/")
            .await
            .is_ok_and(|a| a.status == 200)
    })
    .await;
    assert_eq!(reviews.metric("weft_taps_open", &[]), 0.0);

    let tap = TapLines::start(&control, &["reviews", "--path", "/books", "--max-rps", "5"]);
    wait_for(
        "the tap open in reviews' proxy",
        Duration::from_secs(20),
        || {
            let open = reviews.metric("weft_taps_open", &[]);
            async move { open == 1.0 }
        },
    )
    .await;
    let mut client = Http1Client::connect(web.outbound).await;
    assert_eq!(client.get("reviews", "/other").await.unwrap().status, 200);
    assert_eq!(client.get("reviews", "/books/1").await.unwrap().status, 200);
    let posted = client
        .send(request("POST", "reviews", "/books/2", &[]))
        .await
        .unwrap();
    assert_eq!(posted.status, 200);
    let seen = tap.next(2);
    let paths: Vec<&str> = seen.iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/books/1", "/books/2"], "{seen:?}");
    let first = &seen[0];
    assert_eq!(first["direction"], "inbound");
    assert_eq!(first["source"], "spiffe://weft.local/ns/default/svc/web");
    assert_eq!(first["destination"], "reviews.default");
    assert_eq!(
        (first["method"].as_str(), first["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert_eq!(first["authz"]["decision"], "allow");
    assert!(first["latencyMs"].as_f64().unwrap() > 0.0);
    assert_eq!(seen[1]["method"], "POST");

    // A burst: at most 5 a second reach the client.
    let burst = Instant::now();
    for i in 0..60 {
        assert_eq!(
            client
                .get("reviews", &format!("/books/b{i}"))
                .await
                .unwrap()
                .status,
            200
        );
    }
    let seconds = burst.elapsed().as_secs() + 1;
    // Past the second the burst ended in, a marker is within the rate again.
    let marker_at = burst.elapsed().as_secs() + 1;
    while burst.elapsed().as_secs() < marker_at {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        client.get("reviews", "/books/marker").await.unwrap().status,
        200
    );
    let mut burst_seen = 0;
    loop {
        let event = &tap.next(1)[0];
        if event["path"] == "/books/marker" {
            break;
        }
        burst_seen += 1;
    }
    assert!(burst_seen >= 1, "nothing of the burst came through");
    assert!(
        burst_seen as u64 <= 5 * (seconds + 1),
        "{burst_seen} events in {seconds} s at 5 a second"
    );

    // The client leaves: the proxies stop tapping.
    drop(tap);
    wait_for(
        "the tap closed in reviews' proxy",
        Duration::from_secs(20),
        || {
            let open = reviews.metric("weft_taps_open", &[]);
            async move { open == 0.0 }
        },
    )
    .await;
}

/// A tmux session the test started, killed when dropped.
struct TmuxSession(String);

impl TmuxSession {
    fn capture(&self) -> String {
        let out = std::process::Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.0])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn alive(&self) -> bool {
        std::process::Command::new("tmux")
            .args(["has-session", "-t", &self.0])
            .status()
            .is_ok_and(|status| status.success())
    }
}

impl Drop for TmuxSession {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .args(["kill-session", "-t", &self.0])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_the_busiest_edge_in_tmux_and_plain_tables_in_a_pipe() {
    assert!(
        std::path::Path::new("/usr/bin/tmux").exists(),
        "tmux is not installed: run ./scripts/test.sh (it installs Debian's `tmux` package)"
    );
    let dir = TempDir::new("top");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&web_reviews_store());
    let reviews_app = HttpBackend::start("reviews").await;
    let _reviews = control.proxy("reviews", reviews_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    wait_for("the edge in the stats", Duration::from_secs(30), || {
        let sent = async {
            let mut client = Http1Client::connect(web.outbound).await;
            client
                .get("reviews", "/")
                .await
                .is_ok_and(|a| a.status == 200)
        };
        let view = stat_json(&control, &["edges"]);
        let seen = row(&view, "edges", "destination", "reviews.default").is_some();
        async move { sent.await && seen }
    })
    .await;

    // Not a terminal: one plain table per refresh.
    let out = control.weft(&["top", "--count", "2", "--every", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("weft top: busiest edges").count(), 2, "{text}");
    assert!(
        text.contains("web.default") && text.contains("reviews.default"),
        "{text}"
    );

    // In tmux: the full-screen table, redrawn in place, and q quits.
    let command = control
        .weft_command(&["top", "--every", "1"])
        .get_args()
        .map(|arg| format!("'{}'", arg.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ");
    let session = TmuxSession(format!("weft-top-{}", std::process::id()));
    let started = std::process::Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session.0,
            "-x",
            "160",
            "-y",
            "30",
        ])
        .arg(format!("'{}' {command}", weft_bin()))
        .status()
        .unwrap();
    assert!(started.success());
    wait_for("the edge on the screen", Duration::from_secs(30), || {
        let screen = session.capture();
        let shown = screen.contains("busiest edges")
            && screen
                .lines()
                .any(|line| line.contains("web.default") && line.contains("reviews.default"));
        async move { shown }
    })
    .await;
    std::process::Command::new("tmux")
        .args(["send-keys", "-t", &session.0, "q"])
        .status()
        .unwrap();
    wait_for("top to quit on q", Duration::from_secs(20), || {
        let alive = session.alive();
        async move { !alive }
    })
    .await;
}

/// gRPC answers 200 and says how the call went in `grpc-status`: a call that failed counts
/// as a failure of the edge, not a success by its HTTP status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_that_fails_with_http_200_counts_as_a_failure() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = TempDir::new("stat-grpc");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&services(&[("web", "http"), ("catalog", "grpc")]));
    let app = grpc_health_app("catalog").await;
    let _catalog = control.proxy("catalog", app).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    let mut grpc = HealthClient::new(grpc_channel(web.outbound, "catalog").await);
    // 6 calls that succeed, 4 that end NOT_FOUND: all of them HTTP 200.
    for service in [
        "catalog", "nope", "catalog", "nope", "catalog", "catalog", "nope", "nope", "catalog",
        "catalog",
    ] {
        let answer = grpc
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await;
        assert_eq!(answer.is_ok(), service == "catalog", "{answer:?}");
    }
    wait_for("the 10 calls in the stats", Duration::from_secs(30), || {
        let view = stat_json(&control, &["edges"]);
        let done = row(&view, "edges", "destination", "catalog.default")
            .is_some_and(|edge| edge["requests"].as_u64() == Some(10));
        async move { done }
    })
    .await;
    let view = stat_json(&control, &["edges"]);
    let edge = row(&view, "edges", "destination", "catalog.default").unwrap();
    assert_eq!(edge["successRate"].as_f64(), Some(0.6), "{edge}");
}
