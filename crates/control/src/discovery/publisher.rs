//! The publisher: recompiles the one shared `ProxyConfig` whenever resources or endpoints
//! change, serializes it once, and publishes it as a [`Generation`] for every session.
//!
//! Changes are debounced with a leading edge: the first change after a quiet spell is
//! compiled at once (a lone change pays no delay), and whatever arrives during the next
//! `debounce` interval is coalesced into one compile after it. A burst of store writes or
//! a crowd of proxies connecting costs one compile and one push per interval, not one each.

use super::registry::Registry;
use crate::resource_set::ResourceSet;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_api::v1::control_message::Message;
use weft_api::v1::{Config, ControlMessage, Endpoints, ServiceEndpoints};
use weft_model::config::{ProxyConfig, ServiceConfig};
use weft_model::Workload;

/// One compiled config, ready to send: every proxy's stream clones these messages, whose
/// payloads are reference-counted buffers.
pub(super) struct Generation {
    pub version: String,
    pub full: ControlMessage,
    /// Set when only endpoints changed since the previous generation.
    pub delta: Option<Delta>,
}

pub(super) struct Delta {
    /// The version this update applies to: the previous generation's.
    pub base_version: String,
    pub message: ControlMessage,
}

pub(super) type Generations = watch::Sender<Option<Arc<Generation>>>;

pub(super) async fn run(
    mut resources: watch::Receiver<Arc<ResourceSet>>,
    registry: Arc<Registry>,
    generations: Generations,
    debounce: Duration,
) {
    let mut previous: Option<Arc<ProxyConfig>> = None;
    loop {
        let set = resources.borrow_and_update().clone();
        let workloads = registry.workloads();
        let (compile_set, base) = (set.clone(), previous.clone());
        // Compiling and serializing a large mesh takes milliseconds of CPU: off the
        // runtime's workers, so streams keep moving meanwhile.
        let compiled =
            tokio::task::spawn_blocking(move || compile(&compile_set, &workloads, base)).await;
        match compiled {
            Ok(Compiled::Changed(config, generation)) => {
                registry.published(&set, &config.version);
                tracing::debug!(
                    version = %generation.version,
                    revision = set.revision,
                    incremental = generation.delta.is_some(),
                    "publishing proxy config"
                );
                generations.send_replace(Some(Arc::new(generation)));
                previous = Some(config);
            }
            Ok(Compiled::Unchanged(version)) => registry.published(&set, &version),
            Err(error) => tracing::error!(
                %error,
                revision = set.revision,
                "compiling the proxy config failed; proxies keep the previous one"
            ),
        }
        if !continue_after(&mut resources, &registry, &generations, debounce).await {
            return;
        }
    }
}

/// Waits out the debounce interval, then for the next change. False when nobody is left
/// to publish to, or the store has gone away.
async fn continue_after(
    resources: &mut watch::Receiver<Arc<ResourceSet>>,
    registry: &Registry,
    generations: &Generations,
    debounce: Duration,
) -> bool {
    tokio::time::sleep(debounce).await;
    tokio::select! {
        changed = resources.changed() => changed.is_ok(),
        () = registry.endpoints_changed() => true,
        () = generations.closed() => false,
    }
}

enum Compiled {
    /// Same version as the previous generation: nothing to send.
    Unchanged(String),
    Changed(Arc<ProxyConfig>, Generation),
}

fn compile(
    set: &ResourceSet,
    workloads: &[Workload],
    previous: Option<Arc<ProxyConfig>>,
) -> Compiled {
    let config = weft_model::compile_with_workloads(&set.resources, workloads);
    let previous = previous.as_deref();
    if previous.is_some_and(|p| p.version == config.version) {
        return Compiled::Unchanged(config.version);
    }
    let json = serde_json::to_vec(&config).expect("a ProxyConfig always serializes to JSON");
    let full = ControlMessage {
        message: Some(Message::Config(Config {
            version: config.version.clone(),
            config_json: Bytes::from(json),
        })),
    };
    let delta = previous.and_then(|previous| {
        let changed = endpoint_changes(previous, &config)?;
        let services = changed
            .into_iter()
            .map(|service| ServiceEndpoints {
                service: service.name.clone(),
                namespace: service.namespace.clone(),
                endpoints_json: Bytes::from(
                    serde_json::to_vec(&service.endpoints)
                        .expect("endpoints always serialize to JSON"),
                ),
            })
            .collect();
        Some(Delta {
            base_version: previous.version.clone(),
            message: ControlMessage {
                message: Some(Message::Endpoints(Endpoints {
                    version: config.version.clone(),
                    base_version: previous.version.clone(),
                    services,
                })),
            },
        })
    });
    let generation = Generation {
        version: config.version.clone(),
        full,
        delta,
    };
    Compiled::Changed(Arc::new(config), generation)
}

/// The services whose endpoints differ, if nothing but endpoints differs (and something
/// does).
fn endpoint_changes<'a>(old: &ProxyConfig, new: &'a ProxyConfig) -> Option<Vec<&'a ServiceConfig>> {
    if old.trust_domain != new.trust_domain || old.services.len() != new.services.len() {
        return None;
    }
    let mut changed = Vec::new();
    for (old, new) in old.services.iter().zip(&new.services) {
        if !same_but_endpoints(old, new) {
            return None;
        }
        if old.endpoints != new.endpoints {
            changed.push(new);
        }
    }
    (!changed.is_empty()).then_some(changed)
}

fn same_but_endpoints(old: &ServiceConfig, new: &ServiceConfig) -> bool {
    // Destructured field by field, so a field added to ServiceConfig fails to compile here
    // instead of silently going missing from endpoint-only updates.
    let ServiceConfig {
        name,
        namespace,
        ports,
        endpoints: _,
        routes,
        policy,
        health_check,
    } = old;
    *name == new.name
        && *namespace == new.namespace
        && *ports == new.ports
        && *routes == new.routes
        && *policy == new.policy
        && *health_check == new.health_check
}
