//! The registry: every proxy connected right now, its workload, its health, and which
//! config version it runs.
//!
//! A proxy is in the registry exactly while its stream is open. It is an endpoint of its
//! Service only while it reports its app healthy; an unhealthy proxy stays listed (it is
//! still connected and still needs config for its own outbound traffic) but leaves
//! rotation at once. One mutex guards it all: every operation is a few map updates, never
//! held across an await.

use super::status::StatusIndex;
use crate::resource_set::ResourceSet;
use serde::{Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::Notify;
use tonic::Status;
use weft_api::v1::Hello;
use weft_model::Workload;

/// One connected proxy, as `weft proxies` and the REST API show it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyInfo {
    pub id: String,
    pub service: String,
    pub namespace: String,
    /// Where other proxies reach this one.
    pub inbound_address: SocketAddr,
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub connected_at: SystemTime,
    /// When it last sent anything (Hello, Ack, Nack, Health).
    #[serde(serialize_with = "rfc3339")]
    pub last_seen: SystemTime,
    /// Whether its app passes its health check; only healthy proxies are endpoints.
    pub healthy: bool,
    /// The health check's last word (why it failed, typically).
    pub health_detail: String,
    /// The config version it runs: the last it acknowledged, or the one it reported
    /// running when it connected.
    pub acked_version: Option<String>,
    /// Whether that is the version compiled last.
    pub in_sync: bool,
    /// The last config it refused, kept after later successes so an operator can see it.
    pub last_nack: Option<Rejection>,
    /// Its workload certificate, as it last reported it; `None` without mutual TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<ProxyCertificate>,
    /// Where its `/metrics` is scraped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_address: Option<SocketAddr>,
}

/// A proxy's workload certificate, as the control plane understood its report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyCertificate {
    pub spiffe_id: Option<String>,
    /// SHA-256 of the leaf's DER: what `weft identity revoke --certificate` takes.
    pub sha256: String,
    #[serde(serialize_with = "rfc3339")]
    pub not_after: SystemTime,
    /// SHA-256 of the trust-bundle root it chains to; `None` if it chains to none of them.
    pub root: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub version: String,
    pub reason: String,
}

fn rfc3339<S: Serializer>(at: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    let text = time::OffsetDateTime::from(*at)
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    serializer.serialize_str(&text)
}

pub struct Registry {
    state: Mutex<State>,
    /// What proxies report their inbound judged, for `weft policy suggest`.
    pub observed: super::observed::ObservedCalls,
    /// Wakes the publisher when the set of endpoints (healthy workloads) may have changed.
    endpoints_changed: Notify,
    warmup_until: SystemTime,
}

/// Proxies one identity may have registered at once. A stolen certificate must not let its
/// holder fill every proxy's config with endpoints of its own; a real service this large
/// is rare, and says so in the refusal.
pub const MAX_PROXIES_PER_IDENTITY: usize = 1024;

#[derive(Default)]
struct State {
    proxies: HashMap<String, Entry>,
    /// How many of `proxies` each (namespace, service) has.
    per_identity: HashMap<(String, String), usize>,
    /// Tells apart successive streams of one proxy id.
    next_stream: u64,
    status: StatusIndex,
}

struct Entry {
    stream: u64,
    /// Ends the stream when a newer one registers under the same id.
    replaced: Arc<Notify>,
    workload: Workload,
    connected_at: SystemTime,
    last_seen: SystemTime,
    healthy: bool,
    health_detail: String,
    acked: Option<String>,
    last_nack: Option<Rejection>,
    /// A NACK came after the last ACK: the proxy refuses the config it was last sent.
    rejecting: bool,
    certificate: Option<ProxyCertificate>,
    /// Its admin server (`/metrics`), as its Hello said.
    admin_address: Option<SocketAddr>,
}

impl Registry {
    /// A registry whose control plane leaves reconnecting proxies' configs alone until
    /// `until` (see `DiscoveryOptions::warmup`), which `weft check` explains.
    pub(crate) fn warming_up_until(until: SystemTime) -> Self {
        Self {
            state: Mutex::new(State::default()),
            observed: Default::default(),
            endpoints_changed: Notify::new(),
            warmup_until: until,
        }
    }

