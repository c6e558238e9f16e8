//! Revocation: an operator takes back a workload identity (every certificate naming it, and
//! any new one, until restored) or a single certificate (by the SHA-256 of its DER).
//!
//! ```text
//! weft identity revoke ─> Revocations (store meta "revocations", watch) ─┬─> Identity.Sign refuses
//!                                                                        ├─> gRPC port refuses its TLS
//!                                                                        └─> trust config pushed to
//!                                                                            every proxy: peers refuse
//!                                                                            its handshakes
//! ```
//!
//! - `GET /api/v1/revocations`: what is revoked.
//! - `POST /api/v1/revocations` `{"identity": "spiffe://..."}` or `{"certificate": SHA256}`.
//! - `DELETE /api/v1/revocations?identity=spiffe://...` restores an identity (a certificate
//!   stays revoked until it expires, then is forgotten).

use crate::api::ApiError;
use crate::audit::{self, AuditRecord};
use crate::discovery::Registry;
use crate::store::{Store, StoreError};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;
use weft_identity::{format_utc, SpiffeId};
use weft_model::config::TrustConfig;

/// The `meta` key the list is kept under.
pub const REVOCATIONS_META_KEY: &str = "revocations";
/// A revoked certificate no connected proxy reported is remembered this long: longer than
/// any certificate the CA issues by default lasts.
const UNKNOWN_CERTIFICATE_KEPT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Every proxy gets the list in its config: it stays small.
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0} is not revoked; `weft identity revoked` lists what is")]
    NotRevoked(String),
    #[error(
        "{MAX_ENTRIES} revocations are in force already; restore identities that no longer need it"
    )]
    TooMany,
    #[error("the stored revocations are unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What is revoked, as stored and watched.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RevocationList {
    /// SPIFFE id → when it was revoked (Unix seconds).
    identities: BTreeMap<String, u64>,
    /// SHA-256 of the DER → the certificate's identity (if known) and until when it matters.
    certificates: BTreeMap<String, RevokedCertificate>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RevokedCertificate {
    identity: Option<String>,
    revoked_at: u64,
    /// After this the certificate has expired and is refused anyway: it is forgotten.
    forget_after: u64,
}

impl RevocationList {
    pub fn identity_revoked(&self, id: &SpiffeId) -> bool {
        self.identities.contains_key(&id.to_string())
    }

    pub fn certificate_revoked(&self, sha256: &str) -> bool {
        self.certificates.contains_key(sha256)
    }

    /// The list as a TLS identity enforces it.
    pub fn to_revoked(&self) -> weft_identity::Revoked {
        weft_identity::Revoked::new(
            self.identities.keys().map(String::as_str),
            self.certificates.keys().map(String::as_str),
        )
    }

    fn entries(&self) -> usize {
        self.identities.len() + self.certificates.len()
    }
}

/// The revocations: in the store, and watched by what enforces them.
pub struct Revocations {
    store: Arc<dyn Store>,
    list: watch::Sender<RevocationList>,
    writer: tokio::sync::Mutex<()>,
}

