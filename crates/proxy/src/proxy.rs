//! State shared by every listener of one proxy process.

use crate::access_log::AccessLog;
use crate::config_error::ConfigError;
use crate::metrics::{Direction, Metrics, RequestMetrics};
use crate::observed::Observations;
use crate::options::ProxyOptions;
use crate::resolve::HostResolver;
use crate::state::{BuildContext, Carried, Snapshot};
use crate::upstream::{ConnectionPolicy, EndpointPool, Security, ALPN_H2, ALPN_HTTP1, ALPN_TCP};
use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use weft_identity::TlsIdentity;
use weft_model::config::ProxyConfig;
use weft_model::config::TracingConfig;

pub struct Proxy {
    pub options: ProxyOptions,
    pub metrics: Metrics,
    pub tls: Option<Arc<TlsIdentity>>,
    /// Built once: rebuilding per connection would defeat session resumption.
    pub tls_acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// This proxy's `source` label: `service.namespace`.
    pub local_label: Arc<str>,
    snapshot: ArcSwap<Snapshot>,
    carried: Mutex<Carried>,
    /// The local app, reached in plain text.
    pub app: Arc<EndpointPool>,
    pub app_connections: ConnectionPolicy,
    inbound_metrics: Mutex<HashMap<Arc<str>, Arc<RequestMetrics>>>,
    /// `--access-log`: the writer lines go to.
    pub access_log: Option<AccessLog>,
    /// Slots for mirror copies in flight (`mirror::MIRRORS_IN_FLIGHT`).
    pub mirrors: Arc<tokio::sync::Semaphore>,
    ready: AtomicBool,
    /// Set once a graceful stop begins: answers carry `x-weft-draining` from then on.
    draining: AtomicBool,
    /// Milliseconds since `epoch` of the last inbound request seen while draining.
    last_request_while_draining: AtomicU64,
    epoch: Instant,
    /// Bumped whenever the certificate in force changes, so the control plane hears of it.
    pub certificate_changed: tokio::sync::watch::Sender<u64>,
    /// The generation of the snapshot in force, so what judged a connection once (its
    /// authorization) can judge it again when the config changes.
    pub config_applied: tokio::sync::watch::Sender<u64>,
    /// Wakes the renewal task early: the control plane signs with a new root.
    pub renew_now: tokio::sync::Notify,
    /// The inbound calls judged since the last report, for `weft policy suggest`; `None`
    /// without a control plane to report to.
    pub observed: Option<Observations>,
    /// `weft tap` streams the control plane opened here.
    pub taps: crate::tap::Taps,
    /// Records and exports spans: from `--trace-collector`, or else the `Mesh`'s tracing.
    pub tracer: arc_swap::ArcSwapOption<crate::trace::Tracer>,
    /// The `Mesh`'s tracing the tracer follows (without the flag), to notice a change.
    mesh_tracing: Mutex<Option<TracingConfig>>,
    /// Resolves the host names of endpoints outside the mesh; its resolvers are also those
    /// the DNS server relays to.
    pub resolver: Arc<HostResolver>,
    /// With `--capture ebpf`: the attached programs, and where redirected connections were
    /// going.
    pub ebpf: std::sync::OnceLock<crate::capture::EbpfCapture>,
}