    /// Until when proxies that reconnect running a config keep it.
    pub fn warmup_until(&self) -> SystemTime {
        self.warmup_until
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere mid-update leaves plain data behind, never a broken invariant
        // worth refusing every later proxy for.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every connected proxy, by id.
    pub fn proxies(&self) -> Vec<ProxyInfo> {
        let state = self.lock();
        let mut proxies: Vec<ProxyInfo> = state
            .proxies
            .iter()
            .map(|(id, entry)| ProxyInfo {
                id: id.clone(),
                service: entry.workload.service.clone(),
                namespace: entry.workload.namespace.clone(),
                inbound_address: entry.workload.address,
                labels: entry.workload.labels.clone(),
                zone: entry.workload.zone.clone(),
                connected_at: entry.connected_at,
                last_seen: entry.last_seen,
                healthy: entry.healthy,
                health_detail: entry.health_detail.clone(),
                acked_version: entry.acked.clone(),
                in_sync: entry
                    .acked
                    .as_deref()
                    .is_some_and(|version| state.status.is_current(version)),
                last_nack: entry.last_nack.clone(),
                certificate: entry.certificate.clone(),
                admin_address: entry.admin_address,
            })
            .collect();
        proxies.sort_by(|a, b| a.id.cmp(&b.id));
        proxies
    }

    /// The status of one resource (`kind` as written in `kind:`) across connected proxies:
    /// `{"proxies": N, "inSync": M, "rejected": [{"proxy", "version", "reason"}],
    /// "summary": "..."}`. A resource is in sync on a proxy that acknowledged a config
    /// compiled from a revision at or after the resource's last change. Otherwise it is
    /// rejected by the proxy if the proxy's latest answer, to such a config, was a NACK: a
    /// NACK names no resource, so every resource that config changed counts as rejected.
    pub fn resource_status(&self, kind: &str, namespace: &str, name: &str) -> serde_json::Value {
        let state = self.lock();
        let proxies = state.proxies.len();
        let Some(changed_at) = state.status.changed_at(kind, namespace, name) else {
            let summary = "not compiled yet: the discovery server has not seen this resource";
            return serde_json::json!({
                "proxies": proxies, "inSync": 0, "rejected": [], "summary": summary,
            });
        };
        let reflects = |version: Option<&str>| {
            version
                .and_then(|version| state.status.revision_of(version))
                .is_some_and(|revision| revision >= changed_at)
        };
        let mut in_sync = 0;
        let mut rejected = Vec::new();
        for (id, entry) in &state.proxies {
            if reflects(entry.acked.as_deref()) {
                in_sync += 1;
            } else if let Some(nack) = entry.last_nack.as_ref().filter(|_| entry.rejecting) {
                if reflects(Some(&nack.version)) {
                    rejected.push((id, nack));
                }
            }
        }
        rejected.sort_by(|a, b| a.0.cmp(b.0));
        let summary = match (proxies, rejected.first()) {
            (0, _) => "no proxies connected".to_owned(),
            (_, None) => format!("in sync on {in_sync}/{proxies} proxies"),
            (_, Some((_, first))) => format!(
                "in sync on {in_sync}/{proxies} proxies; rejected by {}: {}",
                rejected.len(),
                first.reason
            ),
        };
        let rejected: Vec<_> = rejected
            .into_iter()
            .map(|(id, nack)| {
                serde_json::json!({"proxy": id, "version": nack.version, "reason": nack.reason})
            })
            .collect();
        serde_json::json!({
            "proxies": proxies, "inSync": in_sync, "rejected": rejected, "summary": summary,
        })
    }

    /// Registers the proxy that said `hello`. A proxy already registered under its id is
    /// replaced: a proxy that reconnects often does so before the control plane notices
    /// that its old stream died.
    pub(super) fn register(self: &Arc<Self>, hello: &Hello) -> Result<Registration, Status> {
        let workload = workload_of(hello)?;
        let now = SystemTime::now();
        let replaced = Arc::new(Notify::new());
        let mut state = self.lock();
        let identity = (workload.namespace.clone(), workload.service.clone());
        match state.proxies.get(&hello.proxy_id) {
            // A proxy id belongs to one identity: no one takes over another's registration.
            Some(old)
                if (&old.workload.namespace, &old.workload.service)
                    != (&identity.0, &identity.1) =>
            {
                return Err(Status::already_exists(format!(
                    "proxy id {} is registered by {}.{}; each proxy needs an id of its own",
                    hello.proxy_id, old.workload.service, old.workload.namespace
                )));
            }
            Some(_) => {}
            None if state.per_identity.get(&identity).copied().unwrap_or(0)
                >= MAX_PROXIES_PER_IDENTITY =>
            {
                return Err(Status::resource_exhausted(format!(
                    "{}.{} has {MAX_PROXIES_PER_IDENTITY} proxies registered already, the most one identity may have",
                    identity.1, identity.0
                )));
            }
            None => *state.per_identity.entry(identity).or_default() += 1,
        }
        state.next_stream += 1;
        let stream = state.next_stream;
        let entry = Entry {
            stream,
            replaced: replaced.clone(),
            workload,
            admin_address: hello.admin_address.parse().ok(),
            connected_at: now,
            last_seen: now,
            // Not an endpoint before its first health report.
            healthy: false,
            health_detail: "no health report yet".to_owned(),
            acked: (!hello.running_version.is_empty()).then(|| hello.running_version.clone()),
            last_nack: None,
            rejecting: false,
            certificate: None,
        };
        if let Some(old) = state.proxies.insert(hello.proxy_id.clone(), entry) {
            old.replaced.notify_one();
            if old.healthy {
                self.endpoints_changed.notify_one();
            }
        }
        Ok(Registration {
            registry: self.clone(),
            id: hello.proxy_id.clone(),
            stream,
            replaced,
        })
    }

    /// The workloads that are endpoints now: connected and healthy.
    pub(super) fn workloads(&self) -> Vec<Workload> {
        self.lock()
            .proxies
            .values()
            .filter(|entry| entry.healthy)
            .map(|entry| entry.workload.clone())
            .collect()
    }

    /// Resolves once the endpoints may have changed since the last call.
    pub(super) async fn endpoints_changed(&self) {
        self.endpoints_changed.notified().await;
    }

    /// Records that `set` compiled to `versions` (the whole mesh's and each scope's), the
    /// versions proxies are now sent.
    pub(super) fn published<'v>(
        &self,
        set: &Arc<ResourceSet>,
        versions: impl Iterator<Item = &'v str>,
    ) {
        let mut state = self.lock();
        let State {
            proxies, status, ..
        } = &mut *state;
        status.published(set, versions);
        status.retain_versions(proxies.values().flat_map(|entry| {
            let nacked = entry.last_nack.as_ref().map(|nack| nack.version.as_str());
            entry.acked.as_deref().into_iter().chain(nacked)
        }));
    }

