//! Weft as a mesh: proxies register with `weft control`, get their configuration pushed
//! live, and keep serving when the control plane goes away.

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
metadata: {name: reviews}
spec:
  ports: [{port: 80, protocol: http}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: reviews-v1}
spec:
  ports: [{port: 80, protocol: http}]
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: reviews-v2}
spec:
  ports: [{port: 80, protocol: http}]
"#;

fn split(v1: u32, v2: u32) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: reviews}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: reviews}}]\n  rules:\n    - backendRefs:\n        - {{group: \"\", kind: Service, name: reviews-v1, weight: {v1}}}\n        - {{group: \"\", kind: Service, name: reviews-v2, weight: {v2}}}\n"
    )
}

struct Mesh {
    dir: TempDir,
    control: ControlPlane,
    v1: HttpBackend,
    v2: HttpBackend,
    v1_proxy: Proxy,
    _v2_proxy: Proxy,
    web: Proxy,
    _web_app: HttpBackend,
}

async fn mesh() -> Mesh {
    let dir = TempDir::new("mesh-mode");
    let control = ControlPlane::start(&dir.path().join("data"), None);
    control.apply(&format!("{SERVICES}---\n{}", split(100, 0)));
    let v1 = HttpBackend::start("reviews-v1").await;
    let v2 = HttpBackend::start("reviews-v2").await;
    let v1_proxy = control.proxy("reviews-v1", v1.addr).start();
    let v2_proxy = control.proxy("reviews-v2", v2.addr).start();
    let web_app = HttpBackend::start("web").await;
    let web = control.proxy("web", web_app.addr).start();
    let mesh = Mesh {
        dir,
        control,
        v1,
        v2,
        v1_proxy,
        _v2_proxy: v2_proxy,
        web,
        _web_app: web_app,
    };
    // Both versions registered and reachable before a test starts.
    mesh.apply_and_wait(50, 50).await;
    mesh
}

