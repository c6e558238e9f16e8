//! The `catalog` app: a small gRPC service (`proto/weft/demo/v1/catalog.proto`) that the
//! frontend calls through its sidecar, so the demo has a gRPC edge next to the HTTP ones.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pb {
    tonic::include_proto!("weft.demo.v1");
}

use pb::catalog_client::CatalogClient;
use pb::catalog_server::{Catalog, CatalogServer};
use pb::{Item, ItemRequest};

/// Long enough for a retried call through two sidecars.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What the store sells: id, name, price in cents.
const ITEMS: [(&str, &str, u32); 3] = [
    ("errors", "The Comedy of Errors", 1299),
    ("tempest", "The Tempest", 1099),
    ("lear", "King Lear", 1499),
];

/// The ids a frontend may ask for.
pub fn item_ids() -> impl Iterator<Item = &'static str> {
    ITEMS.iter().map(|(id, _, _)| *id)
}

struct CatalogApp;

#[tonic::async_trait]
impl Catalog for CatalogApp {
    async fn get_item(&self, request: Request<ItemRequest>) -> Result<Response<Item>, Status> {
        // A little work, so the latency columns show something.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=3))).await;
        let id = request.into_inner().id;
        ITEMS
            .iter()
            .find(|(known, _, _)| *known == id)
            .map(|(id, name, price_cents)| {
                Response::new(Item {
                    id: (*id).to_owned(),
                    name: (*name).to_owned(),
                    price_cents: *price_cents,
                })
            })
            .ok_or_else(|| Status::not_found(format!("no item {id:?} in the catalog")))
    }
}

/// The running gRPC server; dropping it stops the server.
pub struct CatalogServerHandle {
    _stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Drop for CatalogServerHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn serve(listener: TcpListener) -> CatalogServerHandle {
    let (stop, stopped) = oneshot::channel::<()>();
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let task = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .add_service(CatalogServer::new(CatalogApp))
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            })
            .await;
        if let Err(error) = served {
            tracing::debug!(%error, "the catalog app stopped");
        }
    });
    CatalogServerHandle { _stop: stop, task }
}

/// The catalog as the frontend sees it, through the mesh.
#[derive(Clone)]
pub struct CatalogCaller {
    client: CatalogClient<Channel>,
}

impl CatalogCaller {
    /// Through the sidecar's outbound listener, naming the service in `:authority`.
    pub fn via_sidecar(sidecar_outbound: SocketAddr) -> Self {
        let endpoint = Endpoint::from_shared(format!("http://{sidecar_outbound}"))
            .expect("a socket address makes a valid URI")
            .origin(http::Uri::from_static("http://catalog"));
        Self::new(endpoint)
    }

    /// By the service's DNS name, as an unmodified gRPC client would address it.
    pub fn by_name() -> Self {
        Self::new(Endpoint::from_static("http://catalog.default:80"))
    }

    fn new(endpoint: Endpoint) -> Self {
        let channel = endpoint
            .tcp_nodelay(true)
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT)
            .connect_lazy();
        CatalogCaller {
            client: CatalogClient::new(channel),
        }
    }

    /// `GetItem(id)`; on failure, what went wrong, for the frontend's error page.
    pub async fn item(&self, id: &str) -> Result<Item, String> {
        let mut client = self.client.clone();
        let request = ItemRequest { id: id.to_owned() };
        match tokio::time::timeout(CALL_TIMEOUT, client.get_item(request)).await {
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(format!(
                "catalog answered {:?}: {}",
                status.code(),
                status.message()
            )),
            Err(_) => Err(format!("catalog: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_catalog_answers_known_items_and_refuses_others() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = serve(listener);
        // Straight to the app: the caller is the same one the frontend points at its sidecar.
        let caller = CatalogCaller::via_sidecar(addr);
        for id in item_ids() {
            let item = caller.item(id).await.unwrap();
            assert_eq!(item.id, id);
            assert!(item.price_cents > 0);
        }
        let missing = caller.item("hamlet").await.unwrap_err();
        assert!(missing.contains("NotFound"), "{missing}");
        drop(server);
    }
}
