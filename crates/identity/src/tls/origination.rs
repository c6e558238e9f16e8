//! TLS to servers outside the mesh, started by the proxy (TLS origination): the server is
//! checked the web's way (a chain to a trusted CA and the expected name), not by SPIFFE id,
//! and the proxy shows no certificate. Same crypto provider and versions as the mesh.

use super::{provider, roots_from_pem, PROTOCOL_VERSIONS};
use crate::IdentityError;
use rustls::{ClientConfig, RootCertStore};
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A client config that verifies servers against `ca_pem` (PEM certificates, named
/// `ca_label` in errors) or, when `None`, the host's CA store, offering `alpn`.
pub fn origination_client_config(
    ca_pem: Option<&str>,
    ca_label: &Path,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, IdentityError> {
    let roots = match ca_pem {
        Some(pem) => Arc::new(roots_from_pem(pem, ca_label)?),
        None => host_roots()?,
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)
        .expect("the provider supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The host's CA store, read once (the files behind it change only with the package).
fn host_roots() -> Result<Arc<RootCertStore>, IdentityError> {
    static ROOTS: OnceLock<Result<Arc<RootCertStore>, String>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut roots = RootCertStore::empty();
            let (added, _unusable) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(|| "none found".to_owned(), ToString::to_string);
                return Err(format!(
                    "no CA certificate in the host's store ({why}); install ca-certificates \
                     or give the endpoint `tls.caCertificates`"
                ));
            }
            Ok(Arc::new(roots))
        })
        .clone()
        .map_err(IdentityError::NoHostRoots)
}
