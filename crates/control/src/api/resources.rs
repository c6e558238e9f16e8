//! Reading and deleting resources.
//!
//! A resource is shown as the document the user applied, with `metadata.resourceVersion`
//! filled in (so it can be edited and applied back with optimistic concurrency) and its
//! `status` when there is one.

use super::kinds::parse_kind;
use super::{ApiError, ApiState};
use crate::access::Caller;
use crate::store::{ResourceKey, StoreError, StoredResource};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use weft_model::resources::Kind;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    kind: Option<String>,
    namespace: Option<String>,
    output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GetQuery {
    output: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeleteQuery {
    /// Delete only if the resource is still at this version.
    #[serde(rename = "resourceVersion")]
    resource_version: Option<u64>,
}

type ResourcePath = Result<Path<(String, String, String)>, PathRejection>;

pub(super) async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let format = Format::choose(query.output.as_deref(), &headers)?;
    let kind = query.kind.as_deref().map(parse_kind).transpose()?;
    let standing = current_standing(&state);
    let items: Vec<Value> = state
        .store
        .list(kind)
        .await?
        .iter()
        .filter(|entry| {
            query
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == entry.key.namespace)
        })
        .map(|entry| view(&state, entry, &standing))
        .collect();
    match format {
        Format::Json => Ok(Json(json!({ "items": items })).into_response()),
        Format::Yaml => yaml(&items),
    }
}

pub(super) async fn get_one(
    State(state): State<ApiState>,
    headers: HeaderMap,
    path: ResourcePath,
    query: Result<Query<GetQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let format = Format::choose(query.output.as_deref(), &headers)?;
    let key = resource_key(path)?;
    let Some(entry) = state.store.get(key.clone()).await? else {
        return Err(StoreError::NotFound(key).into());
    };
    let document = view(&state, &entry, &current_standing(&state));
    match format {
        Format::Json => Ok(Json(document).into_response()),
        Format::Yaml => yaml(std::slice::from_ref(&document)),
    }
}

pub(super) async fn delete(
    State(state): State<ApiState>,
    caller: Option<Extension<Caller>>,
    path: ResourcePath,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(bad_query)?;
    let key = resource_key(path)?;
    let deleted = state
        .store
        .delete_as(key.clone(), query.resource_version, super::actor(caller))
        .await?;
    let warnings: Vec<String> = deleted.warnings.iter().map(ToString::to_string).collect();
    Ok(Json(json!({
        "deleted": {"kind": key.kind.as_str(), "namespace": key.namespace, "name": key.name},
        "warnings": warnings,
    })))
}

fn resource_key(path: ResourcePath) -> Result<ResourceKey, ApiError> {
    let Path((kind, namespace, name)) = path.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{rejection}; address a resource as /api/v1/resources/KIND/NAMESPACE/NAME"
        ))
    })?;
    Ok(ResourceKey::new(parse_kind(&kind)?, &namespace, &name))
}

fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::bad_request(format!(
        "{}; the parameters are kind, namespace and output=json|yaml for reads, \
         resourceVersion for deletes",
        rejection.body_text()
    ))
}

/// What `weft apply` warned about and is still true (a reference to a Service that does not
/// exist yet, say), by resource (`Kind namespace/name`): kept in view until it is fixed,
/// not printed once and lost.
/// What the whole resource set says about each resource: its standing warnings and, for
/// a Service, its virtual IP.
struct Standing {
    /// By `"Kind namespace/name"`.
    warnings: HashMap<String, Vec<String>>,
    virtual_ips: BTreeMap<(String, String), weft_model::VirtualIps>,
}

fn current_standing(state: &ApiState) -> Standing {
    let set = state.store.subscribe().borrow().clone();
    let mut warnings: HashMap<String, Vec<String>> = HashMap::new();
    for warning in weft_model::validate(&set.resources).unwrap_or_default() {
        if let Some((resource, what)) = warning.message.split_once(": ") {
            warnings
                .entry(resource.to_owned())
                .or_default()
                .push(what.to_owned());
        }
    }
    Standing {
        warnings,
        virtual_ips: weft_model::service_virtual_ips(&set.resources),
    }
}

/// The document as shown: as applied, plus its version, status and standing warnings.
fn view(state: &ApiState, entry: &StoredResource, standing: &Standing) -> Value {
    let mut document = entry.document.clone();
    let key = &entry.key;
    if let Some(metadata) = document.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert(
            "resourceVersion".to_owned(),
            Value::String(entry.resource_version.to_string()),
        );
    }
    let mut status = state
        .status
        .status(key.kind.as_str(), &key.namespace, &key.name);
    let described = format!("{} {}/{}", key.kind.as_str(), key.namespace, key.name);
    let mut add = |field: &str, value: Value| {
        if let Some(fields) = status.get_or_insert_with(|| json!({})).as_object_mut() {
            fields.insert(field.to_owned(), value);
        }
    };
    if let Some(warnings) = standing.warnings.get(&described) {
        add("warnings", json!(warnings));
    }
    if key.kind == Kind::Service {
        let name = (key.namespace.clone(), key.name.clone());
        let ips = standing.virtual_ips.get(&name).copied().unwrap_or_default();
        if let Some(ip) = ips.v4 {
            add("virtualIP", json!(ip.to_string()));
        }
        if let Some(ip) = ips.v6 {
            add("virtualIPv6", json!(ip.to_string()));
        }
    }
    if let (Some(status), Some(fields)) = (status, document.as_object_mut()) {
        fields.insert("status".to_owned(), status);
    }
    document
}

enum Format {
    Json,
    Yaml,
}

impl Format {
    /// `?output=` wins; otherwise YAML if the client accepts it, else JSON.
    fn choose(output: Option<&str>, headers: &HeaderMap) -> Result<Format, ApiError> {
        match output {
            Some("json") => Ok(Format::Json),
            Some("yaml") => Ok(Format::Yaml),
            Some(other) => Err(ApiError::bad_request(format!(
                "unknown output {other:?}; use output=json or output=yaml"
            ))),
            None => {
                let accept = headers
                    .get(header::ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                Ok(if accept.contains("yaml") {
                    Format::Yaml
                } else {
                    Format::Json
                })
            }
        }
    }
}

/// Documents as a YAML stream, ready to edit and apply back.
fn yaml(documents: &[Value]) -> Result<Response, ApiError> {
    let mut text = String::new();
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            text.push_str("---\n");
        }
        let rendered = serde_yaml_ng::to_string(document).map_err(|err| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write YAML: {err}; ask for output=json instead"),
            )
        })?;
        text.push_str(&rendered);
    }
    Ok(([(header::CONTENT_TYPE, "application/yaml")], text).into_response())
}
