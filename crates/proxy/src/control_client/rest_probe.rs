//! Tells a proxy pointed at `weft control`'s REST API port, instead of its gRPC port, what
//! the right address is: one plain `GET /api/v1/health` at start, whose answer names the
//! proxies' port. Any other answer (or none, within a second) means "not the REST API".

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long the probe may hold up a proxy's start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The health answer is small; nothing more is read.
const MAX_ANSWER: usize = 4096;

/// If `authority` (`host:port`) serves weft's REST API, the proxies' address it names.
pub(crate) async fn proxies_address_if_rest_api(authority: &str) -> Option<String> {
    let probe = async {
        let mut stream = TcpStream::connect(authority).await.ok()?;
        let request = format!(
            "GET /api/v1/health HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER as u64)
            .read_to_end(&mut answer)
            .await
            .ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(PROBE_TIMEOUT, probe).await.ok()??;
    let text = String::from_utf8_lossy(&answer);
    let (_, body) = text.split_once("\r\n\r\n")?;
    let health: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    health["proxiesAddress"].as_str().map(str::to_owned)
}
