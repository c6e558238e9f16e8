//! A certificate authority for local mode, tests and benchmarks. In mesh mode the control
//! plane's CA issues certificates instead.

use crate::spiffe::check_trust_domain;
use crate::timestamp::{from_unix_seconds, to_offset_date_time, unix_seconds};
use crate::{format_utc, IdentityError, SpiffeId};
use rcgen::{
    BasicConstraints, BmpString, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PrintableString, PublicKeyData, SanType, SignatureAlgorithm, TeletexString, UniversalString,
    PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::time::{Duration, SystemTime};
use x509_parser::asn1_rs::Tag;
use x509_parser::certificate::X509Certificate;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// Certificates start a minute in the past so a peer whose clock is slightly behind ours
/// still accepts them.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Ten years: a development root should outlive anything it is used for.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

/// A root CA that signs workload certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    key_pem: String,
    trust_domain: Option<String>,
    /// What rcgen signs with: the CA's subject name and key identifier. For a loaded CA it is
    /// a re-signed copy whose subject was checked to match the original byte for byte, since
    /// peers find a certificate's issuer by comparing exactly those bytes.
    signer: rcgen::Certificate,
    key: KeyPair,
}

/// A freshly issued workload certificate and its private key (PKCS#8), both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
    /// The certificate's expiry, to the second.
    pub not_after: SystemTime,
}

/// A certificate signed for a key the CA never saw: the answer to a CSR.
#[derive(Clone, Debug)]
pub struct SignedCert {
    pub cert_pem: String,
    /// The certificate's expiry, to the second.
    pub not_after: SystemTime,
}

/// Makes a fresh ECDSA P-256 key and a certificate signing request for `id` signed with it.
/// Returns the key (PKCS#8 PEM), which stays with the caller, and the CSR (PEM).
pub fn generate_csr(id: &SpiffeId) -> Result<(String, String), IdentityError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, id.service());
    params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(id.to_string())?)];
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// The public key of a CSR, in the form rcgen signs: the raw EC point of a P-256 key.
struct CsrPublicKey(Vec<u8>);

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

/// Checks a CSR's self-signature and takes its public key, which must be ECDSA P-256.
/// Nothing else in the CSR is used.
fn csr_public_key(csr_pem: &str) -> Result<CsrPublicKey, IdentityError> {
    let invalid = |detail: String| IdentityError::InvalidCsr(detail);
    let der = rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
        .map_err(|err| invalid(format!("no PEM 'CERTIFICATE REQUEST' block: {err}")))?;
    let (_, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|err| invalid(format!("unparseable: {err}")))?;
    csr.verify_signature()
        .map_err(|err| invalid(format!("its signature does not verify: {err}")))?;
    let spki = &csr.certification_request_info.subject_pki;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|params| params.as_oid().ok());
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY || curve != Some(OID_EC_P256) {
        return Err(invalid(
            "its key is not ECDSA P-256, the only kind this CA signs".to_owned(),
        ));
    }
    Ok(CsrPublicKey(spki.subject_public_key.data.to_vec()))
}

