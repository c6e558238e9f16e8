//! `weft policy suggest`: least-privilege AuthorizationPolicies written from the calls the
//! proxies saw (`discovery::observed`), one per Service, allowing exactly what was seen.
//!
//! `GET /api/v1/policy-suggestions?service=NAME[.NAMESPACE]&since=1h` answers the YAML.

use crate::api::{requested_ttl, ApiError};
use crate::discovery::observed::SeenCall;
use crate::discovery::Registry;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// More distinct paths than this for one caller and method are folded by their first
/// segment (`/users/1`, `/users/2`, ... become `/users/*`).
const PATHS_BEFORE_FOLDING: usize = 8;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/api/v1/policy-suggestions", get(suggest))
        .with_state(registry)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SuggestQuery {
    service: Option<String>,
    since: Option<String>,
}

async fn suggest(
    State(registry): State<Arc<Registry>>,
    query: Result<Query<SuggestQuery>, QueryRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the parameters are service (NAME or NAME.NAMESPACE) and since (like 1h)",
            rejection.body_text()
        ))
    })?;
    let since = requested_ttl(query.since.as_deref(), Duration::from_secs(3600))?;
    let only = query.service.as_deref().map(|s| {
        let (name, namespace) = s.split_once('.').unwrap_or((s, "default"));
        (namespace.to_owned(), name.to_owned())
    });
    let seen = registry.observed.seen(
        only.as_ref().map(|(ns, name)| (ns.as_str(), name.as_str())),
        SystemTime::now() - since,
    );
    let mut yaml = String::new();
    for ((namespace, service), calls) in &seen {
        let window = query.since.as_deref().unwrap_or("1h");
        yaml.push_str(&policy_yaml(namespace, service, calls, window)?);
    }
    if yaml.is_empty() {
        yaml = format!(
            "# No calls seen in the last {}{}: nothing to suggest yet. Proxies report what their\n\
             # inbound judged every few seconds; send some traffic and ask again.\n",
            query.since.as_deref().unwrap_or("1h"),
            query
                .service
                .as_deref()
                .map(|s| format!(" to {s}"))
                .unwrap_or_default()
        );
    }
    Ok(([(header::CONTENT_TYPE, "application/yaml")], yaml))
}

/// One Service's policy, with a comment saying where it comes from.
fn policy_yaml(
    namespace: &str,
    service: &str,
    calls: &[SeenCall],
    since: &str,
) -> Result<String, ApiError> {
    let allowed: Vec<&SeenCall> = calls.iter().filter(|c| c.count > c.denied).collect();
    let only_denied: Vec<&SeenCall> = calls.iter().filter(|c| c.count == c.denied).collect();
    let total: u64 = calls.iter().map(|c| c.count).sum();
    let mut text = format!(
        "# {namespace}/{service}: from {total} calls seen in the last {since}. It allows exactly\n\
         # these callers and operations, and denies everything else: review it, or apply it\n\
         # first with `mode: dry-run` and watch weft_authz_decisions_total{{decision=\"dry_run_deny\"}}.\n"
    );
    for call in &only_denied {
        text.push_str(&format!(
            "# left out, every call was denied: {} {} {}\n",
            caller_text(&call.source),
            call.method,
            call.path
        ));
    }
    let mut by_source: BTreeMap<&str, Vec<&SeenCall>> = BTreeMap::new();
    for call in allowed {
        by_source.entry(&call.source).or_default().push(call);
    }
    let rules: Vec<Value> = by_source
        .iter()
        .map(|(source, calls)| rule(namespace, source, calls))
        .collect();
    let document = json!({
        "apiVersion": "weft.dev/v1alpha1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": format!("{service}-observed"), "namespace": namespace},
        "spec": {
            "targetRef": {"kind": "Service", "name": service},
            "action": "ALLOW",
            "rules": rules,
        },
    });
    let yaml = serde_yaml_ng::to_string(&document).map_err(|err| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write YAML: {err}"),
        )
    })?;
    text.push_str(&yaml);
    text.push_str("---\n");
    Ok(text)
}

fn caller_text(source: &str) -> &str {
    if source.is_empty() {
        "unauthenticated"
    } else {
        source
    }
}

