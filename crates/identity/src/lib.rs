//! Workload identity for proxy-to-proxy mutual TLS.
//!
//! A workload is named by a SPIFFE id (`spiffe://<trust-domain>/ns/<namespace>/svc/<service>`)
//! carried as the URI SAN of its certificate. [`TlsIdentity`] holds one workload's certificate,
//! key and trust bundle and builds the rustls configs both ends of a mesh connection use:
//! the server requires a client certificate, the client accepts a server only if it presents
//! exactly the SPIFFE id it expected. [`CertificateAuthority`] issues such certificates for
//! local mode, tests and benchmarks; in mesh mode the control plane's CA does it.

#![forbid(unsafe_code)]

mod dev_ca;
mod error;
mod renewal;
mod revocation;
mod spiffe;
mod statement;
mod summary;
mod svid;
mod timestamp;
mod tls;
mod verify;

pub use dev_ca::{generate_csr, root_trust_domain, CertificateAuthority, IssuedCert, SignedCert};
pub use error::IdentityError;
pub use renewal::{sign_renewal, verify_renewal};
pub use revocation::Revoked;
pub use spiffe::SpiffeId;
pub use statement::verify_statement;
pub use summary::{fingerprint, issuing_root, parse_pem, to_pem, CertSummary};
pub use svid::SvidError;
pub use timestamp::format_utc;
pub use tls::{anonymous_client_config, origination_client_config, peer_identity, TlsIdentity};

/// The control plane's own identity is `spiffe://<trust-domain>/ns/weft-system/svc/weft-control`;
/// no workload can be issued a certificate in that namespace.
pub const CONTROL_PLANE_NAMESPACE: &str = "weft-system";
pub const CONTROL_PLANE_SERVICE: &str = "weft-control";

/// The control plane's SPIFFE id in `trust_domain`.
pub fn control_plane_id(trust_domain: &str) -> Result<SpiffeId, IdentityError> {
    SpiffeId::new(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE)
}
