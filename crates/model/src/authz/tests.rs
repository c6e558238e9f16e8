use super::*;
use crate::config::ProxyConfig;
use crate::{compile, load_str, validate};
use std::collections::HashMap;

const SERVICE: &str = "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: api, namespace: prod}\nspec: {ports: [{port: 9080, protocol: http}, {port: 9090, protocol: tcp}]}\n";

fn compiled(policies: &str) -> ProxyConfig {
    let text = format!("{SERVICE}---\n{policies}");
    let resources = load_str("test.yaml", &text).unwrap();
    validate(&resources).unwrap();
    compile(&resources)
}

fn policies(config: &ProxyConfig) -> &[AuthzPolicy] {
    &config.services[0].authorization
}

struct Map(HashMap<&'static str, &'static str>);

impl Headers for Map {
    fn has(&self, name: &str, value: &str) -> bool {
        self.0.get(name) == Some(&value)
    }
}

fn mesh(service: &'static str, namespace: &'static str) -> Caller<'static> {
    let identity =
        Box::leak(format!("spiffe://weft.local/ns/{namespace}/svc/{service}").into_boxed_str());
    Caller::Mesh {
        identity,
        namespace,
        service,
    }
}

/// A request's verdict as `(allowed, "policy#rule")`.
fn http(
    config: &ProxyConfig,
    caller: Caller,
    method: &str,
    path: &str,
    headers: &Map,
) -> (bool, String) {
    let call = Call {
        caller,
        port: 9080,
        request: Some(Request {
            method,
            path,
            headers,
        }),
    };
    verdict(config, &call)
}

fn tcp(config: &ProxyConfig, caller: Caller, port: u16) -> (bool, String) {
    let call = Call {
        caller,
        port,
        request: None,
    };
    verdict(config, &call)
}

/// The judgment of `call`, as `(allowed, "policy#rule")`.
fn verdict(config: &ProxyConfig, call: &Call) -> (bool, String) {
    let judgment = judge(
        policies(config),
        &AuthzIndex::new(policies(config)),
        config.default_authorization,
        call,
    );
    (
        judgment.allowed,
        format!("{}#{}", judgment.cause.policy_name(), judgment.cause.rule),
    )
}

fn no_headers() -> Map {
    Map(HashMap::new())
}

#[test]
fn without_policies_the_mesh_default_decides() {
    let open = compiled("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\n");
    assert_eq!(
        http(&open, mesh("web", "prod"), "GET", "/", &no_headers()),
        (true, "mesh#default".to_owned())
    );
    let closed = compiled("apiVersion: weft.dev/v1alpha1\nkind: Mesh\nmetadata: {name: m}\nspec: {defaultAuthorization: deny}\n");
    assert_eq!(
        http(&closed, mesh("web", "prod"), "GET", "/", &no_headers()),
        (false, "mesh#default".to_owned())
    );
    assert_eq!(
        tcp(&closed, Caller::Unauthenticated, 9090),
        (false, "mesh#default".to_owned())
    );
}

const ALLOW_WEB: &str = r#"apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: allow-web, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  rules:
  - from: [{services: [web]}]
    to: [{methods: [GET], paths: [/public/*, /users/*/orders, /health]}]
  - from: [{identities: ["spiffe://weft.local/ns/ops/*"]}]
  - from: [{unauthenticated: true}]
    to: [{paths: [/plain]}]
"#;

const DENY_ADMIN: &str = r#"apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  action: DENY
  rules:
  - to: [{paths: [/public/admin*]}]
  - when: [{header: x-debug, values: ["1", "yes"]}]
"#;

