//! `weft tap`: the control plane opens a tap in this proxy (`TapStart`), and every request
//! it carries that matches the tap's filter is sent back as a `TapEvent`, at most the tap's
//! rate a second, until `TapStop` (or the stream ends).
//!
//! With no tap open a request pays one relaxed atomic load. With taps open, a request is
//! checked against each filter on borrowed data, and an event is built only for a match
//! within the rate; at most [`MAX_BUFFERED`] events wait for the next batch, the rest are
//! dropped and counted, so a tap can't grow the proxy or slow its requests.

use bytes::{BufMut, Bytes, BytesMut};
use prost::encoding::{encode_key, encode_varint, WireType};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};
use weft_api::v1::{TapEvents, TapStart};

/// Taps open at once in one proxy.
pub const MAX_TAPS: usize = 16;
/// Events waiting for a batch, per tap.
const MAX_BUFFERED: usize = 1000;
/// The highest rate a tap may ask for.
pub const MAX_RATE: u32 = 1000;

#[derive(Default)]
pub struct Taps {
    open: AtomicBool,
    taps: Mutex<Vec<OpenTap>>,
}

struct OpenTap {
    start: TapStart,
    /// The second (since the epoch) the rate is counted in, and the events in it.
    second: u64,
    in_second: u32,
    /// Encoded `TapEvent`s, each a view of `written`.
    events: Vec<Bytes>,
    written: BytesMut,
    dropped: u64,
}

/// `exchange` as an encoded `weft.v1.TapEvent` (proto3: fields at their default left out),
/// appended to `out`. The tags are the proto's; `an_event_is_written_as_the_proto_reads_it`
/// checks them against the generated type.
fn write_event(exchange: &Exchange, unix_millis: i64, out: &mut BytesMut) {
    fn number(tag: u32, value: u64, out: &mut BytesMut) {
        if value != 0 {
            encode_key(tag, WireType::Varint, out);
            encode_varint(value, out);
        }
    }
    fn text(tag: u32, value: &[u8], out: &mut BytesMut) {
        if !value.is_empty() {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(value.len() as u64, out);
            out.put_slice(value);
        }
    }
    // An int64 is sent as its two's complement: a time before 1970 is not one a proxy sees.
    number(1, unix_millis as u64, out);
    number(2, u64::from(exchange.inbound), out);
    text(3, exchange.source.as_bytes(), out);
    text(4, exchange.destination.as_bytes(), out);
    text(5, exchange.method.as_bytes(), out);
    text(6, exchange.path.as_bytes(), out);
    number(7, u64::from(exchange.status), out);
    number(8, exchange.latency_micros, out);
    text(9, exchange.route.as_bytes(), out);
    let (decision, policy) = exchange.authz.unwrap_or(("", ""));
    text(10, decision.as_bytes(), out);
    text(11, policy.as_bytes(), out);
    if let Some(upstream) = &exchange.upstream {
        // Formatted on the stack: an IPv6 address and port, or a host name (at most 253
        // bytes) and port, fits.
        let mut address = [0u8; 264];
        let mut cursor = std::io::Cursor::new(&mut address[..]);
        if std::io::Write::write_fmt(&mut cursor, format_args!("{upstream}")).is_ok() {
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            text(12, &address[..len], out);
        }
    }
}

/// A latency as a tap event carries it.
pub fn micros(elapsed: std::time::Duration) -> u64 {
    u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX)
}

/// What a request must keep for the taps until its answer: only taken when a tap is open.
pub struct Tapped {
    /// A standard method is a constant: no allocation.
    pub method: http::Method,
    pub path: String,
}

impl Tapped {
    pub fn of<B>(taps: &Taps, request: &http::Request<B>) -> Option<Tapped> {
        taps.is_open().then(|| Tapped {
            method: request.method().clone(),
            path: request.uri().path().to_owned(),
        })
    }
}

/// A request as a tap sees it, borrowed until it matches.
pub struct Exchange<'a> {
    pub inbound: bool,
    pub source: &'a str,
    pub destination: &'a str,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub latency_micros: u64,
    pub route: &'a str,
    pub authz: Option<(&'a str, &'a str)>,
    pub upstream: Option<weft_model::Address>,
}

