//! Renewing a workload certificate without a join token: the proxy proves it holds the
//! identity it renews by signing its new CSR with the key of its current certificate.
//!
//! The proof binds the new CSR to a certificate the CA issued and that is still valid, so
//! only the holder of that certificate's key can renew it. Replaying a captured request
//! gains nothing: it yields a certificate for the CSR's public key, whose private key the
//! replayer does not have. A join token is needed once, to get the first certificate.

use crate::svid::parse_svid;
use crate::{IdentityError, SpiffeId, TlsIdentity};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{RootCertStore, SignatureScheme};
use std::time::{SystemTime, UNIX_EPOCH};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

/// Workload keys are ECDSA P-256 (see `generate_csr`), so that is the one scheme proofs use.
const SCHEME: SignatureScheme = SignatureScheme::ECDSA_NISTP256_SHA256;

/// Signs `csr_pem` with the identity's current key: the proof [`verify_renewal`] checks.
pub fn sign_renewal(identity: &TlsIdentity, csr_pem: &str) -> Result<Vec<u8>, IdentityError> {
    let signer = identity
        .signing_key()
        .choose_scheme(&[SCHEME])
        .ok_or_else(|| {
            IdentityError::Renewal(
                "the current key is not ECDSA P-256; ask with a join token".into(),
            )
        })?;
    signer
        .sign(csr_pem.as_bytes())
        .map_err(|e| IdentityError::Renewal(format!("cannot sign the renewal request: {e}")))
}

/// Checks a renewal request: `chain_pem` (the current certificate, then intermediates)
/// chains to `bundle_pem` and is valid at `now`, and `signature` is its key's signature of
/// `csr_pem`. Returns the identity being renewed.
pub fn verify_renewal(
    bundle_pem: &str,
    chain_pem: &str,
    csr_pem: &str,
    signature: &[u8],
    now: SystemTime,
) -> Result<SpiffeId, IdentityError> {
    let refused = |why: String| IdentityError::Renewal(why);
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| refused(format!("the current certificate is not PEM: {e}")))?;
    let (leaf, intermediates) = chain
        .split_first()
        .ok_or_else(|| refused("no current certificate was sent".into()))?;
    let mut roots = RootCertStore::empty();
    for root in CertificateDer::pem_slice_iter(bundle_pem.as_bytes()) {
        let root = root.map_err(|e| refused(format!("the trust bundle is not PEM: {e}")))?;
        roots
            .add(root)
            .map_err(|e| refused(format!("the trust bundle holds an unusable root: {e}")))?;
    }
    let provider = crate::tls::provider();
    let algorithms = provider.signature_verification_algorithms;
    let parsed = ParsedCertificate::try_from(leaf)
        .map_err(|e| refused(format!("the current certificate does not parse: {e}")))?;
    let at = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    verify_server_cert_signed_by_trust_anchor(&parsed, &roots, intermediates, at, algorithms.all)
        .map_err(|e| {
        refused(format!(
            "the current certificate is not one this CA issued, or is no longer valid: {e}"
        ))
    })?;
    let id = parse_svid(leaf)
        .map_err(|e| refused(format!("the current certificate {e}")))?
        .id;
    let (_, cert) = X509Certificate::from_der(leaf)
        .map_err(|e| refused(format!("the current certificate does not parse: {e}")))?;
    let public_key = &cert.public_key().subject_public_key.data;
    let verifier = algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == SCHEME)
        .and_then(|(_, algorithms)| algorithms.first())
        .expect("the ring provider verifies ECDSA P-256");
    verifier
        .verify_signature(public_key, csr_pem.as_bytes(), signature)
        .map_err(|_| {
            refused("the renewal request is not signed by the current certificate's key".into())
        })?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{generate_csr, CertificateAuthority};
    use std::time::Duration;

    const HOUR: Duration = Duration::from_secs(3600);

    fn identity(ca: &CertificateAuthority, service: &str) -> (TlsIdentity, String) {
        let id = SpiffeId::new("weft.local", "default", service).unwrap();
        let (key_pem, csr_pem) = generate_csr(&id).unwrap();
        let signed = ca.sign_csr(&csr_pem, &id, HOUR).unwrap();
        let identity = TlsIdentity::from_pem(&signed.cert_pem, &key_pem, ca.cert_pem()).unwrap();
        (identity, signed.cert_pem)
    }

    #[test]
    fn the_holder_of_a_valid_certificate_can_renew_it() {
        let ca = CertificateAuthority::generate("weft.local").unwrap();
        let (web, chain) = identity(&ca, "web");
        let (_, csr) = generate_csr(web.id()).unwrap();
        let proof = sign_renewal(&web, &csr).unwrap();
        let now = SystemTime::now();
        let id = verify_renewal(ca.cert_pem(), &chain, &csr, &proof, now).unwrap();
        assert_eq!(id, *web.id());

        // Another CSR than the one signed, or another key's signature: refused.
        let (_, other_csr) = generate_csr(web.id()).unwrap();
        let err = verify_renewal(ca.cert_pem(), &chain, &other_csr, &proof, now).unwrap_err();
        assert!(err.to_string().contains("not signed by"), "{err}");
        let (api, _) = identity(&ca, "api");
        let forged = sign_renewal(&api, &csr).unwrap();
        let err = verify_renewal(ca.cert_pem(), &chain, &csr, &forged, now).unwrap_err();
        assert!(err.to_string().contains("not signed by"), "{err}");
    }

    #[test]
    fn expired_or_foreign_certificates_cannot_renew() {
        let ca = CertificateAuthority::generate("weft.local").unwrap();
        let (web, chain) = identity(&ca, "web");
        let (_, csr) = generate_csr(web.id()).unwrap();
        let proof = sign_renewal(&web, &csr).unwrap();
        let later = SystemTime::now() + 2 * HOUR;
        let err = verify_renewal(ca.cert_pem(), &chain, &csr, &proof, later).unwrap_err();
        assert!(err.to_string().contains("no longer valid"), "{err}");

        let other = CertificateAuthority::generate("weft.local").unwrap();
        let err =
            verify_renewal(other.cert_pem(), &chain, &csr, &proof, SystemTime::now()).unwrap_err();
        assert!(err.to_string().contains("not one this CA issued"), "{err}");
    }
}
