//! Why a configuration cannot be run. The proxy keeps the one in force and says why: in
//! its NACK to the control plane (shown by `weft get` and `weft check`), or in its log in
//! local mode. Most variants are values the compiler should already have refused (a bad
//! header, a regular expression, an identity): they point at a control plane and a proxy
//! of different versions, so they name the value and where it sits.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("header name {0:?} is not valid")]
    HeaderName(String),
    #[error("header value {0:?} is not valid")]
    HeaderValue(String),
    #[error("regular expression {pattern:?}: {reason}")]
    Regex { pattern: String, reason: String },
    #[error("CORS origin {0:?} is not scheme://host[:port]")]
    CorsOrigin(String),
    #[error("endpoint {address}: identity {identity:?}: {reason}")]
    EndpointIdentity {
        address: weft_model::Address,
        identity: String,
        reason: String,
    },
    #[error("route {route}: {source}")]
    Route {
        route: String,
        source: Box<ConfigError>,
    },
    #[error("service {service}: {source}")]
    Service {
        service: String,
        source: Box<ConfigError>,
    },
    #[error("the config is not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("the config says version {found}, the message {announced}")]
    Version { found: String, announced: String },
    #[error("the endpoints update applies to version {base}, but this proxy runs {running}")]
    NotOnBase { base: String, running: String },
    #[error("the update names service {namespace}/{service}, which the config does not have")]
    UnknownService { namespace: String, service: String },
    #[error("endpoints of {namespace}/{service} are not valid JSON: {source}")]
    EndpointsJson {
        namespace: String,
        service: String,
        source: serde_json::Error,
    },
    #[error("cannot adopt the trust bundle: {0}")]
    Trust(#[source] weft_identity::IdentityError),
    #[error("cannot adopt the revocation list: {0}")]
    Revocations(#[source] weft_identity::IdentityError),
    /// Local mode: the resource files do not load.
    #[error(transparent)]
    Load(#[from] weft_model::LoadError),
}

impl ConfigError {
    /// This error, as found in `route`.
    pub fn in_route(self, route: &str) -> ConfigError {
        ConfigError::Route {
            route: route.to_owned(),
            source: Box::new(self),
        }
    }

    /// This error, as found in `service`.
    pub fn in_service(self, service: &str) -> ConfigError {
        ConfigError::Service {
            service: service.to_owned(),
            source: Box::new(self),
        }
    }
}
