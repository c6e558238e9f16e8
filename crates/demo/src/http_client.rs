//! The one HTTP client the demo uses: for the apps calling each other through their
//! sidecars, for the load generator, for the sidecars' admin endpoints and for the control
//! plane's API.

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// Long enough for a retried call through two sidecars, short enough that a stuck call
/// never holds up shutdown for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no answer within {CALL_TIMEOUT:?}")]
    Timeout,
    #[error("{0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("reading the response: {0}")]
    Body(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Build(#[from] http::Error),
}

pub struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Keeps connections open between calls, as an app's client library would, so the
/// sidecars see realistic traffic rather than a connection per request.
#[derive(Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
    /// Sent with every request (`Bearer <API token>`), for the control plane's API.
    authorization: Option<HeaderValue>,
}

impl Default for HttpClient {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build(connector),
            authorization: None,
        }
    }
}

impl HttpClient {
    /// This client, sending `token` as its bearer credential with every request.
    pub fn with_bearer(&self, token: &str) -> Result<HttpClient, http::header::InvalidHeaderValue> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))?;
        value.set_sensitive(true);
        Ok(HttpClient {
            inner: self.inner.clone(),
            authorization: Some(value),
        })
    }

    /// `GET path` sent to `to` with `Host: host`: a sidecar's outbound listener routes by
    /// that Host.
    pub async fn get(&self, to: SocketAddr, host: &str, path: &str) -> Result<Reply, CallError> {
        let request = Request::get(format!("http://{to}{path}"))
            .header(header::HOST, host)
            .body(Full::default())?;
        self.send(request).await
    }

    /// `GET url` as an unmodified app sends it: the system's resolver looks up the name in
    /// the URL, and `Host` is the URL's authority.
    pub async fn get_url(&self, url: &str) -> Result<Reply, CallError> {
        let request = Request::get(url).body(Full::default())?;
        self.send(request).await
    }

    /// `POST path` with `body` of `content_type` to `to`.
    pub async fn post(
        &self,
        to: SocketAddr,
        path: &str,
        content_type: &str,
        body: String,
    ) -> Result<Reply, CallError> {
        let request = Request::post(format!("http://{to}{path}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))?;
        self.send(request).await
    }

    async fn send(&self, mut request: Request<Full<Bytes>>) -> Result<Reply, CallError> {
        if let Some(authorization) = &self.authorization {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, authorization.clone());
        }
        let call = async {
            let response = self.inner.request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok(Reply { status, body })
        };
        tokio::time::timeout(CALL_TIMEOUT, call)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}