impl Mesh {
    /// Applies a split and waits until traffic shows both sides of it as expected.
    async fn apply_and_wait(&self, v1: u32, v2: u32) {
        self.control.apply(&split(v1, v2));
        let mut client = Http1Client::connect(self.web.outbound).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut seen = (0, 0);
            for _ in 0..40 {
                match client.get("reviews", "/").await.map(|a| a.body) {
                    Ok(b) if b == "reviews-v1" => seen.0 += 1,
                    Ok(b) if b == "reviews-v2" => seen.1 += 1,
                    _ => {}
                }
            }
            let ok = (v1 == 0) == (seen.0 == 0) && (v2 == 0) == (seen.1 == 0);
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "split {v1}/{v2} never showed in traffic: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_splits_reach_traffic_under_load_with_zero_failures() {
    let m = mesh().await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(m.web.outbound, "reviews", stop.clone());
    for (v1, v2) in [(100, 0), (0, 100), (90, 10), (100, 0)] {
        m.apply_and_wait(v1, v2).await;
    }
    // The last split is 100/0: v2 gets nothing more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let v2_before = m.v2.count();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = load.await.unwrap();
    assert_eq!(failed, 0, "of {done} requests");
    assert!(done > 200, "{done}");
    assert_eq!(m.v2.count(), v2_before);

    // What the proxies run is visible: every proxy in sync with the latest config.
    let proxies = m.control.weft(&["proxies"]);
    let text = String::from_utf8_lossy(&proxies.stdout);
    assert!(proxies.status.success(), "{text}");
    for service in ["web", "reviews-v1", "reviews-v2"] {
        assert!(text.contains(service), "{text}");
    }
    let route = m
        .control
        .weft(&["get", "httproute", "reviews", "-o", "json"]);
    let route: serde_json::Value = serde_json::from_slice(&route.stdout).unwrap();
    assert_eq!(route["status"]["proxies"], 3, "{route}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_app_leaves_rotation_and_returns() {
    let mut m = mesh().await;
    m.apply_and_wait(50, 50).await;
    let v2_addr = m.v2.addr;
    drop(std::mem::replace(
        &mut m.v2,
        HttpBackend::start("placeholder").await,
    ));
    // Its proxy notices (health check) and the control plane takes it out of rotation.
    let mut client = Http1Client::connect(m.web.outbound).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut all_ok = true;
        for _ in 0..50 {
            all_ok &= client
                .get("reviews", "/")
                .await
                .is_ok_and(|a| a.status == 200);
        }
        if all_ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dead endpoint never left rotation"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Back on the same address: it returns to rotation.
    m.v2 = HttpBackend::start_at("reviews-v2", v2_addr).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let answer = client.get("reviews", "/").await.unwrap();
        if answer.body == "reviews-v2" {
            break;
        }
        assert!(Instant::now() < deadline, "the endpoint never came back");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxies_ride_out_a_control_plane_crash_and_resync() {
    let m = mesh().await;
    let Mesh {
        dir,
        control,
        v1: _v1,
        v2,
        v1_proxy: _v1_proxy,
        _v2_proxy,
        web,
        _web_app,
    } = m;
    let grpc = control.grpc;
    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(web.outbound, "reviews", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    control.kill9();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let (done, failed) = load.await.unwrap();
    assert_eq!(
        failed, 0,
        "of {done} requests while the control plane was down"
    );
    assert!(done > 100);

    // Back on the same address and data: proxies reconnect, and new changes reach them.
    let control = ControlPlane::start(&dir.path().join("data"), Some(grpc));
    control.apply(&split(0, 100));
    let mut client = Http1Client::connect(web.outbound).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let before = v2.count();
    loop {
        let answer = client.get("reviews", "/").await.unwrap();
        if answer.body == "reviews-v2" && v2.count() > before + 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "proxies never resynced after the restart"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_gives_a_verdict_and_explains_problems() {
    let mut m = mesh().await;
    let out = m.control.weft(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 proxies connected, 3 in sync, 3 healthy"),
        "{text}"
    );
    assert!(text.contains("all good"), "{text}");

    // The app behind reviews-v2 dies: check fails, names it, and says what to do.
    drop(std::mem::replace(
        &mut m.v2,
        HttpBackend::start("placeholder").await,
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        let out = m.control.weft(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "check never noticed the dead app:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(text.contains("reviews-v2.default"), "{text}");
    assert!(text.contains("fails its health check"), "{text}");
    assert!(text.contains("hint:"), "{text}");
    let proxies = m.control.weft(&["proxies"]);
    let table = String::from_utf8_lossy(&proxies.stdout);
    let v2_row = table
        .lines()
        .find(|l| l.starts_with("reviews-v2"))
        .unwrap_or_default();
    assert!(
        v2_row.contains(" no "),
        "reviews-v2 shows as unhealthy: {table}"
    );
    // One page on the Service: its instance out of rotation, and the route sending to it.
    let out = m.control.weft(&["describe", "svc", "reviews-v2"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{page}");
    assert!(page.contains("Service default/reviews-v2"), "{page}");
    assert!(
        page.contains("Instances (1):") && page.contains("out of rotation"),
        "{page}"
    );
    assert!(
        page.contains("HTTPRoute default/reviews: sends to it"),
        "{page}"
    );
    let out = m.control.weft(&["describe", "service", "reviews"]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.contains("HTTPRoute default/reviews: attached: routes calls to it"),
        "{page}"
    );
    assert!(page.contains("Instances (0):"), "{page}");
    // Each Service has its own virtual IP, from the default range.
    let address = |page: &str| {
        page.lines()
            .find_map(|l| l.trim().strip_prefix("address:"))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no address in {page}"))
    };
    let (v2_page, reviews_page) = (
        String::from_utf8_lossy(&m.control.weft(&["describe", "svc", "reviews-v2"]).stdout)
            .into_owned(),
        page.to_string(),
    );
    let (v2_vip, reviews_vip) = (address(&v2_page), address(&reviews_page));
    assert!(reviews_vip.starts_with("240.240."), "{reviews_page}");
    assert!(v2_vip.starts_with("240.240."), "{v2_page}");
    assert_ne!(v2_vip, reviews_vip);
}

const BROKEN: &str = r#"
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: front}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: ghostly}
spec: {ports: [{port: 80, protocol: http}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: front}
spec:
  parentRefs: [{group: "", kind: Service, name: front}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: reviews-v1}]
  - matches: [{path: {type: PathPrefix, value: /a/b}}, {path: {type: PathPrefix, value: /a}}]
    backendRefs: [{name: ghostly}]
  - matches: [{path: {type: Exact, value: /c}}]
    backendRefs: [{name: nosuch}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: wall}
spec:
  targetRef: {kind: Service, name: front}
  action: DENY
  rules: [{}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_analyses_the_configuration_and_get_keeps_its_warnings() {
    let m = mesh().await;
    let out = m.control.weft(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("✔ no findings in the configuration"),
        "{text}"
    );

    m.control.apply(BROKEN);
    // A proxy for a Service nobody declared.
    let phantom_app = HttpBackend::start("phantom").await;
    let phantom = m.control.proxy("phantom", phantom_app.addr).start();
    let expected = [
        "✖ AuthorizationPolicy default/wall: a rule without from, to or when denies every call to Service default/front",
        "✖ Service default/phantom: proxies run for this Service, which does not exist",
        "✖ route default/front: rule default/front/1 sends to Service default/ghostly, which has no endpoint in rotation",
        "! HTTPRoute default/front: spec.rules[2].backendRefs[0]: Service default/nosuch does not exist",
        "! route default/front: rule default/front/1 is never used: rule default/front/0, tried before it, matches every request it matches",
    ];
    let mut text = String::new();
    wait_for("every finding", Duration::from_secs(20), || {
        let out = m.control.weft(&["check"]);
        text = String::from_utf8_lossy(&out.stdout).into_owned();
        let all = !out.status.success() && expected.iter().all(|line| text.contains(line));
        async move { all }
    })
    .await;
    assert!(text.contains("hint: give the rule conditions"), "{text}");

    // Deny by default: the Services that receive traffic and that no ALLOW names are named.
    // And in a permissive mesh, plain text still arriving is named.
    m.control.apply("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\nspec: {defaultAuthorization: deny, mtls: {mode: permissive}}\n");
    wait_for("the default-deny finding", Duration::from_secs(20), || {
        let out = m.control.weft(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        async move {
            text.contains("! Service default/reviews-v1: the mesh denies by default and no ALLOW policy names this Service")
        }
    })
    .await;
    let mut plain = Http1Client::connect(m.v1_proxy.inbound).await;
    let answer = plain.get("reviews-v1", "/").await.unwrap();
    assert_eq!(
        answer.status, 403,
        "plain text is served, and judged: {}",
        answer.body
    );
    wait_for("the plain-text finding", Duration::from_secs(20), || {
        let out = m.control.weft(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        async move {
            text.contains("! Service default/reviews-v1: 1 plain-text calls in the last hour (the mesh is permissive)")
        }
    })
    .await;

    // `weft get` keeps the apply-time warning in view while it is true.
    let out = m.control.weft(&["get", "httproutes"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(
            "warning: spec.rules[2].backendRefs[0]: Service default/nosuch does not exist"
        ),
        "{table}"
    );

    // Fixed, the findings go away.
    drop(phantom);
    for (kind, name) in [
        ("mesh", "mesh"),
        ("authorizationpolicy", "wall"),
        ("httproute", "front"),
        ("service", "ghostly"),
        ("service", "front"),
    ] {
        let out = m.control.weft(&["delete", kind, name]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("a clean check", Duration::from_secs(30), || {
        let out = m.control.weft(&["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        async move { out.status.success() && text.contains("✔ no findings in the configuration") }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suggested_policies_let_seen_traffic_through_and_deny_a_new_caller() {
    let m = mesh().await;
    let mut web = Http1Client::connect(m.web.outbound).await;
    const PATHS: [&str; 3] = ["/", "/books/1", "/books/2"];
    // Proxies report what their inbound judged every few seconds: the suggestions are
    // complete once each version's counts every call its proxy served (a report sent in
    // the middle of the calls has only some of them). Which version serves a call is the
    // balancer's choice (a slow answer on a busy machine steers the next ones away), so
    // until each version has seen every path, the calls are made again.
    let served = |proxy: &Proxy| {
        support::metric_sum(
            &proxy.metrics(),
            "weft_http_requests_total",
            &[("direction", "inbound")],
        )
    };
    let section = |yaml: &str, service: &str| -> Option<String> {
        let rest = yaml.split(&format!("# default/{service}: from ")).nth(1)?;
        Some(rest.split("\n# default/").next()?.to_owned())
    };
    let seen = |section: &str| -> Option<f64> { section.split(' ').next()?.parse().ok() };
    let covers_every_path = |section: &str| {
        PATHS.iter().all(|path| {
            section
                .lines()
                .any(|line| line.trim() == format!("- {path}"))
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut call = true;
    let yaml = loop {
        if call {
            for path in PATHS {
                for _ in 0..5 {
                    assert_eq!(web.get("reviews", path).await.unwrap().status, 200);
                }
            }
        }
        let out = m.control.weft(&["policy", "suggest", "--since", "10m"]);
        let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
        let v1 = section(&yaml, "reviews-v1").unwrap_or_default();
        let v2 = section(&yaml, "reviews-v2").unwrap_or_default();
        let complete = out.status.success()
            && seen(&v1) == Some(served(&m.v1_proxy))
            && seen(&v2) == Some(served(&m._v2_proxy));
        if complete && covers_every_path(&v1) && covers_every_path(&v2) {
            break yaml;
        }
        // Every call is in and a version missed a path: call again. Else wait for reports.
        call = complete;
        assert!(
            std::time::Instant::now() < deadline,
            "no suggestions for both versions with every call and path seen within 60s: {yaml}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(yaml.contains("- web"), "{yaml}");
    assert!(yaml.contains("/books/1"), "{yaml}");
    m.control.apply(&yaml);

    // A caller the mesh never saw.
    m.control.apply(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: intruder}\nspec: {ports: [{port: 80, protocol: http}]}\n",
    );
    let intruder_app = HttpBackend::start("intruder").await;
    let intruder = m.control.proxy("intruder", intruder_app.addr).start();
    wait_for(
        "the intruder to be denied",
        Duration::from_secs(30),
        || async {
            let mut client = Http1Client::connect(intruder.outbound).await;
            client
                .get("reviews", "/books/1")
                .await
                .is_ok_and(|answer| answer.status == 403)
        },
    )
    .await;
    // What was seen still goes through, every time.
    for path in ["/", "/books/1", "/books/2"] {
        for _ in 0..10 {
            let answer = web.get("reviews", path).await.unwrap();
            assert_eq!(answer.status, 200, "{path}: {}", answer.body);
        }
    }
    // What was not seen does not.
    let unseen = web.get("reviews", "/admin").await.unwrap();
    assert_eq!(unseen.status, 403, "{}", unseen.body);
    // The proxies' denials reach the audit log, with who was denied what.
    wait_for(
        "the denials in the audit log",
        Duration::from_secs(30),
        || {
            let out = m
                .control
                .weft(&["audit", "log", "--action", "authz.denied", "--json"]);
            let log = String::from_utf8_lossy(&out.stdout).into_owned();
            async move { log.contains("spiffe://weft.local/ns/default/svc/intruder GET /books/1") }
        },
    )
    .await;

    // Asked by the Mesh, every decision is sampled into the log, allowed ones too, each
    // with the policy and rule that made it.
    m.control.apply(
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\nspec: {auditDecisionsPercent: 100}\n",
    );
    wait_for(
        "sampled decisions in the audit log",
        Duration::from_secs(30),
        || {
            let sent = async {
                let mut web = Http1Client::connect(m.web.outbound).await;
                web.get("reviews", "/books/2")
                    .await
                    .is_ok_and(|a| a.status == 200)
            };
            let out = m
                .control
                .weft(&["audit", "log", "--action", "authz.sampled", "--json"]);
            let log = String::from_utf8_lossy(&out.stdout).into_owned();
            async move {
                sent.await
                    && log.lines().any(|line| {
                        let entry: serde_json::Value = serde_json::from_str(line).unwrap();
                        entry["after"].as_array().is_some_and(|decisions| {
                            decisions.iter().any(|d| {
                                d["decision"] == "allow"
                                    && d["path"] == "/books/2"
                                    && d["source"] == "spiffe://weft.local/ns/default/svc/web"
                                    && d["policy"]
                                        .as_str()
                                        .is_some_and(|p| p.ends_with("-observed"))
                                    && d["rule"] == "0"
                            })
                        })
                    })
            }
        },
    )
    .await;
}

/// The leading count of an `authz.denied` entry's detail (`N calls denied: ...`).
fn denied_in(entry: &serde_json::Value) -> u64 {
    let detail = entry["detail"].as_str().unwrap_or_default();
    detail
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {detail:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_flood_is_all_counted_few_entries_long_and_harms_no_good_caller() {
    let m = mesh().await;
    m.apply_and_wait(100, 0).await;
    m.control.apply(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata: {name: no-probes}\nspec:\n  targetRef: {kind: Service, name: reviews-v1}\n  action: DENY\n  rules: [{to: [{paths: [/probe/*]}]}]\n",
    );
    wait_for("the policy in force", Duration::from_secs(20), || async {
        let mut client = Http1Client::connect(m.web.outbound).await;
        client
            .get("reviews", "/probe/first")
            .await
            .is_ok_and(|a| a.status == 403)
    })
    .await;

    // Four callers each invent 1,500 paths (more distinct calls than a proxy itemizes
    // between reports) while a good caller keeps calling.
    const PER_CALLER: usize = 1500;
    let flood: Vec<_> = (0..4)
        .map(|caller| {
            let outbound = m.web.outbound;
            tokio::spawn(async move {
                let mut client = Http1Client::connect(outbound).await;
                for i in 0..PER_CALLER {
                    let answer = client.get("reviews", &format!("/probe/{caller}-{i}")).await;
                    assert_eq!(answer.unwrap().status, 403);
                }
            })
        })
        .collect();
    let mut good = Http1Client::connect(m.web.outbound).await;
    let mut served = 0;
    while flood.iter().any(|task| !task.is_finished()) {
        let answer = good.get("reviews", "/books/1").await.unwrap();
        assert_eq!(answer.status, 200, "{}", answer.body);
        served += 1;
    }
    for task in flood {
        task.await.unwrap();
    }
    assert!(served > 0);

    // Every denial reaches the audit log, counted, in a handful of entries of bounded size.
    let denied = m.v1_proxy.metric_reaching(
        "weft_authz_decisions_total",
        &[("decision", "deny")],
        (4 * PER_CALLER) as f64,
    );
    assert!(denied >= (4 * PER_CALLER) as f64, "{denied}");
    let mut entries = Vec::new();
    wait_for(
        "every denial counted in the audit log",
        Duration::from_secs(30),
        || {
            let out = m.control.weft(&[
                "audit",
                "log",
                "--action",
                "authz.denied",
                "--json",
                "--limit",
                "1000",
            ]);
            entries = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
                .filter(|e| {
                    e["target"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("reviews-v1"))
                })
                .collect();
            let logged: u64 = entries.iter().map(denied_in).sum();
            async move { logged as f64 == denied }
        },
    )
    .await;
    assert!(entries.len() <= 60, "{} entries", entries.len());
    assert!(
        entries
            .iter()
            .any(|e| e["detail"].as_str().unwrap().contains("not itemized")),
        "{entries:?}"
    );
    for entry in &entries {
        assert!(entry.to_string().len() < 8192, "{entry}");
    }
    // The control plane still answers.
    assert!(m.control.weft(&["get", "services"]).status.success());
}
