//! Workload certificates issued by the control plane: a proxy with only a join token makes
//! its own key, sends a CSR, and serves mutual TLS with the certificate it gets back.

mod support;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

/// Waits until `ok` requests in a row from `web` reach api through the mesh.
async fn through_the_mesh(web: &Proxy, ok: usize) -> Http1Client {
    let mut client = Http1Client::connect(web.outbound).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut answered = 0;
    while answered < ok {
        match client.get("api", "/").await {
            Ok(answer) if answer.status == 200 && answer.body == "api" => answered += 1,
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
    client
}

/// The `not_after` of the proxy's current certificate, as `/certs` shows it.
fn cert_expiry(proxy: &Proxy) -> String {
    let (status, body) = admin_get(proxy.admin, "/certs").unwrap();
    assert_eq!(status, 200, "{body}");
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    certs["not_after"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_certificates_renew_under_load_with_zero_failures() {
    let dir = TempDir::new("identity-renew");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&format!(
        "{SERVICES}---\napiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\n\
         spec: {{certificateTTL: 4s}}\n"
    ));
    let api_app = HttpBackend::start("api").await;
    let api = control.proxy("api", api_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    through_the_mesh(&web, 3).await;
    let first = (cert_expiry(&web), cert_expiry(&api));

    // Four-second certificates renew every two seconds or so; ten seconds of steady load
    // outlive the first certificates twice over.
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(web.outbound, "api", stop.clone());
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "{failed} of {done} requests failed during renewals"
    );
    assert!(done > 100, "only {done} requests");

    for (proxy, before) in [(&web, &first.0), (&api, &first.1)] {
        let renewed = proxy.metric("weft_certificate_renewals_total", &[("result", "ok")]);
        assert!(renewed >= 3.0, "{renewed} renewals:\n{}", proxy.metrics());
        assert!(
            cert_expiry(proxy) > *before,
            "the certificate in force changed"
        );
        let expiry = proxy.metric("weft_certificate_expiry_timestamp_seconds", &[]);
        assert!(expiry > 0.0, "{}", proxy.metrics());
    }
    // A proxy joining now makes new connections: api answers with a renewed certificate
    // (its first has long expired) and accepts the newcomer's.
    let late = control.proxy("web", web_app.addr).start();
    through_the_mesh(&late, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_with_issued_certificates_carry_traffic_over_mutual_tls() {
    let dir = TempDir::new("identity-issue");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);

    let api_app = HttpBackend::start("api").await;
    let api = control.proxy("api", api_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();

    for (proxy, service) in [(&api, "api"), (&web, "web")] {
        let (status, body) = admin_get(proxy.admin, "/certs").unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(
            body.contains(&format!("spiffe://weft.local/ns/default/svc/{service}")),
            "{body}"
        );
    }

    // web -> (mTLS) -> api, once api's endpoint has reached web's config.
    through_the_mesh(&web, 5).await;
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
    let api_token = control.join_token("api");

    let (status, logs) = control
        .proxy_with_token("web", app.addr, &api_token)
        .run_to_exit();
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
    let token = control.join_token("web");

    let first = control.proxy_with_token("web", app.addr, &token).start();
    let (status, body) = admin_get(first.admin, "/certs").unwrap();
    assert_eq!(status, 200, "{body}");

    let (status, logs) = control
        .proxy_with_token("web", app.addr, &token)
        .run_to_exit();
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("single-use and has been used already"),
        "{logs}"
    );
}

/// `GET /api/v1/ca`.
fn ca_view(control: &ControlPlane) -> serde_json::Value {
    let (status, body) = control.api_call("GET", "/api/v1/ca", "");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The sha256 of each root a proxy trusts, as `/certs` shows them.
fn trusted_roots(proxy: &Proxy) -> Vec<String> {
    let (_, body) = admin_get(proxy.admin, "/certs").unwrap();
    let certs: serde_json::Value = serde_json::from_str(&body).unwrap();
    certs["trust_bundle"]
        .as_array()
        .unwrap()
        .iter()
        .map(|root| root["sha256"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_rotation_under_load_drops_nothing_and_retires_the_old_root() {
    let dir = TempDir::new("identity-rotate");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);
    let old_root = ca_view(&control)["roots"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let api_app = HttpBackend::start("api").await;
    let api = control.proxy("api", api_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    through_the_mesh(&web, 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(web.outbound, "api", stop.clone());
    let out = control.weft(&["ca", "rotate"]);
    assert!(
        out.status.success(),
        "weft ca rotate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rotating = ca_view(&control);
    assert_eq!(rotating["rotating"], true, "{rotating}");
    let new_root = rotating["roots"][1]["sha256"].as_str().unwrap().to_owned();
    assert_ne!(new_root, old_root);
    // A second rotation waits for the first.
    let again = control.weft(&["ca", "rotate"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already in progress"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    // Proxies renew under the new root at once; the old root is retired once both have.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let view = ca_view(&control);
        if view["rotating"] == false {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old root was never retired: {view}\ncheck:\n{}",
            String::from_utf8_lossy(&control.weft(&["check"]).stdout)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let traffic run on the new root alone for a while.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "{failed} of {done} requests failed during the rotation"
    );
    assert!(done > 100, "only {done} requests");

    let roots = ca_view(&control)["roots"].clone();
    assert_eq!(roots.as_array().unwrap().len(), 1, "{roots}");
    assert_eq!(roots[0]["sha256"], new_root.as_str());
    for proxy in [&web, &api] {
        assert_eq!(trusted_roots(proxy), std::slice::from_ref(&new_root));
    }
    let listed = String::from_utf8_lossy(&control.weft(&["proxies"]).stdout).to_string();
    assert!(
        listed.contains("spiffe://weft.local/ns/default/svc/api"),
        "{listed}"
    );
    // A proxy joining now gets a certificate from the new root and works with the others.
    let late = control.proxy("web", web_app.addr).start();
    through_the_mesh(&late, 3).await;
    assert_eq!(trusted_roots(&late), [new_root]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_reach_the_control_plane_over_mutual_tls() {
    let dir = TempDir::new("identity-cp-tls");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);
    let api_app = HttpBackend::start("api").await;
    let api = control.proxy("api", api_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    // Config (and api's endpoint) reached web over the TLS stream, and traffic flows.
    through_the_mesh(&web, 3).await;
    // Each registered with the certificate it was issued (single-use tokens, spent on it);
    // `weft get proxies` lists identities and expiries.
    let listed = String::from_utf8_lossy(&control.weft(&["get", "proxies"]).stdout).to_string();
    assert!(listed.contains("CERT EXPIRES"), "{listed}");
    for service in ["api", "web"] {
        assert!(
            listed.contains(&format!("spiffe://weft.local/ns/default/svc/{service}")),
            "{listed}"
        );
    }
    drop(api);

    // Without the control plane's roots, a proxy says what to pass and stops.
    let token = control.join_token("web");
    let (status, logs) = ProxySpec::mesh("web", web_app.addr, control.tls_grpc_url())
        .arg("--token-file")
        .arg(token.to_str().unwrap())
        .run_to_exit();
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("--control-plane-ca"), "{logs}");

    // Roots of another CA: the control plane is not trusted, so nothing is sent to it.
    let other = dir.path().join("other");
    let out = run_weft(&["cert", "ca", "--out", other.to_str().unwrap()]);
    assert!(out.status.success());
    let impostor_check = ProxySpec::mesh("web", web_app.addr, control.tls_grpc_url())
        .arg("--control-plane-ca")
        .arg(other.join("ca.pem").to_str().unwrap())
        .arg("--token-file")
        .arg(token.to_str().unwrap());
    let mut process = LoggedChild::spawn(&impostor_check.args());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = process.logs.lock().unwrap().join("\n");
        if logs.contains("cannot get a certificate from the control plane yet") {
            assert!(logs.contains("invalid peer certificate"), "{logs}");
            break;
        }
        assert!(Instant::now() < deadline, "no refusal logged:\n{logs}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = process.child.0.kill();
}
