//! Distributed tracing: each proxy continues the W3C trace a request carries (`traceparent`),
//! or starts one, records a span for its hop (CLIENT on the outbound side, SERVER on the
//! inbound side, with the attributes OpenTelemetry's HTTP conventions name) and exports the
//! sampled spans over OTLP/gRPC to a collector (`--trace-collector`).
//!
//! The sampling decision is made once, where the trace starts (`--trace-sample-percent`),
//! and travels in `traceparent`'s flags, so every hop of a trace agrees (a trace not sampled
//! passes on with its `traceparent` as it came). `tracestate` and
//! B3 headers pass through untouched. Spans wait in a bounded queue for the exporter, which
//! sends them in batches; when the collector is slow or away, spans beyond the queue are
//! dropped and counted (`weft_trace_spans_dropped_total`), never waited for.

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prometheus_client::metrics::counter::Counter;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Spans waiting for the exporter.
const QUEUE: usize = 2048;
/// Spans sent in one export, at most; and how long a partial batch waits.
const BATCH: usize = 512;
const BATCH_WAIT: Duration = Duration::from_secs(1);

/// `--trace-collector` and `--trace-sample-percent`.
#[derive(Clone, Debug)]
pub struct TraceOptions {
    /// `http://HOST:PORT` of an OTLP/gRPC collector.
    pub collector: String,
    /// 0-100: the share of traces started here that are recorded.
    pub sample_percent: f64,
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A trace context, from `traceparent` or new.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Context {
    pub trace_id: [u8; 16],
    /// The span this hop's span is a child of; `None` at the root.
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

/// This hop's span, begun.
pub struct Hop {
    context: Context,
    span_id: [u8; 8],
    started: SystemTime,
}

pub struct Tracer {
    sample_percent: f64,
    spans: mpsc::Sender<Span>,
    dropped: Counter,
}

impl Tracer {
    /// Starts the exporter on the current runtime.
    pub fn start(options: &TraceOptions, service: String, dropped: Counter) -> Tracer {
        let (spans, queued) = mpsc::channel(QUEUE);
        tokio::spawn(export(
            options.collector.clone(),
            service,
            queued,
            dropped.clone(),
        ));
        Tracer {
            sample_percent: options.sample_percent,
            spans,
            dropped,
        }
    }

    /// Begins this hop's span for a request with `headers`, and rewrites its `traceparent`
    /// so the next hop is this span's child (a new trace when it carries none or a bad one).
    /// `None` when the trace is not sampled (the caller keeps nothing for a span): a new
    /// trace's header is written all the same, so the hops after this one know.
    pub fn begin(&self, headers: &mut HeaderMap) -> Option<Hop> {
        let incoming = headers
            .get(&TRACEPARENT)
            .and_then(|v| Traceparent::read(v.as_bytes()));
        let context = match incoming {
            // Not sampled upstream: passed on as it came. No hop of it is recorded, so a new
            // parent id would name a span nobody has either; the decision travels all the same.
            // Most requests end here: the ids are checked, never decoded.
            Some(incoming) if !incoming.sampled() => return None,
            Some(incoming) => incoming.context(),
            None => Context {
                trace_id: random_id(),
                parent: None,
                sampled: fastrand::f64() * 100.0 < self.sample_percent,
            },
        };
        let span_id: [u8; 8] = random_id();
        // On every request, sampled or not: written in place, one allocation (the header).
        let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&context.trace_id, &mut value[3..35]);
        hex_into(&span_id, &mut value[36..52]);
        if context.sampled {
            value[54] = b'1';
        }
        if let Ok(mut value) = HeaderValue::from_bytes(&value) {
            // A value new on every request: marked so HTTP/2's header compression sends it
            // as a literal rather than adding it to (and evicting from) both ends' tables,
            // which cost more than all the rest of tracing an unsampled request.
            value.set_sensitive(true);
            headers.insert(TRACEPARENT, value);
        }
        context.sampled.then(|| Hop {
            context,
            span_id,
            started: SystemTime::now(),
        })
    }

    /// Ends `hop` and queues its span; dropped and counted if the queue is full.
    pub fn end(
        &self,
        hop: Hop,
        outbound: bool,
        attributes: Vec<KeyValue>,
        name: String,
        status: u16,
    ) {
        let nanos = |at: SystemTime| {
            at.duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        };
        // A server span fails on 5xx; a client span on 4xx too (OpenTelemetry HTTP conventions).
        let failed = status >= 500 || (outbound && status >= 400);
        let span = Span {
            trace_id: hop.context.trace_id.to_vec(),
            span_id: hop.span_id.to_vec(),
            parent_span_id: hop.context.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name,
            kind: if outbound {
                span::SpanKind::Client as i32
            } else {
                span::SpanKind::Server as i32
            },
            start_time_unix_nano: nanos(hop.started),
            end_time_unix_nano: nanos(SystemTime::now()),
            attributes,
            status: Some(Status {
                code: if failed {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Unset as i32
                },
                message: String::new(),
            }),
            ..Span::default()
        };
        if self.spans.try_send(span).is_err() {
            self.dropped.inc();
        }
    }
}

/// A string attribute.
pub fn text(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}

/// A well-formed `traceparent`, version 00: `00-<32 hex trace id>-<16 hex parent id>-<2 hex
/// flags>`, lowercase hex as the W3C spec has it, neither id all zeros. Anything else is no
/// context (a new trace starts). Checked in place at fixed offsets, since it runs on every
/// request that carries one; the ids are decoded only for a sampled trace.
pub struct Traceparent<'a>(&'a [u8; 55]);

