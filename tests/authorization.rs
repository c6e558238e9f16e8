//! AuthorizationPolicy enforced by real proxies over mutual TLS: `web` and `admin` call
//! `api` (HTTP) and `store` (opaque TCP). Requests are judged per request (L7), TCP per
//! connection (L4), policy changes reach open connections, and every decision is counted
//! and logged with the policy and rule that made it.

mod support;
use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Mesh {
    dir: TempDir,
    config: PathBuf,
    backend: HttpBackend,
    api: Proxy,
    store: Proxy,
    web: Proxy,
    admin: Proxy,
    _echo: tokio::task::JoinHandle<()>,
}

/// The Services with their proxies as endpoints, then `extra` (policies, a Mesh).
fn mesh_yaml(api: SocketAddr, store: SocketAddr, extra: &str) -> String {
    format!(
        "{}{}{extra}",
        mesh_service("api", "http", &[api]),
        mesh_service("store", "tcp", &[store])
    )
}

impl Mesh {
    async fn start(extra: &str) -> Mesh {
        let dir = TempDir::new("authz");
        let certs = Certs::new(dir.path(), &["api", "store", "web", "admin"]);
        let backend = HttpBackend::start("api-backend").await;
        let (echo, echo_task) = tcp_echo().await;
        let first = format!(
            "{}{}",
            plain_service("api", "http", &[]),
            plain_service("store", "tcp", &[])
        );
        let config = write_config(dir.path(), "mesh.yaml", &first);
        let api = ProxySpec::new("api", backend.addr, &config)
            .tls(&certs)
            .arg("--access-log")
            .start();
        let store = ProxySpec::new("store", echo, &config)
            .tls(&certs)
            .arg("--access-log")
            .start();
        std::fs::write(&config, mesh_yaml(api.inbound, store.inbound, extra)).unwrap();
        let client = |name| {
            ProxySpec::new(name, "127.0.0.1:9".parse().unwrap(), &config)
                .tls(&certs)
                .arg("--upstream")
                .arg("store=127.0.0.1:0")
                .start()
        };
        let (web, admin) = (client("web"), client("admin"));
        let mesh = Mesh {
            config: config.clone(),
            dir,
            backend,
            api,
            store,
            web,
            admin,
            _echo: echo_task,
        };
        // The servers started on the config without policies: wait for this one.
        mesh.reloaded_with(extra).await;
        mesh
    }

    /// Writes the config with `extra` (whole, by a rename, so no proxy reads half of it)
    /// and waits until both servers run it.
    async fn reloaded_with(&self, extra: &str) {
        let yaml = mesh_yaml(self.api.inbound, self.store.inbound, extra);
        let next = write_config(self.dir.path(), "next.yaml", &yaml);
        std::fs::rename(&next, &self.config).unwrap();
        for (server, service) in [(&self.api, "api"), (&self.store, "store")] {
            // The version the proxy reports once it runs this file, computed by the same
            // compiler it uses.
            let (config, _) = weft_model::load_and_compile(&self.config, "default", service)
                .expect("the test's config is valid");
            let expected = format!("version=\"{}\"", config.version);
            server.signal("HUP");
            wait_for("the new config in force", Duration::from_secs(20), || {
                let running = server.metrics().contains(&expected);
                async move { running }
            })
            .await;
        }
    }
}

