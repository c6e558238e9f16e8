//! The demo's own CA and one certificate per workload, so sidecars talk mutual TLS exactly as
//! they would in production.

use crate::topology::{NAMESPACE, TRUST_DOMAIN};
use crate::workdir::WorkDir;
use crate::DemoError;
use std::path::PathBuf;
use std::time::Duration;
use weft_identity::{CertificateAuthority, SpiffeId};

/// Local mode has no rotation, so a certificate must outlive the longest demo anyone runs.
const CERT_TTL: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The `--cert --key --ca` files of one sidecar.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

pub struct DemoCa {
    authority: CertificateAuthority,
    ca_file: PathBuf,
}

impl DemoCa {
    pub fn create(dir: &WorkDir) -> Result<Self, DemoError> {
        let authority = CertificateAuthority::generate(TRUST_DOMAIN)?;
        let ca_file = dir.write("ca.pem", authority.cert_pem())?;
        Ok(DemoCa { authority, ca_file })
    }

    /// Issues `spiffe://weft.local/ns/default/svc/<service>`, the identity peers expect of a
    /// `mesh: true` endpoint of that service.
    pub fn issue(&self, dir: &WorkDir, service: &str) -> Result<CertFiles, DemoError> {
        let id = SpiffeId::new(TRUST_DOMAIN, NAMESPACE, service)?;
        let issued = self.authority.issue(&id, CERT_TTL)?;
        Ok(CertFiles {
            cert: dir.write(&format!("{service}.pem"), &issued.cert_pem)?,
            key: dir.write(&format!("{service}-key.pem"), &issued.key_pem)?,
            ca: self.ca_file.clone(),
        })
    }
}
