//! Who may call the REST API, and what they may do.
//!
//! The control plane hands out identities, so its API is guarded on every call but
//! `GET /api/v1/health`:
//!
//! ```text
//! request ─> credential? ── none ──────────────> 401 (counted: missing_credential)
//!               │ Authorization: Bearer <API token>, or over HTTPS a client
//!               │ certificate from the mesh CA naming an operator
//!               ├─ unknown or revoked ─────────> 401 (counted: bad_credential)
//!               v
//!            role allows the call? ── no ──────> 403 (counted: forbidden)
//!               │ reads: read-only; writes and the API tokens: admin
//!               v
//!            a write with a JSON or YAML body? ── no ─> 415 (counted: content_type)
//!               v
//!            the handler, with the [`Caller`] in the request's extensions
//! ```
//!
//! Operators' certificates name `spiffe://<trust-domain>/ns/weft-operators/svc/<name>`
//! (role admin) or `.../ns/weft-readers/svc/<name>` (read-only); no join token can be made
//! for those namespaces, only an admin issues them (`weft operator-cert create`).
//!
//! Credentials come from a header or the TLS handshake, never a cookie or the URL, and
//! writes must say they carry JSON or YAML: a web page cannot send such a write to another
//! origin without the browser asking the API first (CORS), which it never allows, so no page
//! an operator visits can forge a call, even in a browser holding an operator certificate.
//! Refusals are logged and counted in `weft_api_requests_refused_total{reason}`, served at
//! `GET /metrics` (read-only).

mod api_tokens;

pub use api_tokens::{ApiTokenError, ApiTokens, ADMIN_TOKEN_FILE, TOKEN_PREFIX};

use crate::api::ApiError;
use crate::audit::{AuditRecord, Budget};
use crate::store::Store;
use crate::transport::Peer;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// The one call anyone may make: load balancers and supervisors probe it.
const OPEN_PATH: &str = "/api/v1/health";
/// Reads of these need the admin role too: they list credentials, or (the audit log) whole
/// documents and who did what.
const ADMIN_READ_PREFIXES: [&str; 2] = ["/api/v1/api-tokens", "/api/v1/audit"];
/// The content types a write may carry (parameters such as `charset` aside).
const WRITE_CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "application/yaml",
    "application/x-yaml",
    crate::api::FILES_CONTENT_TYPE,
];

/// Namespaces of operator identities, with the role each gives.
pub const OPERATOR_NAMESPACES: [(&str, Role); 2] = [
    ("weft-operators", Role::Admin),
    ("weft-readers", Role::ReadOnly),
];

/// Whether `namespace` is the control plane's or its operators': no workload may be given an
/// identity there (no join token, no certificate).
pub fn is_reserved_namespace(namespace: &str) -> bool {
    namespace == weft_identity::CONTROL_PLANE_NAMESPACE
        || OPERATOR_NAMESPACES.iter().any(|(ns, _)| *ns == namespace)
}

/// The role an operator certificate naming `id` gives, if it names an operator.
pub fn operator_role(id: &weft_identity::SpiffeId) -> Option<Role> {
    OPERATOR_NAMESPACES
        .iter()
        .find(|(ns, _)| *ns == id.namespace())
        .map(|(_, role)| *role)
}

/// What a credential lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads: resources, proxies, check, the CA's public roots, join token ids, metrics.
    ReadOnly,
}

impl Role {
    fn allows(self, needed: Role) -> bool {
        self == Role::Admin || needed == Role::ReadOnly
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Role::Admin => "admin",
            Role::ReadOnly => "read-only",
        })
    }
}

/// Who made a call: in the extensions of every request that got past the guard.
#[derive(Clone, Debug)]
pub struct Caller {
    /// For logs: `token 1a2b... (grafana)`.
    pub name: String,
    pub role: Role,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Reason {
    missing_credential,
    bad_credential,
    forbidden,
    content_type,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: Reason,
}

/// The guard's state: the credentials it checks and what it counts.
pub struct Access {
    tokens: Arc<ApiTokens>,
    refusals: Family<RefusalLabels, Counter>,
    registry: Registry,
    /// Where refused calls are recorded (`None` in tests of the guard alone).
    audit: Option<Arc<dyn Store>>,
    denials: Budget,
    /// The control plane's own gauges, read at each scrape.
    plane: Option<crate::plane_metrics::PlaneMetrics>,
}

/// Refused calls go to the audit log, at most this many a minute (see `audit::Budget`).
const DENIALS_PER_MINUTE: u32 = 60;

impl Access {
    /// `connections`: the ports' connection refusals, served at `GET /metrics` too.
    /// `audit`: the store whose audit log records refused calls.
    pub fn new(
        tokens: Arc<ApiTokens>,
        connections: &crate::transport::ConnectionRefusals,
        audit: Option<Arc<dyn Store>>,
        plane: Option<crate::plane_metrics::PlaneMetrics>,
    ) -> Arc<Access> {
        let refusals = Family::<RefusalLabels, Counter>::default();
        let mut registry = Registry::default();
        registry.register(
            "weft_api_requests_refused",
            "REST API calls refused: no credential, a bad one, too small a role, or a write with another content type",
            refusals.clone(),
        );
        connections.register(&mut registry);
        if let Some(plane) = &plane {
            plane.register(&mut registry);
        }
        Arc::new(Access {
            tokens,
            refusals,
            registry,
            audit,
            denials: Budget::per_minute(DENIALS_PER_MINUTE),
            plane,
        })
    }

