//! Join tokens: what a proxy presents, once, to prove which service it may act as.
//!
//! A token is 32 random bytes, hex. The control plane keeps only its SHA-256 hash, with the
//! identity it is for (service and namespace), its expiry, and whether it is single-use,
//! used or revoked, in the store's `meta` table, so tokens survive a restart. A token's id
//! (the first 16 hex digits of its hash) names it for `weft token revoke`.
//!
//! - `POST /api/v1/tokens` `{"service", "namespace", "ttl", "singleUse"}` → `201`
//!   `{"token", "id", "service", "namespace", "expiresAt", "singleUse"}`. Tokens are
//!   single-use unless `"singleUse": false` asks otherwise: a leaked used token is worth
//!   nothing.
//! - `GET /api/v1/tokens` lists them: id, identity, expiry and state, never the token.
//! - `DELETE /api/v1/tokens/{id}` revokes one.
//!
//! [`TokenStore::verify_and_consume`] is what the CSR flow calls.

use crate::api::actor;
use crate::api::{requested_ttl, ApiError};
use crate::audit::{self, AuditRecord};
use crate::secret::{hash, id_of};
use crate::store::{Store, StoreError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, post};
use axum::{Json, Router};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_identity::format_utc;
use weft_model::resources::Name;

/// The `meta` key the tokens are kept under (one JSON map, id → record).
pub const TOKENS_META_KEY: &str = "tokens";

/// A token's lifetime when the request names none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);

/// Expired tokens are remembered this long (so a late proxy hears "expired", not
/// "unknown"), then forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown join token: it was never issued by this control plane, or expired long ago; create one with `weft token create`")]
    Unknown,
    #[error("this join token is for service {token_service} in namespace {token_namespace}, not {service} in {namespace}; create a token for {service}")]
    WrongIdentity {
        token_service: String,
        token_namespace: String,
        service: String,
        namespace: String,
    },
    #[error("join token {id} expired at {at}; create a new one with `weft token create`")]
    Expired { id: String, at: String },
    #[error("join token {id} was revoked; create a new one with `weft token create`")]
    Revoked { id: String },
    #[error("join token {id} was single-use and has been used already; create a new one with `weft token create`")]
    AlreadyUsed { id: String },
    #[error("no join token with id {0}; ids are printed by `weft token create`")]
    NoSuchId(String),
    #[error("{0}")]
    Invalid(String),
    #[error("cannot make a random token: the system's random source failed")]
    Random,
    #[error("the stored join tokens are unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What is kept per token: never the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct TokenRecord {
    /// SHA-256 of the token, hex.
    hash: String,
    service: String,
    namespace: String,
    /// Unix seconds.
    expires_at: u64,
    single_use: bool,
    used: bool,
    revoked: bool,
}

/// A token just made: the only time the token itself is known.
#[derive(Clone, Debug)]
pub struct CreatedToken {
    pub token: String,
    pub id: String,
    pub service: String,
    pub namespace: String,
    pub expires_at: SystemTime,
    pub single_use: bool,
}

/// The join tokens, kept in the store's `meta` table.
pub struct TokenStore {
    pub(crate) store: Arc<dyn Store>,
    /// Each change reads, edits and writes the whole map: one at a time.
    lock: tokio::sync::Mutex<()>,
    random: SystemRandom,
}

impl std::fmt::Debug for TokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("TokenStore").finish_non_exhaustive()
    }
}

impl TokenStore {
    pub fn new(store: Arc<dyn Store>) -> TokenStore {
        TokenStore {
            store,
            lock: tokio::sync::Mutex::new(()),
            random: SystemRandom::new(),
        }
    }