impl Taps {
    /// Whether any tap is open: the only cost a request pays otherwise.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Relaxed)
    }

    /// How many taps are open.
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<OpenTap>> {
        self.taps.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens a tap (again: a start for an open id replaces its filter).
    pub fn start(&self, mut start: TapStart) {
        start.max_rps = start.max_rps.clamp(1, MAX_RATE);
        let mut taps = self.lock();
        taps.retain(|tap| tap.start.id != start.id);
        if taps.len() >= MAX_TAPS {
            tracing::warn!(id = start.id, "too many taps open; this one is refused");
            return;
        }
        taps.push(OpenTap {
            start,
            second: 0,
            in_second: 0,
            events: Vec::new(),
            written: BytesMut::new(),
            dropped: 0,
        });
        self.open.store(true, Ordering::Relaxed);
    }

    pub fn stop(&self, id: u64) {
        let mut taps = self.lock();
        taps.retain(|tap| tap.start.id != id);
        self.open.store(!taps.is_empty(), Ordering::Relaxed);
    }

    /// Every tap closed: the control plane's stream ended.
    pub fn stop_all(&self) {
        self.lock().clear();
        self.open.store(false, Ordering::Relaxed);
    }

    /// Offers one finished request to the open taps.
    pub fn offer(&self, exchange: &Exchange) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut taps = self.lock();
        for tap in taps.iter_mut() {
            let filter = &tap.start;
            let matches = exchange.path.starts_with(&filter.path_prefix)
                && (filter.method.is_empty() || filter.method == exchange.method)
                && (filter.status == 0 || filter.status == u32::from(exchange.status));
            if !matches {
                continue;
            }
            if tap.second != now.as_secs() {
                tap.second = now.as_secs();
                tap.in_second = 0;
            }
            if tap.in_second >= filter.max_rps || tap.events.len() >= MAX_BUFFERED {
                tap.dropped += 1;
                continue;
            }
            tap.in_second += 1;
            let millis = i64::try_from(now.as_millis()).unwrap_or(i64::MAX);
            // Room for a run of events at once: one allocation per hundred or so, shared by
            // the events written in it until the batch has been sent.
            if tap.written.capacity() < 1024 {
                tap.written.reserve(16 * 1024);
            }
            write_event(exchange, millis, &mut tap.written);
            tap.events.push(tap.written.split().freeze());
        }
    }

    /// The events of each tap since the last call (taps with none or no drops left out).
    pub fn take(&self) -> Vec<TapEvents> {
        if !self.is_open() {
            return Vec::new();
        }
        let mut taps = self.lock();
        taps.iter_mut()
            .filter(|tap| !tap.events.is_empty() || tap.dropped > 0)
            .map(|tap| TapEvents {
                id: tap.start.id,
                // Room for as many as this batch had: a busy tap fills its buffer again
                // without growing it step by step (and copying it) every batch.
                events: {
                    let room = tap.events.len();
                    std::mem::replace(&mut tap.events, Vec::with_capacity(room))
                },
                dropped: std::mem::take(&mut tap.dropped),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;
    use weft_api::v1::TapEvent;

    fn exchange<'a>(method: &'a str, path: &'a str, status: u16) -> Exchange<'a> {
        Exchange {
            inbound: true,
            source: "spiffe://weft.local/ns/default/svc/web",
            destination: "api.default",
            method,
            path,
            status,
            latency_micros: 1200,
            route: "",
            authz: Some(("allow", "mesh")),
            upstream: None,
        }
    }

    #[test]
    fn an_event_is_written_as_the_proto_reads_it() {
        let upstream: std::net::SocketAddr = "[2001:db8::1]:8080".parse().unwrap();
        let outbound = Exchange {
            inbound: false,
            route: "default/reviews-route/0",
            upstream: Some(upstream.into()),
            ..exchange("PATCH", "/books/1?x=ü", 503)
        };
        let mut out = BytesMut::new();
        write_event(&outbound, 1_765_000_000_123, &mut out);
        let read = TapEvent::decode(out.freeze()).unwrap();
        assert_eq!(
            read,
            TapEvent {
                unix_millis: 1_765_000_000_123,
                inbound: false,
                source: "spiffe://weft.local/ns/default/svc/web".into(),
                destination: "api.default".into(),
                method: "PATCH".into(),
                path: "/books/1?x=ü".into(),
                status: 503,
                latency_micros: 1200,
                route: "default/reviews-route/0".into(),
                authz_decision: "allow".into(),
                authz_policy: "mesh".into(),
                upstream: "[2001:db8::1]:8080".into(),
            }
        );
        // Defaults are left out, as prost leaves them out.
        let quiet = Exchange {
            authz: None,
            ..exchange("GET", "", 0)
        };
        let mut out = BytesMut::new();
        write_event(&quiet, 0, &mut out);
        let expected = TapEvent {
            inbound: true,
            source: quiet.source.into(),
            destination: quiet.destination.into(),
            method: "GET".into(),
            latency_micros: 1200,
            ..TapEvent::default()
        };
        assert_eq!(&out[..], &expected.encode_to_vec()[..]);
    }

    #[test]
    fn a_tap_keeps_what_matches_up_to_its_rate_and_stops() {
        let taps = Taps::default();
        assert!(!taps.is_open());
        taps.start(TapStart {
            id: 7,
            path_prefix: "/books".into(),
            method: "GET".into(),
            status: 0,
            max_rps: 3,
        });
        assert!(taps.is_open());
        taps.offer(&exchange("GET", "/other", 200));
        taps.offer(&exchange("POST", "/books/1", 200));
        for _ in 0..10 {
            taps.offer(&exchange("GET", "/books/1", 200));
        }
        let [batch] = &taps.take()[..] else {
            panic!("one tap")
        };
        assert_eq!(batch.id, 7);
        // Within one second, three; a test that straddles a second boundary sees up to six.
        assert!(
            (3..=6).contains(&batch.events.len()),
            "{}",
            batch.events.len()
        );
        assert_eq!(batch.events.len() as u64 + batch.dropped, 10);
        let first = TapEvent::decode(batch.events[0].clone()).unwrap();
        assert_eq!(first.authz_decision, "allow");
        taps.stop(7);
        assert!(!taps.is_open());
        assert!(taps.take().is_empty());
    }
}
