//! Fleet views for operators: the connected proxies (`weft proxies`) and one verdict on
//! the whole mesh (`weft check`), computed here so every client gets the same answer.

use crate::discovery::{ProxyInfo, Registry};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/api/v1/proxies", get(proxies))
        .route("/api/v1/check", get(check))
        .with_state(registry)
}

async fn proxies(State(registry): State<Arc<Registry>>) -> Json<Value> {
    Json(json!({ "proxies": registry.proxies() }))
}

async fn check(State(registry): State<Arc<Registry>>) -> Json<Value> {
    Json(verdict(&registry.proxies()))
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
