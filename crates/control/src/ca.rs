//! The mesh's certificate authority: the root that signs workload certificates.
//!
//! On first start the control plane generates an ECDSA P-256 root for the trust domain of
//! the `Mesh` resource (or `weft.local`) and keeps its certificate and key in the store's
//! `meta` table, so a restart keeps the same root. An operator can instead supply a root or
//! intermediate of their own (`weft control --ca-cert FILE --ca-key FILE`); it is used as
//! given and not written to the store.
//!
//! `GET /api/v1/ca` answers the trust bundle (PEM) and the expiry of each root in it.
//!
//! A generated root rotates with no outage (`weft ca rotate`): a new root signs from then
//! on while the old one stays in the bundle; proxies get the two-root bundle in their config
//! and renew at once; when every connected proxy holds a certificate from the new root, the
//! old root is retired (see `rotation.rs`).

use crate::resource_set::ResourceSet;
use crate::store::{Store, StoreError};
use arc_swap::ArcSwap;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_identity::{format_utc, CertificateAuthority, IdentityError};
use weft_model::config::TrustConfig;
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
    /// Roots replaced by `weft ca rotate`, still trusted until every proxy holds a
    /// certificate from the new one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    retiring: Vec<String>,
}

/// One root of the trust bundle.
#[derive(Clone, Debug)]
pub struct Root {
    pub cert_pem: String,
    pub not_after: SystemTime,
    pub sha256: String,
}

impl Root {
    fn of(cert_pem: &str) -> Result<Root, String> {
        let der = weft_identity::parse_pem(cert_pem)
            .into_iter()
            .next()
            .ok_or("no PEM certificate")?;
        Ok(Root {
            cert_pem: cert_pem.to_owned(),
            not_after: not_after(cert_pem)?,
            sha256: weft_identity::fingerprint(&der),
        })
    }
}

/// The signer and the roots in force; replaced whole on rotation.
struct CaState {
    signer: Arc<CertificateAuthority>,
    signing_root: Root,
    /// Older roots still trusted while a rotation completes.
    retiring: Vec<Root>,
}

impl CaState {
    fn new(signer: CertificateAuthority, retiring: &[String]) -> Result<CaState, String> {
        Ok(CaState {
            signing_root: Root::of(signer.cert_pem())?,
            signer: Arc::new(signer),
            retiring: retiring
                .iter()
                .map(|pem| Root::of(pem))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Retiring roots first, then the signing root.
    fn bundle_pem(&self) -> String {
        let mut bundle: String = self.retiring.iter().map(|r| r.cert_pem.as_str()).collect();
        bundle.push_str(&self.signing_root.cert_pem);
        bundle
    }

    fn trust(&self) -> TrustConfig {
        TrustConfig {
            bundle_pem: self.bundle_pem(),
            signing_root: self.signing_root.sha256.clone(),
            trust_domain: self
                .signer
                .trust_domain()
                .unwrap_or(DEFAULT_TRUST_DOMAIN)
                .to_owned(),
            ..TrustConfig::default()
        }
    }

    fn stored(&self) -> StoredRoot {
        StoredRoot {
            cert_pem: self.signer.cert_pem().to_owned(),
            key_pem: self.signer.key_pem().to_owned(),
            retiring: self.retiring.iter().map(|r| r.cert_pem.clone()).collect(),
        }
    }
}

/// Why a rotation cannot start or finish.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(
        "this CA was supplied with --ca-cert and --ca-key; rotate it in the PKI it comes from \
         and restart the control plane with the new files"
    )]
    Supplied,
    #[error("a rotation is already in progress: {0}")]
    InProgress(String),
    #[error("no rotation is in progress")]
    NotRotating,
    #[error("cannot generate the new root: {0}")]
    Generate(#[source] Box<IdentityError>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The mesh's CA: the root that signs, and the trust bundle proxies are given.
pub struct MeshCa {
    state: ArcSwap<CaState>,
    /// `generated` or `supplied`.
    origin: &'static str,
    /// Rotation keeps it: a new root is for the same trust domain.
    trust_domain: Option<String>,
    /// The bundle proxies are sent, in their config.
    trust: watch::Sender<TrustConfig>,
    /// Rotations and retirements one at a time.
    changing: tokio::sync::Mutex<()>,
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
                let mesh_ca =
                    MeshCa::new(ca, &[], "supplied").map_err(|detail| CaError::Invalid {
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
                    let mesh_ca =
                        MeshCa::new(ca, &stored.retiring, "generated").map_err(CaError::Corrupt)?;
                    tracing::info!(
                        trust_domain = mesh_ca.trust_domain(),
                        roots = 1 + stored.retiring.len(),
                        "loaded the CA root from the store"
                    );
                    return Ok(mesh_ca);
                }
                let trust_domain = mesh_trust_domain(resources);
                let ca = CertificateAuthority::generate(&trust_domain)
                    .map_err(|err| CaError::Generate(Box::new(err)))?;
                let mesh_ca = MeshCa::new(ca, &[], "generated").map_err(CaError::Corrupt)?;
                mesh_ca.persist(store, &mesh_ca.state.load()).await?;
                tracing::info!(
                    trust_domain = %trust_domain,
                    not_after = %format_utc(mesh_ca.not_after()),
                    "generated a new CA root and kept it in the store"
                );
                Ok(mesh_ca)
            }
        }
    }

