//! API tokens: the bearer credentials of `weft apply/get/...`, scripts and the dashboard.
//!
//! Each token has a name and a [`Role`]. The store's `meta` table keeps, per token, only its
//! SHA-256 hash with the name, role, creation time and whether it was revoked; a copy lives
//! in memory so checking a call never waits for the disk. On first start (and whenever the
//! file is gone) an admin token is made and written to `<data-dir>/admin.token`, 0600: the
//! operator's first credential, and the way back in after losing every other.
//!
//! - `POST /api/v1/api-tokens` `{"name", "role"}` → `201` `{"token", "id", "name", "role"}`.
//! - `GET /api/v1/api-tokens` lists them (never the tokens themselves).
//! - `DELETE /api/v1/api-tokens/{id}` revokes one.

use super::{Caller, Role};
use crate::api::ApiError;
use crate::audit::{self, AuditRecord};
use crate::data_dir;
use crate::store::{Store, StoreError};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use axum::{Extension, Json, Router};
use ring::rand::SystemRandom;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path as FsPath, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_identity::format_utc;

/// The `meta` key the API tokens are kept under (one JSON map, id → record).
pub const API_TOKENS_META_KEY: &str = "api-tokens";
/// The admin token's file in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// What every API token starts with, so people and secret scanners can tell it apart.
pub const TOKEN_PREFIX: &str = "weftapi_";
/// More tokens than this is a leak of tokens, not a use of them: revoke some first.
const MAX_TOKENS: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum ApiTokenError {
    #[error("{0}")]
    Invalid(String),
    #[error("no API token with id {0}; `weft api-token list` shows them")]
    NoSuchId(String),
    #[error("there are {MAX_TOKENS} API tokens already; revoke unused ones with `weft api-token revoke`")]
    TooMany,
    #[error("cannot make a random token: the system's random source failed")]
    Random,
    #[error("the stored API tokens are unreadable: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    DataDir(#[from] data_dir::DataDirError),
}

/// What is kept per token: never the token itself.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// SHA-256 of the token, hex.
    hash: String,
    name: String,
    role: Role,
    /// Unix seconds.
    created_at: u64,
    revoked: bool,
}

/// A token just made: the only time the token itself is known.
#[derive(Clone, Debug)]
pub struct CreatedApiToken {
    pub token: String,
    pub id: String,
    pub name: String,
    pub role: Role,
}

/// The API tokens: in the store, mirrored in memory.
pub struct ApiTokens {
    store: Arc<dyn Store>,
    records: RwLock<BTreeMap<String, Record>>,
    /// Changes read, edit and write the whole map: one at a time.
    writer: tokio::sync::Mutex<()>,
    random: SystemRandom,
    admin_token_path: PathBuf,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("ApiTokens").finish_non_exhaustive()
    }
}

impl ApiTokens {
    /// Loads the tokens, and makes the admin token (written to
    /// `<data_dir>/admin.token`) if that file is missing or holds a token this store does
    /// not know (a store made afresh beside an old file).
    pub async fn open(store: Arc<dyn Store>, data_dir: &FsPath) -> Result<Self, ApiTokenError> {
        let records = match store.get_meta(API_TOKENS_META_KEY.to_owned()).await? {
            None => BTreeMap::new(),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map_err(|err| ApiTokenError::Corrupt(err.to_string()))?,
        };
        let tokens = ApiTokens {
            store,
            records: RwLock::new(records),
            writer: tokio::sync::Mutex::new(()),
            random: SystemRandom::new(),
            admin_token_path: data_dir.join(ADMIN_TOKEN_FILE),
        };
        tokens.ensure_admin_token().await?;
        Ok(tokens)
    }

    /// Where the admin token is written.
    pub fn admin_token_path(&self) -> &FsPath {
        &self.admin_token_path
    }

    async fn ensure_admin_token(&self) -> Result<(), ApiTokenError> {
        let path = &self.admin_token_path;
        let existing = std::fs::read_to_string(path).ok();
        match existing.as_deref().map(|text| self.lookup(text.trim())) {
            Some(Lookup::Valid(_)) => {
                tracing::info!(path = %path.display(), "the admin API token is in this file");
                return Ok(());
            }
            Some(Lookup::Revoked) => {
                tracing::warn!(path = %path.display(), "the admin API token in this file was revoked; delete the file and restart to make a new one");
                return Ok(());
            }
            Some(Lookup::Unknown) | None => {}
        }
        let created = self.create("admin", Role::Admin).await?;
        data_dir::write_private(path, format!("{}\n", created.token).as_bytes())?;
        tracing::info!(path = %path.display(), id = %created.id, "created the admin API token; `weft` commands on this host read it from there (or give --token / WEFT_TOKEN)");
        Ok(())
    }

