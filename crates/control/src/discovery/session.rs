//! One proxy's stream: its Hello registers it, its answers are recorded, and every new
//! generation is sent to it, as endpoints-only updates when the proxy runs (or is about to
//! run) their base and as a full config otherwise.
//!
//! Each session reads the latest generation from a `watch` channel, so a slow proxy skips
//! the generations it had no time for instead of queueing them, and never holds up others.

use super::publisher::{Generation, Publication};
use super::registry::{ProxyCertificate, Registration, Registry};
use crate::transport::Peer;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::{Status, Streaming};
use weft_api::v1::proxy_message::Message;
use weft_api::v1::{ControlMessage, Hello, ProxyMessage};
use weft_model::config::TrustConfig;

/// A proxy that opens a stream and says nothing is dropped after this long.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) type Outbound = mpsc::Sender<Result<ControlMessage, Status>>;

/// What every session shares.
#[derive(Clone)]
pub(super) struct Shared {
    pub registry: Arc<Registry>,
    pub generations: watch::Receiver<Option<Arc<Publication>>>,
    /// Becomes true when the server shuts down: streams end so it can finish.
    pub closing: watch::Receiver<bool>,
    /// Until then, proxies that already run a config are not sent a new one (see
    /// `DiscoveryOptions::warmup`).
    pub warmup_until: Instant,
    /// The CA's trust bundle, to tell which root a proxy's certificate comes from.
    pub trust: Option<watch::Receiver<TrustConfig>>,
    /// Where the authorization decisions proxies report are written.
    pub audit: Option<Arc<super::decisions::AuditedDecisions>>,
    /// Where traffic summaries go.
    pub telemetry: Option<Arc<crate::telemetry::Telemetry>>,
    /// The open taps, opened in the proxies they are for.
    pub taps: Option<Arc<crate::tap::TapHub>>,
}

/// Whether the connection may register `hello`'s workload. Over TLS a proxy proves who it
/// is with the certificate the control plane issued it, and registers only as that
/// workload; plain text (accepted from loopback only, unless the operator allows more) is
/// not authenticated.
fn authorize(peer: Option<&Peer>, hello: &Hello) -> Result<(), Status> {
    let Some(peer) = peer else {
        return Ok(());
    };
    match &peer.identity {
        Some(id) if id.service() == hello.service && id.namespace() == hello.namespace => Ok(()),
        Some(id) => Err(Status::permission_denied(format!(
            "this proxy's certificate names {id}; it cannot register as service {} in namespace {}",
            hello.service, hello.namespace
        ))),
        None if peer.tls => Err(Status::unauthenticated(
            "over TLS a proxy registers with its certificate: get one with a join token first \
             (weft proxy --token-file)",
        )),
        None => Ok(()),
    }
}

/// Why `peer` may no longer be served, if `trust` revokes its identity or certificate.
fn revoked(peer: Option<&Peer>, trust: &TrustConfig) -> Option<Status> {
    let peer = peer?;
    let identity = peer.identity.as_ref()?.to_string();
    let by_identity = trust.revoked_identities.contains(&identity);
    let by_certificate = peer
        .certificate_sha256
        .as_ref()
        .is_some_and(|sha| trust.revoked_certificates.contains(sha));
    (by_identity || by_certificate).then(|| {
        Status::permission_denied(format!(
            "the {} of {identity} was revoked; an operator can restore it (`weft identity restore`) or issue a new join token",
            if by_identity { "identity" } else { "certificate" }
        ))
    })
}

/// A reported certificate chain, summarized: its leaf's identity and expiry, and which root
/// of `bundle` it chains to.
fn describe(chain_pem: &str, bundle: Option<&str>) -> Option<ProxyCertificate> {
    let leaf = weft_identity::parse_pem(chain_pem).into_iter().next()?;
    let summary = weft_identity::CertSummary::of(&leaf)?;
    Some(ProxyCertificate {
        spiffe_id: summary.spiffe_id,
        sha256: weft_identity::fingerprint(&leaf),
        not_after: summary.not_after,
        root: bundle.and_then(|bundle| weft_identity::issuing_root(chain_pem, bundle)),
    })
}

