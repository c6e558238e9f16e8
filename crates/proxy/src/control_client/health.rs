//! Active health checks of the proxy's own app, whose verdict the control plane turns into
//! "endpoint or not".
//!
//! The check is the Service's `healthCheck` from the config in force (an HTTP GET expecting
//! 2xx, or a TCP connect, with its interval, timeout and thresholds), or a TCP connect every
//! 2 s before a config arrives or when the Service declares none. The first probe decides
//! outright, so a new workload joins rotation after one good probe instead of waiting out
//! a threshold; after that, the thresholds guard against flapping.

use crate::body::Body;
use crate::proxy::Proxy;
use http::{header, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::watch;
use weft_model::config::HealthCheckConfig;

/// Where the app stands, as sent to the control plane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthReport {
    pub healthy: bool,
    pub detail: String,
}

/// Used until a config arrives, and for a Service with no `healthCheck`: frequent enough
/// that a dead app leaves rotation within about two seconds.
fn default_check() -> HealthCheckConfig {
    HealthCheckConfig {
        http_path: None,
        interval_ms: 2_000,
        timeout_ms: 1_000,
        unhealthy_threshold: 1,
        healthy_threshold: 1,
    }
}

/// Starts probing; the receiver sees every change of verdict. Probing stops when the
/// receiver is dropped.
pub fn spawn(proxy: Arc<Proxy>) -> watch::Receiver<HealthReport> {
    let (reports, receiver) = watch::channel(HealthReport {
        healthy: false,
        detail: "not probed yet".to_owned(),
    });
    tokio::spawn(async move {
        let mut verdict = Verdict::default();
        loop {
            let check = check_in_force(&proxy);
            let outcome = probe(proxy.options.app, &check).await;
            if let Some(report) = verdict.record(outcome, &check) {
                match report.healthy {
                    true => tracing::info!(detail = %report.detail, "app is healthy"),
                    false => {
                        tracing::warn!(detail = %report.detail, "app is unhealthy; leaving rotation")
                    }
                }
                reports.send_replace(report);
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(check.interval_ms.max(1))) => {}
                () = reports.closed() => return,
            }
        }
    });
    receiver
}

fn check_in_force(proxy: &Proxy) -> HealthCheckConfig {
    let snapshot = proxy.snapshot();
    let options = &proxy.options;
    snapshot
        .config
        .services
        .iter()
        .find(|s| s.name == options.service && s.namespace == options.namespace)
        .and_then(|s| s.health_check.clone())
        .unwrap_or_else(default_check)
}

/// Consecutive probe results, and the verdict they add up to.
#[derive(Default)]
struct Verdict {
    healthy: Option<bool>,
    successes: u32,
    failures: u32,
}

impl Verdict {
    /// Records one probe; returns a report when the verdict changes.
    fn record(
        &mut self,
        outcome: Result<String, String>,
        check: &HealthCheckConfig,
    ) -> Option<HealthReport> {
        let ok = outcome.is_ok();
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let verdict = match self.healthy {
            None => ok,
            Some(false) => self.successes >= check.healthy_threshold,
            Some(true) => self.failures < check.unhealthy_threshold,
        };
        if self.healthy == Some(verdict) {
            return None;
        }
        self.healthy = Some(verdict);
        let detail = match outcome {
            Ok(detail) | Err(detail) => detail,
        };
        Some(HealthReport {
            healthy: verdict,
            detail,
        })
    }
}

/// One probe: what passed, or why it failed.
async fn probe(app: SocketAddr, check: &HealthCheckConfig) -> Result<String, String> {
    let timeout = Duration::from_millis(check.timeout_ms.max(1));
    let attempt = async {
        let stream = TcpStream::connect(app)
            .await
            .map_err(|e| format!("connecting to the app at {app}: {e}"))?;
        match &check.http_path {
            None => Ok(format!("TCP connect to {app} succeeded")),
            Some(path) => http_get(stream, app, path).await,
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from the app at {app} within {timeout:?}"
            ))
        })
}

async fn http_get(stream: TcpStream, app: SocketAddr, path: &str) -> Result<String, String> {
    let failed = |e: hyper::Error| format!("GET {path} on {app}: {e}");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    // The connection ends once `sender` is dropped at the end of this probe.
    tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, app.to_string())
        .header(header::USER_AGENT, "weft-health-check")
        .body(Body::Empty)
        .map_err(|e| format!("GET {path}: {e}"))?;
    let status = sender.send_request(request).await.map_err(failed)?.status();
    if status.is_success() {
        Ok(format!("GET {path} answered {status}"))
    } else {
        Err(format!("GET {path} answered {status}, expected 2xx"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(unhealthy: u32, healthy: u32) -> HealthCheckConfig {
        HealthCheckConfig {
            unhealthy_threshold: unhealthy,
            healthy_threshold: healthy,
            ..default_check()
        }
    }

    fn verdicts(results: &[bool], check: &HealthCheckConfig) -> Vec<Option<bool>> {
        let mut verdict = Verdict::default();
        results
            .iter()
            .map(|&ok| {
                let outcome = if ok {
                    Ok("up".into())
                } else {
                    Err("down".into())
                };
                verdict.record(outcome, check).map(|report| report.healthy)
            })
            .collect()
    }

    #[test]
    fn the_first_probe_decides_then_thresholds_apply() {
        let check = check(3, 2);
        assert_eq!(
            verdicts(
                &[true, false, false, true, false, false, false, true, true],
                &check
            ),
            [
                Some(true),
                None,
                None,
                None,
                None,
                None,
                Some(false),
                None,
                Some(true)
            ]
        );
        assert_eq!(verdicts(&[false, true], &check), [Some(false), None]);
    }

    #[test]
    fn the_report_says_why() {
        let mut verdict = Verdict::default();
        let report = verdict
            .record(Err("connection refused".into()), &default_check())
            .unwrap();
        assert_eq!(
            report,
            HealthReport {
                healthy: false,
                detail: "connection refused".into()
            }
        );
    }

    #[tokio::test]
    async fn probes_by_tcp_and_by_http() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = vec![0; 1024];
                let n = stream.read(&mut head).await.unwrap_or(0);
                let status = match std::str::from_utf8(&head[..n]) {
                    Ok(text) if text.starts_with("GET /healthz ") => "200 OK",
                    Ok(text) if text.starts_with("GET ") => "503 Service Unavailable",
                    _ => continue,
                };
                let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        assert!(probe(app, &default_check()).await.is_ok());
        let http = |path: &str| HealthCheckConfig {
            http_path: Some(path.to_owned()),
            ..default_check()
        };
        assert_eq!(
            probe(app, &http("/healthz")).await,
            Ok("GET /healthz answered 200 OK".to_owned())
        );
        let failed = probe(app, &http("/broken")).await.unwrap_err();
        assert!(failed.contains("503"), "{failed}");

        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let failed = probe(closed, &default_check()).await.unwrap_err();
        assert!(failed.starts_with("connecting to the app"), "{failed}");
    }
}
