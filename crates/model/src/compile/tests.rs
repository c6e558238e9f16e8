use super::*;
use crate::config::{
    BackendRef, LoadBalancer, PathMatch, RetryOn, RouteConfig, StringMatch, TrafficPolicyConfig,
};
use crate::{load_str, testdata, validate};

fn compile_text(text: &str) -> ProxyConfig {
    let resources = load_str("test.yaml", text).unwrap();
    validate(&resources).unwrap();
    compile(&resources)
}

fn service<'a>(config: &'a ProxyConfig, namespace: &str, name: &str) -> &'a ServiceConfig {
    config
        .services
        .iter()
        .find(|s| s.namespace == namespace && s.name == name)
        .unwrap_or_else(|| panic!("no service {namespace}/{name}"))
}

fn names(routes: &[RouteConfig]) -> Vec<&str> {
    routes.iter().map(|r| r.name.as_str()).collect()
}

fn paths(routes: &[RouteConfig]) -> Vec<Option<&PathMatch>> {
    routes
        .iter()
        .map(|r| r.matches.first().and_then(|m| m.path.as_ref()))
        .collect()
}

fn backend(namespace: &str, service: &str, port: Option<u16>, weight: u32) -> BackendRef {
    BackendRef {
        missing: false,
        request_headers: None,
        response_headers: None,
        service: service.to_owned(),
        namespace: namespace.to_owned(),
        port,
        weight,
    }
}

#[test]
fn services_are_sorted_and_carry_the_mesh_trust_domain() {
    let config = compile_text(&testdata::all());
    assert_eq!(config.trust_domain, "example.org");
    let keys: Vec<String> = config
        .services
        .iter()
        .map(|s| format!("{}/{}", s.namespace, s.name))
        .collect();
    assert_eq!(
        keys,
        [
            "bookinfo/reviews",
            "bookinfo/reviews-shadow",
            "bookinfo/reviews-v1",
            "bookinfo/reviews-v2",
            "bookinfo/reviews-v3",
            "default/greeter",
            "default/greeter-canary",
        ]
    );
}

#[test]
fn endpoint_identities() {
    let config = compile_text(&testdata::all());
    let identities: Vec<Option<&str>> = service(&config, "bookinfo", "reviews")
        .endpoints
        .iter()
        .map(|e| e.identity.as_deref())
        .collect();
    assert_eq!(
        identities,
        [
            Some("spiffe://example.org/ns/bookinfo/svc/reviews"),
            Some("spiffe://partner.example/ns/bookinfo/svc/reviews"),
            None,
        ]
    );
}

#[test]
fn http_route_compiles_with_weights_filters_timeouts_and_retries() {
    let config = compile_text(&testdata::all());
    let routes = &service(&config, "bookinfo", "reviews").routes;
    // Exact path first, then the prefix, then the rule that matches everything.
    assert_eq!(
        names(routes),
        [
            "bookinfo/reviews/1",
            "bookinfo/reviews/0",
            "bookinfo/reviews/2"
        ]
    );
    let redirect = &routes[0];
    assert!(redirect.backends.is_empty());
    let target = redirect.filters.redirect.as_ref().unwrap();
    assert_eq!(
        (target.scheme.as_deref(), target.status_code),
        (Some("https"), 301)
    );

    let split = &routes[1];
    let m = &split.matches[0];
    assert_eq!(m.path, Some(PathMatch::Prefix("/api/v2".to_owned())));
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(m.headers[0].name, "x-canary");
    assert_eq!(m.query[0].value, StringMatch::Regex("[a-z]+".to_owned()));
    assert_eq!(
        split.backends,
        [
            backend("bookinfo", "reviews-v2", Some(9080), 90),
            backend("bookinfo", "reviews-v3", Some(9080), 10),
        ]
    );
    let headers = split.filters.request_headers.as_ref().unwrap();
    assert_eq!(headers.set, [("x-route".to_owned(), "canary".to_owned())]);
    assert_eq!(headers.remove, ["x-debug"]);
    let mirror = &split.filters.mirrors[0];
    assert_eq!(mirror.backend.service, "reviews-shadow");
    assert_eq!(mirror.percent, 12.5);
    assert_eq!(split.timeouts.request_ms, Some(10_000));
    assert_eq!(split.timeouts.backend_request_ms, Some(500));
    let retry = split.retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.status_codes.as_slice()),
        (3, &[503][..])
    );
    assert!(retry.on.is_empty());
    assert_eq!((retry.backoff_base_ms, retry.backoff_max_ms), (100, 1_000));

    let fallback = &routes[2];
    assert!(fallback.matches.is_empty());
    assert_eq!(
        fallback.backends,
        [backend("bookinfo", "reviews-v1", Some(9080), 1)]
    );
    // `0s` is no timeout.
    assert_eq!(fallback.timeouts.request_ms, None);
}