    /// Makes a token called `name` with `role`.
    pub async fn create(&self, name: &str, role: Role) -> Result<CreatedApiToken, ApiTokenError> {
        let name = name.trim();
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
        {
            return Err(ApiTokenError::Invalid(format!(
                "token name {name:?}: use 1 to 63 letters, digits, '-', '_', '.' or '@', e.g. grafana"
            )));
        }
        let token =
            crate::secret::generate(&self.random, TOKEN_PREFIX).ok_or(ApiTokenError::Random)?;
        let hash = crate::secret::hash(&token);
        let id = crate::secret::id_of(&hash);
        let record = Record {
            hash,
            name: name.to_owned(),
            role,
            created_at: unix(SystemTime::now()),
            revoked: false,
        };
        self.change(|records| {
            if records.len() >= MAX_TOKENS {
                return Err(ApiTokenError::TooMany);
            }
            records.insert(id.clone(), record);
            Ok(())
        })
        .await?;
        Ok(CreatedApiToken {
            token,
            id,
            name: name.to_owned(),
            role,
        })
    }

    /// Revokes the token with `id`: refused from the next call on.
    pub async fn revoke(&self, id: &str) -> Result<(), ApiTokenError> {
        self.change(|records| {
            let record = records
                .get_mut(id)
                .ok_or_else(|| ApiTokenError::NoSuchId(id.to_owned()))?;
            record.revoked = true;
            Ok(())
        })
        .await
    }

    /// Who `token` is, if it is a valid API token.
    pub fn verify(&self, token: &str) -> Option<Caller> {
        match self.lookup(token) {
            Lookup::Valid(caller) => Some(caller),
            Lookup::Revoked | Lookup::Unknown => None,
        }
    }

    fn lookup(&self, token: &str) -> Lookup {
        let hash = crate::secret::hash(token);
        let id = crate::secret::id_of(&hash);
        let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
        match records.get(&id) {
            Some(record) if record.hash == hash && record.revoked => Lookup::Revoked,
            Some(record) if record.hash == hash => Lookup::Valid(Caller {
                name: format!("token {id} ({})", record.name),
                role: record.role,
            }),
            _ => Lookup::Unknown,
        }
    }

    /// Every token's id, name, role, creation time and state, oldest first.
    fn list(&self) -> Vec<serde_json::Value> {
        let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
        let mut listed: Vec<_> = records.iter().collect();
        listed.sort_by_key(|(id, record)| (record.created_at, *id));
        listed
            .into_iter()
            .map(|(id, record)| {
                json!({
                    "id": id,
                    "name": record.name,
                    "role": record.role,
                    "createdAt": format_utc(UNIX_EPOCH + Duration::from_secs(record.created_at)),
                    "revoked": record.revoked,
                })
            })
            .collect()
    }

    /// Applies `edit` to a copy of the tokens, stores it, then lets calls see it.
    async fn change(
        &self,
        edit: impl FnOnce(&mut BTreeMap<String, Record>) -> Result<(), ApiTokenError>,
    ) -> Result<(), ApiTokenError> {
        let _writer = self.writer.lock().await;
        let mut records = self
            .records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        edit(&mut records)?;
        let bytes =
            serde_json::to_vec(&records).map_err(|err| ApiTokenError::Corrupt(err.to_string()))?;
        self.store
            .put_meta(API_TOKENS_META_KEY.to_owned(), bytes)
            .await?;
        *self.records.write().unwrap_or_else(PoisonError::into_inner) = records;
        Ok(())
    }
}

enum Lookup {
    Valid(Caller),
    Revoked,
    Unknown,
}

/// The body of `POST /api/v1/api-tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    name: String,
    role: Role,
}

pub fn router(tokens: Arc<ApiTokens>) -> Router {
    Router::new()
        .route("/api/v1/api-tokens", get(list).post(create))
        .route("/api/v1/api-tokens/{id}", delete(revoke))
        .with_state(tokens)
}

async fn list(State(tokens): State<Arc<ApiTokens>>) -> Json<serde_json::Value> {
    Json(json!({ "tokens": tokens.list() }))
}

