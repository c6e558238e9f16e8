//! The JSON access log: one object per request or TCP connection, on stdout.
//!
//! Lines go through a bounded queue to a thread of their own, which writes them: a reader
//! of stdout that is slow or gone (a full pipe, a stalled log shipper) then costs lines,
//! dropped and counted in `weft_access_log_dropped_total`, never a stalled request.

use crate::authorization::Verdict;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use std::io::Write;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::time::{Duration, Instant};
use weft_model::authz::RuleRef;
use weft_model::Address;

/// Lines waiting for the writer; more are dropped.
const QUEUE_LINES: usize = 16 * 1024;

/// The writer's end: cheap to call from the data path.
pub struct AccessLog {
    queue: SyncSender<Message>,
    dropped: Counter,
}

enum Message {
    Line(Vec<u8>),
    /// Everything queued before it has been written: answer.
    Flush(mpsc::Sender<()>),
}

impl AccessLog {
    /// Starts the writer thread, writing to stdout.
    pub fn start(dropped: Counter) -> std::io::Result<AccessLog> {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("weft-access-log".into())
            .spawn(move || write_lines(lines, std::io::stdout().lock()))?;
        Ok(AccessLog { queue, dropped })
    }

    pub fn write(&self, entry: &Entry) {
        let Ok(mut line) = serde_json::to_vec(entry) else {
            return;
        };
        line.push(b'\n');
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.queue.try_send(Message::Line(line))
        {
            self.dropped.inc();
        }
    }

    /// Waits until what was queued is written, for at most `within` (at shutdown, so the
    /// last requests' lines are not lost with the process).
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let (done, written) = mpsc::channel();
        let mut message = Message::Flush(done);
        loop {
            match self.queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return false,
            }
        }
        written
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// The writer thread: writes lines as they come, flushing whenever the queue runs dry.
fn write_lines(lines: mpsc::Receiver<Message>, out: impl Write) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    let _ = out.write_all(&line);
                }
                Message::Flush(done) => {
                    let _ = out.flush();
                    let _ = done.send(());
                }
            }
            next = lines.try_recv().ok();
        }
        let _ = out.flush();
    }
}

#[derive(Serialize)]
pub struct Entry<'a> {
    pub time: String,
    pub direction: &'static str,
    pub source: &'a str,
    pub destination: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Address>,
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    /// Inbound only: `allow`, `deny`, `dry_run_deny` or `audit`, and what decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_policy: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authz_rule: Option<RuleRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_out: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// RFC 3339 UTC with milliseconds, without pulling in a date crate.
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{d:02}T{h:02}:{m:02}:{s:02}.{:03}Z",
        now.subsec_millis()
    )
}

/// What an HTTP request's log line needs from the request, taken before it is forwarded.
pub struct RequestLog {
    method: String,
    path: String,
    trace_id: Option<String>,
}

/// Where one HTTP exchange went and how it ended.
pub struct Exchange<'a> {
    pub direction: &'static str,
    pub source: &'a str,
    pub destination: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<Address>,
    pub retries: u32,
    pub duration: std::time::Duration,
    /// The authorization verdict, for inbound requests.
    pub authz: Option<&'a Verdict>,
}

impl RequestLog {
    pub fn capture<B>(request: &http::Request<B>) -> Self {
        Self {
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            trace_id: crate::http::trace_id(request.headers()).map(str::to_owned),
        }
    }

    pub fn write<B>(&self, log: &AccessLog, exchange: Exchange<'_>, response: &http::Response<B>) {
        log.write(&Entry {
            time: now_rfc3339(),
            direction: exchange.direction,
            source: exchange.source,
            destination: exchange.destination,
            route: exchange.route,
            method: Some(&self.method),
            path: Some(&self.path),
            status: Some(response.status().as_u16()),
            duration_ms: exchange.duration.as_secs_f64() * 1000.0,
            upstream: exchange.upstream,
            retries: exchange.retries,
            trace_id: self.trace_id.as_deref(),
            authz_decision: exchange.authz.map(|v| v.decision),
            authz_policy: exchange.authz.map(|v| &*v.policy),
            authz_rule: exchange.authz.map(|v| v.rule),
            bytes_in: None,
            bytes_out: None,
            error: response
                .headers()
                .get(crate::http::ERROR_HEADER)
                .and_then(|v| v.to_str().ok()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes nothing until it is let go, like a pipe nobody reads.
    struct Blocked(Option<std::sync::Arc<std::sync::Barrier>>);

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(gate) = self.0.take() {
                gate.wait();
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_drops_and_counts_lines_without_blocking_the_caller() {
        let (queue, lines) = mpsc::sync_channel(4);
        let gate = std::sync::Arc::new(std::sync::Barrier::new(2));
        let blocked = Blocked(Some(gate.clone()));
        let writer = std::thread::spawn(move || write_lines(lines, blocked));
        let log = AccessLog {
            queue,
            dropped: Counter::default(),
        };
        let entry = Entry {
            time: now_rfc3339(),
            direction: "outbound",
            source: "a",
            destination: "b",
            route: None,
            method: None,
            path: None,
            status: Some(200),
            duration_ms: 1.0,
            upstream: None,
            retries: 0,
            trace_id: None,
            authz_decision: None,
            authz_policy: None,
            authz_rule: None,
            bytes_in: None,
            bytes_out: None,
            error: None,
        };
        let started = Instant::now();
        for _ in 0..100_000 {
            log.write(&entry);
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the caller was held up"
        );
        // What the writer took before it blocked: its 64 KiB buffer and the queue.
        let dropped = log.dropped.get();
        assert!(dropped >= 99_000, "{dropped} dropped");
        drop(log);
        gate.wait();
        writer.join().unwrap();
    }

    #[test]
    fn timestamp_is_rfc3339() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