pub(super) async fn run(
    shared: Shared,
    peer: Option<Peer>,
    mut inbound: Streaming<ProxyMessage>,
    out: Outbound,
) {
    let hello = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(ProxyMessage {
            message: Some(Message::Hello(hello)),
        }))) => hello,
        Ok(Ok(Some(_))) => {
            let status = Status::invalid_argument("the first message must be Hello");
            let _ = out.send(Err(status)).await;
            return;
        }
        // The proxy went away before saying anything.
        Ok(Ok(None) | Err(_)) => return,
        Err(_) => {
            let status = Status::deadline_exceeded("no Hello within 10 s");
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    let revocation = shared
        .trust
        .as_ref()
        .and_then(|trust| revoked(peer.as_ref(), &trust.borrow()));
    if let Some(status) = revocation.map_or_else(|| authorize(peer.as_ref(), &hello).err(), Some) {
        tracing::warn!(proxy = %hello.proxy_id, reason = %status.message(), "refused a proxy");
        let _ = out.send(Err(status)).await;
        return;
    }
    let registration = match shared.registry.register(&hello) {
        Ok(registration) => registration,
        Err(status) => {
            let _ = out.send(Err(status)).await;
            return;
        }
    };
    tracing::info!(
        proxy = %hello.proxy_id,
        service = %hello.service,
        namespace = %hello.namespace,
        address = %hello.inbound_address,
        "proxy connected"
    );
    let mut session = Session::new(&hello, registration, out);
    let end = session.serve(shared, peer, inbound).await;
    match end {
        End::Closed => tracing::info!(proxy = %hello.proxy_id, "proxy disconnected"),
        End::Status(status) => {
            tracing::info!(proxy = %hello.proxy_id, reason = %status.message(), "ending proxy stream");
            let _ = session.out.send(Err(status)).await;
        }
    }
}

enum End {
    /// The proxy closed or broke the stream.
    Closed,
    /// The control plane ends it, telling the proxy why.
    Status(Status),
}

struct Session {
    registration: Registration,
    /// `(namespace, service)`: which of a publication's generations this proxy is sent.
    workload: (String, String),
    out: Outbound,
    /// The version the proxy runs, as far as its answers tell.
    running: Option<String>,
    /// What was sent and not yet answered, oldest first: the proxy answers every message
    /// (a message sent in parts once), in order.
    in_flight: VecDeque<Sent>,
    /// The last full config the proxy refused: not worth sending it again.
    refused: Option<String>,
    /// A generation was held back until the proxy answers what is in flight.
    deferred: bool,
    /// The taps opened in this proxy.
    taps: std::collections::HashSet<u64>,
}

struct Sent {
    version: String,
    /// An endpoints-only update, which applies only on top of its base.
    update: bool,
}

impl Session {
    fn new(hello: &Hello, registration: Registration, out: Outbound) -> Self {
        let running = (!hello.running_version.is_empty()).then(|| hello.running_version.clone());
        Self {
            registration,
            workload: (hello.namespace.clone(), hello.service.clone()),
            out,
            running,
            in_flight: VecDeque::new(),
            refused: None,
            deferred: false,
            taps: std::collections::HashSet::new(),
        }
    }

    /// What this proxy is sent of `publication`: its scope's generation, or the whole
    /// mesh's.
    fn generation(&self, publication: Option<&Publication>) -> Option<Arc<Generation>> {
        let (namespace, service) = &self.workload;
        publication.map(|p| p.for_workload(namespace, service).clone())
    }

    /// The version the proxy will run once it has applied everything sent.
    fn expected(&self) -> Option<&str> {
        self.in_flight
            .back()
            .map(|sent| sent.version.as_str())
            .or(self.running.as_deref())
    }

