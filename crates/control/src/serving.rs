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
        // this certificate: trusting the smaller bundle fails, so re-issue. The bundle is the
        // one just announced, not re-read from the CA.
        let bundle = trust.borrow_and_update().bundle_pem.clone();
        if bundle_changed && identity.trust(&bundle).is_ok() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::CaSource;
    use crate::store::tests::ScratchDir;
    use crate::store::{RedbStore, Store};

    #[tokio::test]
    async fn after_a_rotation_the_certificate_comes_from_the_new_root() {
        let dir = ScratchDir::new("serving-rotation");
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(dir.path()).unwrap());
        let resources = store.subscribe().borrow().clone();
        let ca = Arc::new(
            MeshCa::load_or_create(&*store, &CaSource::Store, &resources)
                .await
                .unwrap(),
        );
        let identity = Arc::new(issue(&ca).unwrap());
        let task = tokio::spawn(keep_current(ca.clone(), identity.clone()));
        ca.rotate(&*store).await.unwrap();
        ca.retire(&*store).await.unwrap();
        let (signing, retiring) = ca.roots();
        assert!(retiring.is_empty());
        // Proxies that joined after the rotation trust the new root alone: the control
        // plane's certificate must chain to it, soon.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let root = weft_identity::issuing_root(&identity.chain_pem(), &ca.trust_bundle_pem());
            if root.as_deref() == Some(signing.sha256.as_str()) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "still {root:?}, not the new root {}",
                signing.sha256
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
    }
}
