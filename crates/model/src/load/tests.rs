use super::*;
use crate::resources::{
    AuthorizationAction, GrpcMethodMatch, HashOn, LoadBalancerSpec, MtlsMode, PathMatch,
    RouteFilter, StringMatch,
};
use crate::testdata;

/// The one problem `text` has, as the user sees it.
fn error(text: &str) -> String {
    let err = load_str("routes.yaml", text).expect_err("the input is invalid");
    let problems = err.diagnostics();
    assert_eq!(problems.len(), 1, "{err}");
    problems[0].to_string()
}

const ROUTE_HEAD: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: web
spec:
  parentRefs:
  - {group: \"\", kind: Service, name: web}
  rules:
";

/// An HTTPRoute whose rules are `rules`; the rules start on line 9.
fn route(rules: &str) -> String {
    format!("{ROUTE_HEAD}{rules}")
}

#[test]
fn real_gateway_api_http_route_loads() {
    let resources = load_str("route.yaml", testdata::HTTP_ROUTE).unwrap();
    assert_eq!(resources.len(), 1);
    let route = &resources[0];
    assert_eq!(route.api_version, "gateway.networking.k8s.io/v1");
    assert_eq!(route.describe(), "HTTPRoute bookinfo/reviews");
    assert_eq!(route.metadata.labels["app"], "reviews");
    let Spec::HttpRoute(spec) = &route.spec else {
        panic!("not an HTTPRoute: {route:?}");
    };
    assert_eq!(spec.parent_refs[0].name.as_str(), "reviews");
    assert_eq!(spec.rules.len(), 3);
    let first = &spec.rules[0];
    let m = &first.matches[0];
    assert!(matches!(&m.path, Some(PathMatch::PathPrefix(p)) if p.as_str() == "/api/v2/"));
    assert_eq!(m.headers[0].name.as_str(), "x-canary");
    assert!(matches!(
        &m.query_params[0].value,
        StringMatch::RegularExpression(_)
    ));
    assert_eq!(m.method.as_ref().unwrap().as_str(), "GET");
    assert_eq!(first.backend_refs[1].weight.get(), 10);
    let RouteFilter::RequestMirror(mirror) = &first.filters[1] else {
        panic!("not a mirror: {:?}", first.filters[1]);
    };
    assert_eq!(mirror.percent.get(), 12.5);
    assert_eq!(
        first
            .timeouts
            .as_ref()
            .unwrap()
            .request
            .unwrap()
            .as_millis(),
        10_000
    );
}

#[test]
fn real_gateway_api_grpc_route_loads() {
    let resources = load_str("grpc.yaml", testdata::GRPC_ROUTE).unwrap();
    let Spec::GrpcRoute(spec) = &resources[0].spec else {
        panic!("not a GRPCRoute");
    };
    let method = spec.rules[0].matches[0].method.as_ref().unwrap();
    assert_eq!(
        method,
        &GrpcMethodMatch::Exact {
            service: Some("helloworld.Greeter".to_owned()),
            method: Some("SayHello".to_owned())
        }
    );
    let retry = spec.rules[1].retry.as_ref().unwrap();
    let codes: Vec<u32> = retry.grpc_codes.iter().map(|c| c.get()).collect();
    assert_eq!(codes, [14, 4]);
}

#[test]
fn every_kind_loads_with_defaults_filled_in() {
    let resources = load_str("all.yaml", &testdata::all()).unwrap();
    let kinds: Vec<_> = resources.iter().map(|r| r.kind().as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "Service").count(), 7);
    for kind in [
        "Mesh",
        "HTTPRoute",
        "GRPCRoute",
        "TrafficPolicy",
        "AuthorizationPolicy",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    for resource in &resources {
        match &resource.spec {
            Spec::Mesh(mesh) => {
                assert_eq!(mesh.mtls.mode, MtlsMode::Permissive);
                assert_eq!(mesh.certificate_ttl.as_millis(), 12 * 3_600_000);
            }
            Spec::TrafficPolicy(policy) => {
                assert!(matches!(
                    &policy.load_balancer,
                    LoadBalancerSpec::RingHash(HashOn::Header(h)) if h.as_str() == "x-user"
                ));
                let outlier = policy.outlier_detection.as_ref().unwrap();
                assert_eq!(outlier.consecutive_5xx.get(), 3);
                assert_eq!(outlier.consecutive_connect_failures.get(), 5);
                assert_eq!(outlier.max_ejection_time.as_millis(), 300_000);
            }
            Spec::AuthorizationPolicy(policy) => {
                assert_eq!(policy.action, AuthorizationAction::Deny);
                assert_eq!(policy.rules[0].to[0].methods[1].as_str(), "DELETE");
            }
            _ => {}
        }
    }
    let mesh = load_str(
        "m.yaml",
        "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n",
    )
    .unwrap();
    let Spec::Mesh(spec) = &mesh[0].spec else {
        panic!("not a Mesh");
    };
    assert_eq!(spec.trust_domain.as_str(), "weft.local");
    assert_eq!(mesh[0].metadata.namespace.as_str(), "default");
}

#[test]
fn documents_remember_where_they_start() {
    let text = "# leading comment\n\
                ---\n\
                apiVersion: weft.dev/v1alpha1\n\
                kind: Mesh\n\
                metadata: {name: a}\n\
                --- # empty document\n\
                # only a comment\n\
                ---\n\
                \n\
                apiVersion: weft.dev/v1alpha1\n\
                kind: Service\n\
                metadata: {name: b}\n\
                spec: {ports: [{port: 80}]}\n\
                ...\n";
    let resources = load_str("two.yaml", text).unwrap();
    let lines: Vec<String> = resources.iter().map(|r| r.location.to_string()).collect();
    assert_eq!(lines, ["two.yaml:3:1", "two.yaml:10:1"]);
}

#[test]
fn json_loads_too() {
    let json = r#"{"apiVersion": "weft.dev/v1alpha1", "kind": "Service",
                  "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}"#;
    assert_eq!(load_str("web.json", json).unwrap().len(), 1);
}

#[test]
fn bad_yaml_syntax_names_the_line() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: [web\nspec: {}\n";
    let message = error(text);
    assert_eq!(
        message,
        "routes.yaml:5:5: did not find expected ',' or ']', \
         while parsing a flow sequence at line 4 column 9"
    );
}

#[test]
fn unknown_kind_lists_the_known_ones() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: VirtualService\nmetadata: {name: web}\n";
    assert_eq!(
        error(text),
        "routes.yaml:2:7: kind: unknown kind \"VirtualService\"; known kinds: Mesh, Service, \
         HTTPRoute, GRPCRoute, TrafficPolicy, AuthorizationPolicy"
    );
}