    /// Makes a token for `service` in `namespace`, valid for `ttl`.
    pub async fn create(
        &self,
        service: &str,
        namespace: &str,
        ttl: Duration,
        single_use: bool,
    ) -> Result<CreatedToken, TokenError> {
        Name::new(service)
            .map_err(|reason| TokenError::Invalid(format!("service {service:?}: {reason}")))?;
        Name::new(namespace)
            .map_err(|reason| TokenError::Invalid(format!("namespace {namespace:?}: {reason}")))?;
        if crate::access::is_reserved_namespace(namespace) {
            return Err(TokenError::Invalid(format!(
                "namespace {namespace} is reserved for the control plane and its operators: no workload joins it"
            )));
        }
        if ttl.is_zero() {
            return Err(TokenError::Invalid(
                "ttl must be longer than zero, e.g. 1h".to_owned(),
            ));
        }
        let now = SystemTime::now();
        let expires_at = now
            .checked_add(ttl)
            .filter(|at| unix(*at) < i64::MAX as u64)
            .ok_or_else(|| TokenError::Invalid(format!("a ttl of {ttl:?} is too long")))?;
        let token = crate::secret::generate(&self.random, "").ok_or(TokenError::Random)?;
        let hash = hash(&token);
        let id = id_of(&hash);
        let record = TokenRecord {
            hash,
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            expires_at: unix(expires_at),
            single_use,
            used: false,
            revoked: false,
        };
        let _guard = self.lock.lock().await;
        let mut tokens = self.load().await?;
        let cutoff = unix(now).saturating_sub(FORGET_AFTER.as_secs());
        tokens.retain(|_, r| r.expires_at >= cutoff);
        tokens.insert(id.clone(), record);
        self.save(&tokens).await?;
        Ok(CreatedToken {
            token,
            id,
            service: service.to_owned(),
            namespace: namespace.to_owned(),
            expires_at: UNIX_EPOCH + Duration::from_secs(unix(expires_at)),
            single_use,
        })
    }

    /// Revokes the token with `id`: it is refused from now on.
    pub async fn revoke(&self, id: &str) -> Result<(), TokenError> {
        let _guard = self.lock.lock().await;
        let mut tokens = self.load().await?;
        let record = tokens
            .get_mut(id)
            .ok_or_else(|| TokenError::NoSuchId(id.to_owned()))?;
        if !record.revoked {
            record.revoked = true;
            self.save(&tokens).await?;
        }
        Ok(())
    }

    /// Checks that `token` may act as `service` in `namespace` now, and marks a single-use
    /// token used. Refuses an unknown, revoked, expired or used token, or one for another
    /// identity, each with its own error.
    pub async fn verify_and_consume(
        &self,
        token: &str,
        service: &str,
        namespace: &str,
    ) -> Result<(), TokenError> {
        self.verify_and_consume_at(token, service, namespace, SystemTime::now())
            .await
    }

    async fn verify_and_consume_at(
        &self,
        token: &str,
        service: &str,
        namespace: &str,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        let hash = hash(token.trim());
        let id = id_of(&hash);
        let _guard = self.lock.lock().await;
        let mut tokens = self.load().await?;
        let record = match tokens.get_mut(&id) {
            Some(record) if record.hash == hash => record,
            _ => return Err(TokenError::Unknown),
        };
        if record.revoked {
            return Err(TokenError::Revoked { id });
        }
        if unix(now) >= record.expires_at {
            return Err(TokenError::Expired {
                id,
                at: format_utc(UNIX_EPOCH + Duration::from_secs(record.expires_at)),
            });
        }
        if record.service != service || record.namespace != namespace {
            return Err(TokenError::WrongIdentity {
                token_service: record.service.clone(),
                token_namespace: record.namespace.clone(),
                service: service.to_owned(),
                namespace: namespace.to_owned(),
            });
        }
        if record.single_use {
            if record.used {
                return Err(TokenError::AlreadyUsed { id });
            }
            record.used = true;
            self.save(&tokens).await?;
        }
        Ok(())
    }

    /// Every token remembered: id, identity, expiry, and whether it is single-use, used or
    /// revoked; soonest to expire last.
    pub async fn list(&self) -> Result<Vec<serde_json::Value>, TokenError> {
        let tokens = self.load().await?;
        let now = unix(SystemTime::now());
        let mut listed: Vec<_> = tokens.iter().collect();
        listed.sort_by_key(|(id, record)| (std::cmp::Reverse(record.expires_at), *id));
        Ok(listed
            .into_iter()
            .map(|(id, record)| {
                let state = if record.revoked {
                    "revoked"
                } else if record.single_use && record.used {
                    "used"
                } else if now >= record.expires_at {
                    "expired"
                } else {
                    "usable"
                };
                json!({
                    "id": id,
                    "service": record.service,
                    "namespace": record.namespace,
                    "expiresAt": format_utc(UNIX_EPOCH + Duration::from_secs(record.expires_at)),
                    "singleUse": record.single_use,
                    "state": state,
                })
            })
            .collect())
    }

