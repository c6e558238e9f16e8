//! Operator certificates: client certificates from the mesh CA that call the REST API over
//! HTTPS instead of a bearer token (see `crate::access`).
//!
//! - `POST /api/v1/operator-certificates` `{"name", "role", "csr", "ttl"}` (admin) → `201`
//!   `{"certificate", "trustBundle", "identity", "notAfter"}`. The key stays with the
//!   operator: only its CSR comes here, and the certificate names
//!   `spiffe://<trust-domain>/ns/weft-operators/svc/<name>` (admin) or
//!   `.../ns/weft-readers/svc/<name>` (read-only), whatever the CSR says. It is revoked like
//!   any identity (`weft identity revoke`).

use crate::access::{Caller, Role, OPERATOR_NAMESPACES};
use crate::api::{requested_ttl, ApiError};
use crate::ca::{MeshCa, DEFAULT_TRUST_DOMAIN};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use weft_identity::{format_utc, SpiffeId};

/// An operator certificate's lifetime when the request names none.
const DEFAULT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longer than this, and a lost laptop is a year-long key to the mesh.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueRequest {
    name: String,
    role: Role,
    /// PKCS#10, PEM.
    csr: String,
    /// A duration like `30d`; [`DEFAULT_TTL`] when absent.
    #[serde(default)]
    ttl: Option<String>,
}

pub fn router(ca: Arc<MeshCa>) -> Router {
    Router::new()
        .route("/api/v1/operator-certificates", post(issue))
        .with_state(ca)
}

async fn issue(
    State(ca): State<Arc<MeshCa>>,
    Extension(caller): Extension<Caller>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let request: IssueRequest = serde_json::from_slice(&body).map_err(|err| {
        ApiError::bad_request(format!(
            "invalid operator certificate request: {err}; send {{\"name\": \"alice\", \"role\": \"admin\", \"csr\": PEM, \"ttl\": \"30d\"}}"
        ))
    })?;
    let ttl = requested_ttl(request.ttl.as_deref(), DEFAULT_TTL)?;
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(ApiError::bad_request(
            "an operator certificate lasts longer than zero and at most 365d",
        ));
    }
    let namespace = OPERATOR_NAMESPACES
        .iter()
        .find(|(_, role)| *role == request.role)
        .map(|(namespace, _)| *namespace)
        .unwrap_or(OPERATOR_NAMESPACES[0].0);
    let trust_domain = ca.trust_domain().unwrap_or(DEFAULT_TRUST_DOMAIN);
    let id = SpiffeId::new(trust_domain, namespace, &request.name).map_err(|err| {
        ApiError::bad_request(format!(
            "operator name {:?}: {err}; use lowercase letters, digits and '-'",
            request.name
        ))
    })?;
    let signed = ca
        .authority()
        .sign_csr(&request.csr, &id, ttl)
        .map_err(|err| ApiError::bad_request(format!("cannot sign the CSR: {err}")))?;
    tracing::warn!(identity = %id, role = %request.role, by = %caller.name, not_after = %format_utc(signed.not_after), "operator certificate issued");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "certificate": signed.cert_pem,
            "trustBundle": ca.trust_bundle_pem(),
            "identity": id.to_string(),
            "notAfter": format_utc(signed.not_after),
        })),
    ))
}
