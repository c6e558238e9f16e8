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
use weft_api::parts;
use weft_api::v1::control_message::Message;
use weft_api::v1::{Config, ControlMessage, Endpoints, ServiceEndpoints};
use weft_model::config::{ProxyConfig, ServiceConfig, TrustConfig};
use weft_model::Workload;

/// One compiled config, ready to send: every proxy's stream clones these messages, whose
/// payloads are reference-counted slices of buffers encoded once.
pub(super) struct Generation {
    pub version: String,
    /// The full config as sent: one message, or its parts.
    pub full: Vec<ControlMessage>,
    pub full_bytes: usize,
    /// The endpoints-only updates that led here, oldest first, as long as nothing but
    /// endpoints changed (at most [`MAX_UPDATE_CHAIN`]): a proxy on any update's base catches
    /// up by receiving that update and the ones after it. Empty when more than endpoints
    /// changed since the previous generation.
    pub updates: Vec<Arc<Update>>,
}

/// An endpoints-only update from one version to the next.
pub(super) struct Update {
    /// The version this update applies to.
    pub base_version: String,
    pub version: String,
    /// The update as sent: one message, or its parts.
    pub messages: Vec<ControlMessage>,
    pub bytes: usize,
}

/// How many consecutive updates a generation keeps for proxies that fell behind. A proxy
/// further behind gets the full config, as does one for which the updates add up to more.
const MAX_UPDATE_CHAIN: usize = 32;

pub(super) type Generations = watch::Sender<Option<Arc<Generation>>>;

pub(super) async fn run(
    mut resources: watch::Receiver<Arc<ResourceSet>>,
    mut trust: Option<watch::Receiver<TrustConfig>>,
    registry: Arc<Registry>,
    generations: Generations,
    debounce: Duration,
) {
    let mut previous: Option<(Arc<ProxyConfig>, Arc<Generation>)> = None;
    loop {
        let set = resources.borrow_and_update().clone();
        let bundle = trust.as_mut().map(|t| t.borrow_and_update().clone());
        let workloads = registry.workloads();
        let (compile_set, base) = (set.clone(), previous.clone());
        // Compiling and serializing a large mesh takes milliseconds of CPU: off the
        // runtime's workers, so streams keep moving meanwhile.
        let compiled =
            tokio::task::spawn_blocking(move || compile(&compile_set, &workloads, bundle, base))
                .await;
        match compiled {
            Ok(Compiled::Changed(config, generation)) => {
                registry.published(&set, &config.version);
                tracing::debug!(
                    version = %generation.version,
                    revision = set.revision,
                    incremental = !generation.updates.is_empty(),
                    "publishing proxy config"
                );
                let generation = Arc::new(generation);
                generations.send_replace(Some(generation.clone()));
                previous = Some((config, generation));
            }
            Ok(Compiled::Unchanged(version)) => registry.published(&set, &version),
            Err(error) => tracing::error!(
                %error,
                revision = set.revision,
                "compiling the proxy config failed; proxies keep the previous one"
            ),
        }
        if !continue_after(
            &mut resources,
            trust.as_mut(),
            &registry,
            &generations,
            debounce,
        )
        .await
        {
            return;
        }
    }
}

/// Waits out the debounce interval, then for the next change. False when nobody is left
/// to publish to, or the store has gone away.
async fn continue_after(
    resources: &mut watch::Receiver<Arc<ResourceSet>>,
    trust: Option<&mut watch::Receiver<TrustConfig>>,
    registry: &Registry,
    generations: &Generations,
    debounce: Duration,
) -> bool {
    tokio::time::sleep(debounce).await;
    let trust_changed = async {
        match trust {
            // A CA that went away changes nothing more.
            Some(trust) => {
                if trust.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        changed = resources.changed() => changed.is_ok(),
        () = registry.endpoints_changed() => true,
        () = trust_changed => true,
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
    trust: Option<TrustConfig>,
    previous: Option<(Arc<ProxyConfig>, Arc<Generation>)>,
) -> Compiled {
    let config = weft_model::compile_with_workloads(&set.resources, workloads, trust);
    if previous
        .as_ref()
        .is_some_and(|(p, _)| p.version == config.version)
    {
        return Compiled::Unchanged(config.version);
    }
    let json = serde_json::to_vec(&config).expect("a ProxyConfig always serializes to JSON");
    let full_bytes = json.len();
    let full = parts::split(ControlMessage {
        message: Some(Message::Config(Config {
            version: config.version.clone(),
            config_json: Bytes::from(json),
        })),
    });
    let updates = previous
        .and_then(|(old, old_generation)| {
            let update = endpoints_update(&old, &config)?;
            let keep = old_generation.updates.len().min(MAX_UPDATE_CHAIN - 1);
            let mut updates =
                old_generation.updates[old_generation.updates.len() - keep..].to_vec();
            updates.push(Arc::new(update));
            Some(updates)
        })
        .unwrap_or_default();
    let generation = Generation {
        version: config.version.clone(),
        full,
        full_bytes,
        updates,
    };
    Compiled::Changed(Arc::new(config), generation)
}

/// The update from `old` to `new`, if nothing but endpoints changed.
fn endpoints_update(old: &ProxyConfig, new: &ProxyConfig) -> Option<Update> {
    let services: Vec<ServiceEndpoints> = endpoint_changes(old, new)?
        .into_iter()
        .map(|service| ServiceEndpoints {
            service: service.name.clone(),
            namespace: service.namespace.clone(),
            endpoints_json: Bytes::from(
                serde_json::to_vec(&service.endpoints).expect("endpoints always serialize to JSON"),
            ),
        })
        .collect();
    let bytes = services.iter().map(|s| s.endpoints_json.len()).sum();
    let messages = parts::split(ControlMessage {
        message: Some(Message::Endpoints(Endpoints {
            version: new.version.clone(),
            base_version: old.version.clone(),
            services,
        })),
    });
    Some(Update {
        base_version: old.version.clone(),
        version: new.version.clone(),
        messages,
        bytes,
    })
}

/// The services whose endpoints differ, if nothing but endpoints differs (and something
/// does).
fn endpoint_changes<'a>(old: &ProxyConfig, new: &'a ProxyConfig) -> Option<Vec<&'a ServiceConfig>> {
    // Destructured so a field added to ProxyConfig fails to compile here instead of going
    // missing from endpoint-only updates.
    let ProxyConfig {
        version: _,
        trust_domain,
        mtls_mode,
        trust,
        services,
    } = old;
    if *trust_domain != new.trust_domain
        || *mtls_mode != new.mtls_mode
        || *trust != new.trust
        || services.len() != new.services.len()
    {
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
