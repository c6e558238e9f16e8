//! Short statements signed with a CA's own key, checked against its certificate: how the
//! audit log's checkpoints prove who wrote them. Whoever can rewrite the store can recompute
//! a hash chain, but cannot sign with a key the store does not hold (an operator's CA given
//! by file) or forge a signature a copy of the log kept elsewhere already carries.

use crate::dev_ca::CertificateAuthority;
use crate::IdentityError;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use rustls_pki_types::{pem::PemObject, CertificateDer};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519,
};
use x509_parser::prelude::{FromDer, X509Certificate};

impl CertificateAuthority {
    /// Signs `message` with the CA's key: ECDSA (ASN.1 DER signature) over SHA-256 for P-256
    /// and SHA-384 for P-384, Ed25519, or RSA PKCS#1 v1.5 over SHA-256, as the key is.
    pub fn sign_statement(&self, message: &[u8]) -> Result<Vec<u8>, IdentityError> {
        let key = self.key();
        let pkcs8 = key.serialized_der();
        let rng = ring::rand::SystemRandom::new();
        let unusable = |err: &dyn std::fmt::Display| {
            IdentityError::InvalidCa(format!("its key cannot sign a statement: {err}"))
        };
        let ecdsa = |algorithm: &'static signature::EcdsaSigningAlgorithm| {
            signature::EcdsaKeyPair::from_pkcs8(algorithm, pkcs8, &rng)
                .map_err(|err| unusable(&err))?
                .sign(&rng, message)
                .map(|signature| signature.as_ref().to_vec())
                .map_err(|err| unusable(&err))
        };
        let algorithm = key.algorithm();
        if algorithm == &rcgen::PKCS_ECDSA_P256_SHA256 {
            ecdsa(&signature::ECDSA_P256_SHA256_ASN1_SIGNING)
        } else if algorithm == &rcgen::PKCS_ECDSA_P384_SHA384 {
            ecdsa(&signature::ECDSA_P384_SHA384_ASN1_SIGNING)
        } else if algorithm == &rcgen::PKCS_ED25519 {
            let key = signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                .map_err(|err| unusable(&err))?;
            Ok(key.sign(message).as_ref().to_vec())
        } else {
            let key = signature::RsaKeyPair::from_pkcs8(pkcs8).map_err(|err| unusable(&err))?;
            let mut signed = vec![0; key.public().modulus_len()];
            key.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut signed)
                .map_err(|err| unusable(&err))?;
            Ok(signed)
        }
    }
}

/// Checks that `signature` over `message` was made by the key of the certificate `cert_pem`.
pub fn verify_statement(
    cert_pem: &str,
    message: &[u8],
    signature: &[u8],
) -> Result<(), IdentityError> {
    let invalid = |detail: &str| IdentityError::InvalidCa(detail.to_owned());
    let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
        .map_err(|_| invalid("no PEM 'CERTIFICATE' block"))?;
    let (_, cert) = X509Certificate::from_der(&der)
        .map_err(|err| IdentityError::InvalidCa(format!("unparseable certificate: {err}")))?;
    let spki = cert.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|params| params.as_oid().ok());
    let algorithm: &'static dyn VerificationAlgorithm = match &spki.algorithm.algorithm {
        oid if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_EC_P256) => {
            &signature::ECDSA_P256_SHA256_ASN1
        }
        oid if *oid == OID_KEY_TYPE_EC_PUBLIC_KEY && curve == Some(OID_NIST_EC_P384) => {
            &signature::ECDSA_P384_SHA384_ASN1
        }
        oid if *oid == OID_SIG_ED25519 => &signature::ED25519,
        oid if *oid == OID_PKCS1_RSAENCRYPTION => &signature::RSA_PKCS1_2048_8192_SHA256,
        other => {
            return Err(IdentityError::InvalidCa(format!(
                "its key type ({other}) signs no statements Weft checks"
            )))
        }
    };
    UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(message, signature)
        .map_err(|_| invalid("the signature does not verify with this certificate's key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_statement_verifies_with_its_signer_only_and_unchanged() {
        let ca = CertificateAuthority::generate("weft.local").unwrap();
        let other = CertificateAuthority::generate("weft.local").unwrap();
        let signature = ca.sign_statement(b"head 12 abcd").unwrap();
        verify_statement(ca.cert_pem(), b"head 12 abcd", &signature).unwrap();
        assert!(verify_statement(ca.cert_pem(), b"head 13 abcd", &signature).is_err());
        assert!(verify_statement(other.cert_pem(), b"head 12 abcd", &signature).is_err());
        let mut flipped = signature.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(verify_statement(ca.cert_pem(), b"head 12 abcd", &flipped).is_err());
    }
}
