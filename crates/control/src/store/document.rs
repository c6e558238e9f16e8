//! From the text a user applies to [`ApplyItem`]s: each document read by the model (for
//! its checks and its messages) and kept as JSON (to store and show back as written).

use serde::Deserialize;
use serde_json::Value;
use std::sync::Arc;
use weft_model::{load_str, Diagnostic, LoadError, Location, Resource};

/// Fields Kubernetes writes into `metadata` that say nothing about what the user wants;
/// the model accepts and ignores them, so they are not stored either.
const SERVER_SET_METADATA: [&str; 5] = [
    "resourceVersion",
    "uid",
    "generation",
    "creationTimestamp",
    "managedFields",
];

/// One document of an apply.
#[derive(Clone, Debug)]
pub struct ApplyItem {
    pub resource: Resource,
    /// The document as written, as JSON, with server-set fields (`status`,
    /// `metadata.resourceVersion`, ...) removed and `metadata.namespace` filled in.
    pub document: Value,
    /// `metadata.resourceVersion` from the document: the version the user read and means
    /// to replace (optimistic concurrency).
    pub expected_version: Option<u64>,
}

/// Reads a stream of YAML (or JSON) documents. `source` names the input in messages, so
/// errors read `routes.yaml:14:9: spec.rules[0]...: what is wrong`. All problems are
/// reported together.
pub fn parse_documents(source: &str, text: &str) -> Result<Vec<ApplyItem>, LoadError> {
    let resources = load_str(source, text)?;
    let file: Arc<str> = Arc::from(source);
    let mut documents = Vec::with_capacity(resources.len());
    for document in serde_yaml_ng::Deserializer::from_str(text) {
        match Value::deserialize(document) {
            // The model skips documents that hold nothing (a trailing `---`); so do we.
            Ok(Value::Null) => {}
            Ok(value) => documents.push(value),
            Err(err) => return Err(LoadError::Invalid(vec![yaml_problem(&file, &err)])),
        }
    }
    if documents.len() != resources.len() {
        // The model and the YAML parser split documents the same way, so this is a bug.
        return Err(LoadError::Invalid(vec![Diagnostic {
            location: Location {
                file,
                line: 1,
                column: 1,
            },
            message: format!(
                "found {} resources but {} documents; please report this with the file",
                resources.len(),
                documents.len()
            ),
        }]));
    }
    let mut items = Vec::with_capacity(resources.len());
    let mut problems = Vec::new();
    for (resource, document) in resources.into_iter().zip(documents) {
        match normalize(document, &resource) {
            Ok((document, expected_version)) => items.push(ApplyItem {
                resource,
                document,
                expected_version,
            }),
            Err(message) => problems.push(Diagnostic {
                location: resource.location.clone(),
                message,
            }),
        }
    }
    if problems.is_empty() {
        Ok(items)
    } else {
        Err(LoadError::Invalid(problems))
    }
}

fn yaml_problem(file: &Arc<str>, err: &serde_yaml_ng::Error) -> Diagnostic {
    let (line, column) = err.location().map_or((1, 1), |at| (at.line(), at.column()));
    Diagnostic {
        location: Location {
            file: file.clone(),
            line,
            column,
        },
        message: format!("{err}; write the document as plain YAML mappings and lists"),
    }
}

/// Strips server-set fields, fills in the namespace, and takes out the expected version.
fn normalize(mut document: Value, resource: &Resource) -> Result<(Value, Option<u64>), String> {
    let Some(fields) = document.as_object_mut() else {
        return Err("expected a mapping".to_owned());
    };
    fields.remove("status");
    let Some(Value::Object(metadata)) = fields.get_mut("metadata") else {
        return Err("metadata: expected a mapping".to_owned());
    };
    let expected_version = match metadata.get("resourceVersion") {
        None | Some(Value::Null) => None,
        Some(version) => Some(parse_version(version)?),
    };
    for field in SERVER_SET_METADATA {
        metadata.remove(field);
    }
    metadata.insert(
        "namespace".to_owned(),
        Value::String(resource.metadata.namespace.to_string()),
    );
    Ok((document, expected_version))
}

/// Accepts `"42"` (as Kubernetes and `weft get` write it) or `42`.
fn parse_version(version: &Value) -> Result<u64, String> {
    let parsed = match version {
        Value::String(text) => text.parse().ok(),
        Value::Number(number) => number.as_u64(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        format!(
            "metadata.resourceVersion: expected a version such as \"42\" (as `weft get -o yaml` \
             shows it), not {version}; or leave it out to apply regardless of changes"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_pair_with_resources_and_lose_server_fields() {
        let text = "# two services\n---\n\
            apiVersion: weft.dev/v1alpha1\nkind: Service\n\
            metadata: {name: a, resourceVersion: \"7\", uid: x}\n\
            spec: {ports: [{port: 80}]}\nstatus: {ready: true}\n---\n\
            {\"apiVersion\": \"weft.dev/v1alpha1\", \"kind\": \"Service\",\n\
             \"metadata\": {\"name\": \"b\", \"namespace\": \"prod\"}, \"spec\": {\"ports\": [{\"port\": 8080}]}}\n---\n";
        let items = parse_documents("svc.yaml", text).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].expected_version, Some(7));
        assert_eq!(
            items[0].document,
            json!({"apiVersion": "weft.dev/v1alpha1", "kind": "Service",
                   "metadata": {"name": "a", "namespace": "default"},
                   "spec": {"ports": [{"port": 80}]}})
        );
        assert_eq!(items[1].resource.metadata.name.as_str(), "b");
        assert_eq!(items[1].expected_version, None);
        assert_eq!(items[1].resource.location.to_string(), "svc.yaml:9:1");
    }

    #[test]
    fn a_bad_resource_version_names_the_document() {
        let text = "apiVersion: weft.dev/v1alpha1\nkind: Mesh\n\
                    metadata: {name: m, resourceVersion: latest}\n";
        let err = parse_documents("mesh.yaml", text).unwrap_err();
        let message = err.diagnostics()[0].to_string();
        assert!(
            message.starts_with("mesh.yaml:1:1: metadata.resourceVersion: expected a version"),
            "{message}"
        );
    }
}