#[test]
fn unsupported_gateway_api_field_is_an_error() {
    let message = error(&route("  - sessionPersistence:\n      sessionName: s\n"));
    assert!(
        message.starts_with(
            "routes.yaml:9:5: spec.rules[0]: unknown field `sessionPersistence`, expected one of"
        ),
        "{message}"
    );
    let message = error(&format!("{ROUTE_HEAD}  - {{}}\nstatus: {{}}\nextra: 1\n"));
    assert!(
        message.starts_with("routes.yaml:11:1: unknown field `extra`"),
        "{message}"
    );
}

#[test]
fn bad_regex_names_line_column_and_field() {
    let rules =
        "  - matches:\n    - path:\n        type: RegularExpression\n        value: \"(\"\n";
    assert_eq!(
        error(&route(rules)),
        "routes.yaml:12:16: spec.rules[0].matches[0].path.value: \
         invalid regular expression \"(\": unclosed group"
    );
    // With `type` after `value`, the value can only be judged at the end of the mapping.
    let rules =
        "  - matches:\n    - path:\n        value: \"(\"\n        type: RegularExpression\n";
    assert_eq!(
        error(&route(rules)),
        "routes.yaml:11:9: spec.rules[0].matches[0].path: value: \
         invalid regular expression \"(\": unclosed group"
    );
    let rules =
        "  - matches:\n    - headers:\n      - {type: RegularExpression, name: x, value: \"[\"}\n";
    let message = error(&route(rules));
    assert!(
        message.starts_with("routes.yaml:11:51: spec.rules[0].matches[0].headers[0].value:"),
        "{message}"
    );
}

