//! `weft control --prometheus-sd-file FILE`: the Prometheus targets of the mesh, kept current
//! in Prometheus's file-based service discovery format (`file_sd_configs`): the control
//! plane's own `/metrics` (label `weft_role="control"`) and every connected proxy's admin
//! server (`weft_role="proxy"`, with its `service`, `namespace` and `proxy` id). Rewritten
//! whole, by a rename, whenever the list changes, so Prometheus never reads half a file.
//! `deploy/prometheus.yml` reads it.

use crate::discovery::Registry;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How often the list is checked for changes.
const EVERY: Duration = Duration::from_secs(2);

/// The targets now.
pub fn targets(api: SocketAddr, registry: &Registry) -> Value {
    let mut groups = vec![json!({
        "targets": [api.to_string()],
        "labels": {"weft_role": "control"},
    })];
    for proxy in registry.proxies() {
        let Some(admin) = proxy.admin_address else {
            continue;
        };
        groups.push(json!({
            "targets": [admin.to_string()],
            "labels": {
                "weft_role": "proxy",
                "service": proxy.service,
                "namespace": proxy.namespace,
                "proxy": proxy.id,
            },
        }));
    }
    Value::Array(groups)
}

/// Keeps `path` current until the control plane stops.
pub async fn keep_written(path: PathBuf, api: SocketAddr, registry: Arc<Registry>) {
    let mut written = None;
    let mut tick = tokio::time::interval(EVERY);
    loop {
        tick.tick().await;
        let now = targets(api, &registry);
        if written.as_ref() == Some(&now) {
            continue;
        }
        let text = format!("{now:#}\n");
        let next = path.with_extension("tmp");
        let result = match tokio::fs::write(&next, text).await {
            Ok(()) => tokio::fs::rename(&next, &path).await,
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => written = Some(now),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot write the Prometheus targets; retrying")
            }
        }
    }
}