impl<'a> Traceparent<'a> {
    pub fn read(value: &'a [u8]) -> Option<Self> {
        let value: &[u8; 55] = value.try_into().ok()?;
        if &value[..3] != b"00-" || value[35] != b'-' || value[52] != b'-' {
            return None;
        }
        let (trace_id, parent, flags) = (&value[3..35], &value[36..52], &value[53..]);
        let not_hex = [trace_id, parent, flags]
            .iter()
            .flat_map(|digits| digits.iter())
            .fold(0, |bad, &digit| bad | HEX_VALUE[usize::from(digit)]);
        let all_zeros = |digits: &[u8]| digits.iter().all(|&digit| digit == b'0');
        if not_hex & 0xf0 != 0 || all_zeros(trace_id) || all_zeros(parent) {
            return None;
        }
        Some(Self(value))
    }

    pub fn sampled(&self) -> bool {
        HEX_VALUE[usize::from(self.0[54])] & 1 == 1
    }

    pub fn context(&self) -> Context {
        Context {
            trace_id: unhex(&self.0[3..35]),
            parent: Some(unhex(&self.0[36..52])),
            sampled: self.sampled(),
        }
    }
}

/// Each byte's value as a lowercase hex digit, or 0xff when it is not one: one lookup and
/// no branch per digit.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut digit = 0;
    while digit < 16 {
        table[b"0123456789abcdef"[digit] as usize] = digit as u8;
        digit += 1;
    }
    table
};

/// A random id, never all zeros (which means "none"): one draw from the generator, not one
/// per byte (this runs on every request that starts a trace).
fn random_id<const N: usize>() -> [u8; N] {
    const { assert!(N <= 16, "ids are at most 16 bytes") };
    loop {
        let draw = fastrand::u128(..).to_le_bytes();
        let mut id = [0u8; N];
        id.copy_from_slice(&draw[..N]);
        if id != [0; N] {
            return id;
        }
    }
}

/// Lowercase hex of `bytes` into `out` (twice as long).
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

#[cfg(test)]
fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    hex_into(bytes, &mut out);
    String::from_utf8(out).expect("hex is ASCII")
}

/// `N` bytes from `2 * N` digits that `Traceparent::read` checked are lowercase hex.
fn unhex<const N: usize>(digits: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = HEX_VALUE[usize::from(pair[0])] << 4 | HEX_VALUE[usize::from(pair[1])];
    }
    out
}

/// Sends queued spans to `collector` in batches until the proxy exits. A batch the
/// collector refuses (or can't be reached for) is dropped and counted, not retried:
/// tracing must never hold the data path's memory.
async fn export(
    collector: String,
    service: String,
    mut queued: mpsc::Receiver<Span>,
    dropped: Counter,
) {
    let channel = match tonic::transport::Endpoint::from_shared(collector.clone()) {
        Ok(endpoint) => endpoint
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy(),
        Err(error) => {
            tracing::error!(%collector, %error, "--trace-collector is not a URL; spans are dropped");
            while let Some(_span) = queued.recv().await {
                dropped.inc();
            }
            return;
        }
    };
    let mut client = TraceServiceClient::new(channel);
    let resource = Resource {
        attributes: vec![text("service.name", service)],
        ..Resource::default()
    };
    let scope = InstrumentationScope {
        name: "weft-proxy".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    };
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let Some(first) = queued.recv().await else {
            return;
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + BATCH_WAIT;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, queued.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope.clone()),
                    spans: std::mem::take(&mut batch),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        if let Err(error) = client.export(request).await {
            tracing::debug!(%collector, %error, "exporting spans failed; dropped");
            dropped.inc_by(count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_is_read_strictly() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = Traceparent::read(good).unwrap().context();
        assert_eq!(hex(&context.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            context.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(context.sampled);
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!Traceparent::read(unsampled).unwrap().sampled());
        for bad in [
            &b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"[..],
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902zz-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            b"00+4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0F",
            b"00-4bf92f3577b34da6a3ce929d0e0e47\xff6-00f067aa0ba902b7-01",
        ] {
            assert!(
                Traceparent::read(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
