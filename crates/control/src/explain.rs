//! `GET /api/v1/explain`: what the mesh would do with one request, without sending it.
//!
//! Query: `from` (`SERVICE` or `SERVICE.NAMESPACE`), `to` (the host the app would call),
//! `method` (default `GET`), `path` (default `/`, with a query string if any), `header`
//! (`name:value`, repeated) and `port`. The answer is [`weft_model::explain::Explanation`]
//! as JSON, computed on the config the caller's proxies are sent now, with the registry's
//! view of the endpoints out of rotation added.

use crate::api::ApiError;
use crate::discovery::{DiscoveryServer, Registry};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use std::sync::Arc;
use weft_model::explain::{explain, EndpointView, Explanation, Question};

/// Bounds on what one question may carry.
const MAX_HEADERS: usize = 64;
const MAX_FIELD_BYTES: usize = 8 * 1024;

#[derive(Clone)]
struct Explainer {
    discovery: DiscoveryServer,
    registry: Arc<Registry>,
}

pub fn router(discovery: DiscoveryServer, registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/api/v1/explain", get(answer))
        .with_state(Explainer {
            discovery,
            registry,
        })
}

/// The question as asked, checked.
#[derive(Default)]
struct Asked {
    from: Option<(String, String)>,
    to: Option<String>,
    method: Option<String>,
    path: Option<String>,
    headers: Vec<(String, String)>,
    port: Option<u16>,
}

fn parse(query: &str) -> Result<Asked, ApiError> {
    let mut asked = Asked::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if value.len() > MAX_FIELD_BYTES {
            return Err(ApiError::bad_request(format!(
                "{key} is longer than {MAX_FIELD_BYTES} bytes"
            )));
        }
        match &*key {
            "from" => {
                let (service, namespace) = value.split_once('.').unwrap_or((&value, "default"));
                asked.from = Some((namespace.to_owned(), service.to_owned()));
            }
            "to" => asked.to = Some(value.into_owned()),
            "method" => asked.method = Some(value.to_ascii_uppercase()),
            "path" if value.starts_with('/') => asked.path = Some(value.into_owned()),
            "path" => return Err(ApiError::bad_request("path must start with '/'")),
            "header" => {
                let Some((name, value)) = value.split_once(':') else {
                    return Err(ApiError::bad_request(format!(
                        "header {value:?} must be written name:value"
                    )));
                };
                if asked.headers.len() == MAX_HEADERS {
                    return Err(ApiError::bad_request(format!(
                        "at most {MAX_HEADERS} headers"
                    )));
                }
                asked
                    .headers
                    .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
            "port" => {
                let port = value.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
                    ApiError::bad_request(format!("port {value:?} is not a port (1-65535)"))
                })?;
                asked.port = Some(port);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter {other:?}; explain takes from, to, method, path, \
                     header and port"
                )))
            }
        }
    }
    Ok(asked)
}

async fn answer(
    State(explainer): State<Explainer>,
    RawQuery(query): RawQuery,
) -> Result<Json<Explanation>, ApiError> {
    let asked = parse(query.as_deref().unwrap_or(""))?;
    let (Some((namespace, service)), Some(to)) = (&asked.from, &asked.to) else {
        return Err(ApiError::bad_request(
            "explain needs from (the calling Service) and to (the host it calls)",
        ));
    };
    let config = explainer
        .discovery
        .config_for(namespace, service)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the control plane has not compiled a config yet; try again in a moment",
            )
        })?;
    let question = Question {
        from: (namespace, service),
        to,
        method: asked.method.as_deref().unwrap_or("GET"),
        path: asked.path.as_deref().unwrap_or("/"),
        headers: &asked.headers,
        port: asked.port,
    };
    let mut explanation = explain(&config, &question).map_err(|invalid| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the compiled config has a regex that does not compile ({}: {}); report this",
                invalid.pattern, invalid.reason
            ),
        )
    })?;
    // Proxies are sent only healthy endpoints: add the connected ones out of rotation.
    let proxies = explainer.registry.proxies();
    for backend in &mut explanation.backends {
        for proxy in &proxies {
            if !proxy.healthy && backend.service == format!("{}/{}", proxy.namespace, proxy.service)
            {
                backend.endpoints.push(EndpointView {
                    address: proxy.inbound_address.to_string(),
                    identity: None,
                    healthy: false,
                    detail: Some(proxy.health_detail.clone()),
                });
            }
        }
    }
    Ok(Json(explanation))
}