#[test]
fn grpc_methods_compile_to_paths() {
    let config = compile_text(&testdata::all());
    let routes = &service(&config, "default", "greeter").routes;
    assert_eq!(
        paths(routes),
        [
            Some(&PathMatch::Exact("/helloworld.Greeter/SayHello".to_owned())),
            Some(&PathMatch::Prefix("/helloworld.Greeter".to_owned())),
            Some(&PathMatch::Regex(
                "/(?:helloworld\\..*)/(?:[^/]+)".to_owned()
            )),
            Some(&PathMatch::Regex("/[^/]+/Ping".to_owned())),
        ]
    );
    assert_eq!(routes[0].matches[0].headers[0].name, "env");
    assert_eq!(
        routes[0].backends,
        [backend("default", "greeter-canary", Some(50051), 1)]
    );
    let retry = routes[1].retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.grpc_codes.as_slice()),
        (2, &[14, 4][..])
    );
    // Every regex the compiler writes compiles.
    for path in paths(routes).into_iter().flatten() {
        if let PathMatch::Regex(regex) = path {
            regex::Regex::new(regex).unwrap();
        }
    }
}

#[test]
fn traffic_policy_compiles_with_defaults() {
    let config = compile_text(&testdata::all());
    let policy = &service(&config, "bookinfo", "reviews").policy;
    assert_eq!(
        policy.load_balancer,
        LoadBalancer::RingHash {
            header: Some("x-user".to_owned()),
            cookie: None
        }
    );
    let limits = policy.connection_limits.as_ref().unwrap();
    assert_eq!(
        (limits.max_connections, limits.max_pending_requests),
        (Some(100), None)
    );
    let outlier = policy.outlier_detection.as_ref().unwrap();
    assert_eq!(
        (outlier.consecutive_5xx, outlier.base_ejection_ms),
        (3, 30_000)
    );
    assert_eq!(outlier.max_ejection_percent, 50);
    let budget = policy.retry_budget.as_ref().unwrap();
    assert_eq!(
        (
            budget.ratio,
            budget.min_retries_per_second,
            budget.window_ms
        ),
        (0.1, 10, 10_000)
    );
    let rate = policy.rate_limit.as_ref().unwrap();
    assert_eq!((rate.requests_per_second, rate.burst), (12.5, 13));
    let fault = policy.fault.as_ref().unwrap();
    assert_eq!(fault.delay.as_ref().unwrap().delay_ms, 200);
    assert_eq!(fault.abort.as_ref().unwrap().status, 503);
    assert_eq!(
        (policy.connect_timeout_ms, policy.idle_timeout_ms),
        (250, 60_000)
    );
    // A Service no policy targets gets the defaults.
    let plain = &service(&config, "bookinfo", "reviews-v1").policy;
    assert_eq!(plain, &TrafficPolicyConfig::default());
}

#[test]
fn version_is_a_stable_content_hash() {
    let text = testdata::all();
    let first = compile_text(&text);
    assert_eq!(first.version.len(), 16);
    assert_eq!(compile_text(&text), first);
    // The same resources in another order compile to the same config.
    let mut resources = load_str("other.yaml", &text).unwrap();
    resources.reverse();
    assert_eq!(compile(&resources), first);
    let changed = compile_text(&text.replace("weight: 90", "weight: 80"));
    assert_ne!(changed.version, first.version);
}

const WEB: &str = "apiVersion: weft.dev/v1alpha1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
";

/// Services `web`, `v1` and `v2`, and `routes` (documents) attached to `web`.
fn with_routes(routes: &str) -> ProxyConfig {
    let mut text = WEB.to_owned();
    for name in ["v1", "v2"] {
        text.push_str(&format!(
            "---\n{}",
            WEB.replace("{name: web}", &format!("{{name: {name}}}"))
        ));
    }
    compile_text(&format!("{text}---\n{routes}"))
}

