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
mod spiffe;
mod summary;
mod svid;
mod timestamp;
mod tls;
mod verify;

pub use dev_ca::{generate_csr, CertificateAuthority, IssuedCert, SignedCert};
pub use error::IdentityError;
pub use renewal::{sign_renewal, verify_renewal};
pub use spiffe::SpiffeId;
pub use summary::{fingerprint, issuing_root, parse_pem, to_pem, CertSummary};
pub use svid::SvidError;
pub use timestamp::format_utc;
pub use tls::{peer_identity, TlsIdentity};