    async fn load(&self) -> Result<BTreeMap<String, TokenRecord>, TokenError> {
        match self.store.get_meta(TOKENS_META_KEY.to_owned()).await? {
            None => Ok(BTreeMap::new()),
            Some(bytes) => {
                serde_json::from_slice(&bytes).map_err(|err| TokenError::Corrupt(err.to_string()))
            }
        }
    }

    async fn save(&self, tokens: &BTreeMap<String, TokenRecord>) -> Result<(), TokenError> {
        let bytes =
            serde_json::to_vec(tokens).map_err(|err| TokenError::Corrupt(err.to_string()))?;
        self.store
            .put_meta(TOKENS_META_KEY.to_owned(), bytes)
            .await?;
        Ok(())
    }
}

/// The body of `POST /api/v1/tokens`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRequest {
    pub service: String,
    #[serde(default)]
    pub namespace: Option<String>,
    /// A duration like `1h`, `30m`, `90s`; [`DEFAULT_TTL`] when absent.
    #[serde(default)]
    pub ttl: Option<String>,
    /// True when absent.
    #[serde(default)]
    pub single_use: Option<bool>,
}

pub fn router(tokens: Arc<TokenStore>) -> Router {
    Router::new()
        .route("/api/v1/tokens", post(create).get(list))
        .route("/api/v1/tokens/{id}", delete(revoke))
        .with_state(tokens)
}

async fn create(
    State(tokens): State<Arc<TokenStore>>,
    caller: Option<axum::Extension<crate::access::Caller>>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: CreateRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(format!(
            "invalid token request: {err}; send {{\"service\": NAME, \"namespace\": NS, \"ttl\": \"1h\", \"singleUse\": false}}"
        ))
    })?;
    let ttl = requested_ttl(request.ttl.as_deref(), DEFAULT_TTL)?;
    let namespace = request.namespace.as_deref().unwrap_or("default");
    let created = tokens
        .create(
            &request.service,
            namespace,
            ttl,
            request.single_use.unwrap_or(true),
        )
        .await?;
    tracing::info!(
        id = %created.id,
        service = %created.service,
        namespace = %created.namespace,
        single_use = created.single_use,
        "join token created"
    );
    let detail = format!(
        "for Service {}/{}, expires {}, {}",
        created.namespace,
        created.service,
        format_utc(created.expires_at),
        if created.single_use {
            "single use"
        } else {
            "reusable"
        }
    );
    let record = AuditRecord::new(
        &actor(caller),
        "token.create",
        format!("join token {}", created.id),
    );
    audit::record(&*tokens.store, record.detail(detail)).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": created.token,
            "id": created.id,
            "service": created.service,
            "namespace": created.namespace,
            "expiresAt": format_utc(created.expires_at),
            "singleUse": created.single_use,
        })),
    ))
}

async fn list(State(tokens): State<Arc<TokenStore>>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(json!({ "tokens": tokens.list().await? })))
}

async fn revoke(
    State(tokens): State<Arc<TokenStore>>,
    caller: Option<axum::Extension<crate::access::Caller>>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    tokens.revoke(&id).await?;
    tracing::info!(id = %id, "join token revoked");
    let record = AuditRecord::new(&actor(caller), "token.revoke", format!("join token {id}"));
    audit::record(&*tokens.store, record).await;
    Ok(Json(json!({ "revoked": id })))
}

