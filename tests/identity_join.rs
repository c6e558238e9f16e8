//! End to end: only a proven workload registers. Plain text is refused (unless in
//! development, which `weft check` warns about), a proxy with nothing to prove itself says
//! so and stops, and a port clash does not spend a single-use join token.

mod support;

use std::time::{Duration, Instant};
use support::*;

const SERVICES: &str = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, protocol: http}]\n";

fn listed_proxies(control: &ControlPlane) -> String {
    String::from_utf8_lossy(&control.weft(&["proxies"]).stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_text_proxy_cannot_register() {
    let dir = TempDir::new("join-plaintext");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);
    let app = HttpBackend::start("web").await;
    // Claims to be web, proves nothing.
    let impostor =
        LoggedChild::spawn(&ProxySpec::mesh("web", app.addr, control.plaintext_grpc_url()).args());
    control.wait_for_log("refused a plain-text connection");
    let logs = impostor.logs_once("--dev-plaintext-proxies");
    assert!(logs.contains("--dev-plaintext-proxies"), "{logs}");
    assert!(
        !listed_proxies(&control).contains("web"),
        "{}",
        listed_proxies(&control)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_development_flag_lets_plain_text_in_and_check_warns() {
    let dir = TempDir::new("join-dev");
    let control =
        ControlPlane::start_with(&dir.path().join("data"), None, &["--dev-plaintext-proxies"]);
    control.apply(SERVICES);
    let app = HttpBackend::start("web").await;
    let proxy = ProxySpec::mesh("web", app.addr, control.plaintext_grpc_url()).start();
    proxy.wait_ready();
    let check = control.weft(&["check"]);
    let said = String::from_utf8_lossy(&check.stdout);
    assert!(
        said.contains("--dev-plaintext-proxies") && said.contains("any local process"),
        "{said}"
    );
}

#[test]
fn https_without_a_token_or_certificate_stops_with_the_fix() {
    let dir = TempDir::new("join-no-token");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    let ca = control.ca_file(dir.path());
    let spec = ProxySpec::mesh(
        "web",
        "127.0.0.1:9".parse().unwrap(),
        control.tls_grpc_url(),
    )
    .arg("--control-plane-ca")
    .arg(ca.to_str().unwrap());
    let (status, logs) = spec.run_to_exit();
    assert!(!status.success(), "{logs}");
    assert!(
        logs.contains("--token-file") && logs.contains("weft token create"),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_clash_does_not_spend_a_single_use_token() {
    let dir = TempDir::new("join-clash");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(SERVICES);
    let app = HttpBackend::start("web").await;
    let token = control.join_token("web");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = control
        .proxy_with_token("web", app.addr, &token)
        .arg("--upstream")
        .arg(format!("db={}", taken.local_addr().unwrap()));
    let (status, logs) = clash.run_to_exit();
    assert!(!status.success(), "{logs}");
    assert!(logs.contains("--upstream"), "{logs}");
    // The same single-use token still works, once.
    let proxy = control.proxy_with_token("web", app.addr, &token).start();
    let (status, body) = admin_get(proxy.admin, "/certs").unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("spiffe://weft.local/ns/default/svc/web"),
        "{body}"
    );
    let listed = String::from_utf8_lossy(&control.weft(&["token", "list"]).stdout).into_owned();
    assert!(
        listed.contains("used") && listed.contains("single"),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supplied_ca_of_another_trust_domain_names_every_peer_and_a_mesh_cannot_contradict_it() {
    let dir = TempDir::new("join-trust-domain");
    let pki = dir.path().join("pki");
    let out = run_weft(&[
        "cert",
        "ca",
        "--out",
        pki.to_str().unwrap(),
        "--trust-domain",
        "corp.example",
    ]);
    assert!(out.status.success());
    let control = ControlPlane::start_with(
        &dir.path().join("data"),
        None,
        &[
            "--ca-cert",
            pki.join("ca.pem").to_str().unwrap(),
            "--ca-key",
            pki.join("ca-key.pem").to_str().unwrap(),
        ],
    );
    control.apply(&format!(
        "{SERVICES}---\napiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {{name: api}}\nspec:\n  ports: [{{port: 80, protocol: http}}]\n"
    ));
    let api_app = HttpBackend::start("api").await;
    let _api = control.proxy("api", api_app.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    // No Mesh resource: peers are named in the CA's trust domain, so mTLS between the
    // proxies works.
    let mut client = Http1Client::connect(web.outbound).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match client.get("api", "/").await {
            Ok(answer) if answer.status == 200 && answer.body == "api" => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "web never reached api: {:?}\n{}",
                    other.map(|a| (a.status, a.body)).map_err(|e| e.to_string()),
                    web.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
                client = Http1Client::connect(web.outbound).await;
            }
        }
    }
    let (_, config) = admin_get(web.admin, "/config").unwrap();
    assert!(
        config.contains("spiffe://corp.example/ns/default/svc/api"),
        "{config}"
    );

    // A Mesh that names another trust domain is refused, with how to migrate.
    let out = control.try_apply(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec: {trustDomain: weft.local}\n",
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("differs from the CA's") && said.contains("--ca-cert"),
        "{said}"
    );
}

#[test]
fn a_proxy_pointed_at_the_rest_api_port_is_told_the_right_one() {
    let dir = TempDir::new("join-rest-port");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    let token = control.join_token("web");
    let ca = control.ca_file(dir.path());
    let app = "127.0.0.1:9".parse().unwrap();
    for url in [
        format!("https://{}", control.api),
        format!("http://{}", control.api),
    ] {
        let mut spec = ProxySpec::mesh("web", app, url.clone())
            .arg("--token-file")
            .arg(token.to_str().unwrap());
        if url.starts_with("https") {
            spec = spec.arg("--control-plane-ca").arg(ca.to_str().unwrap());
        }
        let (status, logs) = spec.run_to_exit();
        assert!(!status.success(), "{url}: {logs}");
        assert!(
            logs.contains("this looks like the REST API port")
                && logs.contains(&format!("use --control-plane https://{}", control.grpc)),
            "{url}: {logs}"
        );
    }
    // The token was not spent on the mistake.
    let listed = String::from_utf8_lossy(&control.weft(&["token", "list"]).stdout).into_owned();
    assert!(listed.contains("usable"), "{listed}");
}