    fn new(
        ca: CertificateAuthority,
        retiring: &[String],
        origin: &'static str,
    ) -> Result<MeshCa, String> {
        let trust_domain = ca.trust_domain().map(str::to_owned);
        let state = CaState::new(ca, retiring)?;
        let (trust, _) = watch::channel(state.trust());
        Ok(MeshCa {
            state: ArcSwap::from_pointee(state),
            origin,
            trust_domain,
            trust,
            changing: tokio::sync::Mutex::new(()),
        })
    }

    async fn persist(&self, store: &dyn Store, state: &CaState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(&state.stored()).expect("the root always encodes");
        store.put_meta(ROOT_META_KEY.to_owned(), bytes).await
    }

    /// Writes `state` to the store, then puts it in force and tells the proxies.
    async fn switch(&self, store: &dyn Store, state: CaState) -> Result<(), StoreError> {
        self.persist(store, &state).await?;
        // In force before anyone hears of it: a listener that reads the CA as soon as it is
        // told must find the new state.
        let trust = state.trust();
        self.state.store(Arc::new(state));
        self.trust.send_replace(trust);
        Ok(())
    }

    /// Starts a root rotation: a new root (same trust domain) signs from now on, and the
    /// old one stays in the bundle until [`Self::retire`]. Proxies get the two-root bundle in
    /// their config and, seeing their certificate is not from the signing root, renew at
    /// once.
    pub async fn rotate(&self, store: &dyn Store) -> Result<(), RotationError> {
        if self.origin == "supplied" {
            return Err(RotationError::Supplied);
        }
        let _one_at_a_time = self.changing.lock().await;
        let current = self.state.load_full();
        if !current.retiring.is_empty() {
            return Err(RotationError::InProgress(
                "the old root is retired once every connected proxy holds a certificate \
                 from the new one; `weft check` shows how many still do not"
                    .to_owned(),
            ));
        }
        let trust_domain = self.trust_domain().unwrap_or(DEFAULT_TRUST_DOMAIN);
        let signer = CertificateAuthority::generate(trust_domain)
            .map_err(|err| RotationError::Generate(Box::new(err)))?;
        let state = CaState::new(signer, std::slice::from_ref(&current.signing_root.cert_pem))
            .map_err(|err| RotationError::Generate(Box::new(IdentityError::InvalidCa(err))))?;
        let (old, new) = (
            current.signing_root.sha256.clone(),
            state.signing_root.sha256.clone(),
        );
        self.switch(store, state).await?;
        tracing::info!(%old, %new, "root rotation started: the new root signs from now on");
        Ok(())
    }

    /// Ends a rotation: drops the retiring roots from the bundle. Call it only once every
    /// proxy holds a certificate from the signing root, or the others lose the mesh.
    pub async fn retire(&self, store: &dyn Store) -> Result<(), RotationError> {
        let _one_at_a_time = self.changing.lock().await;
        let current = self.state.load_full();
        if current.retiring.is_empty() {
            return Err(RotationError::NotRotating);
        }
        let state = CaState {
            signer: current.signer.clone(),
            signing_root: current.signing_root.clone(),
            retiring: Vec::new(),
        };
        self.switch(store, state).await?;
        tracing::info!(
            retired = current.retiring.len(),
            "root rotation complete: the old root is no longer trusted"
        );
        Ok(())
    }

    /// The CA that signs workload certificates now.
    pub fn authority(&self) -> Arc<CertificateAuthority> {
        self.state.load().signer.clone()
    }

    /// The trust domain the root is for; `None` for a supplied CA that names none.
    pub fn trust_domain(&self) -> Option<&str> {
        self.trust_domain.as_deref()
    }

    /// The roots workloads trust, PEM.
    pub fn trust_bundle_pem(&self) -> String {
        self.state.load().bundle_pem()
    }

