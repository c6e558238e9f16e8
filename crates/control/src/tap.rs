//! `weft tap`: a live stream of the requests one Service's proxies carry. A client opens a
//! tap (`GET /api/v1/tap`); every session of a proxy of that Service sends it `TapStart`,
//! proxies send matching requests back in batches, and the hub passes them, at most the
//! tap's rate a second, to the client as JSON lines. When the client leaves (or the control
//! plane stops) the tap closes and the sessions send `TapStop`: a closed tap costs the
//! proxies nothing. At most [`MAX_OPEN`] taps are open at once; each holds a bounded queue,
//! and events beyond the rate or the queue are dropped and counted.

use crate::api::ApiError;
use crate::server::Shutdown;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use prost::Message as _;
use serde::Deserialize;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};
use weft_api::v1::{TapEvent, TapStart};

/// Taps open at once, mesh-wide.
pub const MAX_OPEN: usize = 16;
/// The rate a tap gets unless it asks; the most it may ask.
const DEFAULT_RATE: u32 = 100;
const MAX_RATE: u32 = 1000;
/// Events waiting for a slow client, per tap.
const QUEUE: usize = 1000;
/// A line the client ignores, so a client that left is noticed when nothing is tapped.
const HEARTBEAT: Duration = Duration::from_secs(2);

/// One open tap: whose proxies, and what they should send.
#[derive(Clone, Debug)]
pub struct TapSpec {
    pub namespace: String,
    pub service: String,
    pub start: TapStart,
}

struct Sink {
    events: mpsc::Sender<TapEvent>,
    max_rps: u32,
    second: u64,
    in_second: u32,
    dropped: Arc<AtomicU64>,
}

pub struct TapHub {
    next_id: AtomicU64,
    open: watch::Sender<Arc<Vec<TapSpec>>>,
    sinks: Mutex<HashMap<u64, Sink>>,
    shutdown: Shutdown,
}

/// A client's end of a tap; dropping it closes the tap.
struct TapStream {
    id: u64,
    events: mpsc::Receiver<TapEvent>,
    dropped: Arc<AtomicU64>,
    hub: Arc<TapHub>,
}

impl Drop for TapStream {
    fn drop(&mut self) {
        self.hub.close(self.id);
    }
}

impl TapHub {
    pub fn new(shutdown: Shutdown) -> Arc<TapHub> {
        Arc::new(TapHub {
            next_id: AtomicU64::new(1),
            open: watch::Sender::new(Arc::new(Vec::new())),
            sinks: Mutex::new(HashMap::new()),
            shutdown,
        })
    }

    /// How many taps are open.
    pub fn open_count(&self) -> usize {
        self.open.borrow().len()
    }

    /// The open taps, now and whenever they change.
    pub fn watch(&self) -> watch::Receiver<Arc<Vec<TapSpec>>> {
        self.open.subscribe()
    }

    fn open(self: &Arc<Self>, mut spec: TapSpec) -> Result<TapStream, ApiError> {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        if sinks.len() >= MAX_OPEN {
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "{MAX_OPEN} taps are open already; close one (end its `weft tap`) and \
                     try again"
                ),
            ));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        spec.start.id = id;
        let (events, receiver) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        sinks.insert(
            id,
            Sink {
                events,
                max_rps: spec.start.max_rps,
                second: 0,
                in_second: 0,
                dropped: dropped.clone(),
            },
        );
        drop(sinks);
        self.open.send_modify(|open| {
            let mut next = (**open).clone();
            next.push(spec);
            *open = Arc::new(next);
        });
        Ok(TapStream {
            id,
            events: receiver,
            dropped,
            hub: self.clone(),
        })
    }

    fn close(&self, id: u64) {
        self.sinks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        self.open.send_modify(|open| {
            let next: Vec<TapSpec> = open.iter().filter(|s| s.start.id != id).cloned().collect();
            *open = Arc::new(next);
        });
    }

    /// Events a proxy sent for tap `id` (which its session opened there), at most the
    /// tap's rate a second across all its proxies.
    pub fn deliver(&self, id: u64, events: Vec<Bytes>, dropped_by_proxy: u64) {
        let mut sinks = self.sinks.lock().unwrap_or_else(|e| e.into_inner());
        let Some(sink) = sinks.get_mut(&id) else {
            return;
        };
        sink.dropped.fetch_add(dropped_by_proxy, Ordering::Relaxed);
        let second = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for event in events {
            if sink.second != second {
                sink.second = second;
                sink.in_second = 0;
            }
            // Read only within the rate; one that does not read (a broken proxy) is dropped.
            let event = (sink.in_second < sink.max_rps)
                .then(|| TapEvent::decode(event).ok())
                .flatten();
            if event.is_none_or(|event| sink.events.try_send(event).is_err()) {
                sink.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            sink.in_second += 1;
        }
    }
}

