//! The sample mesh: its workloads, who calls whom, and the resources that wire them up.
//!
//! ```text
//! loadgen -> frontend -(gRPC)-> catalog
//!                     \-(HTTP)-> reviews -(90%)-> reviews-v1 -> ratings
//!                                        \-(10%)-> reviews-v2 -> ratings
//! ```
//!
//! `reviews` has no workload of its own: the `reviews-split` route sends its requests to
//! the two versions, and the sidecars measure every hop. No Service lists endpoints: each
//! sidecar registers its workload with the control plane, which makes it an endpoint of
//! its Service once its app is healthy.

use std::fmt::Write;

pub const NAMESPACE: &str = "default";

/// A workload: an app and its sidecar, named after the Service it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Loadgen,
    Frontend,
    Catalog,
    ReviewsV1,
    ReviewsV2,
    Ratings,
}

impl Workload {
    /// In the order requests flow through them; the summary lists edges in this order.
    pub const ALL: [Workload; 6] = [
        Workload::Loadgen,
        Workload::Frontend,
        Workload::Catalog,
        Workload::ReviewsV1,
        Workload::ReviewsV2,
        Workload::Ratings,
    ];

    pub fn service(self) -> &'static str {
        match self {
            Workload::Loadgen => "loadgen",
            Workload::Frontend => "frontend",
            Workload::Catalog => "catalog",
            Workload::ReviewsV1 => "reviews-v1",
            Workload::ReviewsV2 => "reviews-v2",
            Workload::Ratings => "ratings",
        }
    }
}

/// Every Service the demo applies, with the protocol of its one port.
const SERVICES: [(&str, &str); 7] = [
    ("loadgen", "http"),
    ("frontend", "http"),
    ("catalog", "grpc"),
    ("reviews", "http"),
    ("reviews-v1", "http"),
    ("reviews-v2", "http"),
    ("ratings", "http"),
];

/// How `reviews` traffic is split until someone applies another split.
pub const SPLIT: [(&str, u32); 2] = [("reviews-v1", 90), ("reviews-v2", 10)];
/// A split to suggest in the guide.
pub const OTHER_SPLIT: [(&str, u32); 2] = [("reviews-v1", 50), ("reviews-v2", 50)];

/// Everything the demo applies to the control plane, as one multi-document YAML.
pub fn resources() -> String {
    let mut yaml = String::new();
    for (service, protocol) in SERVICES {
        let _ = write!(
            yaml,
            "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {service}\n  namespace: {NAMESPACE}\n\
             spec:\n  ports:\n    - port: 80\n      protocol: {protocol}\n---\n"
        );
    }
    yaml.push_str(&split_route(&SPLIT));
    yaml.push_str("---\n");
    yaml.push_str(&catalog_route());
    yaml.push_str("---\n");
    yaml.push_str(&authorization());
    yaml
}

/// Who may call what: catalog answers only the frontend's gRPC calls, ratings only the
/// reviews. Anything else is denied by their sidecars (`weft explain` shows why).
pub fn authorization() -> String {
    format!(
        "apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: catalog-callers\n  namespace: {NAMESPACE}\n\
         spec:\n  targetRef: {{kind: Service, name: catalog}}\n  rules:\n\
         \x20   - from: [{{services: [frontend]}}]\n      to: [{{paths: [/weft.demo.v1.Catalog/*]}}]\n\
         ---\n\
         apiVersion: weft.dev/v1alpha1\nkind: AuthorizationPolicy\nmetadata:\n  name: ratings-callers\n  namespace: {NAMESPACE}\n\
         spec:\n  targetRef: {{kind: Service, name: ratings}}\n  rules:\n\
         \x20   - from: [{{services: [reviews-v1, reviews-v2]}}]\n      to: [{{methods: [GET]}}]\n"
    )
}

/// The `reviews-split` HTTPRoute with these weights.
pub fn split_route(weights: &[(&str, u32)]) -> String {
    let mut yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: reviews-split\n  namespace: {NAMESPACE}\n\
         spec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: reviews}}\n  rules:\n    - backendRefs:\n"
    );
    for (backend, weight) in weights {
        let _ = writeln!(yaml, "        - {{name: {backend}, weight: {weight}}}");
    }
    // reviews-v2 fails now and then; retrying those failures hides them from the frontend.
    yaml.push_str("      retry: {attempts: 2, codes: [500, 503], backoff: 25ms}\n");
    yaml
}

/// Calls to the catalog are retried when it is briefly unavailable.
fn catalog_route() -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata:\n  name: catalog\n  namespace: {NAMESPACE}\n\
         spec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: catalog}}\n  rules:\n\
         \x20   - backendRefs:\n        - {{name: catalog}}\n\
         \x20     retry: {{attempts: 2, grpcCodes: [UNAVAILABLE], backoff: 25ms}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::net::SocketAddr;

    #[test]
    fn the_resources_are_valid_and_list_no_endpoints() {
        let text = resources();
        assert!(
            !text.contains("endpoints:"),
            "endpoints come from registration"
        );
        let resources = weft_model::load_str("demo.yaml", &text).unwrap();
        let warnings = weft_model::validate(&resources).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let other = weft_model::load_str("split.yaml", &split_route(&OTHER_SPLIT)).unwrap();
        assert!(weft_model::validate(&other).is_ok());
    }

    #[test]
    fn registered_workloads_become_mesh_endpoints_of_their_services() {
        let resources = weft_model::load_str("demo.yaml", &resources()).unwrap();
        let workloads: Vec<weft_model::Workload> = Workload::ALL
            .iter()
            .zip(40001..)
            .map(|(workload, port)| weft_model::Workload {
                service: workload.service().to_owned(),
                namespace: NAMESPACE.to_owned(),
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                labels: BTreeMap::new(),
                zone: None,
            })
            .collect();
        let config = weft_model::compile_with_workloads(&resources, &workloads, None);
        let service = |name: &str| config.services.iter().find(|s| s.name == name).unwrap();
        assert!(
            !service("reviews").routes.is_empty(),
            "the split route applies to reviews"
        );
        assert!(
            !service("catalog").routes.is_empty(),
            "the catalog route applies"
        );
        assert_eq!(service("catalog").authorization.len(), 1);
        assert_eq!(service("ratings").authorization.len(), 1);
        let endpoint = &service("reviews-v2").endpoints[0];
        assert_eq!(
            endpoint.address.ip(),
            Some(SocketAddr::from(([127, 0, 0, 1], 40005)))
        );
        assert_eq!(
            endpoint.identity.as_deref(),
            Some("spiffe://weft.local/ns/default/svc/reviews-v2"),
            "the certificate the demo issues for reviews-v2 carries this id"
        );
        let names: BTreeSet<&str> = SERVICES.iter().map(|(name, _)| *name).collect();
        for workload in Workload::ALL {
            assert!(names.contains(workload.service()));
        }
    }
}