impl Proxy {
    pub fn new(options: ProxyOptions, tls: Option<Arc<TlsIdentity>>) -> Self {
        let local_label: Arc<str> = Arc::from(format!("{}.{}", options.service, options.namespace));
        let app = Arc::new(EndpointPool::new(options.app.into(), Security::Plain, None));
        let tls_acceptor = tls.as_ref().map(|identity| {
            tokio_rustls::TlsAcceptor::from(
                identity.server_config(&[ALPN_H2, ALPN_HTTP1, ALPN_TCP]),
            )
        });
        let metrics = Metrics::new();
        let app_saturated = metrics.saturated(local_label.clone());
        let access_log = options.access_log.then(|| {
            AccessLog::start(metrics.access_log_dropped.clone())
                .inspect_err(|error| tracing::error!(%error, "cannot start the access log writer; no access log"))
                .ok()
        });
        let observed = options.control_plane.is_some().then(Observations::default);
        let tracer = options.tracing.as_ref().map(|tracing| {
            Arc::new(crate::trace::Tracer::start(
                tracing,
                local_label.to_string(),
                metrics.trace_spans_dropped.clone(),
            ))
        });
        let resolvers = if options.resolvers.is_empty() {
            let own = options.dns.as_ref().map(|dns| dns.listen);
            crate::resolve::system_upstreams(std::path::Path::new("/etc/resolv.conf"), own)
        } else {
            options.resolvers.clone()
        };
        tracing::info!(upstreams = ?resolvers, "resolvers for names outside the mesh");
        Self {
            resolver: Arc::new(HostResolver::new(resolvers)),
            ebpf: std::sync::OnceLock::new(),
            observed,
            tracer: arc_swap::ArcSwapOption::from(tracer),
            mesh_tracing: Mutex::new(None),
            taps: crate::tap::Taps::default(),
            access_log: access_log.flatten(),
            options,
            metrics,
            tls,
            tls_acceptor,
            local_label,
            snapshot: ArcSwap::from_pointee(Snapshot::empty()),
            carried: Mutex::default(),
            app,
            app_connections: ConnectionPolicy {
                limits: Arc::default(),
                connect_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_secs(60),
                saturated: app_saturated,
            },
            inbound_metrics: Mutex::new(HashMap::new()),
            mirrors: Arc::new(tokio::sync::Semaphore::new(
                crate::mirror::MIRRORS_IN_FLIGHT,
            )),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            last_request_while_draining: AtomicU64::new(0),
            epoch: Instant::now(),
            certificate_changed: tokio::sync::watch::Sender::new(0),
            config_applied: tokio::sync::watch::Sender::new(0),
            renew_now: tokio::sync::Notify::new(),
        }
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Builds and swaps in a new configuration. On error nothing changes.
    pub fn apply(&self, config: ProxyConfig) -> Result<u64, ConfigError> {
        let previous = self.snapshot.load_full();
        let generation = previous.generation + 1;
        let version = config.version.clone();
        let tracing = config.tracing.clone();
        let snapshot = Snapshot::build(config, generation, &self.build_context(), &previous)?;
        drop(previous);
        self.snapshot.store(Arc::new(snapshot));
        self.metrics.config_loaded(&version, generation as i64);
        self.ready.store(true, Ordering::Release);
        self.config_applied.send_replace(generation);
        if self.options.tracing.is_none() {
            self.follow_mesh_tracing(tracing);
        }
        Ok(generation)
    }

    /// Starts (or stops, or restarts with new settings) tracing as the `Mesh` says.
    fn follow_mesh_tracing(&self, wanted: Option<TracingConfig>) {
        let mut current = self.mesh_tracing.lock().unwrap_or_else(|e| e.into_inner());
        if *current == wanted {
            return;
        }
        let tracer = wanted.as_ref().map(|tracing| {
            let options = crate::trace::TraceOptions {
                collector: tracing.collector.clone(),
                sample_percent: tracing.sample_percent,
            };
            Arc::new(crate::trace::Tracer::start(
                &options,
                self.local_label.to_string(),
                self.metrics.trace_spans_dropped.clone(),
            ))
        });
        // The old exporter sends what it has queued and ends with its last sender.
        self.tracer.store(tracer);
        *current = wanted;
    }

    /// What building (a part of) a snapshot needs from the proxy.
    pub fn build_context(&self) -> BuildContext<'_> {
        BuildContext {
            metrics: &self.metrics,
            tls: self.tls.as_ref(),
            service: &self.options.service,
            namespace: &self.options.namespace,
            source: self.local_label.clone(),
            carried: &self.carried,
            resolver: &self.resolver,
        }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    pub fn start_draining(&self) {
        self.last_request_while_draining
            .store(self.millis(), Ordering::Release);
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// An inbound request arrived while draining (its caller has not moved away yet).
    pub fn request_while_draining(&self) {
        self.last_request_while_draining
            .store(self.millis(), Ordering::Release);
    }

    /// How long since the last inbound request (or since draining began).
    pub fn quiet_for(&self) -> Duration {
        let last = self.last_request_while_draining.load(Ordering::Acquire);
        Duration::from_millis(self.millis().saturating_sub(last))
    }

    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Inbound request metrics for one calling identity, created on first use.
    pub fn inbound_metrics(&self, source: &Arc<str>) -> Arc<RequestMetrics> {
        let mut known = self
            .inbound_metrics
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        known
            .entry(source.clone())
            .or_insert_with(|| {
                Arc::new(self.metrics.request_metrics(
                    Direction::Inbound,
                    source.clone(),
                    self.local_label.clone(),
                    Arc::from("inbound"),
                ))
            })
            .clone()
    }
}
