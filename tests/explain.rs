//! `weft explain` against the proxies it explains: a control plane, two callers (`web`,
//! `admin`), a routed Service (`api`) in front of two versions, and a TCP Service, each
//! with AuthorizationPolicies. For every case of a table, what `weft explain` says may
//! happen is what the table expects, and what the real proxies then do is one of those.

mod support;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RESOURCES: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: admin}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api-v1}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: api-v2}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: store}
spec: {ports: [{port: 5432, protocol: tcp}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{group: "", kind: Service, name: api}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: api-v2}]
  - matches: [{path: {type: PathPrefix, value: /canary}, headers: [{name: x-canary, value: "yes"}]}]
    backendRefs: [{name: api-v2}]
  - matches: [{method: POST, path: {type: PathPrefix, value: /orders}}]
    backendRefs: [{name: api-v1}]
    timeouts: {request: 5s}
  - matches: [{path: {type: PathPrefix, value: /split}}]
    backendRefs: [{name: api-v1, weight: 50}, {name: api-v2, weight: 50}]
  - matches: [{path: {type: Exact, value: /zero}}]
    backendRefs: [{name: api-v1, weight: 0}]
  - matches: [{path: {type: PathPrefix, value: /missing}}]
    backendRefs: [{name: nosuch}]
  - matches: [{path: {type: PathPrefix, value: /public}}]
    backendRefs: [{name: api-v1}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: v1-callers}