    /// Who the request's credential names, or why it names no one: its bearer token, else
    /// the operator certificate its connection presented.
    fn caller(&self, headers: &HeaderMap, peer: Option<&Peer>) -> Result<Caller, Refusal> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            let operator = peer
                .and_then(|peer| peer.identity.as_ref())
                .and_then(|id| Some((id, operator_role(id)?)));
            return match operator {
                Some((id, role)) => Ok(Caller {
                    name: format!("operator {id}"),
                    role,
                }),
                None => Err(Refusal::missing()),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(Refusal::malformed)?;
        self.tokens.verify(token).ok_or_else(Refusal::bad)
    }

    fn refuse(&self, refusal: Refusal, method: &Method, path: &str) -> Response {
        self.refusals
            .get_or_create(&RefusalLabels {
                reason: refusal.reason,
            })
            .inc();
        tracing::warn!(%method, path, reason = ?refusal.reason, "refused an API call");
        self.record_refusal(&refusal, method, path);
        let mut response = ApiError::new(refusal.status, refusal.message).into_response();
        if refusal.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weft\""),
            );
        }
        response
    }
}

impl Access {
    /// Writes the refusal to the audit log, within the log's budget for refusals.
    fn record_refusal(&self, refusal: &Refusal, method: &Method, path: &str) {
        if let Some(store) = &self.audit {
            let record =
                AuditRecord::new("unknown caller", "api.denied", format!("{method} {path}"))
                    .detail(format!("{:?}: {}", refusal.reason, refusal.message));
            self.denials.write(
                store,
                record,
                "refused calls (weft_api_requests_refused_total)",
            );
        }
    }
}

/// Why a call was refused, as the caller hears it.
struct Refusal {
    reason: Reason,
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn missing() -> Refusal {
        Refusal {
            reason: Reason::missing_credential,
            status: StatusCode::UNAUTHORIZED,
            message: format!(
                "this call needs an API token: send `Authorization: Bearer <token>`. The admin \
                 token is in {ADMIN_TOKEN_FILE} in the control plane's --data-dir (`weft` \
                 reads it from there with --data-dir, or takes --token / WEFT_TOKEN); an \
                 admin makes more with `weft api-token create`, or an operator certificate \
                 for HTTPS with `weft operator-cert create`"
            ),
        }
    }

    fn malformed() -> Refusal {
        Refusal {
            reason: Reason::bad_credential,
            status: StatusCode::UNAUTHORIZED,
            message: "the Authorization header must be `Bearer <API token>`".to_owned(),
        }
    }

    fn bad() -> Refusal {
        Refusal {
            reason: Reason::bad_credential,
            status: StatusCode::UNAUTHORIZED,
            message: "this API token is not valid here: it was revoked, or another control \
                      plane made it; ask an admin for one (`weft api-token create`)"
                .to_owned(),
        }
    }
}

/// The role a call needs: reads are read-only's, except listing credentials.
fn needed_role(method: &Method, path: &str) -> Role {
    let read = matches!(*method, Method::GET | Method::HEAD);
    if read && !ADMIN_READ_PREFIXES.iter().any(|p| path.starts_with(p)) {
        Role::ReadOnly
    } else {
        Role::Admin
    }
}

/// Whether a write says it carries JSON or YAML. DELETE needs no body and no browser sends
/// it cross-site without asking first, so only methods that carry a body are checked.
fn acceptable_content_type(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return true;
    }
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    WRITE_CONTENT_TYPES
        .iter()
        .any(|allowed| essence.eq_ignore_ascii_case(allowed))
}

/// `router` behind the guard, with the API token routes and `GET /metrics` added.
pub fn protect(router: Router, access: Arc<Access>) -> Router {
    let metrics = {
        let access = access.clone();
        move |headers: HeaderMap| async move {
            if let Some(plane) = &access.plane {
                plane.refresh();
            }
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = prometheus_client::encoding::text::encode(&mut text, &access.registry);
            let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
            let format = weft_model::exposition::Exposition::negotiate(accept);
            (
                [(header::CONTENT_TYPE, format.content_type())],
                format.render(text),
            )
        }
    };
    router
        .merge(api_tokens::router(access.tokens.clone()))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(access, guard))
}

async fn guard(State(access): State<Arc<Access>>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let read = matches!(*request.method(), Method::GET | Method::HEAD);
    if path == OPEN_PATH || (read && crate::dashboard::is_asset(path)) {
        return next.run(request).await;
    }
    let method = request.method();
    let peer = request
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|info| &info.0);
    let caller = match access.caller(request.headers(), peer) {
        Ok(caller) => caller,
        Err(refusal) => return access.refuse(refusal, method, path),
    };
    let needed = needed_role(method, path);
    if !caller.role.allows(needed) {
        let refusal = Refusal {
            reason: Reason::forbidden,
            status: StatusCode::FORBIDDEN,
            message: format!(
                "this call needs the {needed} role; {} has {}. Use an admin token",
                caller.name, caller.role
            ),
        };
        return access.refuse(refusal, method, path);
    }
    if !acceptable_content_type(method, request.headers()) {
        let refusal = Refusal {
            reason: Reason::content_type,
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message: format!(
                "a write must carry Content-Type: application/json or application/yaml; other \
                 types (forms, text/plain) are refused so that no web page can forge a call \
                 (accepted: {})",
                WRITE_CONTENT_TYPES.join(", ")
            ),
        };
        return access.refuse(refusal, method, path);
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

#[cfg(test)]
mod tests;