    /// The bundle as proxies get it in their config; changes on rotation.
    pub fn trust(&self) -> watch::Receiver<TrustConfig> {
        self.trust.subscribe()
    }

    /// The fingerprint of the root that signs now, and of the ones being retired.
    pub fn roots(&self) -> (Root, Vec<Root>) {
        let state = self.state.load();
        (state.signing_root.clone(), state.retiring.clone())
    }

    /// When the signing root expires.
    pub fn not_after(&self) -> SystemTime {
        self.state.load().signing_root.not_after
    }

    /// The answer of `GET /api/v1/ca`.
    pub fn view(&self) -> Value {
        let state = self.state.load();
        let root = |root: &Root, role: &str| {
            json!({
                "role": role,
                "origin": self.origin,
                "trustDomain": self.trust_domain(),
                "notAfter": format_utc(root.not_after),
                "sha256": root.sha256,
            })
        };
        let mut roots: Vec<Value> = state.retiring.iter().map(|r| root(r, "retiring")).collect();
        roots.push(root(&state.signing_root, "signing"));
        json!({
            "trustBundle": state.bundle_pem(),
            "trustDomain": self.trust_domain(),
            "notAfter": format_utc(state.signing_root.not_after),
            "rotating": !state.retiring.is_empty(),
            "roots": roots,
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

/// `GET /api/v1/ca`, and `POST /api/v1/ca/rotate` to start a root rotation.
pub fn router(ca: Arc<MeshCa>, store: Arc<dyn Store>) -> Router {
    Router::new()
        .route("/api/v1/ca", get(show))
        .route("/api/v1/ca/rotate", post(rotate))
        .with_state((ca, store))
}

async fn show(State((ca, _)): State<(Arc<MeshCa>, Arc<dyn Store>)>) -> Json<Value> {
    Json(ca.view())
}

async fn rotate(
    State((ca, store)): State<(Arc<MeshCa>, Arc<dyn Store>)>,
    caller: Option<axum::Extension<crate::access::Caller>>,
) -> Result<Json<Value>, (StatusCode, Json<Value>)> {
    match ca.rotate(&*store).await {
        Ok(()) => {
            let (signing, _) = ca.roots();
            let record = crate::audit::AuditRecord::new(
                &crate::api::actor(caller),
                "ca.rotate",
                format!("CA root {}", signing.sha256),
            )
            .detail("a new root signs from now on; the old one is trusted until every proxy has renewed");
            crate::audit::record(&*store, record).await;
            Ok(Json(ca.view()))
        }
        Err(err) => {
            let status = match err {
                RotationError::Supplied | RotationError::InProgress(_) => StatusCode::CONFLICT,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err((status, Json(json!({ "error": err.to_string() }))))
        }
    }
}

/// The `Mesh` resource's trust domain, or [`DEFAULT_TRUST_DOMAIN`].
/// Why `item` may not be applied, if it is a `Mesh` naming a trust domain other than the
/// CA's: every certificate names the CA's, so a Mesh cannot move the mesh to another one.
pub fn trust_domain_contradiction(
    ca_domain: &str,
    item: &crate::store::ApplyItem,
) -> Option<String> {
    let Spec::Mesh(_) = &item.resource.spec else {
        return None;
    };
    let asked = item.document["spec"]["trustDomain"].as_str()?;
    (asked != ca_domain).then(|| {
        format!(
            "Mesh {}: trustDomain {asked:?} differs from the CA's, {ca_domain:?}, which every \
             workload certificate names. Leave trustDomain out or set it to {ca_domain:?}. To move \
             the mesh to {asked:?}: make a CA for it (`weft cert ca --trust-domain {asked}`), \
             restart the control plane with --ca-cert/--ca-key, then apply the Mesh and give \
             every proxy a new join token (their certificates name {ca_domain:?})",
            item.resource.metadata.name
        )
    })
}

/// Logs an error when the stored `Mesh` names a trust domain other than the CA's (a CA
/// supplied for another domain, or a store from before the check): certificates and
/// configs follow the CA's; the Mesh should be corrected.
pub fn warn_on_trust_domain_mismatch(ca_domain: &str, resources: &ResourceSet) {
    let stored = mesh_trust_domain(resources);
    if stored != ca_domain && stored != DEFAULT_TRUST_DOMAIN {
        tracing::error!(
            mesh = %stored,
            ca = %ca_domain,
            "the Mesh resource's trustDomain differs from the CA's; certificates and peer identities use the CA's. Apply the Mesh with trustDomain set to the CA's, or restart with a CA for the Mesh's"
        );
    }
}

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
