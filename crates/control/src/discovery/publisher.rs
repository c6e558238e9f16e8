//! The publisher: recompiles the one shared `ProxyConfig` whenever resources or endpoints
//! change, serializes it once, and publishes it as a [`Generation`] for every session;
//! with it, one smaller generation per Service that lists what it calls (its scope).
//!
//! Changes are debounced with a leading edge: the first change after a quiet spell is
//! compiled at once (a lone change pays no delay), and whatever arrives during the next
//! `debounce` interval is coalesced into one compile after it. A burst of store writes or
//! a crowd of proxies connecting costs one compile and one push per interval, not one each.

use super::registry::Registry;
use crate::resource_set::ResourceSet;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use weft_api::parts;
use weft_api::v1::control_message::Message;
use weft_api::v1::{Config, ControlMessage, Endpoints, ServiceEndpoints};
use weft_model::config::{ProxyConfig, ServiceConfig, TrustConfig};
use weft_model::{Scope, Workload};

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

/// What sessions are handed: the whole mesh's generation, and a scoped one for each
/// Service that lists what it calls.
pub(super) struct Publication {
    full: Published,
    /// By `(namespace, service)`.
    scoped: HashMap<(String, String), Published>,
    scopes: Vec<Scope>,
}

/// One config and its generation.
#[derive(Clone)]
struct Published {
    config: Arc<ProxyConfig>,
    generation: Arc<Generation>,
}

impl Publication {
    /// The generation the proxies of `service` in `namespace` are sent.
    pub fn for_workload(&self, namespace: &str, service: &str) -> &Arc<Generation> {
        let key = (namespace.to_owned(), service.to_owned());
        &self.scoped.get(&key).unwrap_or(&self.full).generation
    }

    /// The whole mesh's config.
    pub fn whole(&self) -> &Arc<ProxyConfig> {
        &self.full.config
    }

    /// The config the proxies of `service` in `namespace` run.
    pub fn config_for(&self, namespace: &str, service: &str) -> &Arc<ProxyConfig> {
        let key = (namespace.to_owned(), service.to_owned());
        &self.scoped.get(&key).unwrap_or(&self.full).config
    }

    /// Every version in force: the whole mesh's and each scope's.
    fn versions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(&self.full)
            .chain(self.scoped.values())
            .map(|published| published.config.version.as_str())
    }
}

pub(super) type Generations = watch::Sender<Option<Arc<Publication>>>;

pub(super) async fn run(
    mut resources: watch::Receiver<Arc<ResourceSet>>,
    mut trust: Option<watch::Receiver<TrustConfig>>,
    registry: Arc<Registry>,
    generations: Generations,
    debounce: Duration,
) {
    let mut previous: Option<Arc<Publication>> = None;
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
            Ok(Compiled::Changed(publication)) => {
                registry.published(&set, publication.versions());
                tracing::debug!(
                    version = %publication.full.config.version,
                    scopes = publication.scoped.len(),
                    revision = set.revision,
                    incremental = !publication.full.generation.updates.is_empty(),
                    "publishing proxy config"
                );
                let publication = Arc::new(publication);
                generations.send_replace(Some(publication.clone()));
                previous = Some(publication);
            }
            Ok(Compiled::Unchanged(publication)) => {
                registry.published(&set, publication.versions());
            }
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
    /// The same configs as the previous publication: nothing to send.
    Unchanged(Arc<Publication>),
    Changed(Publication),
}

fn compile(
    set: &ResourceSet,
    workloads: &[Workload],
    trust: Option<TrustConfig>,
    previous: Option<Arc<Publication>>,
) -> Compiled {
    let config = weft_model::compile_with_workloads(&set.resources, workloads, trust);
    let scopes = weft_model::scopes(&set.resources);
    if let Some(previous) = previous
        .as_ref()
        .filter(|p| p.full.config.version == config.version && p.scopes == scopes)
    {
        return Compiled::Unchanged(previous.clone());
    }
    let full = publish(config, previous.as_ref().map(|p| &p.full));
    let scoped = scopes
        .iter()
        .map(|scope| {
            let key = (scope.namespace.clone(), scope.service.clone());
            let config = weft_model::scoped(&full.config, scope);
            let before = previous.as_ref().and_then(|p| p.scoped.get(&key));
            let published = match before {
                Some(before) if before.config.version == config.version => before.clone(),
                _ => publish(config, before),
            };
            (key, published)
        })
        .collect();
    Compiled::Changed(Publication {
        full,
        scoped,
        scopes,
    })
}

/// Serializes `config` once and makes its generation: the full config in parts, and the
/// endpoints-only updates that lead to it from `previous` (the same scope's last one).
fn publish(config: ProxyConfig, previous: Option<&Published>) -> Published {
    let json = serde_json::to_vec(&config).expect("a ProxyConfig always serializes to JSON");
    let full_bytes = json.len();
    let full = parts::split(ControlMessage {
        message: Some(Message::Config(Config {
            version: config.version.clone(),
            config_json: Bytes::from(json),
        })),
    });
    let updates = previous
        .and_then(
            |Published {
                 config: old,
                 generation: old_generation,
             }| {
                let update = endpoints_update(old, &config)?;
                let keep = old_generation.updates.len().min(MAX_UPDATE_CHAIN - 1);
                let mut updates =
                    old_generation.updates[old_generation.updates.len() - keep..].to_vec();
                updates.push(Arc::new(update));
                Some(updates)
            },
        )
        .unwrap_or_default();
    let generation = Generation {
        version: config.version.clone(),
        full,
        full_bytes,
        updates,
    };
    Published {
        config: Arc::new(config),
        generation: Arc::new(generation),
    }
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
        default_authorization,
        outbound_traffic_policy,
        audit_decisions_percent,
        tracing,
        trust,
        services,
    } = old;
    if *trust_domain != new.trust_domain
        || *mtls_mode != new.mtls_mode
        || *default_authorization != new.default_authorization
        || *outbound_traffic_policy != new.outbound_traffic_policy
        || *audit_decisions_percent != new.audit_decisions_percent
        || *tracing != new.tracing
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
        virtual_ip,
        virtual_ipv6,
        hosts,
        endpoints: _,
        routes,
        policy,
        health_check,
        authorization,
    } = old;
    *name == new.name
        && *namespace == new.namespace
        && *ports == new.ports
        && *virtual_ip == new.virtual_ip
        && *virtual_ipv6 == new.virtual_ipv6
        && *hosts == new.hosts
        && *routes == new.routes
        && *policy == new.policy
        && *health_check == new.health_check
        && *authorization == new.authorization
}