async fn create(
    State(tokens): State<Arc<ApiTokens>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let request: CreateRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(format!(
            "invalid API token request: {err}; send {{\"name\": \"grafana\", \"role\": \"read-only\"}} (roles: admin, read-only)"
        ))
    })?;
    let created = tokens.create(&request.name, request.role).await?;
    tracing::info!(id = %created.id, name = %created.name, role = %created.role, by = %caller.name, "API token created");
    let record = AuditRecord::new(
        &caller.name,
        "api-token.create",
        format!("API token {}", created.id),
    )
    .detail(format!("named {}, role {}", created.name, created.role));
    audit::record(&*tokens.store, record).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": created.token,
            "id": created.id,
            "name": created.name,
            "role": created.role,
        })),
    ))
}

async fn revoke(
    State(tokens): State<Arc<ApiTokens>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    tokens.revoke(&id).await?;
    tracing::info!(id = %id, by = %caller.name, "API token revoked");
    let record = AuditRecord::new(&caller.name, "api-token.revoke", format!("API token {id}"));
    audit::record(&*tokens.store, record).await;
    Ok(Json(json!({ "revoked": id })))
}

impl From<ApiTokenError> for ApiError {
    fn from(err: ApiTokenError) -> Self {
        match err {
            ApiTokenError::Invalid(_) => ApiError::bad_request(err.to_string()),
            ApiTokenError::NoSuchId(_) => ApiError::new(StatusCode::NOT_FOUND, err.to_string()),
            ApiTokenError::TooMany => ApiError::new(StatusCode::CONFLICT, err.to_string()),
            ApiTokenError::Store(store) => store.into(),
            ApiTokenError::Random | ApiTokenError::Corrupt(_) | ApiTokenError::DataDir(_) => {
                tracing::error!(error = %err, "API token failure");
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
    use std::os::unix::fs::MetadataExt;

    async fn open(dir: &ScratchDir) -> ApiTokens {
        let store = Arc::new(RedbStore::open(dir.path()).unwrap());
        ApiTokens::open(store, dir.path()).await.unwrap()
    }

    #[tokio::test]
    async fn the_admin_token_is_made_once_private_and_kept_only_as_a_hash() {
        let dir = ScratchDir::new("api-tokens-admin");
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let first = {
            open(&dir).await;
            std::fs::read_to_string(&path).unwrap()
        };
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert!(first.starts_with(TOKEN_PREFIX), "{first}");
        let tokens = open(&dir).await;
        // A restart keeps the token.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        let caller = tokens.verify(first.trim()).unwrap();
        assert_eq!(caller.role, Role::Admin);
        let kept = tokens
            .store
            .get_meta(API_TOKENS_META_KEY.to_owned())
            .await
            .unwrap()
            .unwrap();
        assert!(!String::from_utf8_lossy(&kept).contains(first.trim()));
        assert!(tokens.verify("weftapi_nonsense").is_none());
        assert!(tokens.verify("").is_none());
    }

    #[tokio::test]
    async fn a_lost_admin_file_is_made_again_and_the_old_token_still_works() {
        let dir = ScratchDir::new("api-tokens-lost");
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let first = {
            open(&dir).await;
            std::fs::read_to_string(&path).unwrap()
        };
        std::fs::remove_file(&path).unwrap();
        let tokens = open(&dir).await;
        let second = std::fs::read_to_string(&path).unwrap();
        assert_ne!(first, second);
        assert!(tokens.verify(first.trim()).is_some());
        assert!(tokens.verify(second.trim()).is_some());
    }

    #[tokio::test]
    async fn tokens_have_roles_and_revoked_ones_are_refused_across_restarts() {
        let dir = ScratchDir::new("api-tokens-roles");
        let reader = {
            let tokens = open(&dir).await;
            let reader = tokens.create("grafana", Role::ReadOnly).await.unwrap();
            assert_eq!(tokens.verify(&reader.token).unwrap().role, Role::ReadOnly);
            tokens.revoke(&reader.id).await.unwrap();
            assert!(tokens.verify(&reader.token).is_none());
            reader
        };
        let tokens = open(&dir).await;
        assert!(tokens.verify(&reader.token).is_none());
        let listed = tokens.list();
        assert_eq!(listed.len(), 2, "{listed:?}");
        assert!(listed
            .iter()
            .any(|t| t["name"] == "grafana" && t["revoked"] == true && t["role"] == "read-only"));
        assert!(!serde_json::to_string(&listed)
            .unwrap()
            .contains(&reader.token));
        assert!(matches!(
            tokens.revoke("0123456789abcdef").await,
            Err(ApiTokenError::NoSuchId(_))
        ));
        for bad in ["", "has space", &"x".repeat(64)] {
            assert!(matches!(
                tokens.create(bad, Role::Admin).await,
                Err(ApiTokenError::Invalid(_))
            ));
        }
    }
}