    async fn serve(
        &mut self,
        mut shared: Shared,
        peer: Option<Peer>,
        mut inbound: Streaming<ProxyMessage>,
    ) -> End {
        let mut trust = shared.trust.clone();
        let mut taps = shared.taps.as_ref().map(|hub| hub.watch());
        if let Some(open) = taps.as_mut().map(|taps| taps.borrow_and_update().clone()) {
            if !self.sync_taps(&open).await {
                return End::Closed;
            }
        }
        // A proxy that already runs a config, connecting while the control plane's registry
        // is still refilling after a restart, would be sent a view missing the endpoints of
        // proxies that have not reconnected yet: it keeps what it has until the warm-up ends.
        let mut held = self.running.is_some() && Instant::now() < shared.warmup_until;
        let current = self.generation(shared.generations.borrow_and_update().as_deref());
        if let (false, Some(generation)) = (held, current) {
            if !self.push(&generation, false).await {
                return End::Closed;
            }
        }
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if let Err(end) = self.answer(message, &shared).await {
                            return end;
                        }
                    }
                    Ok(None) | Err(_) => return End::Closed,
                },
                changed = shared.generations.changed(), if !held => {
                    if changed.is_err() {
                        return End::Status(Status::unavailable("the control plane is shutting down; reconnect"));
                    }
                    let generation = self.generation(shared.generations.borrow_and_update().as_deref());
                    if let Some(generation) = generation {
                        if !self.push(&generation, false).await {
                            return End::Closed;
                        }
                    }
                }
                () = tokio::time::sleep_until(shared.warmup_until), if held => {
                    held = false;
                    let generation = self.generation(shared.generations.borrow_and_update().as_deref());
                    if let Some(generation) = generation {
                        if !self.push(&generation, false).await {
                            return End::Closed;
                        }
                    }
                }
                changed = async { trust.as_mut()?.changed().await.ok() }, if trust.is_some() => {
                    match (changed, &trust) {
                        (Some(()), Some(trust)) => {
                            if let Some(status) = revoked(peer.as_ref(), &trust.borrow()) {
                                return End::Status(status);
                            }
                        }
                        // The CA is gone: the server is shutting down.
                        _ => trust = None,
                    }
                }
                changed = async { taps.as_mut()?.changed().await.ok() }, if taps.is_some() => {
                    let open = match (changed, &mut taps) {
                        (Some(()), Some(taps)) => taps.borrow_and_update().clone(),
                        _ => {
                            taps = None;
                            continue;
                        }
                    };
                    if !self.sync_taps(&open).await {
                        return End::Closed;
                    }
                }
                () = self.registration.replaced() => {
                    return End::Status(Status::aborted("this proxy id connected again on a newer stream"));
                }
                _ = shared.closing.changed() => {
                    return End::Status(Status::unavailable("the control plane is shutting down; reconnect"));
                }
            }
        }
    }

    /// Opens in this proxy the taps of `open` that are for its workload, and closes the ones
    /// no longer open. False if the stream is gone.
    async fn sync_taps(&mut self, open: &[crate::tap::TapSpec]) -> bool {
        use weft_api::v1::control_message::Message as Sent;
        let (namespace, service) = &self.workload;
        let mine: std::collections::HashSet<u64> = open
            .iter()
            .filter(|spec| spec.namespace == *namespace && spec.service == *service)
            .map(|spec| spec.start.id)
            .collect();
        let mut messages = Vec::new();
        for spec in open.iter().filter(|spec| mine.contains(&spec.start.id)) {
            if !self.taps.contains(&spec.start.id) {
                messages.push(Sent::TapStart(spec.start.clone()));
            }
        }
        for id in self.taps.difference(&mine) {
            messages.push(Sent::TapStop(weft_api::v1::TapStop { id: *id }));
        }
        self.taps = mine;
        for message in messages {
            let message = ControlMessage {
                message: Some(message),
            };
            if self.out.send(Ok(message)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Handles one message from the proxy.
    async fn answer(&mut self, message: ProxyMessage, shared: &Shared) -> Result<(), End> {
        match message.message {
            Some(Message::Ack(ack)) => {
                self.in_flight.pop_front();
                self.registration.ack(&ack.version);
                self.running = Some(ack.version);
                self.resume_deferred(shared).await?;
            }
            Some(Message::Nack(nack)) => {
                let update = self.in_flight.pop_front().is_some_and(|sent| sent.update);
                if update {
                    // Most likely the proxy was not on the update's base after all: a full
                    // config settles it (and every update sent after this one, which it
                    // will refuse too), and its answer to that is the one worth recording.
                    tracing::debug!(proxy = %self.registration.id(), reason = %nack.reason, "endpoints update refused; sending the full config");
                    let full_in_flight = self.in_flight.iter().any(|sent| !sent.update);
                    let current = self.generation(shared.generations.borrow().as_deref());
                    if let (false, Some(generation)) = (full_in_flight, current) {
                        if !self.push(&generation, true).await {
                            return Err(End::Closed);
                        }
                    }
                } else {
                    tracing::warn!(proxy = %self.registration.id(), version = %nack.version, reason = %nack.reason, "proxy rejected its config");
                    self.registration.nack(&nack.version, &nack.reason);
                    self.refused = Some(nack.version);
                }
                self.resume_deferred(shared).await?;
            }
            Some(Message::Health(health)) => {
                self.registration.health(health.healthy, &health.detail);
            }
            Some(Message::Observed(observed)) => {
                if let Some(audited) = &shared.audit {
                    audited.report(self.registration.id(), &observed);
                }
                self.registration.observed(observed);
            }
            Some(Message::TapEvents(batch)) => {
                // Only for a tap opened here: a proxy can't feed another Service's tap.
                if let (Some(hub), true) = (&shared.taps, self.taps.contains(&batch.id)) {
                    hub.deliver(batch.id, batch.events, batch.dropped);
                }
            }
            Some(Message::Traffic(traffic)) => {
                if let Some(telemetry) = &shared.telemetry {
                    let (namespace, service) = &self.workload;
                    let service = format!("{service}.{namespace}");
                    telemetry.record(self.registration.id(), &service, &traffic);
                }
            }
            Some(Message::Certificate(certificate)) => {
                let bundle = shared.trust.as_ref().map(|t| t.borrow().bundle_pem.clone());
                match describe(&certificate.chain_pem, bundle.as_deref()) {
                    Some(described) => self.registration.certificate(described),
                    None => {
                        tracing::warn!(proxy = %self.registration.id(), "the proxy reported a certificate that does not parse")
                    }
                }
            }
            Some(Message::Hello(_)) => {
                return Err(End::Status(Status::invalid_argument(
                    "Hello may be sent only once per stream",
                )));
            }
            None => {
                return Err(End::Status(Status::invalid_argument(
                    "empty message: expected Ack, Nack or Health",
                )));
            }
        }
        Ok(())
    }

    /// Sends the generation held back for the proxy's answers, once it has given them all.
    async fn resume_deferred(&mut self, shared: &Shared) -> Result<(), End> {
        if !self.deferred || !self.in_flight.is_empty() {
            return Ok(());
        }
        self.deferred = false;
        let current = self.generation(shared.generations.borrow().as_deref());
        match current {
            Some(generation) if !self.push(&generation, false).await => Err(End::Closed),
            _ => Ok(()),
        }
    }

    /// Sends `generation` unless the proxy will run it already: the endpoints-only updates
    /// from what the proxy will run when it has them all and they are smaller, else the full
    /// config (always when `full_only`). False if the stream is gone.
    async fn push(&mut self, generation: &Generation, full_only: bool) -> bool {
        if full_only {
            if self.refused.as_deref() == Some(generation.version.as_str()) {
                return true;
            }
        } else if self.expected() == Some(generation.version.as_str()) {
            return true;
        }
        let catch_up = match self.expected() {
            Some(expected) if !full_only => generation
                .updates
                .iter()
                // Versions are content hashes, so one can recur (an endpoint that leaves and
                // returns): the latest update from it is the shortest way to the current one.
                .rposition(|update| update.base_version == expected)
                .map(|from| &generation.updates[from..])
                .filter(|updates| {
                    updates.iter().map(|u| u.bytes).sum::<usize>() < generation.full_bytes
                }),
            _ => None,
        };
        match catch_up {
            Some(updates) => {
                for update in updates {
                    if !self.send(&update.messages, &update.version, true).await {
                        return false;
                    }
                }
                true
            }
            // A full config while the proxy still has something to answer: wait for the
            // answer, then catch up from what it runs. Under churn (a fleet joining at once)
            // a slow proxy would otherwise be sent one full config per generation it falls
            // behind, each megabytes in a large mesh.
            None if !full_only && !self.in_flight.is_empty() => {
                self.deferred = true;
                true
            }
            None => {
                self.send(&generation.full, &generation.version, false)
                    .await
            }
        }
    }

    async fn send(&mut self, messages: &[ControlMessage], version: &str, update: bool) -> bool {
        self.in_flight.push_back(Sent {
            version: version.to_owned(),
            update,
        });
        for message in messages {
            if self.out.send(Ok(message.clone())).await.is_err() {
                return false;
            }
        }
        true
    }
}