fn http_route(name: &str, rules: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}}}\n\
         spec:\n  parentRefs: [{{group: \"\", kind: Service, name: web}}]\n  rules:\n{rules}"
    )
}

#[test]
fn precedence_follows_the_gateway_api() {
    let b = http_route(
        "b",
        "  - matches:
    - path: {type: RegularExpression, value: /.*}
    - path: {value: /api}
    - path: {value: /api/users}
    - path: {type: Exact, value: /api}
    - path: {value: /api}
      method: GET
    - path: {value: /api}
      headers: [{name: a, value: '1'}, {name: b, value: '2'}]
    - path: {value: /api}
      headers: [{name: a, value: '1'}]
    - path: {value: /api}
      headers: [{name: a, value: '1'}]
      queryParams: [{name: q, value: '1'}]
",
    );
    // Same match as one of b's: the alphabetically first route wins the tie.
    let a = http_route("a", "  - matches:\n    - path: {value: /api}\n");
    let config = with_routes(&format!("{b}---\n{a}"));
    let routes = &service(&config, "default", "web").routes;
    let order: Vec<String> = routes
        .iter()
        .map(|r| {
            let m = &r.matches[0];
            format!(
                "{} {:?} m={} h={} q={}",
                r.name,
                m.path.as_ref().unwrap(),
                m.method.is_some(),
                m.headers.len(),
                m.query.len()
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            "default/b/0 Exact(\"/api\") m=false h=0 q=0",
            "default/b/0 Prefix(\"/api/users\") m=false h=0 q=0",
            "default/b/0 Prefix(\"/api\") m=true h=0 q=0",
            "default/b/0 Prefix(\"/api\") m=false h=2 q=0",
            "default/b/0 Prefix(\"/api\") m=false h=1 q=1",
            "default/b/0 Prefix(\"/api\") m=false h=1 q=0",
            "default/a/0 Prefix(\"/api\") m=false h=0 q=0",
            "default/b/0 Prefix(\"/api\") m=false h=0 q=0",
            "default/b/0 Regex(\"/.*\") m=false h=0 q=0",
        ]
    );
}

#[test]
fn rules_without_backends_send_to_the_parent() {
    let route = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web}
spec:
  parentRefs: [{group: \"\", kind: Service, name: web, port: 80}]
  rules:
  - timeouts: {request: 2s}
";
    let config = with_routes(route);
    let routes = &service(&config, "default", "web").routes;
    assert_eq!(routes[0].backends, [backend("default", "web", Some(80), 1)]);
    assert_eq!(routes[0].timeouts.request_ms, Some(2_000));
}

#[test]
fn references_to_missing_services_keep_their_share_and_mirrors_are_dropped() {
    let route = http_route(
        "web",
        "  - backendRefs: [{name: v1, weight: 3}, {name: gone, weight: 1}]
    filters:
    - type: RequestMirror
      requestMirror: {backendRef: {name: gone}}
  - backendRefs: [{name: gone}]
    retry: {}
",
    );
    let resources = load_str(
        "t.yaml",
        &format!("{WEB}---\n{}---\n{route}", WEB.replace("web}", "v1}")),
    )
    .unwrap();
    assert_eq!(validate(&resources).unwrap().len(), 3);
    let config = compile(&resources);
    let routes = &service(&config, "default", "web").routes;
    // The missing backend's share stays, marked: the proxy answers it 500 (Gateway API).
    let gone = |weight| BackendRef {
        missing: true,
        ..backend("default", "gone", None, weight)
    };
    assert_eq!(
        routes[0].backends,
        [backend("default", "v1", None, 3), gone(1)]
    );
    assert!(routes[0].filters.mirrors.is_empty());
    assert_eq!(routes[1].backends, [gone(1)]);
    let retry = routes[1].retry.as_ref().unwrap();
    assert_eq!(
        retry.on,
        [
            RetryOn::ConnectFailure,
            RetryOn::Reset,
            RetryOn::GatewayError
        ]
    );
    assert_eq!(
        (retry.attempts, retry.backoff_base_ms, retry.backoff_max_ms),
        (2, 25, 250)
    );
}

#[test]
fn health_checks_are_carried_for_the_proxies_that_probe() {
    let config = compile_text(&testdata::all());
    let check = service(&config, "bookinfo", "reviews")
        .health_check
        .as_ref()
        .expect("reviews declares a health check");
    assert_eq!(check.http_path.as_deref(), Some("/healthz"));
    assert_eq!((check.interval_ms, check.timeout_ms), (5_000, 1_000));
    assert_eq!((check.unhealthy_threshold, check.healthy_threshold), (3, 1));
    assert_eq!(
        service(&config, "bookinfo", "reviews-v1").health_check,
        None
    );
}

#[test]
fn every_service_has_the_same_place_in_both_virtual_ip_ranges() {
    let services = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: ratings}\nspec: {ports: [{port: 80}]}\n---\napiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: reviews}\nspec: {ports: [{port: 80}]}\n";
    let config = compile_text(services);
    let ips = |name| {
        let s = service(&config, "default", name);
        (
            s.virtual_ip.unwrap().to_string(),
            s.virtual_ipv6.unwrap().to_string(),
        )
    };
    // Files carry no slots: the lowest free ones, in name order.
    assert_eq!(ips("ratings"), ("240.240.0.1".into(), "2001:2::1".into()));
    assert_eq!(ips("reviews"), ("240.240.0.2".into(), "2001:2::2".into()));

    let mesh = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: default}\nspec:\n  virtualIPRange: 10.96.0.0/24\n  virtualIPv6Range: fd00:96::/64\n---\n";
    let config = compile_text(&format!("{mesh}{services}"));
    let reviews = service(&config, "default", "reviews");
    assert_eq!(reviews.virtual_ip.unwrap().to_string(), "10.96.0.2");
    assert_eq!(reviews.virtual_ipv6.unwrap().to_string(), "fd00:96::2");
}

#[test]
fn each_virtual_ip_range_must_be_of_its_family() {
    for (field, range, says) in [
        (
            "virtualIPRange",
            "fd00::/64",
            "is an IPv6 range; virtualIPRange is the IPv4 one",
        ),
        (
            "virtualIPv6Range",
            "10.0.0.0/8",
            "is an IPv4 range; virtualIPv6Range is the IPv6 one",
        ),
    ] {
        let text = format!("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {{name: default}}\nspec:\n  {field}: {range}\n");
        let error = load_str("mesh.yaml", &text).unwrap_err().to_string();
        assert!(error.contains(says), "{error}");
    }
}
