//! What an operator needs to know about a certificate, for `/certs`, `weft check` and
//! `weft proxies`: who it names, who issued it, when it expires, and a fingerprint to tell
//! two roots apart.

use crate::timestamp::format_utc;
use rustls::pki_types::CertificateDer;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    /// The SPIFFE id, for workload certificates.
    pub spiffe_id: Option<String>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// SHA-256 of the DER encoding, lowercase hex.
    pub sha256: String,
}

impl CertSummary {
    /// `None` if `der` is not a certificate.
    pub fn of(der: &CertificateDer<'_>) -> Option<CertSummary> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let validity = cert.validity();
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
        Some(CertSummary {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            spiffe_id: crate::svid::parse_svid(der)
                .ok()
                .map(|svid| svid.id.to_string()),
            not_before: at(validity.not_before.timestamp()),
            not_after: at(validity.not_after.timestamp()),
            sha256: fingerprint(der),
        })
    }

    /// `not_after` as RFC 3339 UTC.
    pub fn expires(&self) -> String {
        format_utc(self.not_after)
    }
}

/// SHA-256 of a certificate's DER encoding, lowercase hex: how roots are told apart.
pub fn fingerprint(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Certificates as PEM, in order.
pub fn to_pem(certs: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<pem::Pem> = certs
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.as_ref().to_vec()))
        .collect();
    pem::encode_many(&blocks)
}

/// The certificates in PEM text, skipping anything that is not one.
pub fn parse_pem(text: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CertificateAuthority, SpiffeId};

    #[test]
    fn summarizes_a_workload_certificate_and_its_root() {
        let ca = CertificateAuthority::generate("weft.local").unwrap();
        let id = SpiffeId::new("weft.local", "shop", "web").unwrap();
        let issued = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        let leaf = &parse_pem(&issued.cert_pem)[0];
        let summary = CertSummary::of(leaf).unwrap();
        assert_eq!(
            summary.spiffe_id.as_deref(),
            Some("spiffe://weft.local/ns/shop/svc/web")
        );
        let left = summary.not_after.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500));
        let root = CertSummary::of(&parse_pem(ca.cert_pem())[0]).unwrap();
        assert_eq!(summary.issuer, root.subject);
        assert_eq!(root.sha256.len(), 64);
        assert_ne!(root.sha256, summary.sha256);
        // PEM round trip.
        assert_eq!(
            parse_pem(&to_pem(std::slice::from_ref(leaf))),
            vec![leaf.clone()]
        );
    }
}

/// The fingerprint of the root in `bundle_pem` that `chain_pem` (leaf first, then any
/// intermediates) chains to now; `None` if none does, or the chain has expired.
pub fn issuing_root(chain_pem: &str, bundle_pem: &str) -> Option<String> {
    use rustls::client::verify_server_cert_signed_by_trust_anchor;
    use rustls::pki_types::UnixTime;
    use rustls::server::ParsedCertificate;
    let chain = parse_pem(chain_pem);
    let (leaf, intermediates) = chain.split_first()?;
    let parsed = ParsedCertificate::try_from(leaf).ok()?;
    let algorithms = crate::tls::provider().signature_verification_algorithms;
    let now = UnixTime::now();
    parse_pem(bundle_pem).into_iter().find_map(|root| {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root.clone()).ok()?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &roots,
            intermediates,
            now,
            algorithms.all,
        )
        .ok()?;
        Some(fingerprint(&root))
    })
}

#[cfg(test)]
mod issuing_root_tests {
    use super::*;
    use crate::{CertificateAuthority, SpiffeId};

    #[test]
    fn finds_the_root_a_chain_comes_from() {
        let old = CertificateAuthority::generate("weft.local").unwrap();
        let new = CertificateAuthority::generate("weft.local").unwrap();
        let bundle = format!("{}{}", old.cert_pem(), new.cert_pem());
        let id = SpiffeId::new("weft.local", "default", "web").unwrap();
        let issued = new.issue(&id, Duration::from_secs(60)).unwrap();
        let new_root = fingerprint(&parse_pem(new.cert_pem())[0]);
        assert_eq!(issuing_root(&issued.cert_pem, &bundle), Some(new_root));
        assert_eq!(issuing_root(&issued.cert_pem, old.cert_pem()), None);
        assert_eq!(issuing_root("not pem", &bundle), None);
    }
}