impl From<TokenError> for ApiError {
    fn from(err: TokenError) -> Self {
        match err {
            TokenError::Invalid(_) => ApiError::bad_request(err.to_string()),
            TokenError::NoSuchId(_) => ApiError::new(StatusCode::NOT_FOUND, err.to_string()),
            TokenError::Unknown
            | TokenError::WrongIdentity { .. }
            | TokenError::Expired { .. }
            | TokenError::Revoked { .. }
            | TokenError::AlreadyUsed { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, err.to_string())
            }
            TokenError::Store(store) => store.into(),
            TokenError::Random | TokenError::Corrupt(_) => {
                tracing::error!(error = %err, "join token failure");
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

    fn tokens(dir: &ScratchDir) -> TokenStore {
        TokenStore::new(Arc::new(RedbStore::open(dir.path()).unwrap()))
    }

    #[tokio::test]
    async fn good_token_verifies_and_survives_reopen() {
        let dir = ScratchDir::new("tokens-good");
        let created = {
            let store = tokens(&dir);
            let created = store
                .create("web", "default", DEFAULT_TTL, false)
                .await
                .unwrap();
            assert_eq!(created.token.len(), 64);
            assert_eq!(created.id.len(), 16);
            created
        };
        let store = tokens(&dir);
        // Kept only as a hash.
        let kept = store
            .store
            .get_meta(TOKENS_META_KEY.to_owned())
            .await
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&kept).contains(&created.token));
        for _ in 0..2 {
            store
                .verify_and_consume(&created.token, "web", "default")
                .await
                .unwrap();
        }
        assert!(matches!(
            store.verify_and_consume("nonsense", "web", "default").await,
            Err(TokenError::Unknown)
        ));
    }

    #[tokio::test]
    async fn wrong_identity_is_refused() {
        let dir = ScratchDir::new("tokens-identity");
        let store = tokens(&dir);
        let created = store
            .create("web", "shop", DEFAULT_TTL, true)
            .await
            .unwrap();
        for (service, namespace) in [("api", "shop"), ("web", "default")] {
            let err = store
                .verify_and_consume(&created.token, service, namespace)
                .await
                .unwrap_err();
            assert!(matches!(err, TokenError::WrongIdentity { .. }), "{err}");
        }
        // A refusal does not use up a single-use token.
        store
            .verify_and_consume(&created.token, "web", "shop")
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn expired_token_is_refused() {
        let dir = ScratchDir::new("tokens-expired");
        let store = tokens(&dir);
        let created = store
            .create("web", "default", Duration::from_secs(60), false)
            .await
            .unwrap();
        let later = SystemTime::now() + Duration::from_secs(61);
        let err = store
            .verify_and_consume_at(&created.token, "web", "default", later)
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Expired { .. }), "{err}");
    }

    #[tokio::test]
    async fn revoked_token_is_refused() {
        let dir = ScratchDir::new("tokens-revoked");
        let store = tokens(&dir);
        let created = store
            .create("web", "default", DEFAULT_TTL, false)
            .await
            .unwrap();
        store.revoke(&created.id).await.unwrap();
        let err = store
            .verify_and_consume(&created.token, "web", "default")
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::Revoked { .. }), "{err}");
        assert!(matches!(
            store.revoke("0123456789abcdef").await,
            Err(TokenError::NoSuchId(_))
        ));
    }

    #[tokio::test]
    async fn single_use_token_cannot_be_reused() {
        let dir = ScratchDir::new("tokens-single");
        let created = {
            let store = tokens(&dir);
            let created = store
                .create("web", "default", DEFAULT_TTL, true)
                .await
                .unwrap();
            store
                .verify_and_consume(&created.token, "web", "default")
                .await
                .unwrap();
            created
        };
        // Used stays used across a restart.
        let store = tokens(&dir);
        let err = store
            .verify_and_consume(&created.token, "web", "default")
            .await
            .unwrap_err();
        assert!(matches!(err, TokenError::AlreadyUsed { .. }), "{err}");
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        let dir = ScratchDir::new("tokens-bad");
        let store = tokens(&dir);
        for (service, namespace, ttl) in [
            ("Bad_Name", "default", DEFAULT_TTL),
            ("web", "", DEFAULT_TTL),
            ("web", "default", Duration::ZERO),
        ] {
            let err = store
                .create(service, namespace, ttl, false)
                .await
                .unwrap_err();
            assert!(matches!(err, TokenError::Invalid(_)), "{err}");
        }
    }
}
