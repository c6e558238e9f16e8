//! The data path under abuse and at its limits: each attack runs beside a well-behaved
//! client, which must keep being served.

#[path = "../support/mod.rs"]
mod support;

mod bounded;
mod slow_peers;
mod upgrades;
use std::time::{Duration, Instant};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `web` (client) calls `api` (server, in front of an HTTP backend) over mutual TLS.
pub struct Pair {
    pub _dir: TempDir,
    pub _backend: HttpBackend,
    pub server: Proxy,
    pub client: Proxy,
}

pub async fn pair(client_flags: &[&str]) -> Pair {
    pair_with(client_flags, &[]).await
}

/// A [`pair`] whose server proxy gets `server_flags`.
pub async fn pair_with(client_flags: &[&str], server_flags: &[&str]) -> Pair {
    let dir = TempDir::new("abuse");
    let certs = Certs::new(dir.path(), &["web", "api"]);
    let backend = HttpBackend::start("api-backend").await;
    let config = write_config(dir.path(), "mesh.yaml", &plain_service("api", "http", &[]));
    let mut spec = ProxySpec::new("api", backend.addr, &config).tls(&certs);
    for flag in server_flags {
        spec = spec.arg(*flag);
    }
    let server = spec.start();
    std::fs::write(&config, mesh_service("api", "http", &[server.inbound])).unwrap();
    let mut spec = ProxySpec::new("web", "127.0.0.1:9".parse().unwrap(), &config).tls(&certs);
    for flag in client_flags {
        spec = spec.arg(*flag);
    }
    let client = spec.start();
    Pair {
        _dir: dir,
        _backend: backend,
        server,
        client,
    }
}

/// Reads what the proxy answers until it closes the connection (or `within` passes).
pub async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A well-behaved client's requests while something else goes on: (failures, slowest).
pub async fn good_client(
    addr: std::net::SocketAddr,
    host: &str,
    requests: usize,
) -> (usize, Duration) {
    let mut c = Http1Client::connect(addr).await;
    let mut failures = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..requests {
        let started = Instant::now();
        // A request held up past 10 s counts as failed (and the test goes on to say so).
        match tokio::time::timeout(Duration::from_secs(10), c.get(host, "/")).await {
            Ok(Ok(answer)) if answer.status == 200 => {}
            _ => failures += 1,
        }
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (failures, slowest)
}

/// A proxy in local mode in front of `app` (the backend given), with `yaml` added.
pub fn local_proxy(dir: &TempDir, app: std::net::SocketAddr, yaml: &str, flags: &[&str]) -> Proxy {
    let mut text = plain_service("app", "http", &[app]);
    text.push_str(yaml);
    let config = write_config(dir.path(), "mesh.yaml", &text);
    let mut spec = ProxySpec::new("app", app, &config);
    for flag in flags {
        spec = spec.arg(*flag);
    }
    spec.start()
}

/// Whether a round trip through `stream` (a tunnel or a TCP binding to an echo) works.
pub async fn echoes(stream: &mut TcpStream) -> bool {
    if stream.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut back = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut back)).await,
        Ok(Ok(_))
    ) && &back == b"ping"
}
