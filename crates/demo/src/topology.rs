//! The sample mesh: its workloads, who calls whom, and the mesh file that wires them up.
//!
//! ```text
//! loadgen -> frontend -> reviews -(90%)-> reviews-v1 -> ratings
//!                                \-(10%)-> reviews-v2 -> ratings
//! ```
//!
//! `reviews` has no workload of its own: the `reviews-split` route sends its requests to
//! the two versions, and the sidecars measure every hop.

use std::fmt::Write;
use std::net::SocketAddr;

pub const TRUST_DOMAIN: &str = "weft.local";
pub const NAMESPACE: &str = "default";

/// A workload: an app and its sidecar, named after the Service it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Loadgen,
    Frontend,
    ReviewsV1,
    ReviewsV2,
    Ratings,
}

impl Workload {
    /// In the order requests flow through them; the summary lists edges in this order.
    pub const ALL: [Workload; 5] = [
        Workload::Loadgen,
        Workload::Frontend,
        Workload::ReviewsV1,
        Workload::ReviewsV2,
        Workload::Ratings,
    ];

    pub fn service(self) -> &'static str {
        match self {
            Workload::Loadgen => "loadgen",
            Workload::Frontend => "frontend",
            Workload::ReviewsV1 => "reviews-v1",
            Workload::ReviewsV2 => "reviews-v2",
            Workload::Ratings => "ratings",
        }
    }
}

/// Every Service in the mesh file.
const SERVICES: [&str; 6] = [
    "loadgen",
    "frontend",
    "reviews",
    "reviews-v1",
    "reviews-v2",
    "ratings",
];

/// How `reviews` traffic is split until someone edits the file.
pub const SPLIT: [(&str, u32); 2] = [("reviews-v1", 90), ("reviews-v2", 10)];

const HEADER: &str = "\
# Written by `weft demo`. Every sidecar reads this file (weft proxy --local) and reloads it
# within a second of a change: try other weights in the reviews-split route at the end.
";

/// The mesh file, with each workload's sidecar inbound address as its Service's endpoint.
/// Workloads missing from `inbound` get a Service without endpoints: sidecars need the
/// file to start, but their addresses are only known once they have.
pub fn mesh_file(inbound: &[(&str, SocketAddr)]) -> String {
    let mut yaml = String::from(HEADER);
    for service in SERVICES {
        yaml.push_str(&service_yaml(service, inbound));
        yaml.push_str("---\n");
    }
    yaml.push_str(&split_route_yaml());
    yaml
}

fn service_yaml(service: &str, inbound: &[(&str, SocketAddr)]) -> String {
    let mut yaml = format!(
        "apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {service}\n  namespace: {NAMESPACE}\n\
         spec:\n  ports:\n    - port: 80\n      protocol: http\n"
    );
    let endpoints: Vec<SocketAddr> = inbound
        .iter()
        .filter(|(name, _)| *name == service)
        .map(|(_, addr)| *addr)
        .collect();
    if !endpoints.is_empty() {
        yaml.push_str("  endpoints:\n");
        for addr in endpoints {
            // `mesh: true`: a sidecar listens there, so the hop is mutual TLS.
            let _ = writeln!(yaml, "    - address: \"{addr}\"\n      mesh: true");
        }
    }
    yaml
}

fn split_route_yaml() -> String {
    let mut yaml = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata:\n  name: reviews-split\n  namespace: {NAMESPACE}\n\
         spec:\n  parentRefs:\n    - {{group: \"\", kind: Service, name: reviews}}\n  rules:\n    - backendRefs:\n"
    );
    for (backend, weight) in SPLIT {
        let _ = writeln!(yaml, "        - {{name: {backend}, weight: {weight}}}");
    }
    // reviews-v2 fails now and then; retrying those failures hides them from the frontend.
    yaml.push_str("      retry: {attempts: 2, codes: [500, 503], backoff: 25ms}\n");
    yaml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_appear_once_their_sidecars_are_known() {
        let minimal = mesh_file(&[]);
        assert!(!minimal.contains("endpoints:"));
        assert_eq!(minimal.matches("\nkind: Service\n").count(), SERVICES.len());

        let addr: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        let full = mesh_file(&[("reviews-v1", addr)]);
        assert_eq!(full.matches("endpoints:").count(), 1);
        assert!(full.contains("    - address: \"127.0.0.1:40123\"\n      mesh: true\n"));
        assert!(full.contains("- {name: reviews-v1, weight: 90}"));
    }

    #[test]
    fn the_mesh_file_is_what_a_sidecar_accepts() {
        let inbound: Vec<(&str, SocketAddr)> = Workload::ALL
            .iter()
            .zip(40001..)
            .map(|(workload, port)| (workload.service(), SocketAddr::from(([127, 0, 0, 1], port))))
            .collect();
        for text in [mesh_file(&[]), mesh_file(&inbound)] {
            let resources = weft_model::load_str("mesh.yaml", &text).unwrap();
            let warnings = weft_model::validate(&resources).unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
        }

        let resources = weft_model::load_str("mesh.yaml", &mesh_file(&inbound)).unwrap();
        let config = weft_model::compile(&resources);
        let service = |name: &str| config.services.iter().find(|s| s.name == name).unwrap();
        assert!(
            !service("reviews").routes.is_empty(),
            "the split route applies to reviews"
        );
        let endpoint = &service("reviews-v2").endpoints[0];
        assert_eq!(endpoint.address, SocketAddr::from(([127, 0, 0, 1], 40004)));
        assert_eq!(
            endpoint.identity.as_deref(),
            Some("spiffe://weft.local/ns/default/svc/reviews-v2"),
            "the certificate the demo issues for reviews-v2 carries this id"
        );
    }
}
