//! Reading the SPIFFE id and validity out of an X.509 certificate (an X.509-SVID).

use crate::timestamp::from_unix_seconds;
use crate::{IdentityError, SpiffeId};
use std::time::SystemTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// What a workload certificate says about itself. Trust is established elsewhere (webpki);
/// this only reads fields.
pub(crate) struct Svid {
    pub(crate) id: SpiffeId,
    pub(crate) not_before: SystemTime,
    pub(crate) not_after: SystemTime,
}

/// Why a certificate is not a usable SVID. Messages are predicates so callers can prefix the
/// certificate's origin: "certificate in /x/cert.pem has no spiffe:// URI SAN".
#[derive(Debug, thiserror::Error)]
pub enum SvidError {
    #[error("cannot be parsed as X.509: {0}")]
    Unparseable(String),

    #[error(
        "has no spiffe:// URI SAN: workload certificates carry their SPIFFE id there (`weft cert issue` makes such certificates)"
    )]
    NoSpiffeId,

    #[error("has {0} URI SANs: a SPIFFE certificate carries exactly one")]
    SeveralUris(usize),

    #[error("has an unusable URI SAN: {0}")]
    BadId(Box<IdentityError>),
}

pub(crate) fn parse_svid(der: &[u8]) -> Result<Svid, SvidError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|err| SvidError::Unparseable(err.to_string()))?;
    let id = spiffe_id(&cert)?;
    let validity = cert.validity();
    Ok(Svid {
        id,
        not_before: from_unix_seconds(validity.not_before.timestamp()),
        not_after: from_unix_seconds(validity.not_after.timestamp()),
    })
}

fn spiffe_id(cert: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|err| SvidError::Unparseable(format!("subject alternative names: {err}")))?;
    let uris: Vec<&str> = san
        .iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    // The X.509-SVID spec allows exactly one URI SAN, so a certificate can never be read as
    // two different workloads.
    match uris[..] {
        [] => Err(SvidError::NoSpiffeId),
        [uri] => SpiffeId::parse(uri).map_err(|err| SvidError::BadId(Box::new(err))),
        _ => Err(SvidError::SeveralUris(uris.len())),
    }
}
