//! Fleet views for operators: the connected proxies (`weft proxies`) and one verdict on
//! the whole mesh (`weft check`), computed here so every client gets the same answer.

use crate::ca::MeshCa;
use crate::discovery::{DiscoveryServer, ProxyInfo, Registry};
use crate::resource_set::ResourceSet;
use crate::transport::Plaintext;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use weft_identity::format_utc;
use weft_model::analyze::{analyze, Finding, Running, Severity};
use weft_model::config::ProxyConfig;

/// A proxy certificate this close to expiry has missed its renewal (at half-life).
pub(crate) const CERTIFICATE_WARNING: Duration = Duration::from_secs(10 * 60);
/// A root this close to expiry should be rotated.
const ROOT_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

#[derive(Clone)]
struct Fleet {
    registry: Arc<Registry>,
    /// `None` when the control plane issues no certificates (the demo's).
    ca: Option<Arc<MeshCa>>,
    /// Whether unauthenticated plain-text proxies are accepted (development only).
    plaintext: Plaintext,
    /// What `weft check` analyses beside the fleet; `None` leaves the config out.
    config: Option<ConfigView>,
}

/// The resources as stored, and the config compiled from them with the endpoints in
/// rotation.
#[derive(Clone)]
pub struct ConfigView {
    pub resources: watch::Receiver<Arc<ResourceSet>>,
    pub discovery: DiscoveryServer,
}

pub fn router(
    registry: Arc<Registry>,
    ca: Option<Arc<MeshCa>>,
    plaintext: Plaintext,
    config: Option<ConfigView>,
) -> Router {
    Router::new()
        .route("/api/v1/proxies", get(proxies))
        .route("/api/v1/check", get(check))
        // Behind a token like every read: the version tells an attacker what to try.
        .route("/api/v1/version", get(version))
        .with_state(Fleet {
            registry,
            ca,
            plaintext,
            config,
        })
}

/// The config's findings (`weft_model::analyze`), and plain text still reaching Services
/// in a permissive mesh (from what their proxies report).
fn config_findings(view: &ConfigView, proxies: &[ProxyInfo], registry: &Registry) -> Vec<Finding> {
    let Some(config) = view.discovery.whole_config() else {
        return Vec::new();
    };
    let mut findings = plaintext_findings(&config, registry);
    let resources = view.resources.borrow().clone();
    let running: Vec<(String, String)> = proxies
        .iter()
        .map(|p| (p.namespace.clone(), p.service.clone()))
        .collect();
    findings.extend(analyze(
        &resources.resources,
        &Running {
            config: &config,
            proxies: &running,
        },
    ));
    findings
}

/// Services that took plain-text calls in the last hour, while the mesh is permissive:
/// what still has to join before it can be strict.
fn plaintext_findings(config: &ProxyConfig, registry: &Registry) -> Vec<Finding> {
    if config.mtls_mode.is_strict() {
        return Vec::new();
    }
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    registry
        .observed
        .seen(None, hour_ago)
        .into_iter()
        .filter_map(|((namespace, service), calls)| {
            let plain: u64 = calls
                .iter()
                .filter(|call| call.source.is_empty())
                .map(|call| call.count)
                .sum();
            (plain > 0).then(|| Finding {
                severity: Severity::Warning,
                resource: format!("Service {namespace}/{service}"),
                finding: format!(
                    "{plain} plain-text calls in the last hour (the mesh is permissive): their \
                     callers are not in the mesh"
                ),
                hint: "give those callers a sidecar, then set the Mesh's mtls.mode to strict"
                    .to_owned(),
            })
        })
        .collect()
}

async fn proxies(State(fleet): State<Fleet>) -> Json<Value> {
    let warming_up = fleet
        .registry
        .warmup_until()
        .duration_since(SystemTime::now())
        .ok()
        .map(|left| left.as_secs() + 1);
    Json(json!({
        "proxies": fleet.registry.proxies(),
        "warmingUpForSeconds": warming_up,
    }))
}

async fn version() -> Json<Value> {
    Json(json!({ "version": env!("CARGO_PKG_VERSION") }))
}

async fn check(State(fleet): State<Fleet>) -> Json<Value> {
    let proxies = fleet.registry.proxies();
    let mut verdict = verdict(&proxies);
    let findings = fleet
        .config
        .as_ref()
        .map(|view| config_findings(view, &proxies, &fleet.registry))
        .unwrap_or_default();
    if findings.iter().any(|f| f.severity == Severity::Error) {
        verdict["ok"] = Value::from(false);
    }
    verdict["findings"] = serde_json::to_value(&findings).unwrap_or_default();
    let mut warnings = identity_warnings(&proxies, fleet.ca.as_deref(), SystemTime::now());
    if let Ok(left) = fleet
        .registry
        .warmup_until()
        .duration_since(SystemTime::now())
    {
        warnings.push(json!({
            "warning": format!(
                "the control plane has just started: for {}s more, proxies that reconnect keep the config they run while the registry refills",
                left.as_secs() + 1
            ),
            "hint": "changes applied now reach those proxies once that is over; nothing needs doing",
        }));
    }
    if fleet.plaintext == Plaintext::DevLoopback {
        warnings.push(json!({
            "warning": "the gRPC port accepts plain-text proxies from this host (--dev-plaintext-proxies): they prove nothing, so any local process can register as any service",
            "hint": "for development only: restart without the flag, and start proxies with https://, --control-plane-ca and a join token",
        }));
    }
    verdict["warnings"] = Value::from(warnings);
    Json(verdict)
}