#[test]
fn deny_wins_and_an_allow_denies_what_it_does_not_name() {
    let config = compiled(&format!("{ALLOW_WEB}---\n{DENY_ADMIN}"));
    let web = || mesh("web", "prod");
    let none = no_headers();
    let cases: &[(Caller, &str, &str, bool, &str)] = &[
        (web(), "GET", "/public/a", true, "prod/allow-web#0"),
        (web(), "GET", "/health", true, "prod/allow-web#0"),
        (web(), "GET", "/healthz", false, "prod/allow-web#none"),
        (web(), "GET", "/users/7/orders", true, "prod/allow-web#0"),
        (
            web(),
            "GET",
            "/users/7/8/orders",
            false,
            "prod/allow-web#none",
        ),
        (web(), "POST", "/public/a", false, "prod/allow-web#none"),
        (web(), "GET", "/public/admin/x", false, "prod/deny-admin#0"),
        // Same name, other namespace: not the `web` the policy means.
        (
            mesh("web", "dev"),
            "GET",
            "/public/a",
            false,
            "prod/allow-web#none",
        ),
        (
            mesh("anything", "ops"),
            "DELETE",
            "/x",
            true,
            "prod/allow-web#1",
        ),
        (
            mesh("ops", "ops-2"),
            "DELETE",
            "/x",
            false,
            "prod/allow-web#none",
        ),
        (
            Caller::Unauthenticated,
            "GET",
            "/plain",
            true,
            "prod/allow-web#2",
        ),
        (
            Caller::Unauthenticated,
            "GET",
            "/public/a",
            false,
            "prod/allow-web#none",
        ),
    ];
    for (caller, method, path, allowed, cause) in cases {
        assert_eq!(
            http(&config, *caller, method, path, &none),
            (*allowed, cause.to_string()),
            "{method} {path} from {caller:?}"
        );
    }
    let debug = Map(HashMap::from([("x-debug", "yes")]));
    assert_eq!(
        http(&config, web(), "GET", "/public/a", &debug),
        (false, "prod/deny-admin#1".to_owned())
    );
}

#[test]
fn a_connection_is_judged_only_on_what_it_shows() {
    let config = compiled(&format!("{ALLOW_WEB}---\n{DENY_ADMIN}"));
    // The DENY names paths and headers a connection does not show: it fails closed.
    assert_eq!(
        tcp(&config, mesh("ops", "ops"), 9090),
        (false, "prod/deny-admin#0".to_owned())
    );
    let allow_only = compiled(ALLOW_WEB);
    // An ALLOW rule that needs a method or path does not allow a connection...
    assert_eq!(
        tcp(&allow_only, mesh("web", "prod"), 9090),
        (false, "prod/allow-web#none".to_owned())
    );
    // ...one that names only callers does.
    assert_eq!(
        tcp(&allow_only, mesh("x", "ops"), 9090),
        (true, "prod/allow-web#1".to_owned())
    );
}