const API_POLICIES: &str = "apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow}
spec:
  targetRef: {kind: Service, name: api}
  rules:
  - from: [{services: [web]}]
    to: [{methods: [GET], paths: [/public/*]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-deny-debug}
spec:
  targetRef: {kind: Service, name: api}
  action: DENY
  rules:
  - when: [{header: x-debug, values: [\"1\"]}]
---
";

fn decisions(proxy: &Proxy, decision: &str, policy: &str, rule: &str) -> f64 {
    proxy.metric(
        "weft_authz_decisions_total",
        &[("decision", decision), ("policy", policy), ("rule", rule)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_allowed_or_denied_by_policy_and_the_cause_is_named() {
    let mesh = Mesh::start(API_POLICIES).await;
    let mut web = Http1Client::connect(mesh.web.outbound).await;
    let allowed = web.get("api", "/public/a").await.unwrap();
    assert_eq!(
        (allowed.status, allowed.body.as_str()),
        (200, "api-backend")
    );

    let post = web
        .send(request("POST", "api", "/public/a", &[]))
        .await
        .unwrap();
    assert_eq!(post.status, 403, "{}", post.body);
    assert_eq!(post.header("x-weft-denied-by"), Some("default/api-allow"));
    assert_eq!(
        post.body,
        "denied by authorization policy default/api-allow\n"
    );
    let debug = web
        .send(request("GET", "api", "/public/a", &[("x-debug", "1")]))
        .await
        .unwrap();
    assert_eq!(debug.status, 403);
    assert_eq!(
        debug.header("x-weft-denied-by"),
        Some("default/api-deny-debug")
    );

    // Another caller, whatever it asks for.
    let mut admin = Http1Client::connect(mesh.admin.outbound).await;
    assert_eq!(admin.get("api", "/public/a").await.unwrap().status, 403);
    // gRPC is told in its own terms.
    let mut grpc = Http2Client::connect(mesh.admin.outbound).await;
    let call = hyper::Request::builder()
        .method("POST")
        .uri("http://api/shop.Orders/List")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let answer = grpc.send(call).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), Some("7"));
    assert_eq!(answer.header("x-weft-denied-by"), Some("default/api-allow"));

    // Nothing denied reached the app.
    assert_eq!(mesh.backend.count(), 1);
    let api = &mesh.api;
    assert_eq!(decisions(api, "allow", "default/api-allow", "0"), 1.0);
    assert_eq!(decisions(api, "deny", "default/api-allow", "none"), 3.0);
    assert_eq!(decisions(api, "deny", "default/api-deny-debug", "0"), 1.0);

    let log = api.access_log(5);
    let entries: Vec<serde_json::Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let post_entry = entries
        .iter()
        .find(|e| e["method"] == "POST" && e["source"] == "web.default")
        .expect("the POST is logged");
    assert_eq!(post_entry["status"], 403);
    assert_eq!(post_entry["authz_decision"], "deny");
    assert_eq!(post_entry["authz_policy"], "default/api-allow");
    assert_eq!(post_entry["authz_rule"], "none");
    let allowed_entry = entries
        .iter()
        .find(|e| e["status"] == 200)
        .expect("the allowed request is logged");
    assert_eq!(allowed_entry["authz_decision"], "allow");
    assert_eq!(allowed_entry["authz_rule"], "0");
}

async fn echo_once(stream: &mut TcpStream, payload: &[u8]) {
    stream.write_all(payload).await.unwrap();
    let mut back = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("the echo came back")
        .unwrap();
    assert_eq!(back, payload);
}

/// Whether the peer closed `stream` (within 20 s): a read ends with nothing, or an error.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut byte)).await {
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

const STORE_FOR_WEB: &str = "apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: store-allow}
spec:
  targetRef: {kind: Service, name: store}
  rules: [{from: [{services: [web]}]}]
---
";

const STORE_FOR_ADMIN_AND_NO_WEB_ON_API: &str = "apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: store-allow}
spec:
  targetRef: {kind: Service, name: store}
  rules: [{from: [{services: [admin]}]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-no-web}
spec:
  targetRef: {kind: Service, name: api}
  action: DENY
  rules: [{from: [{identities: [\"spiffe://weft.local/ns/default/svc/web*\"]}]}]
---
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_judged_at_l4_and_again_when_policy_changes() {
    let mesh = Mesh::start(STORE_FOR_WEB).await;
    let mut from_web = TcpStream::connect(mesh.web.upstreams[0]).await.unwrap();
    echo_once(&mut from_web, b"hello").await;
    let mut from_admin = TcpStream::connect(mesh.admin.upstreams[0]).await.unwrap();
    // The write may land before the peer closes; the read shows the refusal.
    let _ = from_admin.write_all(b"hello").await;
    assert!(
        closed_by_peer(&mut from_admin).await,
        "admin's connection was not closed"
    );
    assert_eq!(
        decisions(&mesh.store, "allow", "default/store-allow", "0"),
        1.0
    );
    assert_eq!(
        decisions(&mesh.store, "deny", "default/store-allow", "none"),
        1.0
    );
    // A kept-alive HTTP connection through web's proxy, allowed for now (no policy on api),
    // and tunnels (CONNECT) from web and admin to api.
    let mut http = Http1Client::connect(mesh.web.outbound).await;
    assert_eq!(http.get("api", "/").await.unwrap().status, 200);
    let mut web_tunnel = connect_tunnel(mesh.web.outbound, "api:443").await;
    echo_once(&mut web_tunnel, b"through").await;
    let mut admin_tunnel = connect_tunnel(mesh.admin.outbound, "api:443").await;
    echo_once(&mut admin_tunnel, b"through").await;

    mesh.reloaded_with(STORE_FOR_ADMIN_AND_NO_WEB_ON_API).await;
    // web's tunnel is judged again, as its request, and closed; admin's is still allowed.
    assert!(
        closed_by_peer(&mut web_tunnel).await,
        "web's tunnel stayed open"
    );
    echo_once(&mut admin_tunnel, b"still").await;
    assert_eq!(decisions(&mesh.api, "deny", "default/api-no-web", "0"), 1.0);
    // The open TCP connection is no longer allowed: closed, and the denial counted.
    assert!(
        closed_by_peer(&mut from_web).await,
        "web's open connection stayed open"
    );
    assert_eq!(
        decisions(&mesh.store, "deny", "default/store-allow", "none"),
        2.0
    );
    let log = mesh.store.access_log(2);
    assert!(
        log.iter()
            .any(|l| l.contains("authorization no longer allows")),
        "{log:?}"
    );
    // The next request on the kept-alive connection is judged by the new policy.
    let answer = http.get("api", "/").await.unwrap();
    assert_eq!(answer.status, 403);
    assert_eq!(
        answer.header("x-weft-denied-by"),
        Some("default/api-no-web")
    );
    // And admin may now connect to store.
    let mut from_admin = TcpStream::connect(mesh.admin.upstreams[0]).await.unwrap();
    echo_once(&mut from_admin, b"again").await;
}

const DEFAULT_DENY: &str = "apiVersion: weft.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec:
  mtls: {mode: permissive}
  defaultAuthorization: deny
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-allow}
spec:
  targetRef: {kind: Service, name: api}
  rules:
  - from: [{services: [web]}]
  - from: [{unauthenticated: true}]
    to: [{paths: [/health]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-trial}
spec:
  targetRef: {kind: Service, name: api}
  action: DENY
  mode: dry-run
  rules: [{to: [{paths: [/public/*]}]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: api-watch}
spec:
  targetRef: {kind: Service, name: api}
  action: AUDIT
  rules: [{to: [{methods: [POST]}]}]
---
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_deny_dry_run_audit_and_unauthenticated_callers() {
    let mesh = Mesh::start(DEFAULT_DENY).await;
    let mut web = Http1Client::connect(mesh.web.outbound).await;
    // Allowed, though a dry run would have denied it: served, and recorded.
    let trial = web.get("api", "/public/x").await.unwrap();
    assert_eq!(trial.status, 200);
    assert_eq!(
        decisions(&mesh.api, "dry_run_deny", "default/api-trial", "0"),
        1.0
    );
    assert_eq!(decisions(&mesh.api, "allow", "default/api-allow", "0"), 1.0);
    let posted = web
        .send(request("POST", "api", "/orders", &[]))
        .await
        .unwrap();
    assert_eq!(posted.status, 200);
    assert_eq!(decisions(&mesh.api, "audit", "default/api-watch", "0"), 1.0);
    let log = mesh.api.access_log(2);
    assert!(
        log[0].contains("\"authz_decision\":\"dry_run_deny\""),
        "{}",
        log[0]
    );
    assert!(
        log[1].contains("\"authz_decision\":\"audit\""),
        "{}",
        log[1]
    );

    // Plain text, as permissive mode allows: only what names unauthenticated callers.
    let mut plain = Http1Client::connect(mesh.api.inbound).await;
    assert_eq!(plain.get("api", "/health").await.unwrap().status, 200);
    let other = plain.get("api", "/orders").await.unwrap();
    assert_eq!(other.status, 403);
    assert_eq!(decisions(&mesh.api, "allow", "default/api-allow", "1"), 1.0);

    // store has no policy: the mesh default decides, for every caller.
    let mut stream = TcpStream::connect(mesh.web.upstreams[0]).await.unwrap();
    let _ = stream.write_all(b"hello").await;
    assert!(closed_by_peer(&mut stream).await);
    assert_eq!(decisions(&mesh.store, "deny", "mesh", "default"), 1.0);
    assert_eq!(mesh.backend.count(), 3);
}