/// Certificates and roots near expiry, and a root rotation under way: nothing is broken
/// yet, but an operator should know.
fn identity_warnings(proxies: &[ProxyInfo], ca: Option<&MeshCa>, now: SystemTime) -> Vec<Value> {
    let mut warnings = Vec::new();
    for p in proxies {
        let Some(certificate) = &p.certificate else {
            continue;
        };
        let left = certificate
            .not_after
            .duration_since(now)
            .unwrap_or_default();
        if left < CERTIFICATE_WARNING {
            warnings.push(json!({
                "warning": format!(
                    "{}: its certificate {} at {}",
                    p.id,
                    if left.is_zero() { "expired" } else { "expires" },
                    format_utc(certificate.not_after)
                ),
                "hint": "it should have renewed at half its lifetime; its log says why it could not (control plane unreachable, certificate no longer trusted)",
            }));
        }
    }
    let Some(ca) = ca else {
        return warnings;
    };
    let (signing, retiring) = ca.roots();
    if signing.not_after.duration_since(now).unwrap_or_default() < ROOT_WARNING {
        warnings.push(json!({
            "warning": format!("the CA root expires at {}", format_utc(signing.not_after)),
            "hint": "run `weft ca rotate` well before then: proxies move to a new root with no outage",
        }));
    }
    if !retiring.is_empty() {
        let progress = crate::rotation::progress(proxies, &signing.sha256);
        let mut waiting: Vec<&str> = progress.pending.iter().map(String::as_str).collect();
        waiting.truncate(5);
        warnings.push(json!({
            "warning": format!(
                "root rotation in progress: {} of {} proxies hold a certificate from the new root{}",
                progress.done,
                progress.done + progress.pending.len(),
                if waiting.is_empty() { String::new() } else { format!("; waiting for {}", waiting.join(", ")) }
            ),
            "hint": "the old root stays trusted until every proxy has renewed, which they do at once; it is then retired by itself",
        }));
    }
    warnings
}

/// Problems, each with what to do about it. No proxies is not a problem in itself (a
/// fresh control plane), but it is worth a hint.
fn verdict(proxies: &[ProxyInfo]) -> Value {
    let mut problems = Vec::new();
    for p in proxies {
        // The id is `service.namespace@address`: all an operator needs to find it.
        let who = &p.id;
        if !p.healthy {
            problems.push(json!({
                "problem": format!("{who}: its app fails its health check: {}", p.health_detail),
                "hint": "it is out of rotation until the app answers again; check the app and its --app address",
            }));
        }
        if !p.in_sync {
            let (problem, hint) = match &p.last_nack {
                Some(nack) => (
                    format!("{who} rejected config {}: {}", nack.version, nack.reason),
                    "fix the resource the reason names and apply again; the proxy keeps its last good config meanwhile",
                ),
                None => (
                    format!(
                        "{who} has not acknowledged the latest config (runs {})",
                        p.acked_version.as_deref().unwrap_or("none")
                    ),
                    "usually transient; if it persists, look at that proxy's log",
                ),
            };
            problems.push(json!({ "problem": problem, "hint": hint }));
        }
    }
    let in_sync = proxies.iter().filter(|p| p.in_sync).count();
    let healthy = proxies.iter().filter(|p| p.healthy).count();
    let mut hints = Vec::new();
    if proxies.is_empty() {
        hints.push("no proxies are connected: start one with `weft proxy --control-plane URL`");
    }
    json!({
        "ok": problems.is_empty(),
        "proxies": proxies.len(),
        "inSync": in_sync,
        "healthy": healthy,
        "problems": problems,
        "hints": hints,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;
    use tower::ServiceExt;

    async fn check_warnings(warmup: Duration, plaintext: Plaintext) -> String {
        let registry = Arc::new(Registry::warming_up_until(SystemTime::now() + warmup));
        let response = router(registry, None, plaintext, None)
            .oneshot(Request::get("/api/v1/check").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let verdict: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(verdict["ok"], true, "warnings are not problems: {verdict}");
        verdict["warnings"].to_string()
    }

    #[tokio::test]
    async fn check_explains_the_warm_up_and_warns_of_plain_text() {
        let warnings = check_warnings(Duration::from_secs(60), Plaintext::Refused).await;
        assert!(warnings.contains("has just started"), "{warnings}");
        assert!(!warnings.contains("plain-text"), "{warnings}");
        let warnings = check_warnings(Duration::ZERO, Plaintext::DevLoopback).await;
        assert!(!warnings.contains("has just started"), "{warnings}");
        assert!(warnings.contains("--dev-plaintext-proxies"), "{warnings}");
    }
}