#[test]
fn ports_narrow_a_policy_and_a_rule() {
    let config = compiled(
        r#"apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: tcp-only, namespace: prod}
spec:
  targetRef: {kind: Service, name: api, port: 9090}
  action: DENY
  rules: [{from: [{namespaces: [dev]}]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: http-port, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  action: DENY
  rules: [{to: [{ports: [9080]}], from: [{namespaces: [blocked]}]}]
"#,
    );
    assert!(!tcp(&config, mesh("a", "dev"), 9090).0);
    assert!(http(&config, mesh("a", "dev"), "GET", "/", &no_headers()).0);
    assert!(tcp(&config, mesh("a", "blocked"), 9090).0);
    assert_eq!(
        http(&config, mesh("a", "blocked"), "GET", "/", &no_headers()),
        (false, "prod/http-port#0".to_owned())
    );
}

#[test]
fn dry_run_and_audit_record_without_deciding() {
    let config = compiled(
        r#"apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: trial, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  mode: dry-run
  rules: [{from: [{services: [web]}]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: watch-posts, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  action: AUDIT
  rules: [{to: [{methods: [GET]}]}, {to: [{methods: [POST]}]}]
"#,
    );
    let headers = no_headers();
    let post = |caller| Call {
        caller,
        port: 9080,
        request: Some(Request {
            method: "POST",
            path: "/",
            headers: &headers,
        }),
    };
    let policies = policies(&config);
    let index = AuthzIndex::new(policies);
    let web = judge(
        policies,
        &index,
        config.default_authorization,
        &post(mesh("web", "prod")),
    );
    assert!(web.allowed);
    assert_eq!(web.cause.rule, RuleRef::MeshDefault);
    assert_eq!(web.would_deny, None);
    let audited = web.audited.unwrap();
    assert_eq!(
        (audited.policy_name(), audited.rule),
        ("prod/watch-posts", RuleRef::Rule(1))
    );

    let other = judge(
        policies,
        &index,
        config.default_authorization,
        &post(mesh("other", "prod")),
    );
    assert!(other.allowed, "a dry run denies nothing");
    let would = other.would_deny.unwrap();
    assert_eq!(
        (would.policy_name(), would.rule),
        ("prod/trial", RuleRef::NoAllowMatched)
    );
}

#[test]
fn globs_stay_linear_on_hostile_paths() {
    let glob = Pattern::parse("/a/*b*c*d*e/x");
    assert!(matches!(glob, Pattern::Glob(_)));
    assert!(glob.matches("/a/1b2c3d4e/x"));
    assert!(glob.matches("/a/bcde/x"));
    assert!(!glob.matches("/a/b/c/d/e/x"), "a * never crosses a /");
    // 64 KiB of near-misses: with backtracking over four stars this would not finish.
    let hostile = format!("/a/{}/x", "bcd".repeat(20_000));
    assert!(!glob.matches(&hostile));
    assert_eq!(
        Pattern::parse("/api/*"),
        Pattern::Prefix("/api/".to_owned())
    );
    assert_eq!(Pattern::parse("*"), Pattern::Any);
    assert_eq!(Pattern::parse("/x"), Pattern::Exact("/x".to_owned()));
}

/// The verdict a plain scan of every rule gives ([`trace`] looks at all of them): what the
/// index must never change.
fn scanned(config: &ProxyConfig, call: &Call) -> (bool, String) {
    let traces = trace(policies(config), call);
    let in_force = |t: &&PolicyTrace| t.applies && !t.policy.dry_run;
    let first = |action| {
        traces
            .iter()
            .filter(in_force)
            .filter(|t| t.policy.action == action)
            .find_map(|t| {
                t.matching_rules
                    .first()
                    .map(|r| format!("{}#{r}", t.policy.name))
            })
    };
    if let Some(cause) = first(AuthzAction::Deny) {
        return (false, cause);
    }
    if let Some(cause) = first(AuthzAction::Allow) {
        return (true, cause);
    }
    match traces
        .iter()
        .filter(in_force)
        .find(|t| t.policy.action == AuthzAction::Allow)
    {
        Some(t) => (false, format!("{}#none", t.policy.name)),
        None => (
            config.default_authorization.is_allow(),
            "mesh#default".to_owned(),
        ),
    }
}

#[test]
fn the_index_gives_the_verdict_of_a_full_scan() {
    let config = compiled(
        r#"apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: a-deny, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  action: DENY
  rules:
  - from: [{namespaces: [evil]}]
  - from: [{identities: ["spiffe://weft.local/ns/prod/svc/web"]}]
    to: [{paths: [/admin/*]}]
  - from: [{services: [web, jobs], namespaces: [prod, ops]}, {identities: ["spiffe://weft.local/ns/x/*"]}]
    when: [{header: x-kill, values: ["1"]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: b-allow, namespace: prod}
spec:
  targetRef: {kind: Service, name: api}
  rules:
  - from: [{services: [web]}]
    to: [{methods: [GET]}]
  - from: [{namespaces: [ops]}]
  - from: [{identities: ["spiffe://weft.local/ns/x/svc/y", "*"]}]
    to: [{paths: [/public/*]}]
  - to: [{paths: [/health]}]
  - from: [{unauthenticated: true}]
    to: [{paths: [/plain]}]
---
apiVersion: weft.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {name: c-allow-tcp, namespace: prod}
spec:
  targetRef: {kind: Service, name: api, port: 9090}
  rules: [{from: [{services: [jobs]}]}]
"#,
    );
    let callers = [
        mesh("web", "prod"),
        mesh("jobs", "prod"),
        mesh("jobs", "ops"),
        mesh("web", "evil"),
        mesh("y", "x"),
        mesh("z", "x"),
        mesh("other", "prod"),
        Caller::Unauthenticated,
    ];
    let kill = Map(HashMap::from([("x-kill", "1")]));
    let none = no_headers();
    let mut checked = 0;
    for caller in callers {
        for (method, path) in [
            ("GET", "/"),
            ("POST", "/admin/x"),
            ("GET", "/public/a"),
            ("PUT", "/health"),
            ("GET", "/plain"),
        ] {
            for headers in [&none, &kill] {
                for port in [9080, 9090] {
                    let request = Request {
                        method,
                        path,
                        headers,
                    };
                    for call in [
                        Call {
                            caller,
                            port,
                            request: Some(request),
                        },
                        Call {
                            caller,
                            port,
                            request: None,
                        },
                    ] {
                        let got = verdict(&config, &call);
                        assert_eq!(
                            got,
                            scanned(&config, &call),
                            "{caller:?} {method} {path} port {port}"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    assert_eq!(checked, 8 * 5 * 2 * 2 * 2);
}