pub fn router(hub: Arc<TapHub>) -> Router {
    Router::new().route("/api/v1/tap", get(tap)).with_state(hub)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TapQuery {
    service: String,
    namespace: Option<String>,
    path: Option<String>,
    method: Option<String>,
    status: Option<u16>,
    max_rps: Option<u32>,
}

/// `GET /api/v1/tap?service=NAME[&namespace=NS&path=PREFIX&method=M&status=S&maxRps=N]`:
/// JSON lines, one per request, until the client leaves; an empty line every 2 s when
/// nothing comes.
async fn tap(
    State(hub): State<Arc<TapHub>>,
    query: Result<Query<TapQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "{}; the parameters are service (required), namespace, path (a prefix), method, \
             status and maxRps",
            rejection.body_text()
        ))
    })?;
    let max_rps = query.max_rps.unwrap_or(DEFAULT_RATE);
    if !(1..=MAX_RATE).contains(&max_rps) {
        return Err(ApiError::bad_request(format!(
            "maxRps {max_rps}: use 1 to {MAX_RATE}"
        )));
    }
    let spec = TapSpec {
        namespace: query.namespace.unwrap_or_else(|| "default".to_owned()),
        service: query.service,
        start: TapStart {
            id: 0,
            path_prefix: query.path.unwrap_or_default(),
            method: query.method.unwrap_or_default().to_ascii_uppercase(),
            status: query.status.map_or(0, u32::from),
            max_rps,
        },
    };
    let stream = hub.open(spec)?;
    let shutdown = hub.shutdown.clone();
    let lines = futures_util::stream::unfold(
        (stream, Box::pin(shutdown.wait())),
        |(mut stream, mut shutdown)| async move {
            let line = tokio::select! {
                event = stream.events.recv() => match event {
                    Some(event) => line(&event, stream.dropped.swap(0, Ordering::Relaxed)),
                    None => return None,
                },
                () = tokio::time::sleep(HEARTBEAT) => "\n".to_owned(),
                () = &mut shutdown => return None,
            };
            Some((Ok::<_, Infallible>(Bytes::from(line)), (stream, shutdown)))
        },
    );
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::from_stream(lines))
        .expect("a static response builds"))
}

/// One event as a JSON line; `dropped` events before it (beyond the rate, or a slow client).
fn line(event: &TapEvent, dropped: u64) -> String {
    let time =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(event.unix_millis) * 1_000_000)
            .ok()
            .and_then(|at| {
                at.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
    let mut value = json!({
        "time": time,
        "direction": if event.inbound { "inbound" } else { "outbound" },
        "source": event.source,
        "destination": event.destination,
        "method": event.method,
        "path": event.path,
        "status": event.status,
        "latencyMs": event.latency_micros as f64 / 1000.0,
    });
    if !event.route.is_empty() {
        value["route"] = json!(event.route);
    }
    if !event.authz_decision.is_empty() {
        value["authz"] = json!({"decision": event.authz_decision, "policy": event.authz_policy});
    }
    if !event.upstream.is_empty() {
        value["upstream"] = json!(event.upstream);
    }
    if dropped > 0 {
        value["droppedBefore"] = json!(dropped);
    }
    format!("{value}\n")
}
