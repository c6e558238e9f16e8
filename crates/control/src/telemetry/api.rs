//! `GET /api/v1/stats?window=1m|10m|1h`: the mesh's golden metrics over a window, per
//! Service, edge and route; `GET /api/v1/diagnose[?service=NAME.NAMESPACE]`: what changed,
//! worst first; `GET /api/v1/stats/live` (in `live.rs`): the stats view as server-sent
//! events. Reads: any role may call them.

use super::diagnose::{diagnose, Finding};
use super::live::Live;
use super::{Telemetry, View, Window};
use crate::api::ApiError;
use crate::discovery::Registry;
use crate::server::Shutdown;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Clone)]
struct Telemetered {
    telemetry: Arc<Telemetry>,
    registry: Arc<Registry>,
    live: Live,
}

pub fn router(telemetry: Arc<Telemetry>, registry: Arc<Registry>, shutdown: Shutdown) -> Router {
    Router::new()
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/stats/live", get(live_stats))
        .route("/api/v1/diagnose", get(diagnosis))
        .with_state(Telemetered {
            telemetry,
            registry,
            live: Live::new(shutdown),
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiagnoseQuery {
    service: Option<String>,
}

async fn diagnosis(
    State(state): State<Telemetered>,
    query: Result<Query<DiagnoseQuery>, QueryRejection>,
) -> Result<Json<Vec<Finding>>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the one parameter is service (NAME.NAMESPACE)",
            rejection.body_text()
        ))
    })?;
    let now = super::now_secs();
    let changes = state.telemetry.recent(now);
    let proxies = state.registry.proxies();
    Ok(Json(diagnose(
        &changes,
        &proxies,
        query.service.as_deref(),
        now,
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    window: Option<String>,
}

async fn stats(
    State(Telemetered { telemetry, .. }): State<Telemetered>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<View>, ApiError> {
    Ok(Json(telemetry.view(window(query)?)))
}

async fn live_stats(
    State(Telemetered {
        telemetry, live, ..
    }): State<Telemetered>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    live.stream(telemetry, window(query)?)
}

fn window(query: Result<Query<StatsQuery>, QueryRejection>) -> Result<Window, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the one parameter is window (1m, 10m or 1h)",
            rejection.body_text()
        ))
    })?;
    match query.window.as_deref() {
        None => Ok(Window::OneMinute),
        Some(text) => Window::parse(text)
            .ok_or_else(|| ApiError::bad_request(format!("window {text:?}: use 1m, 10m or 1h"))),
    }
}
