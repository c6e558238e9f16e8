//! Routing observed in traffic through a client proxy: splits, matches, filters, mirrors.
//! Backends here are plain endpoints (outside the mesh), so one proxy is enough.

mod support;
use support::*;

struct Setup {
    dir: TempDir,
    proxy: Proxy,
    backends: Vec<HttpBackend>,
}

/// One client proxy; `services` are (name, backend) pairs; `routes` is extra YAML.
async fn setup(names: &[&str], routes: &str, extra_flags: &[&str]) -> Setup {
    let dir = TempDir::new("routing");
    let mut backends = Vec::new();
    let mut yaml = String::new();
    for name in names {
        let backend = HttpBackend::start(name).await;
        yaml.push_str(&plain_service(name, "http", &[backend.addr]));
        backends.push(backend);
    }
    yaml.push_str(routes);
    let config = write_config(dir.path(), "mesh.yaml", &yaml);
    let mut spec = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config);
    for flag in extra_flags {
        spec = spec.arg(*flag);
    }
    let proxy = spec.start();
    Setup {
        dir,
        proxy,
        backends,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_is_honoured() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews-split
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: reviews
  rules:
    - backendRefs:
        - name: reviews-v1
          weight: 90
        - name: reviews-v2
          weight: 10
"#;
    let s = setup(&["reviews", "reviews-v1", "reviews-v2"], route, &[]).await;
    let mut client = Http1Client::connect(s.proxy.outbound).await;
    let total = 2000;
    let mut v2 = 0;
    for _ in 0..total {
        let answer = client.get("reviews", "/").await.unwrap();
        assert_eq!(answer.status, 200);
        match answer.body.as_str() {
            "reviews-v2" => v2 += 1,
            "reviews-v1" => {}
            other => panic!("unexpected backend {other}"),
        }
    }
    // 10 % of 2000 is 200; binomial sd ~13.4, so +-60 is more than 4 sd.
    assert!((140..=260).contains(&v2), "v2 got {v2} of {total}");
    assert_eq!(
        s.backends[0].count(),
        0,
        "the parent service itself gets nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matches_pick_rules_by_path_header_method_and_query() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: matching
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: shop
  rules:
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers:
            - {name: x-canary, value: "yes"}
      backendRefs: [{name: canary}]
    - matches:
        - path: {type: Exact, value: /api/cart}
          method: POST
      backendRefs: [{name: cart}]
    - matches:
        - path: {type: RegularExpression, value: "/items/[0-9]+"}
        - queryParams:
            - {name: view, value: full}
      backendRefs: [{name: items}]
    - matches:
        - path: {type: PathPrefix, value: /api}
      backendRefs: [{name: shop}]
"#;
    let s = setup(&["shop", "canary", "cart", "items"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    let body = |a: Answer| a.body;
    assert_eq!(body(c.get("shop", "/api/x").await.unwrap()), "shop");
    assert_eq!(
        body(
            c.send(request("GET", "shop", "/api/x", &[("x-canary", "yes")]))
                .await
                .unwrap()
        ),
        "canary"
    );
    assert_eq!(
        body(
            c.send(request("POST", "shop", "/api/cart", &[]))
                .await
                .unwrap()
        ),
        "cart"
    );
    assert_eq!(
        body(c.get("shop", "/api/cart").await.unwrap()),
        "shop",
        "GET is not POST"
    );
    assert_eq!(body(c.get("shop", "/items/42").await.unwrap()), "items");
    assert_eq!(
        body(c.get("shop", "/other?view=full").await.unwrap()),
        "items"
    );
    // `/apix` is not under the `/api` prefix, and nothing else matches: 404 from the proxy.
    let miss = c.get("shop", "/apix").await.unwrap();
    assert_eq!(miss.status, 404);
    assert_eq!(
        miss.header("x-weft-error"),
        Some("no route matches this request")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_modify_redirect_and_rewrite() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: filters
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: web
  rules:
    - matches:
        - path: {type: PathPrefix, value: /old}
      filters:
        - type: RequestRedirect
          requestRedirect:
            hostname: new.example
            statusCode: 301
            path:
              type: ReplacePrefixMatch
              replacePrefixMatch: /new
    - matches:
        - path: {type: PathPrefix, value: /v1}
      filters:
        - type: URLRewrite
          urlRewrite:
            path:
              type: ReplacePrefixMatch
              replacePrefixMatch: /echo
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-set, value: one}]
            add: [{name: x-added, value: two}]
            remove: [x-drop]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            add: [{name: x-served-by, value: weft}]
            remove: [x-backend]
      backendRefs: [{name: web}]
"#;
    let s = setup(&["web"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    let redirect = c.get("web", "/old/page?q=1").await.unwrap();
    assert_eq!(redirect.status, 301);
    assert_eq!(
        redirect.header("location"),
        Some("http://new.example/new/page?q=1")
    );
    assert_eq!(
        s.backends[0].count(),
        0,
        "a redirect never reaches the backend"
    );

    let echoed = c
        .send(request(
            "GET",
            "web",
            "/v1/thing",
            &[("x-drop", "secret"), ("x-set", "zero")],
        ))
        .await
        .unwrap();
    assert_eq!(echoed.status, 200);
    assert!(
        echoed.body.starts_with("GET /echo/thing "),
        "{}",
        echoed.body
    );
    assert!(echoed.body.contains("x-set: one\n"), "{}", echoed.body);
    assert!(!echoed.body.contains("x-set: zero"), "{}", echoed.body);
    assert!(echoed.body.contains("x-added: two\n"), "{}", echoed.body);
    assert!(!echoed.body.contains("x-drop"), "{}", echoed.body);
    assert_eq!(echoed.header("x-served-by"), Some("weft"));
    assert_eq!(echoed.header("x-backend"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_receives_a_copy_and_the_client_sees_only_the_primary() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: mirror
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: orders
  rules:
    - filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {name: shadow}
            percent: 50
      backendRefs: [{name: orders}]
"#;
    let s = setup(&["orders", "shadow"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    for _ in 0..400 {
        let answer = c.get("orders", "/").await.unwrap();
        assert_eq!(answer.body, "orders");
    }
    // Mirrors are fire-and-forget: give the last copies a moment to land.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let mirrored = s.backends[1].count();
    assert_eq!(s.backends[0].count(), 400);
    assert!(
        (140..=260).contains(&mirrored),
        "shadow got {mirrored} of 400 at 50 %"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_binding_routes_without_a_host_header() {
    let s = setup(&["catalog"], "", &[]).await;
    drop(s.proxy);
    let config = s.dir.path().join("mesh.yaml");
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config)
        .arg("--upstream")
        .arg("catalog=127.0.0.1:0")
        .start();
    let mut c = Http1Client::connect(proxy.upstreams[0]).await;
    let answer = c.get("anything-at-all", "/").await.unwrap();
    assert_eq!(answer.body, "catalog");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_a_user_on_one_endpoint() {
    let dir = TempDir::new("ringhash");
    let backends = [
        HttpBackend::start("a").await,
        HttpBackend::start("b").await,
        HttpBackend::start("c").await,
    ];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr).collect();
    let yaml = format!(
        "{}{}",
        plain_service("sticky", "http", &addrs),
        r#"
apiVersion: weft.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: sticky}
spec:
  targetRef: {kind: Service, name: sticky}
  loadBalancer:
    type: RingHash
    ringHash: {header: x-user}
"#
    );
    let config = write_config(dir.path(), "mesh.yaml", &yaml);
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();
    let mut c = Http1Client::connect(proxy.outbound).await;
    let mut owners = std::collections::BTreeSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let first = c
            .send(request("GET", "sticky", "/", &[("x-user", &user)]))
            .await
            .unwrap()
            .body;
        for _ in 0..5 {
            let again = c
                .send(request("GET", "sticky", "/", &[("x-user", &user)]))
                .await
                .unwrap()
                .body;
            assert_eq!(again, first, "{user} moved");
        }
        owners.insert(first);
    }
    assert_eq!(
        owners.len(),
        3,
        "30 users spread over all three endpoints: {owners:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_pass_intact_through_mirror_and_retry() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both}
spec:
  parentRefs: [{group: "", kind: Service, name: upload}]
  rules:
    - filters:
        - type: RequestMirror
          requestMirror:
            backendRef: {name: shadow}
      retry: {attempts: 2, codes: [503], backoff: 1ms}
      backendRefs: [{name: upload}]
"#;
    let s = setup(&["upload", "shadow"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    for size in [10usize, 60 * 1024, 300 * 1024] {
        let body: String = (0..size).map(|i| (b'a' + (i % 26) as u8) as char).collect();
        let request = hyper::Request::builder()
            .method("POST")
            .uri("/body")
            .header("host", "upload")
            .body(http_body_util::Full::new(bytes::Bytes::from(body.clone())))
            .unwrap();
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), c.send(request))
            .await
            .expect("no stall")
            .unwrap();
        assert_eq!(answer.status, 200, "size {size}");
        assert!(answer.body == body, "size {size}: body changed in transit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_ewma_steers_away_from_a_dead_endpoint() {
    let dir = TempDir::new("dead-endpoint");
    let live = HttpBackend::start("live").await;
    // An address nothing listens on: connections are refused.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = write_config(
        dir.path(),
        "mesh.yaml",
        &plain_service("pool", "http", &[live.addr, dead]),
    );
    let proxy = ProxySpec::new("client", "127.0.0.1:9".parse().unwrap(), &config).start();
    let mut c = Http1Client::connect(proxy.outbound).await;
    let mut failed = 0;
    for _ in 0..200 {
        if c.get("pool", "/").await.unwrap().status != 200 {
            failed += 1;
        }
    }
    assert!(failed <= 3, "{failed} of 200 went to the dead endpoint");
    assert!(live.count() >= 197);
}

/// Gateway API: a backend that does not exist keeps its share, answered 500, and the
/// redirect codes 303, 307 and 308 are honoured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_backends_share_is_answered_500_and_every_redirect_code_works() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: split}
spec:
  parentRefs: [{group: "", kind: Service, name: shop}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /moved}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {hostname: elsewhere, statusCode: 308}
    - backendRefs: [{name: shop, weight: 1}, {name: ghost, weight: 1}]
"#;
    let s = setup(&["shop"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    let mut failed = 0;
    for _ in 0..400 {
        let answer = c.get("shop", "/").await.unwrap();
        match answer.status {
            200 => {}
            500 => {
                assert_eq!(
                    answer.header("x-weft-error"),
                    Some("route backend names a service that does not exist")
                );
                failed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    // Half of 400; binomial sd 10, so +-60 is six of them.
    assert!(
        (140..=260).contains(&failed),
        "{failed} of 400 answered 500"
    );
    assert_eq!(s.backends[0].count(), 400 - failed);
    let redirect = c.get("shop", "/moved/a").await.unwrap();
    assert_eq!(redirect.status, 308);
    assert_eq!(
        redirect.header("location"),
        Some("http://elsewhere/moved/a")
    );
    drop(s.dir);
}

/// Filters on a backendRef apply to the requests sent to that backend only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_filters_apply_to_their_backend_only() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: per-backend}
spec:
  parentRefs: [{group: "", kind: Service, name: shop}]
  rules:
    - filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-rule, value: "1"}]}
      backendRefs:
        - name: shop
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier: {set: [{name: x-backend-says, value: shop}]}
            - type: ResponseHeaderModifier
              responseHeaderModifier: {add: [{name: x-via, value: shop}]}
        - name: outlet
"#;
    let s = setup(&["shop", "outlet"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    let (mut to_shop, mut to_outlet) = (0, 0);
    for _ in 0..60 {
        let answer = c.get("shop", "/echo").await.unwrap();
        assert_eq!(answer.status, 200);
        assert!(answer.body.contains("x-rule: 1\n"), "{}", answer.body);
        match answer.header("x-backend") {
            Some("shop") => {
                to_shop += 1;
                assert!(
                    answer.body.contains("x-backend-says: shop\n"),
                    "{}",
                    answer.body
                );
                assert_eq!(answer.header("x-via"), Some("shop"));
            }
            Some("outlet") => {
                to_outlet += 1;
                assert!(!answer.body.contains("x-backend-says"), "{}", answer.body);
                assert_eq!(answer.header("x-via"), None);
            }
            other => panic!("answered by {other:?}"),
        }
    }
    assert!(to_shop > 0 && to_outlet > 0, "{to_shop} / {to_outlet}");
}

/// The Gateway API's CORS conformance cases, through a real proxy: preflights are
/// answered by the proxy (the app never sees them), allowed origins' answers are marked,
/// others are served unmarked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_and_allowed_origins_marked() {
    let route = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cors}
spec:
  parentRefs: [{group: "", kind: Service, name: web}]
  rules:
    - matches: [{path: {value: /cors-1}}]
      filters:
        - type: CORS
          cors:
            allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
            allowMethods: [GET, OPTIONS]
            allowHeaders: [x-header-1, x-header-2]
            exposeHeaders: [x-header-3, x-header-4]
            allowCredentials: true
            maxAge: 3600
      backendRefs: [{group: "", kind: Service, name: web}]
    - matches: [{path: {value: /cors-wildcard}}]
      filters:
        - type: CORS
          cors: {allowOrigins: ["*"], allowMethods: ["*"], allowHeaders: ["*"]}
      backendRefs: [{group: "", kind: Service, name: web}]
"#;
    let s = setup(&["web"], route, &[]).await;
    let mut c = Http1Client::connect(s.proxy.outbound).await;
    let preflight = |origin: &'static str, path: &'static str| {
        request(
            "OPTIONS",
            "web",
            path,
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-header-1, x-header-2"),
            ],
        )
    };
    let allowed = c
        .send(preflight("https://xpto.www.bar.com", "/cors-1"))
        .await
        .unwrap();
    assert_eq!(allowed.status, 204);
    let expected = [
        ("access-control-allow-origin", "https://xpto.www.bar.com"),
        ("access-control-allow-methods", "GET, OPTIONS"),
        ("access-control-allow-headers", "x-header-1, x-header-2"),
        ("access-control-expose-headers", "x-header-3, x-header-4"),
        ("access-control-max-age", "3600"),
        ("access-control-allow-credentials", "true"),
    ];
    for (name, value) in expected {
        assert_eq!(allowed.header(name), Some(value), "{name}");
    }
    let refused = c
        .send(preflight("https://foobar.com", "/cors-1"))
        .await
        .unwrap();
    assert_eq!(refused.status, 204);
    assert_eq!(refused.header("access-control-allow-origin"), None);
    let wildcard = c
        .send(preflight("https://foobar.com:12345", "/cors-wildcard"))
        .await
        .unwrap();
    assert_eq!(
        wildcard.header("access-control-allow-origin"),
        Some("https://foobar.com:12345")
    );
    assert_eq!(wildcard.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        wildcard.header("access-control-allow-headers"),
        Some("x-header-1, x-header-2")
    );
    assert_eq!(wildcard.header("access-control-allow-credentials"), None);
    assert_eq!(wildcard.header("access-control-max-age"), Some("5"));
    assert_eq!(s.backends[0].count(), 0, "a preflight reached the app");

    let simple =
        |origin: &'static str| request("GET", "web", "/cors-1/echo", &[("origin", origin)]);
    let answer = c.send(simple("https://www.foo.com")).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-backend"), Some("web"));
    assert_eq!(
        answer.header("access-control-allow-origin"),
        Some("https://www.foo.com")
    );
    assert_eq!(
        answer.header("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(answer.header("vary"), Some("Origin"));
    let answer = c.send(simple("https://foobar.com")).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), None);
    assert_eq!(s.backends[0].count(), 2);
}