/// A rule for one caller: who, and each method with the paths it was seen on.
fn rule(namespace: &str, source: &str, calls: &[&SeenCall]) -> Value {
    let from = if source.is_empty() {
        json!({"unauthenticated": true})
    } else {
        match mesh_service(source) {
            Some((ns, name)) if ns == namespace => json!({"services": [name]}),
            Some((ns, name)) => json!({"services": [name], "namespaces": [ns]}),
            None => json!({"identities": [source]}),
        }
    };
    // A TCP connection allows the caller whole; otherwise method by method.
    if calls.iter().any(|c| c.method.is_empty()) {
        return json!({"from": [from]});
    }
    let mut by_method: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for call in calls {
        by_method.entry(&call.method).or_default().push(&call.path);
    }
    let to: Vec<Value> = by_method
        .into_iter()
        .map(|(method, paths)| json!({"methods": [method], "paths": fold(paths)}))
        .collect();
    json!({"from": [from], "to": to})
}

/// `spiffe://<domain>/ns/<namespace>/svc/<service>` as (namespace, service).
fn mesh_service(id: &str) -> Option<(&str, &str)> {
    let path = id.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("ns"), Some(ns), Some("svc"), Some(name), None) => Some((ns, name)),
        _ => None,
    }
}

/// The paths as a policy lists them: exact while few, folded by first segment beyond
/// that. A path a policy could not take literally (it holds `*`) is folded too.
fn fold(mut paths: Vec<&str>) -> Vec<String> {
    paths.sort_unstable();
    paths.dedup();
    let literal = paths.iter().all(|p| !p.contains('*'));
    if paths.len() <= PATHS_BEFORE_FOLDING && literal {
        return paths.into_iter().map(str::to_owned).collect();
    }
    let mut folded: Vec<String> = paths
        .iter()
        .map(|path| match path[1..].split_once('/') {
            Some((first, _)) if !first.contains('*') => format!("/{first}/*"),
            _ if !path.contains('*') => (*path).to_owned(),
            _ => "/*".to_owned(),
        })
        .collect();
    folded.sort();
    folded.dedup();
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(source: &str, method: &str, path: &str, count: u64, denied: u64) -> SeenCall {
        SeenCall {
            source: source.to_owned(),
            method: method.to_owned(),
            path: path.to_owned(),
            count,
            denied,
            last_seen: 0,
        }
    }

    #[test]
    fn a_suggestion_allows_what_was_seen_and_loads() {
        let web = "spiffe://weft.local/ns/default/svc/web";
        let mut calls = vec![
            call(web, "GET", "/public/a", 10, 0),
            call(web, "POST", "/orders", 2, 0),
            call(
                "spiffe://weft.local/ns/ops/svc/jobs",
                "GET",
                "/health",
                1,
                0,
            ),
            call("", "GET", "/plain", 1, 0),
            call(
                "spiffe://weft.local/ns/default/svc/evil",
                "GET",
                "/admin",
                3,
                3,
            ),
        ];
        for i in 0..20 {
            calls.push(call(web, "GET", &format!("/users/{i}"), 1, 0));
        }
        let yaml = policy_yaml("default", "api", &calls, "1h").unwrap();
        assert!(yaml.contains("# left out, every call was denied: spiffe://weft.local/ns/default/svc/evil GET /admin"), "{yaml}");
        let resources =
            weft_model::load_str("suggested.yaml", &yaml).expect("the suggestion loads");
        weft_model::validate(&resources).expect("and is valid");
        let config = weft_model::compile(
            &weft_model::load_str(
                "all.yaml",
                &format!("apiVersion: weft.dev/v1alpha1\nkind: Service\nmetadata: {{name: api}}\nspec: {{ports: [{{port: 80}}]}}\n---\n{yaml}"),
            )
            .unwrap(),
        );
        let policy = &config.services[0].authorization[0];
        assert_eq!(policy.rules.len(), 3, "{yaml}");
        assert!(
            yaml.contains("/users/*") && !yaml.contains("/users/1\n"),
            "{yaml}"
        );
        assert!(
            yaml.contains("namespaces:\n      - ops") || yaml.contains("- ops"),
            "{yaml}"
        );
        assert!(yaml.contains("unauthenticated: true"), "{yaml}");
    }
}
