//! `GET /api/v1/stats?window=1m|10m|1h`: the mesh's golden metrics over a window, per
//! Service, edge and route (a read: any role may call it).

use super::{Telemetry, View, Window};
use crate::api::ApiError;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;

pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/api/v1/stats", get(stats))
        .with_state(telemetry)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    window: Option<String>,
}

async fn stats(
    State(telemetry): State<Arc<Telemetry>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Json<View>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the one parameter is window (1m, 10m or 1h)",
            rejection.body_text()
        ))
    })?;
    let window = match query.window.as_deref() {
        None => Window::OneMinute,
        Some(text) => Window::parse(text)
            .ok_or_else(|| ApiError::bad_request(format!("window {text:?}: use 1m, 10m or 1h")))?,
    };
    Ok(Json(telemetry.view(window)))
}
