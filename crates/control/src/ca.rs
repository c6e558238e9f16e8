//! The mesh's certificate authority: the root that signs workload certificates.
//!
//! On first start the control plane generates an ECDSA P-256 root for the trust domain of
//! the `Mesh` resource (or `weft.local`) and keeps its certificate and key in the store's
//! `meta` table, so a restart keeps the same root. An operator can instead supply a root or
//! intermediate of their own (`weft control --ca-cert FILE --ca-key FILE`); it is used as
//! given and not written to the store.
//!
//! `GET /api/v1/ca` answers the trust bundle (PEM) and the expiry of each root in it.

use crate::resource_set::ResourceSet;
use crate::store::{Store, StoreError};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_identity::{format_utc, CertificateAuthority, IdentityError};
use weft_model::resources::Spec;

/// The `meta` key the generated root is kept under.
pub const ROOT_META_KEY: &str = "ca/root";

/// The trust domain when no `Mesh` resource names one.
pub const DEFAULT_TRUST_DOMAIN: &str = "weft.local";

/// Where the root comes from.
#[derive(Clone, Debug, Default)]
pub enum CaSource {
    /// Generated on first start and kept in the store.
    #[default]
    Store,
    /// Supplied by the operator: a CA certificate and its PKCS#8 private key, PEM.
    Files { cert: PathBuf, key: PathBuf },
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot read the CA {what} {} ({flag}): {source}", path.display())]
    Read {
        what: &'static str,
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot use --ca-cert {} with --ca-key {}: {source}; pass a CA certificate \
         (basic constraints cA=true) and the unencrypted PKCS#8 key that belongs to it",
        cert.display(),
        key.display()
    )]
    Invalid {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: Box<IdentityError>,
    },
    #[error(
        "the CA root kept in the store (meta key {ROOT_META_KEY:?}) is unusable: {0}; \
         restore the store from a backup, or supply a root with --ca-cert and --ca-key"
    )]
    Corrupt(String),
    #[error("cannot generate the CA root: {0}")]
    Generate(#[source] Box<IdentityError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The root as kept in the store.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredRoot {
    cert_pem: String,
    key_pem: String,
}

/// The mesh's CA: the root that signs, and the trust bundle proxies are given.
pub struct MeshCa {
    ca: CertificateAuthority,
    /// `generated` or `supplied`.
    origin: &'static str,
    not_after: SystemTime,
}

impl MeshCa {
    /// Loads the supplied root, or the one in the store, or generates one and stores it.
    /// `resources` gives the trust domain for a new root (the `Mesh` resource's).
    pub async fn load_or_create(
        store: &dyn Store,
        source: &CaSource,
        resources: &ResourceSet,
    ) -> Result<MeshCa, CaError> {
        match source {
            CaSource::Files { cert, key } => {
                let cert_pem = read(cert, "certificate", "--ca-cert")?;
                let key_pem = read(key, "key", "--ca-key")?;
                let ca = CertificateAuthority::from_pem(&cert_pem, &key_pem).map_err(|source| {
                    CaError::Invalid {
                        cert: cert.clone(),
                        key: key.clone(),
                        source: Box::new(source),
                    }
                })?;
                let mesh_ca = MeshCa::new(ca, "supplied").map_err(|detail| CaError::Invalid {
                    cert: cert.clone(),
                    key: key.clone(),
                    source: Box::new(IdentityError::InvalidCa(detail)),
                })?;
                tracing::info!(cert = %cert.display(), trust_domain = mesh_ca.trust_domain(), "using the supplied CA");
                Ok(mesh_ca)
            }
            CaSource::Store => {
                if let Some(bytes) = store.get_meta(ROOT_META_KEY.to_owned()).await? {
                    let stored: StoredRoot = serde_json::from_slice(&bytes)
                        .map_err(|err| CaError::Corrupt(err.to_string()))?;
                    let ca = CertificateAuthority::from_pem(&stored.cert_pem, &stored.key_pem)
                        .map_err(|err| CaError::Corrupt(err.to_string()))?;
                    let mesh_ca = MeshCa::new(ca, "generated").map_err(CaError::Corrupt)?;
                    tracing::info!(
                        trust_domain = mesh_ca.trust_domain(),
                        "loaded the CA root from the store"
                    );
                    return Ok(mesh_ca);
                }
                let trust_domain = mesh_trust_domain(resources);
                let ca = CertificateAuthority::generate(&trust_domain)
                    .map_err(|err| CaError::Generate(Box::new(err)))?;
                let stored = StoredRoot {
                    cert_pem: ca.cert_pem().to_owned(),
                    key_pem: ca.key_pem().to_owned(),
                };
                let bytes = serde_json::to_vec(&stored)
                    .map_err(|err| CaError::Corrupt(format!("encoding the root: {err}")))?;
                store.put_meta(ROOT_META_KEY.to_owned(), bytes).await?;
                let mesh_ca = MeshCa::new(ca, "generated").map_err(CaError::Corrupt)?;
                tracing::info!(
                    trust_domain = %trust_domain,
                    not_after = %format_utc(mesh_ca.not_after),
                    "generated a new CA root and kept it in the store"
                );
                Ok(mesh_ca)
            }
        }
    }

