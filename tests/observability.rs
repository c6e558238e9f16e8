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
