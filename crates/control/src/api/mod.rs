//! The REST API under `/api/v1`, for `weft apply/get/delete`, scripts and the dashboard.
//!
//! - `POST /api/v1/apply`: YAML or JSON documents, applied all or nothing (`apply`).
//! - `GET /api/v1/resources?kind=K&namespace=NS`: a list (`resources`).
//! - `GET|DELETE /api/v1/resources/{kind}/{namespace}/{name}`: one resource.
//! - `GET /api/v1/health`.
//!
//! Kinds are matched without regard to case and may be plural (`httproutes`). Reads answer
//! JSON, or YAML with `?output=yaml` or `Accept: application/yaml`. Every error is JSON,
//! `{"errors": ["..."]}`, each message saying what to do.

mod apply;
mod kinds;
mod resources;

#[cfg(test)]
mod tests;

pub use apply::{FILES_CONTENT_TYPE, SOURCE_HEADER};

use crate::store::{Store, StoreError};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

/// The largest request body accepted: a large apply fits with room to spare.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Where a resource's `status` comes from: what the proxies made of it. Plugged in by the
/// discovery server; [`NoStatus`] until then.
pub trait StatusSource: Send + Sync {
    /// The `status` object of one resource (`kind` as written in `kind:`, e.g.
    /// `HTTPRoute`), or `None` if there is nothing to say. A `summary` string in it is what
    /// `weft get` shows in its STATUS column.
    fn status(&self, kind: &str, namespace: &str, name: &str) -> Option<serde_json::Value>;
}

/// A [`StatusSource`] that knows nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoStatus;

impl StatusSource for NoStatus {
    fn status(&self, _kind: &str, _namespace: &str, _name: &str) -> Option<serde_json::Value> {
        None
    }
}

#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub status: Arc<dyn StatusSource>,
    /// The CA's trust domain, which a `Mesh` resource may not contradict; `None` when the
    /// control plane issues no certificates.
    pub ca_trust_domain: Option<String>,
    /// Where proxies connect (the gRPC port), so that a proxy pointed here by mistake can
    /// be told.
    pub proxies_address: Option<std::net::SocketAddr>,
}

/// The API's routes. It has a fallback (a JSON 404), so routers merged into it must not
/// have one of their own.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/apply", post(apply::apply))
        .route("/api/v1/resources", get(resources::list))
        .route(
            "/api/v1/resources/{kind}/{namespace}/{name}",
            get(resources::get_one).delete(resources::delete),
        )
        .fallback(no_such_endpoint)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn health(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let revision = state.store.subscribe().borrow().revision;
    Json(json!({
        "status": "ok",
        "revision": revision.to_string(),
        "proxiesAddress": state.proxies_address.map(|addr| addr.to_string()),
    }))
}

async fn no_such_endpoint() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; the API has /api/v1/apply, /api/v1/resources and /api/v1/health",
    )
}

/// An error answer: a status code and `{"errors": [...]}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    errors: Vec<String>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            errors: vec![message.into()],
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

/// Who made a call, for the audit log: its credential's name, or `unknown` where no guard
/// runs (tests).
pub(crate) fn actor(caller: Option<axum::Extension<crate::access::Caller>>) -> String {
    caller.map_or_else(|| "unknown".to_owned(), |axum::Extension(c)| c.name)
}

/// A request's `ttl` field: `default` when absent, else a duration written as in resources
/// (`30d`, `1h30m`); a malformed one is the caller's 400.
pub(crate) fn requested_ttl(
    text: Option<&str>,
    default: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    let Some(text) = text else {
        return Ok(default);
    };
    let parsed: weft_model::resources::Duration = text.parse().map_err(ApiError::bad_request)?;
    Ok(std::time::Duration::from_millis(parsed.as_millis()))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errors": self.errors }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Invalid(problems) => ApiError {
                status: StatusCode::BAD_REQUEST,
                errors: problems.iter().map(ToString::to_string).collect(),
            },
            StoreError::Conflict(conflicts) => ApiError {
                status: StatusCode::CONFLICT,
                errors: conflicts.iter().map(ToString::to_string).collect(),
            },
            StoreError::NotFound(key) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{key} does not exist; `weft get {}` lists the ones that do",
                    key.kind.as_str().to_ascii_lowercase()
                ),
            ),
            other @ (StoreError::Open { .. } | StoreError::Backend(_)) => {
                tracing::error!(error = %other, "store failure");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}
