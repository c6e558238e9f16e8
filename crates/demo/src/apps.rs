//! The sample apps, after Istio's bookinfo: a frontend, a catalog (gRPC, see
//! [`crate::catalog`]), two versions of reviews and a ratings service. Each is a small
//! server that calls the next one through its own sidecar, as a real service would, so
//! every hop crosses the mesh: explicitly, or (in a pod) by name, unmodified.

use crate::catalog::{self, CatalogCaller, CatalogServerHandle};
use crate::http_client::{CallError, HttpClient, Reply};
use crate::topology::{Workload, NAMESPACE};
use crate::DemoError;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// How an app reaches the rest of the mesh.
#[derive(Clone)]
pub enum Outbound {
    /// Explicitly: to its sidecar's outbound listener, with the service named in `Host`.
    Sidecar {
        client: HttpClient,
        sidecar: SocketAddr,
    },
    /// As an unmodified app: to the service's DNS name (`http://ratings.default/`); the
    /// sidecar answers the name with the service's virtual IP and capture brings it the
    /// connection (`weft demo --transparent`).
    ByName { client: HttpClient },
}

impl Outbound {
    /// `GET /` on `service`.
    pub async fn get(&self, service: &str) -> Result<Reply, CallError> {
        match self {
            Outbound::Sidecar { client, sidecar } => client.get(*sidecar, service, "/").await,
            Outbound::ByName { client } => {
                client
                    .get_url(&format!("http://{service}.{NAMESPACE}/"))
                    .await
            }
        }
    }

    /// The body of a successful `GET /` to `service`; otherwise what went wrong, for the
    /// caller's own error page.
    async fn call(&self, service: &str) -> Result<String, String> {
        match self.get(service).await {
            Ok(reply) if reply.status.is_success() => {
                Ok(String::from_utf8_lossy(&reply.body).trim_end().to_owned())
            }
            Ok(reply) => Err(format!("{service} answered {}", reply.status)),
            Err(error) => Err(format!("calling {service}: {error}")),
        }
    }

    /// A gRPC client of the catalog, reaching it the same way.
    fn catalog(&self) -> CatalogCaller {
        match self {
            Outbound::Sidecar { sidecar, .. } => CatalogCaller::via_sidecar(*sidecar),
            Outbound::ByName { .. } => CatalogCaller::by_name(),
        }
    }
}

#[derive(Clone, Copy)]
pub enum ReviewsVersion {
    /// Quick and reliable; shows ratings as a number.
    V1,
    /// Slower, fails 2 % of requests, shows stars: something for the metrics to show.
    V2,
}

impl ReviewsVersion {
    fn name(self) -> &'static str {
        match self {
            ReviewsVersion::V1 => Workload::ReviewsV1.service(),
            ReviewsVersion::V2 => Workload::ReviewsV2.service(),
        }
    }

    fn work_time(self) -> Duration {
        let (base_ms, jitter_ms) = match self {
            ReviewsVersion::V1 => (1, 4),
            ReviewsVersion::V2 => (20, 20),
        };
        Duration::from_millis(base_ms + fastrand::u64(0..=jitter_ms))
    }

    fn fails_now(self) -> bool {
        matches!(self, ReviewsVersion::V2) && fastrand::u8(0..100) < 2
    }

    fn show_rating(self, stars: usize) -> String {
        match self {
            ReviewsVersion::V1 => format!("rated {stars}/5"),
            ReviewsVersion::V2 => format!("{}{}", "★".repeat(stars), "☆".repeat(5 - stars)),
        }
    }
}

pub enum SampleApp {
    /// Calls the catalog (gRPC) and reviews (HTTP) for every page.
    Frontend(Outbound, CatalogCaller),
    Reviews(ReviewsVersion, Outbound),
    Ratings,
    /// The load generator's workload: nothing calls it, but its sidecar needs an app.
    Idle,
}

