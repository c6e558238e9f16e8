//! The admin server: metrics, readiness, liveness and the config in force.
//!
//! It runs on a runtime of its own, on its own thread, so a slow scrape never competes with
//! the data path's tasks (and a busy data path never makes `/live` look dead).

use crate::body::Body;
use crate::proxy::Proxy;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Connections open at once: scrapers and probes need a handful.
const MAX_CONNECTIONS: usize = 64;
/// A scraper sends its request at once; anything slower is holding a connection.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

pub fn spawn(proxy: Arc<Proxy>, listener: std::net::TcpListener) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weft-admin".into())
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(listener) => listener,
                    Err(error) => return tracing::error!(%error, "admin listener failed"),
                };
                let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
                loop {
                    let stream = match listener.accept().await {
                        Ok((stream, _)) => stream,
                        Err(error) => {
                            // Out of file descriptors and the like: back off, don't spin.
                            tracing::warn!(%error, "admin: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!("admin: at the connection cap; closed a new connection");
                        continue;
                    };
                    let proxy = proxy.clone();
                    tokio::spawn(async move {
                        let _slot = slot;
                        let svc = service_fn(move |req| handle(proxy.clone(), req));
                        let _ = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HEADER_READ_TIMEOUT)
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
            })
        })?;
    Ok(())
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Body::full(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn handle(
    proxy: Arc<Proxy>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ));
    }
    Ok(match request.uri().path() {
        "/metrics" => {
            let accept = request
                .headers()
                .get(http::header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = weft_model::exposition::Exposition::negotiate(accept);
            if let Some(ebpf) = proxy.ebpf.get() {
                proxy.metrics.ebpf.sync(ebpf.counts());
            }
            text(
                StatusCode::OK,
                format.content_type(),
                format.render(proxy.metrics.encode()),
            )
        }
        "/live" => text(StatusCode::OK, "text/plain", "live\n".into()),
        "/ready" if proxy.is_ready() => text(StatusCode::OK, "text/plain", "ready\n".into()),
        "/ready" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "not ready\n".into(),
        ),
        "/config" => {
            let snapshot = proxy.snapshot();
            // Written straight from the config, not through a `serde_json::Value` tree,
            // which for a mesh of thousands of services costs twenty times the text.
            let view = ConfigView {
                version: &snapshot.config.version,
                generation: snapshot.generation,
                config: &snapshot.config,
            };
            let mut body = serde_json::to_string_pretty(&view).expect("a config serializes");
            body.push('\n');
            text(StatusCode::OK, "application/json", body)
        }
        "/certs" => match &proxy.tls {
            Some(identity) => {
                let describe = |der: &rustls::pki_types::CertificateDer<'_>| {
                    weft_identity::CertSummary::of(der).map(|c| {
                        serde_json::json!({
                            "subject": c.subject,
                            "issuer": c.issuer,
                            "spiffe_id": c.spiffe_id,
                            "not_before": weft_identity::format_utc(c.not_before),
                            "not_after": weft_identity::format_utc(c.not_after),
                            "sha256": c.sha256,
                        })
                    })
                };
                let chain: Vec<_> = identity.chain().iter().filter_map(describe).collect();
                let bundle: Vec<_> = identity.bundle().iter().filter_map(describe).collect();
                let body = serde_json::json!({
                    "identity": identity.id().to_string(),
                    "not_after": weft_identity::format_utc(identity.not_after()),
                    // Certificates from files are the operator's to replace.
                    "renews_at": proxy.options.tls.is_none()
                        .then(|| weft_identity::format_utc(identity.renew_at())),
                    "chain": chain,
                    "trust_bundle": bundle,
                    "tls": {
                        "fips": identity.fips(),
                        "key_exchange": identity.key_exchange_groups(),
                    },
                });
                text(StatusCode::OK, "application/json", format!("{body:#}\n"))
            }
            None => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                "this proxy runs without TLS (no --cert)\n".into(),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found; try /metrics, /ready, /live, /config, /certs\n".into(),
        ),
    })
}

/// What `/config` shows: the config in force, its version and its generation.
#[derive(serde::Serialize)]
struct ConfigView<'a> {
    version: &'a str,
    generation: u64,
    config: &'a weft_model::config::ProxyConfig,
}