spec:
  targetRef: {kind: Service, name: api-v1}
  rules:
  - from: [{services: [web]}]
  - from: [{services: [admin]}]
    to: [{methods: [GET], paths: [/public/*, /split/*]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: v1-block}
spec:
  targetRef: {kind: Service, name: api-v1}
  action: DENY
  rules: [{when: [{header: x-block, values: ["1"]}]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: v2-callers}
spec:
  targetRef: {kind: Service, name: api-v2}
  rules:
  - from: [{identities: ["spiffe://weft.local/ns/default/svc/admin"]}]
  - from: [{services: [web]}]
    to: [{paths: [/v2/public/*]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: store-callers}
spec:
  targetRef: {kind: Service, name: store}
  rules: [{from: [{services: [admin]}]}]
"#;

struct Mesh {
    _dir: TempDir,
    control: ControlPlane,
    web: Proxy,
    admin: Proxy,
    _servers: Vec<Proxy>,
    _apps: Vec<HttpBackend>,
    _echo: tokio::task::JoinHandle<()>,
}

async fn mesh() -> Mesh {
    let dir = TempDir::new("explain");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(RESOURCES);
    let v1 = HttpBackend::start("api-v1").await;
    let v2 = HttpBackend::start("api-v2").await;
    let (echo, echo_task) = tcp_echo().await;
    let caller_app = HttpBackend::start("caller").await;
    let servers = vec![
        control.proxy("api-v1", v1.addr).start(),
        control.proxy("api-v2", v2.addr).start(),
        control.proxy("store", echo).start(),
    ];
    let caller = |name| {
        control
            .proxy(name, caller_app.addr)
            .arg("--upstream")
            .arg("store=127.0.0.1:0")
            .start()
    };
    let (web, admin) = (caller("web"), caller("admin"));
    let mesh = Mesh {
        _dir: dir,
        control,
        web,
        admin,
        _servers: servers,
        _apps: vec![v1, v2, caller_app],
        _echo: echo_task,
    };
    // Every endpoint registered and reachable from both callers.
    for (caller, path) in [(&mesh.web, "/public/a"), (&mesh.admin, "/v2/x")] {
        wait_for(
            "the mesh to carry traffic",
            Duration::from_secs(30),
            || async {
                let mut client = Http1Client::connect(caller.outbound).await;
                client
                    .get("api", path)
                    .await
                    .is_ok_and(|answer| answer.status == 200)
            },
        )
        .await;
    }
    wait_for(
        "store to take connections",
        Duration::from_secs(30),
        || async { tcp_outcome(mesh.admin.upstreams[0]).await == "200 store" },
    )
    .await;
    mesh
}

/// A case: who calls which host with what, and every outcome it may have.
struct Case {
    from: &'static str,
    to: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    /// `200 <backend>`, `403 <policy>`, `404` or `500`.
    expected: &'static [&'static str],
}

const fn case(
    from: &'static str,
    to: &'static str,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    expected: &'static [&'static str],
) -> Case {
    Case {
        from,
        to,
        method,
        path,
        headers,
        expected,
    }
}

const V1: &[&str] = &["200 api-v1"];
const V2: &[&str] = &["200 api-v2"];
const NOT_FOUND: &[&str] = &["404"];
const V1_DENIES: &[&str] = &["403 default/v1-callers"];
const V2_DENIES: &[&str] = &["403 default/v2-callers"];
const BLOCKED: &[&str] = &["403 default/v1-block"];

#[rustfmt::skip]
const HTTP_CASES: &[Case] = &[
    case("web", "api", "GET", "/public/a", &[], V1),
    case("admin", "api", "GET", "/public/a", &[], V1),
    case("admin", "api", "POST", "/public/a", &[], V1_DENIES),
    case("web", "api", "POST", "/public/a", &[], V1),
    case("web", "api", "PUT", "/public/a", &[], V1),
    case("web", "api", "GET", "/public/a", &[("x-block", "1")], BLOCKED),
    case("admin", "api", "GET", "/public/a", &[("x-block", "1")], BLOCKED),
    case("admin", "api", "GET", "/public/a", &[("x-block", "0")], V1),
    case("web", "api", "GET", "/public", &[], V1),
    case("web", "api", "GET", "/publicity", &[], NOT_FOUND),
    case("web", "api", "GET", "/v2/public/x", &[], V2),
    case("web", "api", "GET", "/v2/private", &[], V2_DENIES),
    case("web", "api", "GET", "/v2", &[], V2_DENIES),
    case("admin", "api", "GET", "/v2", &[], V2),
    case("admin", "api", "GET", "/v2/private", &[], V2),
    case("admin", "api", "DELETE", "/v2/x", &[], V2),
    case("web", "api", "GET", "/canary/x", &[("x-canary", "yes")], V2_DENIES),
    case("admin", "api", "GET", "/canary/x", &[("x-canary", "yes")], V2),
    case("admin", "api", "GET", "/canary/x", &[], NOT_FOUND),
    case("web", "api", "GET", "/canary/x", &[("x-canary", "no")], NOT_FOUND),
    case("web", "api", "POST", "/orders/1", &[], V1),
    case("admin", "api", "POST", "/orders/1", &[], V1_DENIES),
    case("web", "api", "GET", "/orders/1", &[], NOT_FOUND),
    case("admin", "api", "GET", "/split/a", &[], &["200 api-v1", "200 api-v2"]),
    case("web", "api", "GET", "/split/a", &[], &["200 api-v1", "403 default/v2-callers"]),
    case("admin", "api", "POST", "/split/a", &[], &["403 default/v1-callers", "200 api-v2"]),
    case("admin", "api", "GET", "/zero", &[], &["500"]),
    case("web", "api", "GET", "/missing/x", &[], &["500"]),
    case("web", "api", "GET", "/nothing", &[], NOT_FOUND),
    case("web", "nosuch", "GET", "/", &[], NOT_FOUND),
    case("web", "api.default", "GET", "/public/a", &[], V1),
    case("web", "api.default.svc.cluster.local:80", "GET", "/public/a", &[], V1),
    case("web", "API", "GET", "/public/a", &[], V1),
    case("web", "api-v1", "GET", "/anything", &[], V1),
    case("admin", "api-v1", "GET", "/anything", &[], V1_DENIES),
    case("admin", "api-v2", "GET", "/x", &[], V2),
    case("web", "api-v2", "GET", "/x", &[], V2_DENIES),
];

/// What `weft explain` says may happen: one outcome per backend the route may pick.
fn explained(
    mesh: &Mesh,
    from: &str,
    to: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> BTreeSet<String> {
    let mut args = vec![
        "explain", "--from", from, "--to", to, method, path, "-o", "json",
    ];
    let headers: Vec<String> = headers.iter().map(|(n, v)| format!("{n}:{v}")).collect();
    for header in &headers {
        args.extend(["--header", header]);
    }
    let out = mesh.control.weft(&args);
    assert!(
        out.status.success(),
        "weft explain: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcome = answer["outcome"].as_str().unwrap();
    if outcome.starts_with("404") {
        return BTreeSet::from(["404".to_owned()]);
    }
    if outcome.starts_with("500") {
        return BTreeSet::from(["500".to_owned()]);
    }
    answer["backends"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|b| b["weight"].as_u64() > Some(0))
        .map(|b| {
            let name = b["service"]
                .as_str()
                .unwrap()
                .trim_start_matches("default/");
            let authz = &b["authorization"];
            if b["missing"] == true {
                "500".to_owned()
            } else if authz["allowed"] == true {
                format!("200 {name}")
            } else {
                format!("403 {}", authz["policy"].as_str().unwrap())
            }
        })
        .collect()
}

/// What the real proxies did with one request.
fn observed(answer: &Answer) -> String {
    match answer.status {
        200 => format!("200 {}", answer.body),
        403 => format!("403 {}", answer.header("x-weft-denied-by").unwrap_or("?")),
        other => other.to_string(),
    }
}

/// A TCP connection through `binding`: `200 store` if the echo comes back, `403` if the
/// connection is closed without it.
async fn tcp_outcome(binding: SocketAddr) -> String {
    let Ok(mut stream) = TcpStream::connect(binding).await else {
        return "no connection".to_owned();
    };
    let _ = stream.write_all(b"ping").await;
    let mut back = [0u8; 4];
    match tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back)).await {
        Ok(Ok(_)) if &back == b"ping" => "200 store".to_owned(),
        Ok(_) => "403".to_owned(),
        Err(_) => "timed out".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_agrees_with_the_proxies_on_every_case() {
    let mesh = mesh().await;
    assert!(HTTP_CASES.len() >= 30);
    for case in HTTP_CASES {
        let what = format!(
            "{} -> {} {} {} {:?}",
            case.from, case.to, case.method, case.path, case.headers
        );
        let expected: BTreeSet<String> = case.expected.iter().map(|s| s.to_string()).collect();
        let said = explained(
            &mesh,
            case.from,
            case.to,
            case.method,
            case.path,
            case.headers,
        );
        assert_eq!(said, expected, "explain, for {what}");
        let caller = if case.from == "web" {
            &mesh.web
        } else {
            &mesh.admin
        };
        let mut client = Http1Client::connect(caller.outbound).await;
        // A split may go either way: ask until each side it may take has been seen.
        let mut seen = BTreeSet::new();
        for _ in 0..if said.len() > 1 { 60 } else { 1 } {
            let answer = client
                .send(request(case.method, case.to, case.path, case.headers))
                .await
                .unwrap();
            let did = observed(&answer);
            assert!(
                said.contains(&did),
                "{what}: explain said {said:?}, the proxies did {did:?} ({})",
                answer.body
            );
            seen.insert(did);
        }
        // At 50/50, missing a side in 60 tries has odds of 2^-59.
        assert_eq!(seen, said, "{what}: every outcome explain names happens");
    }
    // TCP: judged per connection, explained as such.
    for (from, caller, expected) in [
        ("web", &mesh.web, "403 default/store-callers"),
        ("admin", &mesh.admin, "200 store"),
    ] {
        let said = explained(&mesh, from, "store", "GET", "/", &[]);
        assert_eq!(
            said,
            BTreeSet::from([expected.to_owned()]),
            "explain, {from} -> store"
        );
        // A refused connection is just closed: it names no policy.
        let refused = expected.starts_with("403");
        let expected = if refused { "403" } else { expected };
        assert_eq!(
            tcp_outcome(caller.upstreams[0]).await,
            expected,
            "{from} -> store"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_tells_the_whole_path_in_text() {
    let mesh = mesh().await;
    let out = mesh.control.weft(&[
        "explain", "--from", "admin", "--to", "api", "POST", "/split/a",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "admin.default (spiffe://weft.local/ns/default/svc/admin) -> api: POST /split/a",
        "outcome: allowed, but denied on some backends",
        "no match  default/api/",
        "match     default/api/",
        "backend default/api-v1: weight 50 (50 %)",
        "authorization (L7): DENIED by default/v1-callers rule none",
        "ALLOW default/v1-callers: no rule of 2 matches",
        "DENY default/v1-block: no rule of 1 matches",
        "backend default/api-v2: weight 50 (50 %)",
        "authorization (L7): allowed by default/v2-callers rule 0",
        "in rotation",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    // Bad questions get clear answers.
    let out = mesh
        .control
        .weft(&["explain", "--from", "web", "--to", "api", "GET", "nopath"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with '/'"));
}