impl SampleApp {
    /// `None` for the catalog, which is a gRPC server rather than a [`SampleApp`].
    pub fn new(workload: Workload, mesh: Outbound) -> Option<Self> {
        Some(match workload {
            Workload::Loadgen => SampleApp::Idle,
            Workload::Frontend => {
                let catalog = mesh.catalog();
                SampleApp::Frontend(mesh, catalog)
            }
            Workload::Catalog => return None,
            Workload::ReviewsV1 => SampleApp::Reviews(ReviewsVersion::V1, mesh),
            Workload::ReviewsV2 => SampleApp::Reviews(ReviewsVersion::V2, mesh),
            Workload::Ratings => SampleApp::Ratings,
        })
    }

    async fn handle(&self) -> Response<Full<Bytes>> {
        match self {
            SampleApp::Frontend(mesh, catalog) => {
                let ids: Vec<&str> = catalog::item_ids().collect();
                let id = ids[fastrand::usize(..ids.len())];
                let (item, review) = tokio::join!(catalog.item(id), mesh.call("reviews"));
                match (item, review) {
                    (Ok(item), Ok(review)) => page(
                        StatusCode::OK,
                        format!(
                            "Weft demo bookstore\n  book:   {} (${}.{:02})\n  review: {review}\n",
                            item.name,
                            item.price_cents / 100,
                            item.price_cents % 100
                        ),
                    ),
                    (Err(problem), _) | (_, Err(problem)) => {
                        page(StatusCode::BAD_GATEWAY, format!("frontend: {problem}\n"))
                    }
                }
            }
            SampleApp::Reviews(version, mesh) => {
                tokio::time::sleep(version.work_time()).await;
                if version.fails_now() {
                    return page(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{}: simulated failure\n", version.name()),
                    );
                }
                let rating = mesh.call("ratings").await.and_then(|body| {
                    body.parse::<usize>()
                        .ok()
                        .filter(|stars| *stars <= 5)
                        .ok_or_else(|| format!("ratings answered {body:?}, not 0 to 5 stars"))
                });
                match rating {
                    Ok(stars) => page(
                        StatusCode::OK,
                        format!(
                            "\"A delightful romp.\" ({}, from {})\n",
                            version.show_rating(stars),
                            version.name()
                        ),
                    ),
                    Err(problem) => page(
                        StatusCode::BAD_GATEWAY,
                        format!("{}: {problem}\n", version.name()),
                    ),
                }
            }
            SampleApp::Ratings => page(StatusCode::OK, "4\n".to_owned()),
            SampleApp::Idle => page(
                StatusCode::NOT_FOUND,
                "loadgen only sends requests; it serves none\n".to_owned(),
            ),
        }
    }
}

fn page(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Binds an app's port (`127.0.0.1:0` on the host, a fixed port in a pod) before its sidecar
/// starts, since the sidecar needs the address.
pub async fn bind(
    workload: Workload,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), DemoError> {
    let failed = |source| DemoError::App {
        app: workload.service(),
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(failed)?;
    let addr = listener.local_addr().map_err(failed)?;
    Ok((listener, addr))
}

/// A running app; dropping it stops the app and closes its connections.
pub enum AppServer {
    Http(JoinHandle<()>),
    /// Held only to be dropped: that stops the gRPC server.
    Grpc {
        _server: CatalogServerHandle,
    },
}

impl Drop for AppServer {
    fn drop(&mut self) {
        if let AppServer::Http(task) = self {
            task.abort();
        }
    }
}

/// Serves `workload`'s app on `listener`; `mesh` is how it reaches other services.
pub fn start(workload: Workload, listener: TcpListener, mesh: Outbound) -> AppServer {
    match SampleApp::new(workload, mesh) {
        Some(app) => serve(listener, app),
        None => AppServer::Grpc {
            _server: catalog::serve(listener),
        },
    }
}

fn serve(listener: TcpListener, app: SampleApp) -> AppServer {
    let app = Arc::new(app);
    let task = tokio::spawn(async move {
        // Owning the connections here means aborting this task closes them all.
        let mut connections = JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, usually: back off rather than spin.
                    tracing::debug!(%error, "app accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let app = app.clone();
            connections.spawn(async move {
                let service = service_fn(move |_request| {
                    let app = app.clone();
                    async move { Ok::<_, Infallible>(app.handle().await) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    AppServer::Http(task)
}
