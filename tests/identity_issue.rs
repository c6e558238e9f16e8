//! Workload certificates issued by the control plane: a proxy with only a join token makes
//! its own key, sends a CSR, and serves mutual TLS with the certificate it gets back.

mod support;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::*;

const SERVICES: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80, protocol: http}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api}
spec:
  ports: [{port: 80, protocol: http}]
"#;

/// `weft token create --service SERVICE [extra]`, written to a file the proxy reads.
fn token_file(control: &ControlPlane, dir: &TempDir, service: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["token", "create", "--service", service];
    args.extend_from_slice(extra);
    let out = control.weft(&args);
    assert!(
        out.status.success(),
        "token create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let path = dir
        .path()
        .join(format!("{service}-{}.token", token_prefix(&token)));
    std::fs::write(&path, token.trim()).unwrap();
    path
}

/// A file name part unique to this token.
fn token_prefix(token: &str) -> String {
    token.trim().chars().take(12).collect()
}

/// Starts a proxy that must fail before listening, and returns its exit status and logs.
fn start_refused(
    service: &str,
    app: std::net::SocketAddr,
    url: &str,
    token: &Path,
) -> (std::process::ExitStatus, String) {
    let args: Vec<String> = [
        "proxy",
        "--service",
        service,
        "--app",
        &app.to_string(),
        "--inbound",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
        "--control-plane",
        url,
        "--token-file",
        token.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let mut process = LoggedChild::spawn(&args);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(Some(status)) = process.child.0.try_wait() {
            // Let the log reader catch up with the last lines.
            std::thread::sleep(Duration::from_millis(100));
            let logs = process.logs.lock().unwrap().join("\n");
            return (status, logs);
        }
        assert!(
            Instant::now() < deadline,
            "the proxy kept running with a refused token; logs:\n{}",
            process.logs.lock().unwrap().join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_issued_certificates_carry_traffic_over_mutual_tls() {
    let dir = TempDir::new("identity-issue");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);

    let api_app = HttpBackend::start("api").await;
    let api_token = token_file(&control, &dir, "api", &[]);
    let api = ProxySpec::mesh("api", api_app.addr, control.grpc_url())
        .arg("--token-file")
        .arg(api_token.to_str().unwrap())
        .start();
    let web_app = HttpBackend::start("web").await;
    let web_token = token_file(&control, &dir, "web", &[]);
    let web = ProxySpec::mesh("web", web_app.addr, control.grpc_url())
        .arg("--token-file")
        .arg(web_token.to_str().unwrap())
        .start();

    for (proxy, service) in [(&api, "api"), (&web, "web")] {
        let (status, body) = admin_get(proxy.admin, "/certs").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("spiffe://weft.local/ns/default/svc/{service}")),
            "{body}"
        );
    }

    // web -> (mTLS) -> api, once api's endpoint has reached web's config.
    let mut client = Http1Client::connect(web.outbound).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut ok = 0;
    while ok < 5 {
        match client.get("api", "/").await {
            Ok(answer) if answer.status == 200 && answer.body == "api" => ok += 1,
            other => {
                let seen = other.map(|a| (a.status, a.body)).map_err(|e| e.to_string());
                assert!(
                    Instant::now() < deadline,
                    "no answer through the mesh: {seen:?}; web logs:\n{}",
                    web.logs.lock().unwrap().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                client = Http1Client::connect(web.outbound).await;
            }
        }
    }
    // The server proxy knows who called, from the certificate the control plane issued.
    let inbound = api.metric(
        "weft_http_requests_total",
        &[
            ("direction", "inbound"),
            ("source", "web.default"),
            ("destination", "api.default"),
            ("status_code", "200"),
        ],
    );
    assert!(inbound >= 5.0, "{}", api.metrics());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_for_another_service_is_refused_and_the_proxy_exits() {
    let dir = TempDir::new("identity-wrong-service");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);
    let app = HttpBackend::start("web").await;
    let api_token = token_file(&control, &dir, "api", &[]);

    let (status, logs) = start_refused("web", app.addr, &control.grpc_url(), &api_token);
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("refused to issue a certificate for service web"),
        "{logs}"
    );
    assert!(
        logs.contains("this join token is for service api"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_is_refused_the_second_time() {
    let dir = TempDir::new("identity-single-use");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);
    let app = HttpBackend::start("web").await;
    let token = token_file(&control, &dir, "web", &["--single-use"]);

    let first = ProxySpec::mesh("web", app.addr, control.grpc_url())
        .arg("--token-file")
        .arg(token.to_str().unwrap())
        .start();
    let (status, body) = admin_get(first.admin, "/certs").unwrap();
    assert_eq!(status, 200, "{body}");

    let (status, logs) = start_refused("web", app.addr, &control.grpc_url(), &token);
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("single-use and has been used already"),
        "{logs}"
    );
}
