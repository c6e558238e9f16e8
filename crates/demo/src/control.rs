//! The demo's control plane, run in this process (the same pieces `weft control` is made
//! of) with its store in the demo's temporary directory. In-process, it cannot outlive the
//! demo, however the demo ends; and binding port 0 here tells the demo both addresses
//! without reading any log.

use crate::http_client::HttpClient;
use crate::DemoError;
use http::StatusCode;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_control::ca::CaSource;
use weft_control::server::{ControlOptions, ControlPlane, Shutdown};
use weft_control::transport::Plaintext;

/// How long the API and the gRPC server get to finish once told to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

pub struct ControlPlaneHandle {
    /// The REST API (`weft apply/get/proxies/check --api`).
    pub api: SocketAddr,
    /// Where proxies connect (`weft proxy --control-plane`).
    pub grpc: SocketAddr,
    /// Calls the API with the admin token the control plane made in its data directory.
    client: HttpClient,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ControlPlaneHandle {
    /// Opens the store under `data_dir` and serves the API on a loopback port and the
    /// discovery server on a port of `grpc_ip` (where the proxies reach it), both picked by
    /// the OS.
    pub async fn start(data_dir: &Path, grpc_ip: IpAddr) -> Result<Self, DemoError> {
        let failed = |problem: String| DemoError::ControlPlane(problem);
        let listen = |what: &'static str, ip: IpAddr| async move {
            let listener = TcpListener::bind((ip, 0))
                .await
                .map_err(|e| failed(format!("cannot listen for its {what} server: {e}")))?;
            let addr = listener
                .local_addr()
                .map_err(|e| failed(format!("no address for its {what} server: {e}")))?;
            Ok::<_, DemoError>((listener, addr))
        };
        let (api_listener, api) = listen("API", Ipv4Addr::LOCALHOST.into()).await?;
        let (grpc_listener, grpc) = listen("gRPC", grpc_ip).await?;
        let options = ControlOptions {
            data_dir: data_dir.to_owned(),
            api_addr: api,
            grpc_addr: grpc,
            plaintext: Plaintext::Refused,
            audit_file: None,
            prometheus_sd_file: None,
        };
        let plane = tokio::task::spawn_blocking(move || ControlPlane::open(&options))
            .await
            .map_err(|e| failed(format!("opening the store panicked: {e}")))?
            .map_err(|e| failed(e.to_string()))?;
        let (stop, stopped) = watch::channel(false);
        // The same pieces as `weft control`: a CA kept in the store, TLS on the gRPC port,
        // certificates for proxies that bring a token.
        let task = tokio::spawn(async move {
            let served = weft_control::server::serve(
                plane,
                api_listener,
                grpc_listener,
                &CaSource::Store,
                Plaintext::Refused,
                Shutdown::on(stopped),
            )
            .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the demo's control plane failed");
            }
            // The store (and its file) closed with the servers that held it.
        });
        let client = admin_client(data_dir).await?;
        Ok(ControlPlaneHandle {
            api,
            grpc,
            client,
            stop,
            task,
        })
    }

    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// Where proxies connect, over TLS.
    pub fn grpc_url(&self) -> String {
        format!("https://{}", self.grpc)
    }

    /// `GET /api/v1/ca`: the roots proxies check the control plane against.
    pub async fn trust_bundle(&self) -> Result<String, DemoError> {
        let reply = self
            .client
            .get(self.api, "127.0.0.1", "/api/v1/ca")
            .await
            .map_err(|e| DemoError::ControlPlane(format!("reading its CA: {e}")))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        body["trustBundle"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| DemoError::ControlPlane(format!("no trust bundle in {body}")))
    }

    /// `POST /api/v1/tokens`: a single-use join token for one service's sidecar.
    pub async fn join_token(&self, service: &str) -> Result<String, DemoError> {
        let request = serde_json::json!({
            "service": service,
            "namespace": crate::topology::NAMESPACE,
            "ttl": "10m",
            "singleUse": true,
        });
        let reply = self
            .client
            .post(
                self.api,
                "/api/v1/tokens",
                "application/json",
                request.to_string(),
            )
            .await
            .map_err(|e| DemoError::ControlPlane(format!("creating a join token: {e}")))?;
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap_or_default();
        body["token"].as_str().map(str::to_owned).ok_or_else(|| {
            DemoError::ControlPlane(format!(
                "refused a join token for {service} ({}): {body}",
                reply.status
            ))
        })
    }

    /// `POST /api/v1/apply`: all of `yaml` is stored, or nothing and the API's reasons.
    pub async fn apply(&self, yaml: &str) -> Result<(), DemoError> {
        let reply = self
            .client
            .post(
                self.api,
                "/api/v1/apply",
                "application/yaml",
                yaml.to_owned(),
            )
            .await
            .map_err(|e| DemoError::ControlPlane(format!("applying the demo's resources: {e}")))?;
        if reply.status == StatusCode::OK {
            return Ok(());
        }
        Err(DemoError::ControlPlane(format!(
            "refused the demo's resources ({}): {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        )))
    }

    /// `GET /api/v1/proxies`: the connected proxies as the API lists them.
    pub async fn proxies(&self) -> Option<Vec<serde_json::Value>> {
        let reply = self
            .client
            .get(self.api, "127.0.0.1", "/api/v1/proxies")
            .await
            .ok()?;
        if !reply.status.is_success() {
            return None;
        }
        let body: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        body.get("proxies")?.as_array().cloned()
    }

    /// Stops both servers (proxies still connected see their streams end) and closes the
    /// store.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        if tokio::time::timeout(STOP_TIMEOUT, &mut self.task)
            .await
            .is_err()
        {
            tracing::warn!("the demo's control plane did not stop in time");
            self.task.abort();
        }
    }
}

/// A client with the admin token `weft control` writes into `data_dir` as it starts
/// serving (waited for: serving starts on the control plane's own task).
async fn admin_client(data_dir: &Path) -> Result<HttpClient, DemoError> {
    let path = data_dir.join(weft_control::access::ADMIN_TOKEN_FILE);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let token = loop {
        match tokio::fs::read_to_string(&path).await {
            Ok(token) if !token.trim().is_empty() => break token,
            _ if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            _ => {
                return Err(DemoError::ControlPlane(format!(
                    "it made no admin token in {} within 10 s",
                    path.display()
                )))
            }
        }
    };
    HttpClient::default()
        .with_bearer(token.trim())
        .map_err(|e| DemoError::ControlPlane(format!("its admin token is unusable: {e}")))
}

impl Drop for ControlPlaneHandle {
    fn drop(&mut self) {
        // Only does anything when `stop` did not run (an early return): the servers and
        // the store go with the task.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_demo_resources_apply_and_the_control_plane_stops() {
        let dir = crate::workdir::WorkDir::create().unwrap();
        let control =
            ControlPlaneHandle::start(&dir.path().join("control"), Ipv4Addr::LOCALHOST.into())
                .await
                .unwrap();
        control.apply(&crate::topology::resources()).await.unwrap();
        let refused = control
            .apply("kind: Nonsense\nmetadata: {name: x}\n")
            .await
            .unwrap_err();
        assert!(refused.to_string().contains("refused"), "{refused}");
        assert_eq!(control.proxies().await, Some(Vec::new()));
        let api = control.api;
        control.stop().await;
        assert!(
            tokio::net::TcpStream::connect(api).await.is_err(),
            "the API stopped listening"
        );
    }
}