#[test]
fn bad_duration_names_line_and_field() {
    let rules = "  - timeouts:\n      request: 1.5s\n";
    assert_eq!(
        error(&route(rules)),
        "routes.yaml:10:16: spec.rules[0].timeouts.request: invalid duration \"1.5s\": \
         each number needs a unit: d, h, m, s or ms; write it like 10s, 500ms, 1h30m or 7d"
    );
}

#[test]
fn percent_over_100_names_line_and_field() {
    let text = "apiVersion: weft.dev/v1alpha1\n\
                kind: TrafficPolicy\n\
                metadata: {name: web}\n\
                spec:\n\
                \x20 targetRef: {name: web}\n\
                \x20 fault:\n\
                \x20   abort:\n\
                \x20     percent: 150\n\
                \x20     status: 503\n";
    assert_eq!(
        error(text),
        "routes.yaml:8:16: spec.fault.abort.percent: invalid percentage 150: use 0-100"
    );
}

#[test]
fn port_zero_names_line_and_field() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\n\
                spec:\n  ports:\n  - port: 80\n  - port: 0\n";
    assert_eq!(
        error(text),
        "routes.yaml:7:11: spec.ports[1].port: invalid port 0: use 1-65535"
    );
}

#[test]
fn names_must_be_dns_labels_and_present() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata:\n  name: My_Mesh\n";
    let message = error(text);
    assert!(
        message.starts_with("routes.yaml:4:9: metadata.name: invalid name \"My_Mesh\""),
        "{message}"
    );
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata:\n  namespace: x\n";
    assert_eq!(
        error(text),
        "routes.yaml:4:3: metadata: missing field `name`"
    );
}

#[test]
fn api_version_must_suit_the_kind() {
    let text = "apiVersion: gateway.networking.k8s.io/v1\nkind: Mesh\nmetadata: {name: m}\n";
    assert_eq!(
        error(text),
        "routes.yaml:1:13: apiVersion: unsupported apiVersion \"gateway.networking.k8s.io/v1\" \
         for kind Mesh; use weft.dev/v1alpha1"
    );
}

#[test]
fn whole_mapping_checks_point_at_the_mapping() {
    let rules =
        "  - filters:\n    - type: RequestRedirect\n      urlRewrite: {hostname: a.example}\n";
    assert_eq!(
        error(&route(rules)),
        "routes.yaml:10:7: spec.rules[0].filters[0]: \
         a RequestRedirect filter takes `requestRedirect`, not `urlRewrite`"
    );
    let rules =
        "  - filters:\n    - type: RequestRedirect\n      requestRedirect: {port: 8443}\n    \
                 backendRefs: [{name: web}]\n";
    let message = error(&route(rules));
    assert!(
        message.starts_with("routes.yaml:9:5: spec.rules[0]: a RequestRedirect"),
        "{message}"
    );
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\n\
                spec:\n  ports: []\n";
    assert_eq!(
        error(text),
        "routes.yaml:5:10: spec.ports: a service needs at least one port"
    );
}

#[test]
fn every_broken_document_is_reported() {
    let text = "apiVersion: weft.dev/v1alpha1\nkind: Nope\nmetadata: {name: a}\n---\n\
                apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: b}\n";
    let err = load_str("many.yaml", text).unwrap_err();
    let lines: Vec<String> = err.diagnostics().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("many.yaml:2:7: kind: unknown kind"));
    assert_eq!(lines[1], "many.yaml:5:1: missing field `spec`");
}

