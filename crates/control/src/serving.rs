//! The control plane's own certificate, for its gRPC port: issued by the mesh CA to
//! `spiffe://<trust-domain>/ns/weft-system/svc/weft-control`, renewed at half-life.
//!
//! During a root rotation it keeps the certificate from the old root (which every proxy
//! trusts) while trusting both roots (so proxies renewed under the new one can connect);
//! once the old root is retired it is re-issued under the new one.

use crate::ca::{MeshCa, DEFAULT_TRUST_DOMAIN};
use crate::identity::DEFAULT_CERTIFICATE_TTL;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weft_identity::{IdentityError, TlsIdentity};

/// A first certificate for the control plane.
pub fn issue(ca: &MeshCa) -> Result<TlsIdentity, IdentityError> {
    let (chain, key, bundle) = signed(ca)?;
    TlsIdentity::from_pem(&chain, &key, &bundle)
}

fn signed(ca: &MeshCa) -> Result<(String, String, String), IdentityError> {
    let id = weft_identity::control_plane_id(ca.trust_domain().unwrap_or(DEFAULT_TRUST_DOMAIN))?;
    let (key_pem, csr_pem) = weft_identity::generate_csr(&id)?;
    let signed = ca
        .authority()
        .sign_csr(&csr_pem, &id, DEFAULT_CERTIFICATE_TTL)?;
    Ok((signed.cert_pem, key_pem, ca.trust_bundle_pem()))
}

/// Keeps `identity` valid and in step with the CA's bundle, for as long as the control
/// plane runs.
pub async fn keep_current(ca: Arc<MeshCa>, identity: Arc<TlsIdentity>) {
    let mut trust = ca.trust();
    loop {
        let wait = identity
            .renew_at()
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let bundle_changed = tokio::select! {
            () = tokio::time::sleep(wait) => false,
            changed = trust.changed() => {
                if changed.is_err() {
                    return;
                }
                true
            }
        };
        // A new root joining: trust it, keep the certificate. A root leaving that signed
        // this certificate: trusting the smaller bundle fails, so re-issue.
        if bundle_changed && identity.trust(&ca.trust_bundle_pem()).is_ok() {
            continue;
        }
        let renewed =
            signed(&ca).and_then(|(chain, key, bundle)| identity.renew(&chain, &key, &bundle));
        match renewed {
            Ok(()) => tracing::info!(
                not_after = %weft_identity::format_utc(identity.not_after()),
                "renewed the control plane's certificate"
            ),
            Err(error) => {
                tracing::error!(%error, "cannot renew the control plane's certificate; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}
