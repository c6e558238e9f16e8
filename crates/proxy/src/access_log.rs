//! The JSON access log: one object per request or TCP connection, on stdout.

use serde::Serialize;
use std::io::Write;
use std::net::SocketAddr;

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
    pub upstream: Option<SocketAddr>,
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<&'a str>,
    pub authz_decision: &'static str,
    pub authz_rule: &'a str,
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
    pub upstream: Option<SocketAddr>,
    pub retries: u32,
    pub duration: std::time::Duration,
}

impl RequestLog {
    pub fn capture<B>(request: &http::Request<B>) -> Self {
        Self {
            method: request.method().as_str().to_owned(),
            path: request.uri().path().to_owned(),
            trace_id: crate::http::trace_id(request.headers()).map(str::to_owned),
        }
    }

    pub fn write<B>(&self, exchange: Exchange<'_>, response: &http::Response<B>) {
        write(&Entry {
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
            authz_decision: "allow",
            authz_rule: "default",
            bytes_in: None,
            bytes_out: None,
            error: response
                .headers()
                .get(crate::http::ERROR_HEADER)
                .and_then(|v| v.to_str().ok()),
        });
    }
}

pub fn write(entry: &Entry) {
    let mut line = match serde_json::to_vec(entry) {
        Ok(line) => line,
        Err(_) => return,
    };
    line.push(b'\n');
    // One write per line so concurrent entries never interleave.
    let _ = std::io::stdout().lock().write_all(&line);
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamp_is_rfc3339() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[10] == b'T', "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
