//! The proxy's metrics read by a real Prometheus server, the way an operator runs it.
//! `scripts/test.sh` installs Prometheus from Debian's packages.

mod support;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn prometheus_bin() -> &'static str {
    let path = "/usr/bin/prometheus";
    assert!(
        std::path::Path::new(path).exists(),
        "Prometheus is not installed: run ./scripts/test.sh (it installs Debian's `prometheus` package)"
    );
    path
}

/// Percent-encodes a PromQL query for a URL.
fn encode(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single value of an instant query, once Prometheus has one.
fn query(prometheus: SocketAddr, promql: &str) -> Option<f64> {
    let (status, body) = admin_get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(promql)),
    )?;
    if status != 200 {
        return None;
    }
    let json: serde_json::Value = serde_json::from_str(&body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_golden_metrics() {
    let prometheus = prometheus_bin();
    let dir = TempDir::new("prometheus");
    let backend = HttpBackend::start("app").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("app", "http", &[backend.addr]),
    );
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();
    let mut client = Http1Client::connect(proxy.outbound).await;
    for _ in 0..25 {
        assert_eq!(client.get("app", "/").await.unwrap().status, 200);
    }
    assert_eq!(client.get("app", "/status/503").await.unwrap().status, 503);

    let scrape = dir.path().join("prometheus.yml");
    std::fs::write(
        &scrape,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: weft\n    static_configs:\n      - targets: ['{}']\n",
            proxy.admin
        ),
    )
    .unwrap();
    // Prometheus cannot report a port it chose itself, so take one from the OS first.
    let web = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Command::new(prometheus)
        .arg(format!("--config.file={}", scrape.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let _server = ChildGuard(server);

    let ok = r#"sum(weft_http_requests_total{direction="outbound",destination="app.default",status_code="200"})"#;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while Instant::now() < deadline {
        seen = query(web, ok);
        if seen == Some(25.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        seen,
        Some(25.0),
        "Prometheus never saw the 25 successful requests"
    );
    let errors = r#"sum(weft_http_requests_total{status_code="503"})"#;
    assert_eq!(query(web, errors), Some(1.0));
    let latency = r#"sum(weft_http_request_duration_seconds_count{route="default/app/default"})"#;
    assert_eq!(query(web, latency), Some(26.0));
    let version = r#"max(weft_config_version)"#;
    assert_eq!(query(web, version), Some(1.0));
    let up = r#"up{job="weft"}"#;
    assert_eq!(
        query(web, up),
        Some(1.0),
        "the scrape itself must be healthy"
    );
}

/// What an instant query answers (its `result` list), once Prometheus has data for it.
fn query_result(prometheus: SocketAddr, promql: &str) -> Vec<serde_json::Value> {
    let Some((200, body)) = admin_get(
        prometheus,
        &format!("/api/v1/query?query={}", encode(promql)),
    ) else {
        return Vec::new();
    };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    json["data"]["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `promtool check metrics` on `text`: its complaints, or nothing.
fn promtool_complaints(text: &str) -> Option<String> {
    use std::io::Write;
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool comes with Debian's prometheus package (scripts/test.sh)");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    (!out.status.success()).then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// web and reviews, their proxies registering themselves; web calls reviews by a route.
fn mesh() -> String {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews}
spec:
  parentRefs: [{group: \"\", kind: Service, name: reviews}]
  rules:
  - backendRefs: [{group: \"\", kind: Service, name: reviews}]
";
    plain_service("web", "http", &[]) + &plain_service("reviews", "http", &[]) + route
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_finds_the_mesh_through_the_control_plane_and_every_dashboard_query_has_data() {
    let prometheus = prometheus_bin();
    let dir = TempDir::new("prometheus-mesh");
    let targets = dir.path().join("weft-targets.json");
    let control = ControlPlane::start_with(
        &dir.path().join("data"),
        None,
        &["--prometheus-sd-file", targets.to_str().unwrap()],
    );
    control.apply(&mesh());
    let reviews_app = HttpBackend::start("reviews").await;
    let reviews = control.proxy("reviews", reviews_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    // Traffic all along: rates need fresh samples.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = paced_load(
        web.outbound,
        "reviews",
        "/",
        Duration::from_millis(50),
        stop.clone(),
    );

    // Both formats on every /metrics, and promtool happy with the text one.
    let token = format!("Bearer {}", control.token);
    for (what, addr, path, auth) in [
        ("a proxy", reviews.admin, "/metrics", None),
        (
            "the control plane",
            control.api,
            "/metrics",
            Some(token.as_str()),
        ),
    ] {
        let mut headers = vec![];
        if let Some(auth) = auth {
            headers.push(("Authorization", auth));
        }
        let (status, text) = http_exchange(addr, "GET", path, &headers, b"").unwrap();
        assert_eq!(status, 200, "{what}: {text}");
        assert!(
            !text.contains("# EOF"),
            "{what} answers 0.0.4 text by default"
        );
        assert_eq!(promtool_complaints(&text), None, "{what}:\n{text}");
        headers.push((
            "Accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        ));
        let (_, open) = http_exchange(addr, "GET", path, &headers, b"").unwrap();
        assert!(open.trim_end().ends_with("# EOF"), "{what}: {open}");
    }

    // The control plane lists itself and both proxies.
    wait_for("three targets listed", Duration::from_secs(30), || {
        let listed: serde_json::Value = std::fs::read_to_string(&targets)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default();
        let count = listed.as_array().map_or(0, Vec::len);
        async move { count == 3 }
    })
    .await;
    let made = control.weft(&[
        "api-token",
        "create",
        "--name",
        "prometheus",
        "--role",
        "read-only",
    ]);
    assert!(made.status.success());
    std::fs::write(dir.path().join("weft-token"), &made.stdout).unwrap();
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let shipped = std::fs::read_to_string(format!("{deploy}/prometheus.yml")).unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, shipped.replace("15s", "1s")).unwrap();
    let web_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let server = Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web_addr}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting prometheus");
    let _server = ChildGuard(server);
    wait_for("all three targets up", Duration::from_secs(60), || {
        let up = query(web_addr, "sum(up)");
        async move { up == Some(3.0) }
    })
    .await;

    // Every query of every panel of every dashboard, with the variables set.
    let reviews_admin = reviews.admin.to_string();
    let mut checked = 0;
    for entry in std::fs::read_dir(format!("{deploy}/grafana")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "json") {
            continue;
        }
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "30s")
                    .replace("$service", "reviews.default")
                    .replace("$instance", &reviews_admin);
                let what = format!("{} / {}: {expr}", path.display(), panel["title"]);
                wait_for(&what, Duration::from_secs(60), || {
                    let answered = !query_result(web_addr, &expr).is_empty();
                    async move { answered }
                })
                .await;
                checked += 1;
            }
        }
    }
    assert!(checked >= 20, "only {checked} queries in the dashboards");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    load.await.unwrap();
}
