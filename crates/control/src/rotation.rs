//! Finishing a root rotation (`weft ca rotate`): the old root leaves the trust bundle once
//! every connected proxy holds a certificate from the new one. Such a proxy trusts the new
//! root (its certificate came with the two-root bundle) and presents nothing the old root
//! alone vouches for, so dropping the old root then cuts no connection.

use crate::ca::MeshCa;
use crate::discovery::{ProxyInfo, Registry};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;

/// How often the fleet is looked at during a rotation.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// A control plane that has just started knows only the proxies that have reconnected so
/// far; retiring on that partial view would strand the others. This outlasts the proxies'
/// reconnect delay and the discovery warm-up.
const AFTER_START: Duration = Duration::from_secs(10);

/// Where a rotation stands among the proxies that have certificates.
#[derive(Debug, PartialEq, Eq)]
pub struct RotationProgress {
    /// Proxies holding a certificate from the signing root.
    pub done: usize,
    /// Proxies (by id) still holding one from an older root.
    pub pending: Vec<String>,
}

pub fn progress(proxies: &[ProxyInfo], signing_root: &str) -> RotationProgress {
    let mut progress = RotationProgress {
        done: 0,
        pending: Vec::new(),
    };
    for proxy in proxies {
        let Some(certificate) = &proxy.certificate else {
            continue;
        };
        if certificate.root.as_deref() == Some(signing_root) {
            progress.done += 1;
        } else {
            progress.pending.push(proxy.id.clone());
        }
    }
    progress
}

/// Retires the old root as soon as the fleet allows, for as long as the control plane runs.
pub async fn retire_when_done(ca: Arc<MeshCa>, registry: Arc<Registry>, store: Arc<dyn Store>) {
    tokio::time::sleep(AFTER_START).await;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    loop {
        tick.tick().await;
        let (signing, retiring) = ca.roots();
        if retiring.is_empty() {
            continue;
        }
        let progress = progress(&registry.proxies(), &signing.sha256);
        if !progress.pending.is_empty() {
            continue;
        }
        match ca.retire(&*store).await {
            Ok(()) => tracing::info!(
                proxies = progress.done,
                "every proxy holds a certificate from the new root"
            ),
            Err(error) => tracing::warn!(%error, "cannot retire the old root yet"),
        }
    }
}
