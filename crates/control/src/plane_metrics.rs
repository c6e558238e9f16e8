//! The control plane's own gauges on its `GET /metrics`, read from its state when scraped:
//! proxies connected, healthy and in sync, the store's revision and resources, and what its
//! golden-metrics windows and taps hold. With the API's refusal counters beside them, they
//! are what the control-plane dashboard (`deploy/grafana/`) plots.

use crate::discovery::Registry as Proxies;
use crate::store::Store;
use crate::tap::TapHub;
use crate::telemetry::Telemetry;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

pub struct PlaneMetrics {
    proxies: Family<StateLabels, Gauge>,
    revision: Gauge,
    resources: Gauge,
    series: Gauge,
    taps: Gauge,
    sources: Sources,
}

/// Where the numbers come from.
pub struct Sources {
    pub proxies: Arc<Proxies>,
    pub store: Arc<dyn Store>,
    pub telemetry: Arc<Telemetry>,
    pub taps: Arc<TapHub>,
}

impl PlaneMetrics {
    pub fn new(sources: Sources) -> PlaneMetrics {
        PlaneMetrics {
            proxies: Family::default(),
            revision: Gauge::default(),
            resources: Gauge::default(),
            series: Gauge::default(),
            taps: Gauge::default(),
            sources,
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "weft_control_proxies",
            "Proxies connected to this control plane, and of them how many are healthy (endpoints) and in sync (run the latest config)",
            self.proxies.clone(),
        );
        registry.register(
            "weft_control_store_revision",
            "The store's revision: it grows with every change",
            self.revision.clone(),
        );
        registry.register(
            "weft_control_resources",
            "Resources in the store",
            self.resources.clone(),
        );
        registry.register(
            "weft_control_traffic_series",
            "Golden-metrics series kept (see weft stat); at most 20,000",
            self.series.clone(),
        );
        registry.register(
            "weft_control_taps_open",
            "weft tap streams open",
            self.taps.clone(),
        );
    }

    /// Reads the numbers now, before an encode.
    pub fn refresh(&self) {
        let proxies = self.sources.proxies.proxies();
        let count = |keep: fn(&crate::discovery::ProxyInfo) -> bool| {
            proxies.iter().filter(|p| keep(p)).count() as i64
        };
        for (state, value) in [
            ("connected", proxies.len() as i64),
            ("healthy", count(|p| p.healthy)),
            ("in_sync", count(|p| p.in_sync)),
        ] {
            self.proxies
                .get_or_create(&StateLabels { state })
                .set(value);
        }
        let (revision, resources) = {
            let set = self.sources.store.subscribe();
            let set = set.borrow();
            (set.revision, set.resources.len())
        };
        self.revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
        self.resources.set(resources as i64);
        self.series.set(self.sources.telemetry.series() as i64);
        self.taps.set(self.sources.taps.open_count() as i64);
    }
}