impl Revocations {
    pub async fn open(store: Arc<dyn Store>) -> Result<Revocations, RevocationError> {
        let mut list: RevocationList = match store.get_meta(REVOCATIONS_META_KEY.to_owned()).await?
        {
            None => RevocationList::default(),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| RevocationError::Corrupt(err.to_string()))?,
        };
        let now = unix(SystemTime::now());
        list.certificates.retain(|_, c| c.forget_after > now);
        Ok(Revocations {
            store,
            list: watch::channel(list).0,
            writer: tokio::sync::Mutex::new(()),
        })
    }

    pub fn watch(&self) -> watch::Receiver<RevocationList> {
        self.list.subscribe()
    }

    pub fn current(&self) -> RevocationList {
        self.list.borrow().clone()
    }

    pub async fn revoke_identity(&self, id: &SpiffeId) -> Result<(), RevocationError> {
        let at = unix(SystemTime::now());
        self.change(|list| {
            list.identities.entry(id.to_string()).or_insert(at);
            Ok(())
        })
        .await
    }

    pub async fn restore_identity(&self, id: &SpiffeId) -> Result<(), RevocationError> {
        self.change(|list| {
            list.identities
                .remove(&id.to_string())
                .map(drop)
                .ok_or_else(|| RevocationError::NotRevoked(id.to_string()))
        })
        .await
    }

    /// Revokes the certificate whose DER hashes to `sha256`; `known` is what a connected
    /// proxy reported of it (identity, expiry), if one did.
    pub async fn revoke_certificate(
        &self,
        sha256: &str,
        known: Option<(Option<String>, SystemTime)>,
    ) -> Result<(), RevocationError> {
        let sha256 = sha256.to_ascii_lowercase();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(RevocationError::Invalid(format!(
                "{sha256:?} is not a certificate's SHA-256: 64 hex digits, as `weft proxies --json` shows (certificate.sha256)"
            )));
        }
        let now = SystemTime::now();
        let (identity, not_after) = known.unwrap_or((None, now + UNKNOWN_CERTIFICATE_KEPT));
        let entry = RevokedCertificate {
            identity,
            revoked_at: unix(now),
            forget_after: unix(not_after),
        };
        self.change(|list| {
            list.certificates.entry(sha256).or_insert(entry);
            Ok(())
        })
        .await
    }

    async fn change(
        &self,
        edit: impl FnOnce(&mut RevocationList) -> Result<(), RevocationError>,
    ) -> Result<(), RevocationError> {
        let _writer = self.writer.lock().await;
        let mut list = self.current();
        let now = unix(SystemTime::now());
        list.certificates.retain(|_, c| c.forget_after > now);
        edit(&mut list)?;
        if list.entries() > MAX_ENTRIES {
            return Err(RevocationError::TooMany);
        }
        let bytes =
            serde_json::to_vec(&list).map_err(|err| RevocationError::Corrupt(err.to_string()))?;
        self.store
            .put_meta(REVOCATIONS_META_KEY.to_owned(), bytes)
            .await?;
        self.list.send_replace(list);
        Ok(())
    }

    fn view(&self) -> Value {
        let list = self.current();
        let at = |unix: u64| format_utc(UNIX_EPOCH + Duration::from_secs(unix));
        json!({
            "identities": list.identities.iter().map(|(id, revoked_at)| json!({
                "identity": id,
                "revokedAt": at(*revoked_at),
            })).collect::<Vec<_>>(),
            "certificates": list.certificates.iter().map(|(sha256, c)| json!({
                "sha256": sha256,
                "identity": c.identity,
                "revokedAt": at(c.revoked_at),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The CA's trust config with the revocations added: what proxies are sent. Follows both
/// for as long as either sender lives.
pub fn trust_with_revocations(
    mut trust: watch::Receiver<TrustConfig>,
    mut revoked: watch::Receiver<RevocationList>,
) -> watch::Receiver<TrustConfig> {
    let merge = |trust: &TrustConfig, revoked: &RevocationList| TrustConfig {
        revoked_identities: revoked.identities.keys().cloned().collect(),
        revoked_certificates: revoked.certificates.keys().cloned().collect(),
        ..trust.clone()
    };
    let (merged, receiver) = watch::channel(merge(&trust.borrow(), &revoked.borrow()));
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = trust.changed() => if changed.is_err() { return },
                changed = revoked.changed() => if changed.is_err() { return },
                () = merged.closed() => return,
            }
            merged.send_replace(merge(
                &trust.borrow_and_update(),
                &revoked.borrow_and_update(),
            ));
        }
    });
    receiver
}

/// Keeps `serving` (the gRPC port's identity) refusing what is revoked, for as long as the
/// list's sender lives.
pub async fn enforce(
    serving: Arc<weft_identity::TlsIdentity>,
    mut revoked: watch::Receiver<RevocationList>,
) {
    loop {
        let list = revoked.borrow_and_update().to_revoked();
        if let Err(error) = serving.revoke(list) {
            tracing::error!(%error, "cannot put the revocations in force on the gRPC port");
        }
        if revoked.changed().await.is_err() {
            return;
        }
    }
}

/// The body of `POST /api/v1/revocations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    identity: Option<String>,
    certificate: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RestoreQuery {
    identity: String,
}

#[derive(Clone)]
struct Api {
    revocations: Arc<Revocations>,
    registry: Arc<Registry>,
}

pub fn router(revocations: Arc<Revocations>, registry: Arc<Registry>) -> Router {
    Router::new()
        .route(
            "/api/v1/revocations",
            get(list).post(revoke).delete(restore),
        )
        .with_state(Api {
            revocations,
            registry,
        })
}

async fn list(State(api): State<Api>) -> Json<Value> {
    Json(api.revocations.view())
}

fn spiffe_id(text: &str) -> Result<SpiffeId, ApiError> {
    SpiffeId::parse(text).map_err(|err| {
        ApiError::bad_request(format!(
            "{text:?}: {err}; name the identity as spiffe://TRUST-DOMAIN/ns/NAMESPACE/svc/SERVICE"
        ))
    })
}

async fn revoke(
    State(api): State<Api>,
    Extension(caller): Extension<crate::access::Caller>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let request: RevokeRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(format!(
            "invalid revocation: {err}; send {{\"identity\": \"spiffe://...\"}} or {{\"certificate\": SHA256}}"
        ))
    })?;
    match (request.identity, request.certificate) {
        (Some(identity), None) => {
            let id = spiffe_id(&identity)?;
            api.revocations.revoke_identity(&id).await?;
            tracing::warn!(identity = %id, by = %caller.name, "identity revoked");
            let record = AuditRecord::new(&caller.name, "identity.revoke", id.to_string());
            audit::record(&*api.revocations.store, record).await;
        }
        (None, Some(sha256)) => {
            let sha256 = sha256.to_ascii_lowercase();
            let known = api.registry.proxies().into_iter().find_map(|p| {
                let certificate = p.certificate?;
                (certificate.sha256 == sha256)
                    .then_some((certificate.spiffe_id, certificate.not_after))
            });
            api.revocations.revoke_certificate(&sha256, known).await?;
            tracing::warn!(certificate = %sha256, by = %caller.name, "certificate revoked");
            let record = AuditRecord::new(
                &caller.name,
                "certificate.revoke",
                format!("certificate {sha256}"),
            );
            audit::record(&*api.revocations.store, record).await;
        }
        _ => {
            return Err(ApiError::bad_request(
                "name exactly one of identity and certificate",
            ))
        }
    }
    Ok(Json(api.revocations.view()))
}

