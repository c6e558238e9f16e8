//! A client proxy -> mTLS -> server proxy pair carrying HTTP/1.1 and HTTP/2, with the
//! caller's identity visible in metrics and the access log.

mod support;
use support::*;

struct Pair {
    _dir: TempDir,
    backend: HttpBackend,
    server: Proxy,
    client: Proxy,
}

/// `web` (client) calls `api` (server, in front of an HTTP backend) over mutual TLS.
async fn pair(api_protocol: &str, client_flags: &[&str]) -> Pair {
    let dir = TempDir::new("mesh");
    let certs = Certs::new(dir.path(), &["web", "api"]);
    let backend = HttpBackend::start("api-backend").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("api", api_protocol, &[]),
    );
    let server = ProxySpec::new("api", backend.addr, &config)
        .tls(&certs)
        .start();
    std::fs::write(
        &config,
        mesh_service("api", api_protocol, &[server.inbound]),
    )
    .unwrap();
    let mut spec = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config).tls(&certs);
    for flag in client_flags {
        spec = spec.arg(*flag);
    }
    let client = spec.start();
    Pair {
        _dir: dir,
        backend,
        server,
        client,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_crosses_the_mtls_hop_with_identities() {
    let p = pair("http", &["--access-log"]).await;
    let mut client = Http1Client::connect(p.client.outbound).await;
    for _ in 0..20 {
        let answer = client.get("api", "/").await.unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "api-backend");
    }
    // The app sees HTTP/1.1 with the Host it was addressed by.
    let echo = client.get("api:8080", "/echo").await.unwrap();
    assert!(echo.body.starts_with("GET /echo HTTP/1.1"), "{}", echo.body);
    assert!(echo.body.contains("host: api:8080"), "{}", echo.body);
    assert_eq!(p.backend.count(), 21);

    // The server proxy knows who called, from the client's certificate.
    let inbound = p.server.metric_reaching(
        "weft_http_requests_total",
        &[
            ("direction", "inbound"),
            ("source", "web.default"),
            ("destination", "api.default"),
            ("status_code", "200"),
        ],
        21.0,
    );
    assert_eq!(inbound, 21.0, "{}", p.server.metrics());
    let outbound = p.client.metric_reaching(
        "weft_http_requests_total",
        &[
            ("direction", "outbound"),
            ("source", "web.default"),
            ("destination", "api.default"),
        ],
        21.0,
    );
    assert_eq!(outbound, 21.0);
    assert!(p
        .client
        .metrics()
        .contains("weft_http_request_duration_seconds_bucket"));

    let log = p.client.access_log(21);
    assert_eq!(log.len(), 21, "{log:?}");
    let entry: serde_json::Value = serde_json::from_str(&log[0]).unwrap();
    assert_eq!(entry["direction"], "outbound");
    assert_eq!(entry["destination"], "api.default");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["upstream"], p.server.inbound.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_crosses_the_hop() {
    let p = pair("http2", &[]).await;
    let mut client = Http2Client::connect(p.client.outbound).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(
            async move { c.get("api", "/echo").await.unwrap() },
        ));
    }
    for task in tasks {
        let answer = task.await.unwrap();
        assert_eq!(answer.status, 200);
        // The app speaks HTTP/2 (its port says so), and sees the authority it was called by.
        assert!(
            answer.body.starts_with("GET http://api/echo HTTP/2.0"),
            "{}",
            answer.body
        );
    }
    assert_eq!(client.get("api", "/").await.unwrap().body, "api-backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_refused_clearly() {
    let p = pair("http", &[]).await;
    let mut client = Http1Client::connect(p.client.outbound).await;
    let answer = client.get("nosuch", "/").await.unwrap();
    assert_eq!(answer.status, 404);
    assert!(answer.header("x-weft-error").unwrap().contains("nosuch"));
    assert_eq!(
        p.client
            .metric("weft_rejected_total", &[("reason", "unknown_service")]),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_an_mtls_inbound_is_refused_and_counted() {
    let p = pair("http", &[]).await;
    let mut client = Http1Client::connect(p.server.inbound).await;
    assert!(client.get("api", "/").await.is_err());
    assert_eq!(
        p.server
            .metric("weft_rejected_total", &[("reason", "plaintext")]),
        1.0
    );
    assert_eq!(p.backend.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_the_wrong_identity_is_refused() {
    let dir = TempDir::new("impostor");
    let certs = Certs::new(dir.path(), &["web", "api", "impostor"]);
    let backend = HttpBackend::start("impostor-backend").await;
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("impostor", "http", &[]),
    );
    // The address `api` resolves to is served by a proxy that holds a valid certificate
    // from the same CA, but for another service.
    let impostor = ProxySpec::new("impostor", backend.addr, &config)
        .tls(&certs)
        .start();
    std::fs::write(&config, mesh_service("api", "http", &[impostor.inbound])).unwrap();
    let client = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config)
        .tls(&certs)
        .start();
    let mut c = Http1Client::connect(client.outbound).await;
    let answer = c.get("api", "/").await.unwrap();
    assert_eq!(answer.status, 503);
    let reason = answer.header("x-weft-error").unwrap();
    assert!(
        reason.contains("peer presented spiffe://weft.local/ns/default/svc/impostor, expected spiffe://weft.local/ns/default/svc/api"),
        "{reason}"
    );
    assert_eq!(backend.count(), 0);
}

#[test]
fn a_certificate_for_another_service_is_refused_at_start() {
    let dir = TempDir::new("wrongcert");
    let certs = Certs::new(dir.path(), &["api"]);
    let config = write_config(dir.path(), "mesh.yaml", &plain_service("web", "http", &[]));
    let mut args = vec![
        "proxy",
        "--service",
        "web",
        "--local",
        config.to_str().unwrap(),
    ];
    args.extend([
        "--inbound",
        "127.0.0.1:0",
        "--outbound",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ]);
    let flags = certs.flags("api");
    args.extend(flags.iter().map(String::as_str));
    let out = run_weft(&args);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the certificate is for spiffe://weft.local/ns/default/svc/api"),
        "{stderr}"
    );
    assert!(stderr.contains("--service web"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permissive_mode_serves_plaintext_and_labels_it() {
    let dir = TempDir::new("permissive");
    let certs = Certs::new(dir.path(), &["api"]);
    let backend = HttpBackend::start("api-backend").await;
    let mesh = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\nspec:\n  mtls: {mode: permissive}\n---\n";
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &format!("{mesh}{}", plain_service("api", "http", &[])),
    );
    let server = ProxySpec::new("api", backend.addr, &config)
        .tls(&certs)
        .start();
    let mut plain = Http1Client::connect(server.inbound).await;
    assert_eq!(plain.get("api", "/").await.unwrap().body, "api-backend");
    assert_eq!(
        server.metric(
            "weft_http_requests_total",
            &[("direction", "inbound"), ("source", "plaintext")]
        ),
        1.0
    );
    // Back to strict (the default) and plaintext is refused again.
    std::fs::write(&config, plain_service("api", "http", &[])).unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let mut again = Http1Client::connect(server.inbound).await;
    assert!(again.get("api", "/").await.is_err());
    assert_eq!(
        server.metric("weft_rejected_total", &[("reason", "plaintext")]),
        1.0
    );
}