    /// Applies `update` to the entry of `registration`'s stream, if it is still the
    /// registered one.
    fn update<R>(
        &self,
        registration: &Registration,
        update: impl FnOnce(&mut Entry) -> R,
    ) -> Option<R> {
        let mut state = self.lock();
        let entry = state.proxies.get_mut(&registration.id)?;
        if entry.stream != registration.stream {
            return None;
        }
        entry.last_seen = SystemTime::now();
        Some(update(entry))
    }

    fn remove(&self, registration: &Registration) {
        let mut state = self.lock();
        let ours = state
            .proxies
            .get(&registration.id)
            .is_some_and(|entry| entry.stream == registration.stream);
        if !ours {
            return;
        }
        if let Some(entry) = state.proxies.remove(&registration.id) {
            let identity = (entry.workload.namespace, entry.workload.service);
            if let Some(count) = state.per_identity.get_mut(&identity) {
                *count -= 1;
                if *count == 0 {
                    state.per_identity.remove(&identity);
                }
            }
            if entry.healthy {
                self.endpoints_changed.notify_one();
            }
        }
    }
}

fn workload_of(hello: &Hello) -> Result<Workload, Status> {
    let missing = |field: &str| Status::invalid_argument(format!("Hello has no {field}"));
    if hello.proxy_id.is_empty() {
        return Err(missing("proxy_id"));
    }
    if hello.service.is_empty() {
        return Err(missing("service"));
    }
    if hello.namespace.is_empty() {
        return Err(missing("namespace"));
    }
    let address = hello.inbound_address.parse().map_err(|_| {
        Status::invalid_argument(format!(
            "Hello's inbound_address {:?} is not ip:port",
            hello.inbound_address
        ))
    })?;
    Ok(Workload {
        service: hello.service.clone(),
        namespace: hello.namespace.clone(),
        address,
        labels: hello.labels.clone().into_iter().collect(),
        zone: hello.zone.clone().filter(|zone| !zone.is_empty()),
    })
}

/// One stream's registration; leaving it (dropping this) removes the proxy.
pub(super) struct Registration {
    registry: Arc<Registry>,
    id: String,
    stream: u64,
    replaced: Arc<Notify>,
}

impl Registration {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Resolves when a newer stream registered under the same proxy id.
    pub async fn replaced(&self) {
        self.replaced.notified().await;
    }

    pub fn ack(&self, version: &str) {
        self.registry.update(self, |entry| {
            entry.acked = Some(version.to_owned());
            entry.rejecting = false;
        });
    }

    pub fn nack(&self, version: &str, reason: &str) {
        self.registry.update(self, |entry| {
            entry.last_nack = Some(Rejection {
                version: version.to_owned(),
                reason: reason.to_owned(),
            });
            entry.rejecting = true;
        });
    }

    pub fn certificate(&self, certificate: ProxyCertificate) {
        self.registry.update(self, |entry| {
            entry.certificate = Some(certificate);
        });
    }

    /// A report of the calls this proxy's inbound judged.
    pub fn observed(&self, observed: weft_api::v1::Observed) {
        let service = self.registry.update(self, |entry| {
            (
                entry.workload.namespace.clone(),
                entry.workload.service.clone(),
            )
        });
        if let Some((namespace, service)) = service {
            self.registry
                .observed
                .add(&namespace, &service, observed, SystemTime::now());
        }
    }

    pub fn health(&self, healthy: bool, detail: &str) {
        let flipped = self.registry.update(self, |entry| {
            entry.health_detail = detail.to_owned();
            std::mem::replace(&mut entry.healthy, healthy) != healthy
        });
        if flipped == Some(true) {
            self.registry.endpoints_changed.notify_one();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.remove(self);
    }
}