async fn restore(
    State(api): State<Api>,
    Extension(caller): Extension<crate::access::Caller>,
    Query(query): Query<RestoreQuery>,
) -> Result<Json<Value>, ApiError> {
    let id = spiffe_id(&query.identity)?;
    api.revocations.restore_identity(&id).await?;
    tracing::warn!(identity = %id, by = %caller.name, "identity restored");
    let record = AuditRecord::new(&caller.name, "identity.restore", id.to_string());
    audit::record(&*api.revocations.store, record).await;
    Ok(Json(api.revocations.view()))
}

impl From<RevocationError> for ApiError {
    fn from(err: RevocationError) -> Self {
        match err {
            RevocationError::Invalid(_) => ApiError::bad_request(err.to_string()),
            RevocationError::NotRevoked(_) => ApiError::new(StatusCode::NOT_FOUND, err.to_string()),
            RevocationError::TooMany => ApiError::new(StatusCode::CONFLICT, err.to_string()),
            RevocationError::Store(store) => store.into(),
            RevocationError::Corrupt(_) => {
                tracing::error!(error = %err, "revocation failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, err.to_string())
            }
        }
    }
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::ScratchDir;
    use crate::store::RedbStore;

    #[tokio::test]
    async fn revocations_survive_a_restart_and_reach_the_trust_config() {
        let dir = ScratchDir::new("revocations");
        let web = SpiffeId::parse("spiffe://weft.local/ns/default/svc/web").unwrap();
        let sha = "ab".repeat(32);
        {
            let store = Arc::new(RedbStore::open(dir.path()).unwrap());
            let revocations = Revocations::open(store).await.unwrap();
            let (ca_trust, ca_rx) = watch::channel(TrustConfig::default());
            let merged = trust_with_revocations(ca_rx, revocations.watch());
            revocations.revoke_identity(&web).await.unwrap();
            revocations.revoke_certificate(&sha, None).await.unwrap();
            let mut merged = merged;
            merged
                .wait_for(|t| t.revoked_identities.len() == 1 && t.revoked_certificates.len() == 1)
                .await
                .unwrap();
            assert!(matches!(
                revocations.revoke_certificate("nonsense", None).await,
                Err(RevocationError::Invalid(_))
            ));
            drop(ca_trust);
        }
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        let revocations = Revocations::open(store).await.unwrap();
        let list = revocations.current();
        assert!(list.identity_revoked(&web));
        assert!(list.certificate_revoked(&sha));
        revocations.restore_identity(&web).await.unwrap();
        assert!(!revocations.current().identity_revoked(&web));
        assert!(matches!(
            revocations.restore_identity(&web).await,
            Err(RevocationError::NotRevoked(_))
        ));
    }
}
