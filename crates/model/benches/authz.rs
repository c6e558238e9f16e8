//! What one authorization decision costs: a Service with 100 policies of 10 rules each,
//! laid out so a call is judged against every rule (50 DENY policies that match nothing,
//! then 50 ALLOW policies whose very last rule allows the caller), at L4 (a connection) and
//! L7 (a request), and with no policy at all. Plain timing over many decisions, not a test:
//! `cargo bench -p weft-model --bench authz`.

use std::hint::black_box;
use std::time::Instant;
use weft_model::authz::{judge, AuthzIndex, Call, Caller, Headers, Request};
use weft_model::{compile, load_str, validate};

struct NoHeaders;

impl Headers for NoHeaders {
    fn has(&self, _name: &str, _value: &str) -> bool {
        false
    }
}

/// The Service and its policies; at L4 the rules name callers only (a rule that names
/// methods or paths never allows a connection).
fn mesh(policies: usize, l7: bool) -> String {
    let mut yaml = String::from(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {name: backend}\n\
         spec: {ports: [{port: 80, protocol: http}]}\n",
    );
    for p in 0..policies {
        let action = if p < policies / 2 { "DENY" } else { "ALLOW" };
        yaml.push_str(&format!(
            "---\napiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\n\
             metadata: {{name: p{p:03}}}\nspec:\n  targetRef: {{kind: Service, name: backend}}\n\
             \x20 action: {action}\n  rules:\n"
        ));
        for r in 0..10 {
            let caller = if p == policies - 1 && r == 9 {
                "client".to_owned()
            } else {
                format!("caller-{p}-{r}")
            };
            yaml.push_str(&format!("  - from: [{{services: [{caller}]}}]\n"));
            if l7 {
                yaml.push_str("    to: [{methods: [GET], paths: [/1k, /api/*]}]\n");
            }
        }
    }
    yaml
}

fn time(label: &str, policies: usize, layer: &str) {
    let resources =
        load_str("bench.yaml", &mesh(policies, layer == "L7")).expect("the bench's YAML loads");
    validate(&resources).expect("the bench's YAML is valid");
    let config = compile(&resources);
    let service = &config.services[0];
    let caller = Caller::Mesh {
        identity: "spiffe://weft.local/ns/default/svc/client",
        namespace: "default",
        service: "client",
    };
    let call = Call {
        caller,
        port: 80,
        request: (layer == "L7").then_some(Request {
            method: "GET",
            path: "/1k",
            headers: &NoHeaders,
        }),
    };
    let index = AuthzIndex::new(&service.authorization);
    let judged = judge(
        &service.authorization,
        &index,
        config.default_authorization,
        &call,
    );
    assert!(judged.allowed, "the bench's caller must be allowed");
    let rounds = if policies == 0 { 10_000_000 } else { 200_000 };
    let started = Instant::now();
    for _ in 0..rounds {
        black_box(judge(
            black_box(&service.authorization),
            &index,
            config.default_authorization,
            black_box(&call),
        ));
    }
    let each = started.elapsed().as_nanos() as f64 / rounds as f64;
    println!("{label:<28} {layer}: {each:>8.1} ns per decision");
}

fn main() {
    for layer in ["L4", "L7"] {
        time("no policy", 0, layer);
        time("100 policies x 10 rules", 100, layer);
    }
}
