//! `POST /api/v1/apply`: the whole request is one atomic apply.
//!
//! The body is YAML or JSON documents, named in messages by the `x-weft-source` header.
//! Several files go in one request as `application/vnd.weft.files+json`,
//! `{"files": [{"name": "a.yaml", "content": "..."}]}`, so each error still names its own
//! file and line (concatenating them would break both).

use super::{ApiError, ApiState};
use crate::access::Caller;
use crate::store::{parse_documents, Applied, StoreError};
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Extension;
use axum::Json;
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Value};

/// Names the body's file in messages (`routes.yaml:14:9: ...`).
pub const SOURCE_HEADER: &str = "x-weft-source";

/// The content type of a request carrying several files.
pub const FILES_CONTENT_TYPE: &str = "application/vnd.weft.files+json";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Files {
    files: Vec<File>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    content: String,
}

/// `?dryRun=true`: check and report, store nothing.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct ApplyQuery {
    #[serde(default)]
    dry_run: bool,
}

pub(super) async fn apply(
    State(state): State<ApiState>,
    caller: Option<Extension<Caller>>,
    query: Result<Query<ApplyQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!(
                    "the request is larger than {} MiB; apply the files in smaller groups",
                    super::MAX_BODY_BYTES >> 20
                ),
            )
        } else {
            ApiError::new(status, format!("cannot read the request body: {rejection}"))
        }
    })?;
    let files = files(&headers, &body)?;

    let mut items = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        match parse_documents(&file.name, &file.content) {
            Ok(found) => items.extend(found),
            Err(err) => problems.extend(err.diagnostics().iter().cloned()),
        }
    }
    if !problems.is_empty() {
        return Err(StoreError::Invalid(problems).into());
    }
    if let Some(ca_domain) = &state.ca_trust_domain {
        let contradictions: Vec<String> = items
            .iter()
            .filter_map(|item| crate::ca::trust_domain_contradiction(ca_domain, item))
            .collect();
        if !contradictions.is_empty() {
            return Err(ApiError {
                status: StatusCode::BAD_REQUEST,
                errors: contradictions,
            });
        }
    }
    if items.is_empty() {
        return Err(ApiError::bad_request(
            "the request holds no resources; send YAML or JSON documents with apiVersion, \
             kind, metadata and spec",
        ));
    }
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the one parameter is dryRun=true",
            rejection.body_text()
        ))
    })?;
    if query.dry_run {
        let planned = state.store.plan_apply(items).await?;
        let mut answer = answer(&planned);
        answer["dryRun"] = Value::Bool(true);
        return Ok(Json(answer));
    }
    let applied = state.store.apply_as(items, super::actor(caller)).await?;
    Ok(Json(answer(&applied)))
}

/// The files in the request: the body itself, or the ones it lists.
fn files(headers: &HeaderMap, body: &Bytes) -> Result<Vec<File>, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with(FILES_CONTENT_TYPE) {
        let listed: Files = serde_json::from_slice(body).map_err(|err| {
            ApiError::bad_request(format!(
                "the body is not a {FILES_CONTENT_TYPE} file list: {err}; send \
                 {{\"files\": [{{\"name\": ..., \"content\": ...}}]}}"
            ))
        })?;
        return Ok(listed.files);
    }
    let name = headers
        .get(SOURCE_HEADER)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_else(|| "request".to_owned());
    let content = std::str::from_utf8(body).map_err(|_| {
        ApiError::bad_request(format!(
            "{name}: the body is not UTF-8 text; send YAML or JSON"
        ))
    })?;
    Ok(vec![File {
        name,
        content: content.to_owned(),
    }])
}

fn answer(applied: &Applied) -> Value {
    let resources: Vec<Value> = applied
        .resources
        .iter()
        .map(|r| {
            json!({
                "kind": r.key.kind.as_str(),
                "namespace": r.key.namespace,
                "name": r.key.name,
                "resourceVersion": r.resource_version.to_string(),
                "result": r.change.as_str(),
            })
        })
        .collect();
    let warnings: Vec<String> = applied.warnings.iter().map(ToString::to_string).collect();
    json!({"applied": resources, "warnings": warnings})
}