#[test]
fn directories_load_in_name_order() {
    let dir = std::env::temp_dir().join(format!("weft-model-load-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let service = |name: &str| {
        format!("apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{ports: [{{port: 80}}]}}\n")
    };
    fs::write(dir.join("b.yaml"), service("second")).unwrap();
    fs::write(dir.join("a.yml"), service("first")).unwrap();
    fs::write(dir.join("notes.txt"), "not a resource").unwrap();
    let names: Vec<String> = load_path(&dir)
        .unwrap()
        .iter()
        .map(|r| r.metadata.name.to_string())
        .collect();
    assert_eq!(names, ["first", "second"]);

    let broken = service("third").replace("port: 80", "port: 0");
    fs::write(dir.join("c.yaml"), broken).unwrap();
    let message = load_path(&dir).unwrap_err().to_string();
    let expected = format!(
        "{}:4:23: spec.ports[0].port: invalid port 0",
        dir.join("c.yaml").display()
    );
    assert!(message.starts_with(&expected), "{message}");

    let missing = dir.join("missing.yaml");
    assert!(matches!(load_path(&missing), Err(LoadError::Io { .. })));
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn more_checks_each_name_their_place() {
    let service = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: web}\nspec:\n";
    let policy = "apiVersion: weft.dev/v1alpha1\nkind: TrafficPolicy\nmetadata: {name: web}\n\
                  spec:\n  targetRef: {name: web}\n";
    let grpc = ROUTE_HEAD.replace("HTTPRoute", "GRPCRoute");
    let cases = [
        (
            format!("{service}  ports: [{{port: 80, protocol: udp}}]\n"),
            "routes.yaml:5:32: spec.ports[0].protocol: unknown variant `udp`",
        ),
        (
            format!("{service}  ports: [{{port: 80}}, {{port: 80}}]\n"),
            "routes.yaml:5:10: spec.ports: port 80 is listed twice",
        ),
        (
            format!(
                "{service}  ports: [{{port: 80}}]\n  healthCheck: {{http: {{path: /}}, tcp: {{}}}}\n"
            ),
            "routes.yaml:6:16: spec.healthCheck: set exactly one of `http` and `tcp`",
        ),
        (
            format!(
                "{service}  ports: [{{port: 80}}]\n  endpoints:\n  \
                 - {{address: 10.0.0.1:80, mesh: true, identity: spiffe://x}}\n"
            ),
            "routes.yaml:7:50: spec.endpoints[0].identity: invalid SPIFFE id \"spiffe://x\"",
        ),
        (
            format!("{policy}  loadBalancer: {{type: RingHash}}\n"),
            "routes.yaml:6:17: spec.loadBalancer: type RingHash needs `ringHash`",
        ),
        (
            format!("{policy}  outlierDetection: {{maxEjectionPercent: 101}}\n"),
            "routes.yaml:6:42: spec.outlierDetection.maxEjectionPercent: invalid percentage 101",
        ),
        (
            format!(
                "{grpc}  - filters:\n    - type: RequestRedirect\n      requestRedirect: {{}}\n"
            ),
            "routes.yaml:9:5: spec.rules[0]: a GRPCRoute cannot use a RequestRedirect filter",
        ),
        (
            format!("{grpc}  - matches:\n    - method: {{service: helloworld/Greeter}}\n"),
            // No `type` key: the default type is known only at the end of the mapping.
            "routes.yaml:10:15: spec.rules[0].matches[0].method: service: invalid gRPC service",
        ),
        (
            route("  - timeouts: {request: 1s, backendRequest: 2s}\n"),
            "routes.yaml:9:5: spec.rules[0]: timeouts: backendRequest 2s is longer than request 1s",
        ),
        (
            route(
                "  - filters:\n    - type: RequestMirror\n      requestMirror:\n        \
                 backendRef: {name: shadow}\n        percent: 5\n        fraction: {numerator: 1}\n",
            ),
            "routes.yaml:12:9: spec.rules[0].filters[0].requestMirror: set `percent` or \
             `fraction`, not both",
        ),
        (
            route("  - backendRefs: [{kind: Gateway, name: web}]\n"),
            "routes.yaml:9:19: spec.rules[0].backendRefs[0]: kind \"Gateway\" is not supported",
        ),
        (
            route("  - backendRefs: [{name: web, weight: 1000001}]\n"),
            "routes.yaml:9:39: spec.rules[0].backendRefs[0].weight: invalid weight 1000001",
        ),
        (
            route("  - retry: {codes: [200]}\n"),
            "routes.yaml:9:21: spec.rules[0].retry.codes[0]: invalid status code 200: use 400-599",
        ),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(
            message.starts_with(expected),
            "expected {expected:?}\n     got {message:?}"
        );
    }
}

#[test]
fn a_parent_without_kind_is_a_gateway_and_is_refused_not_attached_to_a_service() {
    let with_parents = |parents: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web}}\n\
             spec:\n  parentRefs: {parents}\n  rules: []\n"
        )
    };
    let message = error(&with_parents("[{name: web}]"));
    assert!(
        message.starts_with("routes.yaml:5:16: spec.parentRefs[0]: this parent is a Gateway"),
        "{message}"
    );
    assert!(
        message.contains("{group: \"\", kind: Service, name: ...}"),
        "{message}"
    );
    let gateway = "[{group: gateway.networking.k8s.io, kind: Gateway, name: web}]";
    assert!(error(&with_parents(gateway)).contains("kind \"Gateway\" is not supported yet"));
    let wrong_group = "[{group: gateway.networking.k8s.io, kind: Service, name: web}]";
    assert!(error(&with_parents(wrong_group)).contains("group \"gateway.networking.k8s.io\""));
    // A Service parent, as an API server returns it, or with the kind alone.
    for parents in [
        "[{group: \"\", kind: Service, name: web}]",
        "[{kind: Service, name: web}]",
    ] {
        let text = with_parents(parents);
        let loaded = load_str("routes.yaml", &text);
        assert!(loaded.is_ok(), "{parents}: {:?}", loaded.err());
    }
}

