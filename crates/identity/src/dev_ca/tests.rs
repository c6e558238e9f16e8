use super::*;
use crate::svid::parse_svid;

fn web() -> SpiffeId {
    SpiffeId::parse("spiffe://weft.local/ns/default/svc/web").unwrap()
}

fn leaf(issued: &IssuedCert) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()
}

#[test]
fn generated_root_is_a_ca_for_its_trust_domain() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    assert_eq!(ca.trust_domain(), Some("weft.local"));
    let der = CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap();
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(cert.is_ca());
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign());
    assert!(ca.key_pem().contains("BEGIN PRIVATE KEY"));
}

#[test]
fn issued_leaf_carries_the_id_usages_and_validity() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let before = SystemTime::now();
    let issued = ca.issue(&web(), Duration::from_secs(3600)).unwrap();
    let der = leaf(&issued);

    let svid = parse_svid(&der).unwrap();
    assert_eq!(svid.id, web());
    assert!(svid.not_before <= before - CLOCK_SKEW + Duration::from_secs(1));
    assert!(svid.not_before >= before - CLOCK_SKEW - Duration::from_secs(1));
    assert_eq!(svid.not_after, issued.not_after);
    let lifetime = issued.not_after.duration_since(before).unwrap();
    assert!(lifetime.as_secs().abs_diff(3600) <= 1, "{lifetime:?}");

    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    assert!(!cert.is_ca());
    let usage = cert.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && !usage.key_cert_sign());
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
}

#[test]
fn loaded_ca_signs_certificates_that_chain_to_the_original() {
    let original = CertificateAuthority::generate("weft.local").unwrap();
    let loaded = CertificateAuthority::from_pem(original.cert_pem(), original.key_pem()).unwrap();
    assert_eq!(loaded.trust_domain(), Some("weft.local"));
    assert_eq!(loaded.cert_pem(), original.cert_pem());

    let issued = loaded.issue(&web(), Duration::from_secs(3600)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(original.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let der = leaf(&issued);
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &rustls::server::ParsedCertificate::try_from(&der).unwrap(),
        &roots,
        &[],
        rustls::pki_types::UnixTime::now(),
        crate::tls::provider().signature_verification_algorithms.all,
    )
    .expect("a certificate from the loaded CA chains to the original root");
}

#[test]
fn from_pem_refuses_mismatched_or_unusable_input() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let other = CertificateAuthority::generate("weft.local").unwrap();
    let issued = ca.issue(&web(), Duration::from_secs(60)).unwrap();

    let cases = [
        (ca.cert_pem(), other.key_pem(), "does not belong"),
        (
            issued.cert_pem.as_str(),
            issued.key_pem.as_str(),
            "not a CA",
        ),
        ("", ca.key_pem(), "no PEM 'CERTIFICATE' block"),
        (ca.cert_pem(), "not a key", "PKCS#8"),
    ];
    for (cert, key, expected) in cases {
        let err = CertificateAuthority::from_pem(cert, key)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expected),
            "{err:?} should mention {expected:?}"
        );
    }
}

#[test]
fn refuses_ids_of_another_trust_domain() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let foreign = SpiffeId::parse("spiffe://other.org/ns/default/svc/web").unwrap();
    let err = ca.issue(&foreign, Duration::from_secs(60)).unwrap_err();
    assert!(
        matches!(err, IdentityError::TrustDomainMismatch { .. }),
        "{err}"
    );
}

#[test]
fn refuses_bad_trust_domains_and_validities() {
    assert!(matches!(
        CertificateAuthority::generate("Not A Domain").unwrap_err(),
        IdentityError::InvalidTrustDomain { .. }
    ));
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let now = SystemTime::now();
    let backwards = ca.issue_with_validity(&web(), now, now - Duration::from_secs(1));
    assert!(matches!(backwards, Err(IdentityError::InvalidValidity(_))));
    let forever = ca.issue(&web(), Duration::MAX);
    assert!(matches!(forever, Err(IdentityError::InvalidValidity(_))));
    let far = ca.issue(&web(), Duration::from_secs(20_000 * 365 * 86_400));
    assert!(matches!(far, Err(IdentityError::InvalidValidity(_))));
}

#[test]
fn can_issue_an_already_expired_certificate() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let now = SystemTime::now();
    let hour = Duration::from_secs(3600);
    let issued = ca
        .issue_with_validity(&web(), now - 2 * hour, now - hour)
        .unwrap();
    assert!(parse_svid(&leaf(&issued)).unwrap().not_after < now);
}

#[test]
fn sign_csr_takes_only_the_key_and_sets_the_id_itself() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let other = SpiffeId::parse("spiffe://weft.local/ns/default/svc/admin").unwrap();
    // The CSR asks for another identity; the CA names the id it was told to.
    let (key_pem, csr_pem) = generate_csr(&other).unwrap();
    let signed = ca
        .sign_csr(&csr_pem, &web(), Duration::from_secs(3600))
        .unwrap();
    let der = CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
    assert_eq!(parse_svid(&der).unwrap().id, web());
    let identity = crate::TlsIdentity::from_pem(&signed.cert_pem, &key_pem, ca.cert_pem()).unwrap();
    assert_eq!(identity.id(), &web());
}

#[test]
fn sign_csr_refuses_garbage_and_a_tampered_request() {
    let ca = CertificateAuthority::generate("weft.local").unwrap();
    let hour = Duration::from_secs(3600);
    assert!(matches!(
        ca.sign_csr("not a csr", &web(), hour),
        Err(IdentityError::InvalidCsr(_))
    ));
    let (_, csr_pem) = generate_csr(&web()).unwrap();
    let mut der =
        rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .unwrap()
            .as_ref()
            .to_vec();
    let last = der.len() - 1;
    der[last] ^= 1;
    let b64 = {
        // Re-wrap the tampered DER as PEM.
        const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in der.chunks(3) {
            let n = chunk.len();
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= n {
                    out.push(TABLE[((v >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let tampered =
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n");
    assert!(matches!(
        ca.sign_csr(&tampered, &web(), hour),
        Err(IdentityError::InvalidCsr(_))
    ));
}
