//! End to end: an operator revokes a workload identity or one certificate, and within
//! seconds peers refuse its handshakes (resumed sessions included) and the control plane its
//! renewals and registrations; restored, it works again.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVICES: &str = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: store}\nspec:\n  ports: [{port: 80, protocol: tcp}]\n---\napiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: 80, protocol: http}]\n";

/// One TCP exchange through `web`'s upstream binding to `store`'s echo app: each is a new
/// mTLS connection between the proxies (resumed from a ticket when it can be).
async fn echoes(through: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect(through).await else {
        return false;
    };
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut back)).await,
        Ok(Ok(_)) if &back == b"ping"
    )
}

/// Waits until `echoes` gives `expected` (config and revocations take a moment to arrive).
async fn until_echo_is(through: SocketAddr, expected: bool, logs: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while echoes(through).await != expected {
        assert!(
            Instant::now() < deadline,
            "the exchange never {}; logs:\n{}",
            if expected { "succeeded" } else { "failed" },
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn weft_ok(control: &ControlPlane, args: &[&str]) -> String {
    let out = control.weft(args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "weft {args:?}: {text}");
    text
}

/// A control plane, `store` (a TCP echo app behind its proxy) and `web`, whose upstream
/// binding reaches store over mutual TLS; the path works when this returns.
struct Mesh {
    control: ControlPlane,
    store: Proxy,
    web: Proxy,
    web_app: HttpBackend,
    _echo: tokio::task::JoinHandle<()>,
    _dir: TempDir,
}

impl Mesh {
    async fn start(tag: &str) -> Mesh {
        let dir = TempDir::new(tag);
        let control = ControlPlane::start(&dir.path().join("data"), None);
        control.apply(SERVICES);
        let (echo, task) = tcp_echo().await;
        let store = control.proxy("store", echo).start();
        let web_app = HttpBackend::start("web").await;
        let web = control
            .proxy("web", web_app.addr)
            .arg("--upstream")
            .arg("store=127.0.0.1:0")
            .start();
        let logs = || format!("web:\n{}\nstore:\n{}", web.logs(), store.logs());
        until_echo_is(web.upstreams[0], true, logs).await;
        Mesh {
            control,
            store,
            web,
            web_app,
            _echo: task,
            _dir: dir,
        }
    }

    /// web's upstream binding for store.
    fn through(&self) -> SocketAddr {
        self.web.upstreams[0]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_identity_is_refused_by_its_peers_and_restored_it_works_again() {
    let mesh = Mesh::start("revocation").await;
    let (control, store, web, through) = (&mesh.control, &mesh.store, &mesh.web, mesh.through());
    let logs = || format!("web:\n{}\nstore:\n{}", web.logs(), store.logs());

    weft_ok(control, &["identity", "revoke", "web"]);
    let listed = weft_ok(control, &["identity", "revoked"]);
    assert!(
        listed.contains("spiffe://weft.local/ns/default/svc/web"),
        "{listed}"
    );
    // store's proxy refuses web's handshakes (the ticket web holds included).
    until_echo_is(through, false, &logs).await;
    // Counted once the handshake is torn down, which can be just after web saw it fail.
    let refused = store.metric_reaching("weft_rejected_total", &[("direction", "inbound")], 1.0);
    assert!(refused >= 1.0, "{}", store.metrics());
    // The control plane ended web's stream and refuses it: it drops out of the fleet.
    let deadline = Instant::now() + Duration::from_secs(15);
    while weft_ok(control, &["proxies"]).contains("svc/web") {
        assert!(
            Instant::now() < deadline,
            "web is still registered:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    control.wait_for_log("refused a TLS connection");

    // Restored, web's own certificate is good again.
    weft_ok(control, &["identity", "restore", "web"]);
    until_echo_is(through, true, &logs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_revoked_certificate_is_refused_and_a_fresh_token_gets_a_new_one() {
    let mesh = Mesh::start("revocation-cert").await;
    let (control, store, web, through) = (&mesh.control, &mesh.store, &mesh.web, mesh.through());
    let logs = || format!("web:\n{}\nstore:\n{}", web.logs(), store.logs());

    // The certificate web presents, as the control plane lists it.
    let fleet: serde_json::Value =
        serde_json::from_str(&weft_ok(control, &["proxies", "--json"])).unwrap();
    let sha256 = fleet["proxies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["service"] == "web")
        .and_then(|p| p["certificate"]["sha256"].as_str())
        .unwrap_or_else(|| panic!("no certificate listed for web: {fleet}"))
        .to_owned();
    weft_ok(control, &["identity", "revoke", "--certificate", &sha256]);
    until_echo_is(through, false, &logs).await;

    // The identity itself is fine: a new proxy for web with a fresh token gets a new
    // certificate and is served.
    let web2 = control
        .proxy("web", mesh.web_app.addr)
        .arg("--upstream")
        .arg("store=127.0.0.1:0")
        .start();
    let logs2 = || format!("web2:\n{}\nstore:\n{}", web2.logs(), store.logs());
    until_echo_is(web2.upstreams[0], true, logs2).await;
}