impl CertificateAuthority {
    /// Creates a self-signed ECDSA P-256 root for `trust_domain`, valid for ten years. Its URI
    /// SAN `spiffe://<trust-domain>` records the trust domain, as the SPIFFE spec allows for
    /// signing certificates, so a CA loaded later knows which ids it may sign.
    pub fn generate(trust_domain: &str) -> Result<Self, IdentityError> {
        check_trust_domain(trust_domain).map_err(|reason| IdentityError::InvalidTrustDomain {
            input: trust_domain.to_owned(),
            reason,
        })?;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let now = SystemTime::now();
        let mut params = ca_params(DistinguishedName::new());
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Weft");
        params
            .distinguished_name
            .push(DnType::CommonName, format!("Weft CA for {trust_domain}"));
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(format!(
            "spiffe://{trust_domain}"
        ))?)];
        params.not_before = offset_date_time(now - CLOCK_SKEW)?;
        params.not_after = offset_date_time(now + CA_VALIDITY)?;
        let signer = params.self_signed(&key)?;
        Ok(CertificateAuthority {
            cert_pem: signer.pem(),
            key_pem: key.serialize_pem(),
            trust_domain: Some(trust_domain.to_owned()),
            signer,
            key,
        })
    }

    /// Loads a CA from its certificate and PKCS#8 private key, as written by
    /// [`CertificateAuthority::cert_pem`] and [`CertificateAuthority::key_pem`]. Other CAs work
    /// too if their subject is a plain sequence of distinct attributes.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IdentityError> {
        let invalid = |detail: &str| IdentityError::InvalidCa(detail.to_owned());
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| invalid("no PEM 'CERTIFICATE' block in the CA certificate"))?;
        let (_, cert) = X509Certificate::from_der(&der)
            .map_err(|err| IdentityError::InvalidCa(format!("unparseable certificate: {err}")))?;
        if !cert.is_ca() {
            return Err(invalid(
                "the certificate is not a CA (its basic constraints do not say cA=true)",
            ));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|err| {
            IdentityError::InvalidCa(format!(
                "cannot load the CA key ({err}): it must be an unencrypted PKCS#8 'PRIVATE KEY' (convert with `openssl pkcs8 -topk8 -nocrypt`)"
            ))
        })?;
        if key.public_key_der() != cert.public_key().raw {
            return Err(invalid(
                "the private key does not belong to the CA certificate",
            ));
        }

        let mut params = ca_params(distinguished_name(cert.subject())?);
        // Keep the original key identifier so issued certificates point back at it.
        if let Some(key_id) = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(key_id) => Some(key_id.0.to_vec()),
                _ => None,
            })
        {
            params.key_identifier_method = KeyIdMethod::PreSpecified(key_id);
        }
        let signer = params.self_signed(&key)?;
        let (_, resigned) = X509Certificate::from_der(signer.der())
            .map_err(|err| IdentityError::InvalidCa(format!("re-encoding the CA: {err}")))?;
        if resigned.subject().as_raw() != cert.subject().as_raw() {
            return Err(invalid(
                "its subject name cannot be reproduced exactly (multi-valued or repeated attributes), so certificates it signs would not chain to it; use a CA made by `weft cert ca`",
            ));
        }

        Ok(CertificateAuthority {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            trust_domain: trust_domain_of(&cert),
            signer,
            key,
        })
    }

    /// The key certificates are signed with.
    pub(crate) fn key(&self) -> &KeyPair {
        &self.key
    }

    /// The CA certificate, PEM: the trust bundle workloads are given.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PEM (PKCS#8). Keep it private.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The trust domain in the CA's `spiffe://` URI SAN; `None` for a CA that has none (one
    /// not made by Weft), which then signs ids of any trust domain.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }

    /// Issues a certificate for `id` valid from a minute ago (clock skew) for `ttl`.
    pub fn issue(&self, id: &SpiffeId, ttl: Duration) -> Result<IssuedCert, IdentityError> {
        let now = SystemTime::now();
        let not_after = now.checked_add(ttl).ok_or_else(|| {
            IdentityError::InvalidValidity(format!("a lifetime of {ttl:?} is too long"))
        })?;
        self.issue_with_validity(id, now - CLOCK_SKEW, not_after)
    }

    /// Issues a certificate for `id` with exactly this validity (to the second), which may lie
    /// entirely in the past or future: tests use it for expired and not-yet-valid certificates.
    ///
    /// The certificate is an ECDSA P-256 leaf with `id` as its only URI SAN, the
    /// digital-signature key usage and both the server- and client-auth extended key usages,
    /// since a proxy is a TLS server inbound and a TLS client outbound.
    pub fn issue_with_validity(
        &self,
        id: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<IssuedCert, IdentityError> {
        if let Some(ca_trust_domain) = &self.trust_domain {
            if id.trust_domain() != ca_trust_domain {
                return Err(IdentityError::TrustDomainMismatch {
                    id: id.clone(),
                    ca_trust_domain: ca_trust_domain.clone(),
                });
            }
        }
        if unix_seconds(not_after) <= unix_seconds(not_before) {
            return Err(IdentityError::InvalidValidity(format!(
                "it would end at {} before it starts at {}",
                format_utc(not_after),
                format_utc(not_before)
            )));
        }

        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert_pem = self.sign_leaf(id, &key, not_before, not_after)?;
        Ok(IssuedCert {
            cert_pem,
            key_pem: key.serialize_pem(),
            not_after: from_unix_seconds(unix_seconds(not_after)),
        })
    }

    /// Signs a certificate for `id`, valid from a minute ago for `ttl`, for the public key
    /// of `csr_pem` (PEM PKCS#10, ECDSA P-256, its signature checked). Only the key is taken
    /// from the CSR: its subject, SANs and extensions are ignored, and the certificate gets
    /// `id` and the same usages as [`CertificateAuthority::issue`]. The caller decides which
    /// `id` the requester may have.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
    ) -> Result<SignedCert, IdentityError> {
        let public_key = csr_public_key(csr_pem)?;
        let now = SystemTime::now();
        let not_after = now.checked_add(ttl).ok_or_else(|| {
            IdentityError::InvalidValidity(format!("a lifetime of {ttl:?} is too long"))
        })?;
        let cert_pem = self.sign_leaf(id, &public_key, now - CLOCK_SKEW, not_after)?;
        Ok(SignedCert {
            cert_pem,
            not_after: from_unix_seconds(unix_seconds(not_after)),
        })
    }

    fn sign_leaf(
        &self,
        id: &SpiffeId,
        public_key: &impl PublicKeyData,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<String, IdentityError> {
        if let Some(ca_trust_domain) = &self.trust_domain {
            if id.trust_domain() != ca_trust_domain {
                return Err(IdentityError::TrustDomainMismatch {
                    id: id.clone(),
                    ca_trust_domain: ca_trust_domain.clone(),
                });
            }
        }
        if unix_seconds(not_after) <= unix_seconds(not_before) {
            return Err(IdentityError::InvalidValidity(format!(
                "it would end at {} before it starts at {}",
                format_utc(not_after),
                format_utc(not_before)
            )));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, id.service());
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(id.to_string())?)];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = offset_date_time(not_before)?;
        params.not_after = offset_date_time(not_after)?;
        let cert = params.signed_by(public_key, &self.signer, &self.key)?;
        Ok(cert.pem())
    }
}