    fn new(ca: CertificateAuthority, origin: &'static str) -> Result<MeshCa, String> {
        let not_after = not_after(ca.cert_pem())?;
        Ok(MeshCa {
            ca,
            origin,
            not_after,
        })
    }

    /// The CA that signs workload certificates.
    pub fn authority(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The trust domain the root is for; `None` for a supplied CA that names none.
    pub fn trust_domain(&self) -> Option<&str> {
        self.ca.trust_domain()
    }

    /// The roots workloads trust, PEM.
    pub fn trust_bundle_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// When the root expires.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The answer of `GET /api/v1/ca`.
    pub fn view(&self) -> Value {
        let not_after = format_utc(self.not_after);
        json!({
            "trustBundle": self.trust_bundle_pem(),
            "trustDomain": self.trust_domain(),
            "notAfter": not_after,
            "roots": [{
                "origin": self.origin,
                "trustDomain": self.trust_domain(),
                "notAfter": not_after,
            }],
        })
    }
}

impl std::fmt::Debug for MeshCa {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("MeshCa")
            .field("trust_domain", &self.trust_domain())
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

/// `GET /api/v1/ca`.
pub fn router(ca: Arc<MeshCa>) -> Router {
    Router::new().route("/api/v1/ca", get(show)).with_state(ca)
}

async fn show(State(ca): State<Arc<MeshCa>>) -> Json<Value> {
    Json(ca.view())
}

/// The `Mesh` resource's trust domain, or [`DEFAULT_TRUST_DOMAIN`].
fn mesh_trust_domain(resources: &ResourceSet) -> String {
    resources
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            Spec::Mesh(mesh) => Some(mesh.trust_domain.as_str().to_owned()),
            _ => None,
        })
        .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.to_owned())
}

fn read(path: &Path, what: &'static str, flag: &'static str) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Read {
        what,
        flag,
        path: path.to_owned(),
        source,
    })
}

/// The expiry of the first certificate in `pem`.
fn not_after(pem: &str) -> Result<SystemTime, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|err| format!("malformed PEM certificate: {err}"))?;
    let cert = block
        .parse_x509()
        .map_err(|err| format!("unparseable certificate: {err}"))?;
    let seconds = cert.validity().not_after.timestamp();
    let seconds = u64::try_from(seconds).map_err(|_| "expires before 1970".to_owned())?;
    Ok(UNIX_EPOCH + Duration::from_secs(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::ScratchDir;
    use crate::store::RedbStore;

    #[tokio::test]
    async fn generated_root_is_kept_across_reopen() {
        let dir = ScratchDir::new("ca");
        let first = {
            let store = RedbStore::open(dir.path()).unwrap();
            let ca = MeshCa::load_or_create(&store, &CaSource::Store, &ResourceSet::default())
                .await
                .unwrap();
            assert_eq!(ca.trust_domain(), Some(DEFAULT_TRUST_DOMAIN));
            assert!(ca.not_after() > SystemTime::now() + Duration::from_secs(365 * 86400));
            ca.trust_bundle_pem().to_owned()
        };
        let store = RedbStore::open(dir.path()).unwrap();
        let again = MeshCa::load_or_create(&store, &CaSource::Store, &ResourceSet::default())
            .await
            .unwrap();
        assert_eq!(again.trust_bundle_pem(), first);
    }

    #[tokio::test]
    async fn supplied_files_are_checked_and_named() {
        let dir = ScratchDir::new("ca-files");
        std::fs::create_dir_all(dir.path()).unwrap();
        let store = RedbStore::open(&dir.path().join("data")).unwrap();
        let cert = dir.path().join("ca.pem");
        let key = dir.path().join("ca-key.pem");
        let source = CaSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        };
        let err = MeshCa::load_or_create(&store, &source, &ResourceSet::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem") && err.contains("--ca-cert"), "{err}");

        // A leaf certificate is not a CA.
        let ca = CertificateAuthority::generate("example.org").unwrap();
        let id = weft_identity::SpiffeId::new("example.org", "default", "web").unwrap();
        let leaf = ca.issue(&id, Duration::from_secs(3600)).unwrap();
        std::fs::write(&cert, &leaf.cert_pem).unwrap();
        std::fs::write(&key, &leaf.key_pem).unwrap();
        let err = MeshCa::load_or_create(&store, &source, &ResourceSet::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a CA") && err.contains("ca.pem"), "{err}");

        std::fs::write(&cert, ca.cert_pem()).unwrap();
        std::fs::write(&key, ca.key_pem()).unwrap();
        let loaded = MeshCa::load_or_create(&store, &source, &ResourceSet::default())
            .await
            .unwrap();
        assert_eq!(loaded.trust_bundle_pem(), ca.cert_pem());
        assert_eq!(loaded.trust_domain(), Some("example.org"));
        assert_eq!(
            store.get_meta(ROOT_META_KEY.to_owned()).await.unwrap(),
            None
        );
    }
}