#[test]
fn an_external_service_has_hosts_named_endpoints_and_tls() {
    let head = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: payments}\n\
                spec:\n  ports: [{port: 80, protocol: http}]\n";
    // The load checks that the PEM holds a certificate block; the proxy parses the X.509.
    let pem = "-----BEGIN CERTIFICATE-----\n        AAEC\n        -----END CERTIFICATE-----";
    let text = format!(
        "{head}  hosts: [api.payments.example]\n  endpoints:\n  \
         - address: api.payments.example:443\n    tls:\n      caCertificates: |\n        {pem}\n"
    );
    let resources = load_str("payments.yaml", &text).unwrap();
    let Spec::Service(spec) = &resources[0].spec else {
        panic!("not a service");
    };
    assert_eq!(spec.hosts[0].as_str(), "api.payments.example");
    assert_eq!(
        spec.endpoints[0].address.get().to_string(),
        "api.payments.example:443"
    );
    assert!(spec.endpoints[0]
        .tls
        .as_ref()
        .unwrap()
        .ca_certificates
        .is_some());

    let cases = [
        (
            format!("{head}  hosts: [a.example, a.example]\n"),
            "spec.hosts: host a.example is listed twice",
        ),
        (
            format!("{head}  hosts: [\"*.example\"]\n"),
            "spec.hosts[0]: invalid host name",
        ),
        (
            format!("{head}  endpoints: [{{address: \"10.0.0.300:80\"}}]\n"),
            "spec.endpoints[0].address: invalid address \"10.0.0.300:80\"",
        ),
        (
            format!("{head}  endpoints: [{{address: a.example:443, mesh: true, tls: {{}}}}]\n"),
            "spec.endpoints[0]: `tls` is for endpoints outside the mesh",
        ),
        (
            format!(
                "{head}  endpoints: [{{address: a.example:443, tls: {{caCertificates: nope}}}}]\n"
            ),
            "spec.endpoints[0].tls: `caCertificates` holds no PEM \"CERTIFICATE\" block",
        ),
    ];
    for (text, expected) in cases {
        let message = error(&text);
        assert!(
            message.contains(expected),
            "expected {expected:?}\n     got {message:?}"
        );
    }

    let other = text.replace("name: payments", "name: billing");
    let both = format!("{text}---\n{other}");
    let err = crate::validate(&load_str("both.yaml", &both).unwrap())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("host api.payments.example is claimed by"),
        "{err}"
    );
}