impl fmt::Debug for CertificateAuthority {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for IssuedCert {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("not_after", &format_utc(self.not_after))
            .finish_non_exhaustive()
    }
}

fn ca_params(distinguished_name: DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

fn offset_date_time(at: SystemTime) -> Result<time::OffsetDateTime, IdentityError> {
    to_offset_date_time(at).ok_or_else(|| {
        IdentityError::InvalidValidity(format!(
            "{} is outside what a certificate can express (years 0 to 9999): choose a shorter lifetime",
            format_utc(at)
        ))
    })
}

/// Rebuilds a subject for rcgen attribute by attribute, keeping each value's string type,
/// so re-encoding it gives the same bytes. `from_pem` verifies that it did.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, IdentityError> {
    let unsupported =
        |what: &str| IdentityError::InvalidCa(format!("unsupported subject name: {what}"));
    let text = |data: &[u8]| {
        std::str::from_utf8(data)
            .map(str::to_owned)
            .map_err(|_| unsupported("an attribute is not valid text"))
    };
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let [attr] = rdn.iter().collect::<Vec<_>>()[..] else {
            return Err(unsupported("a multi-valued attribute"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("an attribute type too large to read"))?
            .collect();
        let value = attr.attr_value();
        let data = value.data;
        let value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text(data)?),
            Tag::PrintableString => {
                DnValue::PrintableString(PrintableString::try_from(text(data)?)?)
            }
            Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text(data)?)?),
            Tag::T61String => DnValue::TeletexString(TeletexString::try_from(text(data)?)?),
            Tag::BmpString => DnValue::BmpString(BmpString::from_utf16be(data.to_vec())?),
            Tag::UniversalString => {
                DnValue::UniversalString(UniversalString::from_utf32be(data.to_vec())?)
            }
            _ => return Err(unsupported("an attribute that is not a string")),
        };
        dn.push(DnType::from_oid(&oid), value);
    }
    Ok(dn)
}

/// The trust domain of a `spiffe://<trust-domain>` URI SAN, if the CA has one.
/// The trust domain a root made by Weft names (`spiffe://<trust-domain>`), from its PEM;
/// `None` for any other certificate.
pub fn root_trust_domain(pem: &str) -> Option<String> {
    let der = crate::parse_pem(pem).into_iter().next()?;
    let (_, cert) = X509Certificate::from_der(&der).ok()?;
    trust_domain_of(&cert)
}

fn trust_domain_of(cert: &X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        GeneralName::URI(uri) => uri
            .strip_prefix("spiffe://")
            .filter(|domain| check_trust_domain(domain).is_ok())
            .map(str::to_owned),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
