use crate::svid::SvidError;
use crate::SpiffeId;
use std::path::PathBuf;

/// Everything that can go wrong loading or issuing an identity. Each message names the input
/// at fault and says what to do about it, because these reach users unchanged.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "invalid SPIFFE id {input:?}: {reason}; expected spiffe://<trust-domain>/ns/<namespace>/svc/<service>"
    )]
    InvalidSpiffeId { input: String, reason: String },

    #[error("invalid trust domain {input:?}: {reason}")]
    InvalidTrustDomain { input: String, reason: String },

    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("malformed PEM in {}: {detail}", path.display())]
    MalformedPem { path: PathBuf, detail: String },

    #[error("no certificate found in {}: expected a PEM 'CERTIFICATE' block", path.display())]
    NoCertificate { path: PathBuf },

    #[error(
        "no private key found in {}: expected an unencrypted PEM 'PRIVATE KEY', 'EC PRIVATE KEY' or 'RSA PRIVATE KEY' block",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },

    #[error("unusable private key in {}: {detail}", path.display())]
    UnusableKey { path: PathBuf, detail: String },

    #[error(
        "the private key in {} does not belong to the certificate in {}: pass the key file that was issued together with that certificate",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },

    #[error("certificate in {} {problem}", path.display())]
    InvalidCertificate { path: PathBuf, problem: SvidError },

    #[error(
        "certificate in {} expired at {at}: issue a new one (in local mode: `weft cert issue`)",
        path.display()
    )]
    Expired { path: PathBuf, at: String },

    #[error(
        "certificate in {} is not valid until {at}: check this machine's clock, or wait",
        path.display()
    )]
    NotYetValid { path: PathBuf, at: String },

    #[error("invalid CA certificate in {}: {detail}", path.display())]
    InvalidTrustAnchor { path: PathBuf, detail: String },

    #[error("{0}")]
    NoHostRoots(String),

    #[error(
        "certificate in {} is not trusted by the CA bundle in {}: {detail}; pass the CA that issued it, or add that CA to the bundle",
        cert.display(),
        ca.display()
    )]
    Untrusted {
        cert: PathBuf,
        ca: PathBuf,
        detail: String,
    },

    #[error("cannot create TLS session ticket keys: {0}")]
    TicketKeys(#[source] rustls::Error),

    #[error("invalid CA: {0}")]
    InvalidCa(String),

    #[error(
        "cannot issue a certificate for {id}: this CA is for trust domain {ca_trust_domain:?}; use that trust domain or a CA made for {:?}",
        id.trust_domain()
    )]
    TrustDomainMismatch {
        id: SpiffeId,
        ca_trust_domain: String,
    },

    #[error(
        "the renewed certificate names {to}, not {from}: a proxy renews its own identity only"
    )]
    IdentityChanged {
        from: Box<SpiffeId>,
        to: Box<SpiffeId>,
    },

    #[error("certificate renewal refused: {0}")]
    Renewal(String),

    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),

    #[error("invalid certificate validity: {0}")]
    InvalidValidity(String),

    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
}
